//! DynamoDB write capacity: what a write costs in write request units (WRU),
//! by DynamoDB's published sizing rules, and a meter the stores charge.
//!
//! Why computed rather than read back: moto reports no consumed capacity for
//! `TransactWriteItems`, and the embedded backend has no DynamoDB at all. Every
//! backend charges the same model for the same logical writes, so benchmarks
//! on the embedded backend and over the emulator compare like with like, and
//! the capacity planner (`pointflow plan`) starts from these counts.
//!
//! The rules (AWS-FACTS.md): a standard write costs 1 WRU per started KiB of
//! the item, a transactional write 2; an update is charged on the larger of
//! the item before and after; a write whose condition fails still costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::domain::audit::Audit;
use crate::domain::job_list::JobListKey;
use crate::domain::transaction_plan::CREDIT_CHECK_ACTIONS;
use crate::domain::{Accrual, MessageRef, NewJob};

/// Item bytes one write request unit covers.
pub const WRITE_UNIT_BYTES: usize = 1024;

/// Whether a write runs inside `TransactWriteItems` (twice the price).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Standard,
    Transactional,
}

impl WriteKind {
    fn factor(self) -> u64 {
        match self {
            WriteKind::Standard => 1,
            WriteKind::Transactional => 2,
        }
    }
}

/// Write units of one write of an item of `item_bytes` (at least 1).
pub fn write_units(item_bytes: usize, kind: WriteKind) -> u64 {
    item_bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64 * kind.factor()
}

/// Bytes DynamoDB counts for a number attribute's value: about one byte per
/// two significant digits, plus one.
pub fn number_bytes(text: &str) -> usize {
    let digits = text.trim_start_matches('-').trim_start_matches('0').replace('.', "");
    let significant = digits.trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

/// Length of an RFC 3339 UTC time with nanoseconds, as the stores write it
/// (`2026-11-26T02:12:31.123456789Z`; trailing zeros of the fraction are
/// dropped, so some are shorter).
pub const TIME_TEXT_BYTES: usize = 30;

/// Length of a history sort key's time (`2026-11-26T02:12:31.123Z`).
pub const KEY_TIME_BYTES: usize = 24;

/// Bytes of the history index keys an entry carries: `hist_pk =
/// MEMBER#<member_id>` and `hist_sk = <time>#<kind>#<id>`
/// ([`crate::domain::history::sort_key`]).
pub fn history_key_bytes(member_id: &str, kind: &str, id: &str) -> usize {
    "hist_pk".len() + "MEMBER#".len() + member_id.len() + "hist_sk".len() + KEY_TIME_BYTES + 2 + kind.len() + id.len()
}

/// Write units of writing an item that is in the `history` index: the table
/// write plus the index write of the same item. AWS does not say whether an
/// index write made by a transaction is billed at the transactional rate;
/// the model takes the higher price, so plans err on the safe side.
pub fn indexed_write_units(item_bytes: usize, kind: WriteKind) -> u64 {
    2 * write_units(item_bytes, kind)
}

/// Size of the ledger entry the DynamoDB adapter writes for an accrual
/// (attribute names and values: `pk`, `sk`, `accrual_id`, `member_id`,
/// `point_type`, `amount`, `job_id`, `seq`, `applied_at`, `reason`, and
/// the history keys).
pub fn ledger_entry_bytes(accrual: &Accrual, by: MessageRef) -> usize {
    let id = accrual.accrual_id.len();
    let mut bytes = history_key_bytes(&accrual.member_id, "accrual", &accrual.accrual_id);
    bytes += "pk".len() + "ACCRUAL#".len() + id;
    bytes += "sk".len() + "ACCRUAL".len();
    bytes += "accrual_id".len() + id;
    bytes += "member_id".len() + accrual.member_id.len();
    bytes += "point_type".len() + accrual.point_type.len();
    bytes += "amount".len() + number_bytes(&accrual.amount.to_string());
    // A job id is a hyphenated UUID.
    bytes += "job_id".len() + 36;
    bytes += "seq".len() + number_bytes(&by.seq.to_string());
    bytes += "applied_at".len() + TIME_TEXT_BYTES;
    if let Some(reason) = &accrual.reason {
        bytes += "reason".len() + reason.len();
    }
    if accrual.apply_at.is_some() {
        bytes += "apply_at".len() + TIME_TEXT_BYTES;
    }
    if accrual.expires_at.is_some() {
        bytes += "expires_at".len() + TIME_TEXT_BYTES;
    }
    bytes
}

/// Bytes of an audit record kept in the string attribute `name` (`audit`,
/// `cancel_audit`, `reversal_audit`): the name and [`Audit::to_json`];
/// nothing without a record. The history index projects `audit`, so an
/// indexed entry pays these bytes twice.
pub fn audit_bytes(name: &str, audit: Option<&Audit>) -> usize {
    audit.map_or(0, |audit| name.len() + audit.to_json().len())
}

/// Size of the use entry the DynamoDB adapter writes (`pk`, `sk`, `use_id`,
/// `member_id`, `point_type`, `amount`, `applied_at`, `reason`, and
/// `consumed`, a map of what it took from each lot: here from the plain lot
/// alone, as most uses do; and the history keys), plus `job_id` and `seq`
/// for a use of a bulk-use message `by`, and the `audit` of a single use.
pub fn use_entry_bytes(u: &crate::domain::uses::Use, by: Option<MessageRef>, audit: Option<&Audit>) -> usize {
    let id = u.use_id.len();
    let mut bytes = history_key_bytes(&u.member_id, "use", &u.use_id);
    bytes += "pk".len() + "USE#".len() + id;
    bytes += "sk".len() + "USE".len();
    bytes += "use_id".len() + id;
    bytes += "member_id".len() + u.member_id.len();
    bytes += "point_type".len() + u.point_type.len();
    bytes += "amount".len() + number_bytes(&u.amount.to_string());
    bytes += "applied_at".len() + TIME_TEXT_BYTES;
    // A map: 3 bytes, then per entry 1 byte, its name and its value.
    bytes += "consumed".len() + 3 + 1 + "balance".len() + number_bytes(&u.amount.to_string());
    if let Some(reason) = &u.reason {
        bytes += "reason".len() + reason.len();
    }
    if let Some(by) = by {
        // A job id is a hyphenated UUID.
        bytes += "job_id".len() + 36;
        bytes += "seq".len() + number_bytes(&by.seq.to_string());
    }
    bytes + audit_bytes("audit", audit)
}

/// Size of the history entry the DynamoDB adapter writes for reversal
/// `record` (`pk = REVERSAL#<ACCRUAL|USE>#<id>`, `sk`, `reverses`,
/// `target_id`, `member_id`, `point_type`, `amount`, `applied_at`, the
/// history keys, and the reversal's `audit`).
pub fn reversal_entry_bytes(record: &crate::domain::reversal::ReversalRecord) -> usize {
    use crate::domain::history::{key_time, sort_key, EntryKind};
    use crate::domain::reversal::ReversalKind;
    let tag = match record.kind {
        ReversalKind::Accrual => "accrual",
        ReversalKind::Use => "use",
    };
    let id = record.id.len();
    let mut bytes = "pk".len() + "REVERSAL#".len() + tag.len() + 1 + id;
    bytes += "sk".len() + "REVERSAL".len();
    bytes += "reverses".len() + tag.len();
    bytes += "target_id".len() + id;
    bytes += "member_id".len() + record.member_id.len();
    bytes += "point_type".len() + record.point_type.len();
    bytes += "amount".len() + number_bytes(&record.amount.to_string());
    bytes += "applied_at".len() + rfc3339_bytes(record.reversed_at);
    bytes += "hist_pk".len() + "MEMBER#".len() + record.member_id.len();
    let hist_sk = sort_key(
        &key_time(record.reversed_at),
        EntryKind::Reversal,
        Some(record.kind),
        &record.id,
    );
    bytes += "hist_sk".len() + hist_sk.len();
    bytes + audit_bytes("audit", record.audit.as_ref())
}

/// Bytes a reversal's mark adds to the entry it reverses: `reversed_at`
/// and the reversal's audit (`reversal_audit`). An update is charged on
/// the larger of the item before and after, here the item after: the
/// entry plus these.
pub fn reversal_mark_bytes(reversed_at: time::OffsetDateTime, audit: Option<&Audit>) -> usize {
    "reversed_at".len() + rfc3339_bytes(reversed_at) + audit_bytes("reversal_audit", audit)
}

/// Bytes a job cancel's first request adds to the job item:
/// `cancel_requested_at` and the cancel's audit (`cancel_audit`). The
/// update is charged on the job item after it: the job plus these.
pub fn cancel_mark_bytes(requested_at: time::OffsetDateTime, audit: Option<&Audit>) -> usize {
    "cancel_requested_at".len() + rfc3339_bytes(requested_at) + audit_bytes("cancel_audit", audit)
}

/// Length of `at` as the stores write it (RFC 3339, whose fraction drops
/// its trailing zeros).
fn rfc3339_bytes(at: time::OffsetDateTime) -> usize {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_or(TIME_TEXT_BYTES, |text| text.len())
}

/// Bytes of a job's table keys (`pk = JOB#<job_id>`, `sk = JOB`) and its
/// `job_list` index keys (`list_pk = JOBS#<year>`, `list_sk = <created_at
/// to the millisecond>#<job_id>`): all a `job_list` index entry holds, as
/// the index projects keys only.
pub fn job_list_entry_bytes(job: &NewJob) -> usize {
    // A job id is a hyphenated UUID; a year has four digits.
    let table_keys = "pk".len() + "JOB#".len() + 36 + "sk".len() + "JOB".len();
    let list_keys = "list_pk".len() + "JOBS#".len() + 4 + "list_sk".len();
    table_keys + list_keys + JobListKey::of(job.created_at, job.job_id).as_str().len()
}

/// Size of the job item the DynamoDB adapter creates: its keys and listing
/// keys, `job_id`, `request_hash`, the counts (`total`, `deduplicated`,
/// `messages`, `rejected`, `applied`, `duplicate`, `failed`, `remaining`),
/// `created_at`, the `enqueued` and `reading` flags, and `source` and
/// `audit` when it has them.
pub fn job_item_bytes(job: &NewJob) -> usize {
    let count = |name: &str, value: u64| name.len() + number_bytes(&value.to_string());
    let mut bytes = job_list_entry_bytes(job);
    bytes += "job_id".len() + 36;
    bytes += "request_hash".len() + job.request_hash.len();
    bytes += count("total", job.total) + count("deduplicated", job.deduplicated) + count("messages", job.messages);
    bytes += count("rejected", 0) + count("applied", 0) + count("duplicate", 0) + count("failed", 0);
    bytes += count("remaining", job.total);
    // Stored as RFC 3339, whose length varies with the fraction.
    bytes += "created_at".len() + rfc3339_bytes(job.created_at);
    // Two flags: a name and a one-byte boolean each.
    bytes += "enqueued".len() + 1 + "reading".len() + 1;
    if let Some(source) = &job.source {
        bytes += "source".len() + source.len();
    }
    bytes + audit_bytes("audit", job.audit.as_ref())
}

/// Writes a table write makes to one global secondary index, by the rule of
/// the DynamoDB developer guide ("Global secondary indexes", write capacity
/// units): putting an item into the index is one write, moving it to
/// another index key two (a delete and a put), taking it out one; an item
/// in the index before and after with the same key costs one write only if
/// the write changed an attribute the index projects, and an item in the
/// index neither before nor after costs nothing. `before` and `after` are
/// the item's index key, if it has one.
pub fn index_writes<K: PartialEq>(before: Option<&K>, after: Option<&K>, projected_changed: bool) -> u64 {
    match (before, after) {
        (None, None) => 0,
        (None, Some(_)) | (Some(_), None) => 1,
        (Some(before), Some(after)) if before != after => 2,
        (Some(_), Some(_)) => u64::from(projected_changed),
    }
}

/// Write units of the `job_list` index entry a job's creation puts there
/// (keys only). Charged only when the create succeeds: a put whose
/// condition fails writes no index entry. Later job writes (counts, flags,
/// stamps, a cancel) leave `list_pk`/`list_sk` alone and change no
/// projected attribute (the index projects keys only): they cost the index
/// nothing.
pub fn job_list_entry_units(job: &NewJob) -> u64 {
    let key = JobListKey::of(job.created_at, job.job_id);
    index_writes(None, Some(&key), true) * write_units(job_list_entry_bytes(job), WriteKind::Standard)
}

/// Write units of creating job `job` (one conditional `PutItem`): the item
/// by its size, and its `job_list` index entry.
pub fn job_create_units(job: &NewJob) -> u64 {
    write_units(job_item_bytes(job), WriteKind::Standard) + job_list_entry_units(job)
}

/// The largest item DynamoDB stores: 400 KB, attribute names and values
/// included (DynamoDB developer guide, "Constraints", items).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Size of a member's balance item as the DynamoDB adapter keeps it, by
/// DynamoDB's sizing rules: keys, `member_id`, `point_type`, `updated_at`,
/// the counters, the `lots` flag, and one attribute per lot holding points
/// (`balance` for the plain lot, `L#<from>#<until>` for the others).
pub fn balance_item_bytes(member_id: &str, sheet: &crate::domain::lots::BalanceSheet) -> usize {
    let mut bytes = "pk".len() + "MEMBER#".len() + member_id.len();
    bytes += "sk".len() + "BALANCE#".len() + sheet.point_type.len();
    bytes += "member_id".len() + member_id.len();
    bytes += "point_type".len() + sheet.point_type.len();
    bytes += "updated_at".len() + TIME_TEXT_BYTES;
    bytes += "earned".len() + number_bytes(&sheet.earned.to_string());
    bytes += "used".len() + number_bytes(&sheet.used.to_string());
    if sheet.expired > 0 {
        bytes += "expired".len() + number_bytes(&sheet.expired.to_string());
    }
    bytes += "balance".len() + 2;
    // The flag: a name and a one-byte boolean.
    bytes += "lots".len() + 1;
    for lot in sheet.lots.iter().filter(|lot| !lot.key.is_plain()) {
        bytes += lot.key.attribute().len() + number_bytes(&lot.amount.to_string());
    }
    bytes
}

/// Write units of crediting `accruals` in one transaction: a conditional put
/// of each ledger entry (and its history index entry), one balance update
/// per distinct balance (balance items stay far below 1 KiB), and the check
/// of the message's (small, usually absent) cancel item, charged as a small
/// transactional write.
pub fn ledger_transaction_units(by: MessageRef, accruals: &[&Accrual], distinct_balances: usize) -> u64 {
    let entries: u64 = accruals
        .iter()
        .map(|a| indexed_write_units(ledger_entry_bytes(a, by), WriteKind::Transactional))
        .sum();
    entries + (distinct_balances + CREDIT_CHECK_ACTIONS) as u64 * write_units(0, WriteKind::Transactional)
}

/// Write units of a marker put and a job update in one transaction (folding a
/// message's counts, recording a chunk): both items are small.
pub const MARKER_AND_UPDATE_UNITS: u64 = 4;

/// Bytes of a message marker other than its item ids: key, counts, times.
pub const MESSAGE_MARKER_BYTES: usize = 160;

/// Write units of folding a message: its marker, which keeps the message's
/// item ids (`items_bytes`, their lengths plus a separator each), and the
/// job update, in one transaction.
pub fn fold_units(items_bytes: usize) -> u64 {
    write_units(MESSAGE_MARKER_BYTES + items_bytes, WriteKind::Transactional) + write_units(0, WriteKind::Transactional)
}

/// Write units of one small standard write (creating a job, stamping it,
/// a conditional completion check).
pub const SMALL_WRITE_UNITS: u64 = 1;

/// Write requests made and write units charged, by what they were for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteCost {
    /// Crediting: requests writing ledger entries and balances.
    pub ledger_requests: u64,
    pub ledger_units: u64,
    /// Job tracking: jobs, message and chunk markers, completion checks.
    pub job_requests: u64,
    pub job_units: u64,
}

impl WriteCost {
    pub fn requests(self) -> u64 {
        self.ledger_requests + self.job_requests
    }

    pub fn units(self) -> u64 {
        self.ledger_units + self.job_units
    }
}

impl std::ops::Sub for WriteCost {
    type Output = WriteCost;

    fn sub(self, earlier: WriteCost) -> WriteCost {
        WriteCost {
            ledger_requests: self.ledger_requests.saturating_sub(earlier.ledger_requests),
            ledger_units: self.ledger_units.saturating_sub(earlier.ledger_units),
            job_requests: self.job_requests.saturating_sub(earlier.job_requests),
            job_units: self.job_units.saturating_sub(earlier.job_units),
        }
    }
}

/// A shared, thread-safe count of write requests and units, as DynamoDB
/// would bill them. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct WriteMeter(Arc<[AtomicU64; 4]>);

impl WriteMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `requests` write requests costing `units` in all, for crediting.
    pub fn charge_ledger(&self, requests: u64, units: u64) {
        self.0[0].fetch_add(requests, Ordering::Relaxed);
        self.0[1].fetch_add(units, Ordering::Relaxed);
    }

    /// Adds `requests` write requests costing `units` in all, for job tracking.
    pub fn charge_jobs(&self, requests: u64, units: u64) {
        self.0[2].fetch_add(requests, Ordering::Relaxed);
        self.0[3].fetch_add(units, Ordering::Relaxed);
    }

    /// What was charged so far.
    pub fn cost(&self) -> WriteCost {
        let [ledger_requests, ledger_units, job_requests, job_units] =
            [0, 1, 2, 3].map(|i| self.0[i].load(Ordering::Relaxed));
        WriteCost {
            ledger_requests,
            ledger_units,
            job_requests,
            job_units,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobId;

    fn accrual(reason: Option<&str>) -> Accrual {
        Accrual {
            accrual_id: "campaign-42:m0000001".into(),
            member_id: "m0000001".into(),
            point_type: "PT0".into(),
            amount: 2000,
            reason: reason.map(str::to_owned),
            apply_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn units_round_up_per_kib_and_double_in_transactions() {
        assert_eq!(write_units(0, WriteKind::Standard), 1);
        assert_eq!(write_units(1024, WriteKind::Standard), 1);
        assert_eq!(write_units(1025, WriteKind::Standard), 2);
        assert_eq!(write_units(1025, WriteKind::Transactional), 4);
    }

    #[test]
    fn numbers_cost_by_significant_digits() {
        assert_eq!(number_bytes("0"), 2);
        assert_eq!(number_bytes("7"), 2);
        assert_eq!(number_bytes("2000"), 2);
        assert_eq!(number_bytes("123456"), 4);
        assert_eq!(number_bytes("-12.5"), 3);
    }

    #[test]
    fn a_typical_accrual_costs_four_units_plus_its_balance() {
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(7)),
            seq: 3,
        };
        let a = accrual(Some("spring campaign"));
        let bytes = ledger_entry_bytes(&a, by);
        assert!((150..300).contains(&bytes), "{bytes}");
        // The entry (2), its history index entry (2), the balance (2), and
        // once per transaction the message's cancel check (2).
        assert_eq!(ledger_transaction_units(by, &[&a], 1), 6 + 2);
        let long = accrual(Some(&"x".repeat(2000)));
        assert_eq!(ledger_transaction_units(by, &[&long, &a], 2), (6 + 6) + (2 + 2) + 4 + 2);
    }

    /// A single use whose entry, without its audit, is 800 bytes: a short
    /// ARN keeps it within 1 KiB, a 200-character one passes it, and the
    /// entry and its history index entry (which projects `audit`) each cost
    /// one more started KiB.
    #[test]
    fn an_audit_with_a_200_character_arn_pushes_a_use_past_1_kib() {
        let mut u = crate::domain::uses::Use {
            use_id: "order-2026-0001".into(),
            member_id: "m0000001".into(),
            point_type: "PT".into(),
            amount: 600,
            reason: None,
        };
        let bare = use_entry_bytes(&u, None, None);
        u.reason = Some("r".repeat(800 - bare - "reason".len()));
        assert_eq!(use_entry_bytes(&u, None, None), 800);

        let short = crate::domain::audit::iam_sample(60);
        let long = crate::domain::audit::iam_sample(200);
        assert_eq!(long.caller.id.as_ref().map(String::len), Some(200));
        let with_short = use_entry_bytes(&u, None, Some(&short));
        let with_long = use_entry_bytes(&u, None, Some(&long));
        assert!(with_short <= WRITE_UNIT_BYTES, "{with_short}");
        assert!(with_long > WRITE_UNIT_BYTES, "{with_long}");
        assert_eq!(with_long - 800, "audit".len() + long.to_json().len());
        // One more WRU for a standard write, two in a transaction, and as
        // many again for the index entry.
        assert_eq!(write_units(with_short, WriteKind::Standard), 1);
        assert_eq!(write_units(with_long, WriteKind::Standard), 2);
        assert_eq!(indexed_write_units(with_short, WriteKind::Transactional), 4);
        assert_eq!(indexed_write_units(with_long, WriteKind::Transactional), 8);
    }

    /// The `job_list` index writes by the developer guide's rule: creating a
    /// job puts its entry (one write); an update that leaves its key alone
    /// writes nothing to a keys-only index; moving or removing a key would
    /// cost two writes or one.
    #[test]
    fn index_writes_follow_the_guides_rule() {
        let (a, b) = ("2026-12-07T06:00:00.000Z#x", "2026-12-07T07:00:00.000Z#x");
        assert_eq!(index_writes(None, Some(&a), false), 1, "a new item in the index");
        assert_eq!(index_writes(Some(&a), Some(&b), false), 2, "a moved key");
        assert_eq!(index_writes(Some(&a), None, false), 1, "a key removed");
        assert_eq!(index_writes::<&str>(None, None, true), 0, "never in the index");
        assert_eq!(
            index_writes(Some(&a), Some(&a), true),
            1,
            "a projected attribute changed"
        );
        // A fold: counts change, the keys-only index projects none of them.
        assert_eq!(index_writes(Some(&a), Some(&a), false), 0, "a counts-only update");
    }

    /// A job's creation costs its item and its `job_list` index entry (keys
    /// only, always within 1 KiB), at the standard rate of `PutItem`; a long
    /// audit makes the item, not the index entry, dearer.
    #[test]
    fn a_job_create_costs_its_item_and_its_job_list_entry() {
        let mut job = NewJob {
            job_id: JobId(uuid::Uuid::from_u128(7)),
            request_hash: "0".repeat(64),
            total: 20_000,
            deduplicated: 0,
            messages: 40,
            source: None,
            reading: false,
            created_at: time::OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap(),
            audit: Some(crate::domain::audit::iam_sample(200)),
        };
        assert_eq!(job_list_entry_units(&job), 1);
        assert_eq!(job_create_units(&job), 1 + 1);
        job.audit = Some(crate::domain::audit::iam_sample(crate::domain::audit::MAX_FIELD_CHARS));
        assert!(job_item_bytes(&job) > 2 * WRITE_UNIT_BYTES);
        assert_eq!(job_list_entry_units(&job), 1);
        assert_eq!(job_create_units(&job), 3 + 1);
    }

    #[test]
    fn clones_share_the_meter() {
        let meter = WriteMeter::new();
        meter.clone().charge_ledger(1, 3);
        meter.charge_jobs(2, 2);
        let before = meter.cost();
        meter.charge_ledger(1, 4);
        let delta = meter.cost() - before;
        assert_eq!((before.requests(), before.units()), (3, 5));
        assert_eq!((delta.ledger_requests, delta.ledger_units, delta.job_units), (1, 4, 0));
    }

    /// A member who buys 20,000 times over 400 days, each purchase's points
    /// expiring 12 months after it to the second, as a client sends them:
    /// the balance item stays a few KB (it passed 400 KB when lots were kept
    /// to the second), and the largest use any day stays a bounded write.
    #[test]
    fn a_member_with_20000_expiring_accruals_stays_a_small_item() {
        use crate::domain::lots::{BalanceSheet, Lot, MAX_USE_LOTS};
        use crate::domain::transaction_plan::{
            expression_operators, use_expressions, MAX_EXPRESSION_BYTES, MAX_EXPRESSION_OPERATORS,
        };
        use crate::domain::validation::accrual_from_json;
        use std::collections::BTreeMap;
        use time::format_description::well_known::Rfc3339;

        let day = 86_400i64;
        let start = 1_767_225_600i64; // 2026-01-01T00:00:00Z
        let mut lots = BTreeMap::new();
        let mut earned = 0;
        for i in 0..20_000i64 {
            let bought = start + i * (400 * day) / 20_000 + (i * 7_919) % 3_600;
            let expires = time::OffsetDateTime::from_unix_timestamp(bought + 365 * day)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            let body = serde_json::json!({
                "accrual_id": format!("purchase-{i}"), "member_id": "m-1", "point_type": "PT",
                "amount": 10, "expires_at": expires,
            });
            let a = accrual_from_json(0, &body, None).unwrap();
            *lots.entry(a.lot()).or_insert(0u64) += a.amount;
            earned += a.amount;
        }
        let sheet = BalanceSheet {
            point_type: "PT".into(),
            lots: lots.into_iter().map(|(key, amount)| Lot { key, amount }).collect(),
            earned,
            used: 0,
            expired: 0,
        };
        let bytes = balance_item_bytes("m-1", &sheet);
        assert!(
            bytes <= 16 * 1024,
            "balance item of {} lots: {bytes} bytes",
            sheet.lots.len()
        );
        assert!(bytes < MAX_ITEM_BYTES);
        // The largest use at any time takes at most MAX_USE_LOTS lots, and
        // its expressions fit.
        let now = time::OffsetDateTime::from_unix_timestamp(start + 380 * day).unwrap();
        let available = sheet.available(now);
        let plan = match sheet.plan_use(available, now) {
            Ok(plan) => plan,
            Err(crate::domain::lots::UseShortfall::TooManyLots { at_most }) => sheet.plan_use(at_most, now).unwrap(),
            Err(other) => panic!("{other:?}"),
        };
        assert!(plan.takes.len() <= MAX_USE_LOTS);
        let e = use_expressions(&plan, available);
        assert!(e.update.len() <= MAX_EXPRESSION_BYTES && e.condition.len() <= MAX_EXPRESSION_BYTES);
        assert!(expression_operators(&e.update) <= MAX_EXPRESSION_OPERATORS);
        assert!(expression_operators(&e.condition) <= MAX_EXPRESSION_OPERATORS);
    }
}
