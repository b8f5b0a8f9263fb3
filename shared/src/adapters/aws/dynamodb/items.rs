//! Attribute helpers and the mapping between items and domain values.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{keys, Item};
use crate::domain::audit::Audit;
use crate::domain::history::{self, pruned_expiry, EntryKind, HistoryEntry};
use crate::domain::job_list::JobListKey;
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reversal::{ReversalKind, ReversalRecord};
use crate::domain::uses::{Use, UseRecord};
use crate::domain::{Accrual, CancelCounts, CancelProgress, Job, JobId, MessageRef, NewJob};
use crate::ports::StoreError;

/// A string attribute.
pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A negative number attribute: what `ADD` subtracts.
pub(super) fn minus(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(format!("-{value}"))
}

/// A time as stored: RFC 3339.
pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Reading attributes of an item.
pub(super) trait ItemExt {
    /// A string attribute (`None` if absent or not a string).
    fn string(&self, name: &str) -> Option<&str>;
    /// A number attribute's text as stored (`None` if absent or not a number).
    fn number_text(&self, name: &str) -> Option<&str>;
    /// A whole number attribute, 0 if absent.
    fn number(&self, name: &str) -> Result<u64, StoreError>;
    /// An RFC 3339 time attribute.
    fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// A string attribute that must be there.
    fn required_string(&self, name: &str) -> Result<String, StoreError>;
    /// An audit record ([`Audit::to_json`] in a string attribute), if any.
    fn audit(&self, name: &str) -> Result<Option<Audit>, StoreError>;
    /// The error of an item that is not as written.
    fn corrupt(&self, detail: impl Into<String>) -> StoreError;
}

impl ItemExt for Item {
    fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(AttributeValue::S(v)) => Some(v.as_str()),
            _ => None,
        }
    }

    fn number_text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(AttributeValue::N(v)) => Some(v),
            _ => None,
        }
    }

    fn number(&self, name: &str) -> Result<u64, StoreError> {
        match self.get(name) {
            Some(AttributeValue::N(v)) => {
                // Counters may dip below zero only transiently (`remaining`); the
                // ones read here never do.
                v.parse::<u64>()
                    .map_err(|_| self.corrupt(format!("{name} is not a whole number: {v}")))
            }
            None => Ok(0),
            Some(_) => Err(self.corrupt(format!("{name} is not a number"))),
        }
    }

    fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        match self.string(name) {
            Some(v) => OffsetDateTime::parse(v, &Rfc3339)
                .map(Some)
                .map_err(|_| self.corrupt(format!("{name} is not an RFC 3339 time: {v}"))),
            None => Ok(None),
        }
    }

    fn required_string(&self, name: &str) -> Result<String, StoreError> {
        self.string(name)
            .map(str::to_owned)
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    fn audit(&self, name: &str) -> Result<Option<Audit>, StoreError> {
        self.string(name)
            .map(|text| Audit::from_json(text).map_err(|e| self.corrupt(format!("{name}: {e}"))))
            .transpose()
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        let key = [self.string("pk"), self.string("sk")]
            .iter()
            .map(|p| p.unwrap_or("?"))
            .collect::<Vec<_>>()
            .join("/");
        StoreError::Corrupt {
            key,
            detail: detail.into(),
        }
    }
}

/// Bytes DynamoDB counts for an item: attribute names and values.
pub fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_bytes(value)).sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => crate::domain::capacity::number_bytes(number),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| crate::domain::capacity::number_bytes(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        // Lists and maps: 3 bytes of overhead plus their elements.
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_bytes(v)).sum::<usize>(),
        _ => 0,
    }
}

/// The ledger entry of an accrual credited by message `by`, in its member's
/// history at `key_time`.
pub(super) fn ledger_entry(by: MessageRef, a: &Accrual, now: &str, key_time: &str) -> Item {
    let (pk, sk) = keys::accrual_entry(&a.accrual_id);
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("accrual_id".to_owned(), s(&a.accrual_id)),
        ("member_id".to_owned(), s(&a.member_id)),
        ("point_type".to_owned(), s(&a.point_type)),
        ("amount".to_owned(), n(a.amount)),
        ("job_id".to_owned(), s(by.job_id.to_string())),
        ("seq".to_owned(), n(u64::from(by.seq))),
        ("applied_at".to_owned(), s(now)),
    ]);
    item.extend(keys::history_keys(
        &a.member_id,
        key_time,
        EntryKind::Accrual,
        None,
        &a.accrual_id,
    ));
    if let Some(reason) = &a.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    if let Some(t) = a.apply_at {
        item.insert("apply_at".to_owned(), s(rfc3339(t)));
    }
    if let Some(t) = a.expires_at {
        item.insert("expires_at".to_owned(), s(rfc3339(t)));
    }
    item
}

/// The entry of a use; `consumed` says what it took from each lot, `audit`
/// who asked for a single use.
pub(super) fn use_entry(
    u: &Use,
    by: Option<MessageRef>,
    audit: Option<&Audit>,
    consumed: &Item,
    now: &str,
    key_time: &str,
) -> Item {
    let (pk, sk) = keys::use_entry(&u.use_id);
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("use_id".to_owned(), s(&u.use_id)),
        ("member_id".to_owned(), s(&u.member_id)),
        ("point_type".to_owned(), s(&u.point_type)),
        ("amount".to_owned(), n(u.amount)),
        ("applied_at".to_owned(), s(now)),
        ("consumed".to_owned(), AttributeValue::M(consumed.clone())),
    ]);
    item.extend(keys::history_keys(
        &u.member_id,
        key_time,
        EntryKind::Use,
        None,
        &u.use_id,
    ));
    if let Some(reason) = &u.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    // The bulk-use message that applied it: its job's cancel gives back only
    // what that message deducted.
    if let Some(by) = by {
        item.insert("job_id".to_owned(), s(by.job_id.to_string()));
        item.insert("seq".to_owned(), n(u64::from(by.seq)));
    }
    if let Some(audit) = audit {
        item.insert("audit".to_owned(), s(audit.to_json()));
    }
    item
}

/// The refusal of a bulk use, under the key its use entry would have (so a
/// use and its refusal exclude each other by `attribute_not_exists(pk)`):
/// what was asked, when, and by which message. No `hist_pk`/`hist_sk`, so it
/// stays out of the history index (a refusal moves no points: no history,
/// no reconcile), and no `applied_at` or `consumed`.
pub(super) fn refusal_entry(u: &Use, by: MessageRef, now: &str) -> Item {
    let (pk, sk) = keys::use_entry(&u.use_id);
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("use_id".to_owned(), s(&u.use_id)),
        ("member_id".to_owned(), s(&u.member_id)),
        ("point_type".to_owned(), s(&u.point_type)),
        ("amount".to_owned(), n(u.amount)),
        ("refused_at".to_owned(), s(now)),
        ("job_id".to_owned(), s(by.job_id.to_string())),
        ("seq".to_owned(), n(u64::from(by.seq))),
    ]);
    if let Some(reason) = &u.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    item
}

/// A use entry read back: the use it applied, or the refusal of a bulk use
/// with the message that refused it.
#[derive(Debug)]
pub(super) enum StoredUse {
    Applied(UseRecord),
    Refused(UseRecord, MessageRef),
}

/// Reads a use entry or a refusal ([`refusal_entry`]); a refusal's record
/// carries its `refused_at` as `applied_at`.
pub(super) fn stored_use_from_item(item: &Item) -> Result<StoredUse, StoreError> {
    let Some(refused_at) = item.time("refused_at")? else {
        return Ok(StoredUse::Applied(use_from_item(item)?));
    };
    let job = item.required_string("job_id")?;
    let job_id = job
        .parse()
        .map(JobId)
        .map_err(|_| item.corrupt(format!("job_id is not a UUID: {job}")))?;
    let seq = u32::try_from(item.number("seq")?).map_err(|_| item.corrupt("seq is out of range"))?;
    let record = UseRecord {
        use_id: item.required_string("use_id")?,
        member_id: item.required_string("member_id")?,
        point_type: item.required_string("point_type")?,
        amount: item.number("amount")?,
        reason: item.string("reason").map(str::to_owned),
        applied_at: refused_at,
        audit: None,
    };
    Ok(StoredUse::Refused(record, MessageRef { job_id, seq }))
}

/// The history entry of a reversal: an item of its own, so that the history
/// shows it at its own time.
pub(super) fn reversal_entry(record: &ReversalRecord, now: &str, key_time: &str) -> Item {
    let (pk, sk) = keys::reversal_entry(record.kind, &record.id);
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        (
            "reverses".to_owned(),
            s(keys::reversal_tag(record.kind).to_ascii_lowercase()),
        ),
        ("target_id".to_owned(), s(&record.id)),
        ("member_id".to_owned(), s(&record.member_id)),
        ("point_type".to_owned(), s(&record.point_type)),
        ("amount".to_owned(), n(record.amount)),
        ("applied_at".to_owned(), s(now)),
    ]);
    if let Some(audit) = &record.audit {
        item.insert("audit".to_owned(), s(audit.to_json()));
    }
    item.extend(keys::history_keys(
        &record.member_id,
        key_time,
        EntryKind::Reversal,
        Some(record.kind),
        &record.id,
    ));
    item
}

/// The history entry of lot `lot`, expired and pruned holding `amount`
/// points by use `u`'s transaction; `None` for a lot that never expires. The
/// lot is kept as `apply_at` and `expires_at` (RFC 3339 strings, which TTL
/// ignores): attributes the history index already projects.
pub(super) fn expiry_entry(u: &Use, lot: LotKey, amount: u64) -> Option<Item> {
    let entry = pruned_expiry(&u.point_type, lot, amount, &u.use_id)?;
    let (pk, sk) = keys::expiry_entry(&u.use_id, &lot.attribute());
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("use_id".to_owned(), s(&u.use_id)),
        ("member_id".to_owned(), s(&u.member_id)),
        ("point_type".to_owned(), s(&u.point_type)),
        ("amount".to_owned(), n(amount)),
        ("expires_at".to_owned(), s(rfc3339(entry.at))),
    ]);
    if lot.from != 0 {
        let from = OffsetDateTime::from_unix_timestamp(lot.from).ok()?;
        item.insert("apply_at".to_owned(), s(rfc3339(from)));
    }
    item.extend(keys::history_keys(
        &u.member_id,
        &history::key_time(entry.at),
        EntryKind::Expiry,
        None,
        &entry.id,
    ));
    Some(item)
}

/// A balance item's lots and counters.
pub(super) fn sheet_from_item(item: &Item) -> Result<BalanceSheet, StoreError> {
    let point_type = item
        .string("point_type")
        .ok_or_else(|| item.corrupt("point_type missing"))?
        .to_owned();
    let mut lots = Vec::new();
    let plain = item.number("balance")?;
    if plain > 0 {
        lots.push(Lot {
            key: LotKey::PLAIN,
            amount: plain,
        });
    }
    for name in item.keys() {
        if let Some(key) = LotKey::from_attribute(name) {
            let amount = item.number(name)?;
            if amount > 0 {
                lots.push(Lot { key, amount });
            }
        }
    }
    lots.sort_by_key(|lot| lot.key);
    let used = item.number("used")?;
    // Balances credited before the counters existed have none: what they
    // hold plus what was used is what was earned.
    let earned = match item.get("earned") {
        Some(_) => item.number("earned")?,
        None => lots.iter().map(|lot| lot.amount).sum::<u64>() + used,
    };
    Ok(BalanceSheet {
        point_type,
        lots,
        earned,
        used,
        expired: item.number("expired")?,
    })
}

/// A history entry from an item of the `history` index.
pub(super) fn history_from_item(item: &Item) -> Result<HistoryEntry, StoreError> {
    let at = |name: &str| -> Result<OffsetDateTime, StoreError> {
        item.time(name)?
            .ok_or_else(|| item.corrupt(format!("{name} is missing")))
    };
    let pk = item.required_string("pk")?;
    if pk.starts_with(keys::ACCRUAL_PREFIX) {
        let job = item.required_string("job_id")?;
        let job_id = job
            .parse()
            .map(JobId)
            .map_err(|_| item.corrupt(format!("job_id is not a UUID: {job}")))?;
        let accrual = Accrual {
            accrual_id: item.required_string("accrual_id")?,
            member_id: item.required_string("member_id")?,
            point_type: item.required_string("point_type")?,
            amount: item.number("amount")?,
            reason: item.string("reason").map(str::to_owned),
            apply_at: item.time("apply_at")?,
            expires_at: item.time("expires_at")?,
        };
        Ok(HistoryEntry::accrual(&accrual, Some(job_id), at("applied_at")?))
    } else if pk.starts_with(keys::USE_PREFIX) {
        Ok(HistoryEntry::use_of(&use_from_item(item)?))
    } else if pk.starts_with(keys::REVERSAL_PREFIX) {
        let kind = match item.required_string("reverses")?.as_str() {
            "accrual" => ReversalKind::Accrual,
            "use" => ReversalKind::Use,
            other => return Err(item.corrupt(format!("reverses is not accrual or use: {other}"))),
        };
        Ok(HistoryEntry::reversal(&ReversalRecord {
            kind,
            id: item.required_string("target_id")?,
            member_id: item.required_string("member_id")?,
            point_type: item.required_string("point_type")?,
            amount: item.number("amount")?,
            reversed_at: at("applied_at")?,
            audit: item.audit("audit")?,
        }))
    } else if pk.starts_with(keys::EXPIRY_PREFIX) {
        let lot = LotKey::new(item.time("apply_at")?, item.time("expires_at")?);
        let point_type = item.required_string("point_type")?;
        let use_id = item.required_string("use_id")?;
        pruned_expiry(&point_type, lot, item.number("amount")?, &use_id)
            .ok_or_else(|| item.corrupt("expires_at is missing"))
    } else {
        Err(item.corrupt("not a history entry"))
    }
}

/// A use's record from its entry.
pub(super) fn use_from_item(item: &Item) -> Result<UseRecord, StoreError> {
    Ok(UseRecord {
        use_id: item.required_string("use_id")?,
        member_id: item.required_string("member_id")?,
        point_type: item.required_string("point_type")?,
        amount: item.number("amount")?,
        reason: item.string("reason").map(str::to_owned),
        applied_at: item
            .time("applied_at")?
            .ok_or_else(|| item.corrupt("applied_at is missing"))?,
        audit: item.audit("audit")?,
    })
}

/// A job from its item.
pub(super) fn job_from_item(item: &Item) -> Result<Job, StoreError> {
    let job_id = item
        .string("job_id")
        .and_then(|v| v.parse::<JobId>().ok())
        .ok_or_else(|| item.corrupt("job_id missing or not a UUID"))?;
    let mut job = Job {
        job_id,
        request_hash: item.string("request_hash").unwrap_or_default().to_owned(),
        total: item.number("total")?,
        deduplicated: item.number("deduplicated")?,
        messages: item.number("messages")?,
        source: item.string("source").map(str::to_owned),
        created_at: item
            .time("created_at")?
            .ok_or_else(|| item.corrupt("created_at missing"))?,
        enqueued: matches!(item.get("enqueued"), Some(AttributeValue::Bool(true))),
        reading: matches!(item.get("reading"), Some(AttributeValue::Bool(true))),
        rejected: item.number("rejected")?,
        error: item.string("error").map(str::to_owned),
        applied: item.number("applied")?,
        duplicate: item.number("duplicate")?,
        failed: item.number("failed")?,
        // Missing on jobs recorded before bulk uses: 0.
        refused: item.number("refused")?,
        completed_at: item.time("completed_at")?,
        cancel: match item.time("cancel_requested_at")? {
            None => None,
            Some(requested_at) => Some(CancelProgress {
                requested_at,
                counts: CancelCounts {
                    reversed: item.number("cancel_reversed")?,
                    spent: item.number("cancel_spent")?,
                    skipped: item.number("cancel_skipped")?,
                },
                messages: item.number("cancel_messages")?,
                completed_at: item.time("cancel_completed_at")?,
                audit: item.audit("cancel_audit")?,
            }),
        },
        audit: item.audit("audit")?,
    };
    // `completed_at` is stamped by a write of its own after the last fold,
    // which can fail (the fold stands): the counts then still say the job
    // is complete, as of its last update.
    if job.completed_at.is_none() && !job.reading && job.settled() >= job.total {
        job.completed_at = Some(item.time("updated_at")?.unwrap_or(job.created_at));
    }
    Ok(job)
}

/// A new job's item.
pub(super) fn job_to_item(job: &NewJob) -> Item {
    let mut item = keys::job_key(job.job_id);
    item.extend([
        ("job_id".to_owned(), s(job.job_id.to_string())),
        ("request_hash".to_owned(), s(&job.request_hash)),
        ("total".to_owned(), n(job.total)),
        ("deduplicated".to_owned(), n(job.deduplicated)),
        ("messages".to_owned(), n(job.messages)),
        ("created_at".to_owned(), s(rfc3339(job.created_at))),
        ("enqueued".to_owned(), AttributeValue::Bool(false)),
        ("reading".to_owned(), AttributeValue::Bool(job.reading)),
        ("rejected".to_owned(), n(0)),
        ("applied".to_owned(), n(0)),
        ("duplicate".to_owned(), n(0)),
        ("failed".to_owned(), n(0)),
        // Counts down to 0 as messages are folded: lets a conditional write
        // stamp `completed_at` without a read.
        ("remaining".to_owned(), n(job.total)),
    ]);
    if let Some(source) = &job.source {
        item.insert("source".to_owned(), s(source));
    }
    if let Some(audit) = &job.audit {
        item.insert("audit".to_owned(), s(audit.to_json()));
    }
    // Set once: the `job_list` index never sees a fold.
    item.extend(super::job_list::list_attributes(&JobListKey::of(
        job.created_at,
        job.job_id,
    )));
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_back_as_refused_by_its_message_and_stays_out_of_the_history_index() {
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(7)),
            seq: 3,
        };
        let u = Use {
            use_id: "u-1".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 30,
            reason: None,
        };
        let item = refusal_entry(&u, by, "2026-12-07T02:00:00Z");
        assert!(
            !item.contains_key("hist_pk") && !item.contains_key("hist_sk"),
            "{item:?}"
        );
        assert_eq!(keys::use_entry("u-1").0, item.required_string("pk").unwrap());
        match stored_use_from_item(&item).unwrap() {
            StoredUse::Refused(record, refused_by) => {
                assert!(record.matches(&u));
                assert_eq!(refused_by, by);
            }
            StoredUse::Applied(record) => panic!("read as applied: {record:?}"),
        }
        let applied = use_entry(
            &u,
            Some(by),
            None,
            &Item::new(),
            "2026-12-07T02:00:00Z",
            "2026-12-07T02:00:00.000Z",
        );
        assert!(matches!(stored_use_from_item(&applied).unwrap(), StoredUse::Applied(_)));
    }

    /// A pruned lot's expiry reads back from the attributes the history
    /// index projects, with the sort key it was written under.
    #[test]
    fn a_pruned_expiry_reads_back_as_written() {
        let u = Use {
            use_id: "order-7".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 3,
            reason: None,
        };
        for lot in [
            LotKey {
                from: 0,
                until: Some(1_700_000_000),
            },
            LotKey {
                from: 1_690_000_000,
                until: Some(1_700_000_000),
            },
        ] {
            let item = expiry_entry(&u, lot, 40).expect("an expiring lot");
            let entry = history_from_item(&item).unwrap();
            assert_eq!(Some(&entry), pruned_expiry("PT", lot, 40, "order-7").as_ref());
            assert_eq!(item.string("hist_sk"), Some(entry.sort_key().as_str()));
            assert_eq!((entry.amount, entry.kind), (-40, EntryKind::Expiry));
        }
        assert!(expiry_entry(&u, LotKey::PLAIN, 40).is_none());
    }

    #[test]
    fn job_item_round_trips() {
        let new = NewJob {
            job_id: JobId::random(),
            request_hash: "abc".into(),
            total: 10,
            deduplicated: 2,
            messages: 1,
            source: Some("s3://b/imports/k.csv".into()),
            reading: true,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            audit: None,
        };
        assert_eq!(job_from_item(&job_to_item(&new)).unwrap(), Job::from_new(&new));
    }

    #[test]
    fn a_settled_job_whose_completion_stamp_is_missing_reads_complete_as_of_its_last_update() {
        let new = NewJob {
            job_id: JobId::random(),
            request_hash: "abc".into(),
            total: 10,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            audit: None,
        };
        let mut item = job_to_item(&new);
        item.insert("applied".into(), n(9));
        assert_eq!(
            job_from_item(&item).unwrap().completed_at,
            None,
            "one accrual unsettled"
        );
        let last_fold = OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap();
        item.insert("applied".into(), n(10));
        item.insert("updated_at".into(), s(rfc3339(last_fold)));
        assert_eq!(job_from_item(&item).unwrap().completed_at, Some(last_fold));
        item.insert("reading".into(), AttributeValue::Bool(true));
        assert_eq!(
            job_from_item(&item).unwrap().completed_at,
            None,
            "more chunks may follow"
        );
    }
}
