//! DynamoDB adapter for [`Ledger`] and [`JobStore`]: one table, keys `pk`/`sk`.
//!
//! | item            | pk                    | sk          | written by |
//! |-----------------|-----------------------|-------------|------------|
//! | ledger entry    | `ACCRUAL#<accrual_id>`| `ACCRUAL`   | worker, `attribute_not_exists(pk)` |
//! | balance         | `MEMBER#<member_id>`  | `BALANCE#<point_type>` | worker, `ADD balance` |
//! | job             | `JOB#<job_id>`        | `JOB`       | ingest (create), worker (`ADD` counts) |
//! | message marker  | `MSG#<job_id>#<seq>`  | `MSG`       | worker, `attribute_not_exists(pk)` |
//!
//! All DynamoDB mechanics live here: chunking into ≤ 100-action
//! transactions, summing a transaction's accruals per balance item,
//! reading `CancellationReasons`, recognising our own earlier writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::adapters::retry::Backoff;
use crate::domain::capacity::{
    write_units, WriteCost, WriteKind, WriteMeter, MARKER_AND_UPDATE_UNITS, SMALL_WRITE_UNITS,
};
use crate::domain::history::{self, EntryKind, HistoryEntry};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reversal::{ReversalKind, ReversalOutcome, ReversalRecord, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::{
    Accrual, CancelCounts, CancelProgress, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob,
};
use crate::ports::{ApplyOutcome, CreateJob, JobStore, StoreError};
use crate::ports::{Credits, Debits, LedgerReads};
#[cfg(feature = "testkit")]
use crate::testkit::baseline::SingleWrites;

/// TransactWriteItems takes at most 100 actions.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// The global secondary index of members' histories (`hist_pk`, `hist_sk`).
pub const HISTORY_INDEX: &str = "history";

/// The attributes the history index projects besides its keys: what a
/// history entry shows. Not `reversed_at`, so that marking an entry reversed
/// writes no index entry; not `consumed` nor `seq`, which it does not show.
pub const HISTORY_PROJECTION: [&str; 12] = [
    "accrual_id",
    "use_id",
    "target_id",
    "reverses",
    "member_id",
    "point_type",
    "amount",
    "job_id",
    "applied_at",
    "reason",
    "apply_at",
    "expires_at",
];
/// Message markers expire after 30 days (DynamoDB TTL on `expires_at`): longer
/// than SQS's 14-day maximum retention, so no redelivery outlives its marker.
const MARKER_TTL_SECONDS: i64 = 30 * 24 * 3600;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB ledger and job store.
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    backoff: Backoff,
    requests: AtomicU64,
    write_units: WriteMeter,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            requests: AtomicU64::new(0),
            write_units: WriteMeter::new(),
        }
    }

    /// Replaces the retry policy for throttling and transaction conflicts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// DynamoDB requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Write requests and units so far, units by DynamoDB's sizing rules
    /// ([`crate::domain::capacity`]); failed conditional writes included.
    pub fn write_cost(&self) -> WriteCost {
        self.write_units.cost()
    }

    /// Counts a small standard write of job tracking.
    fn count_small_write(&self) {
        self.count();
        self.write_units.charge_jobs(1, SMALL_WRITE_UNITS);
    }

    /// Counts a failed attempt of a transaction: sleeps before the next, or
    /// gives up after the last.
    async fn back_off(&self, attempt: &mut u32, retry: Retry) -> Result<(), StoreError> {
        *attempt += 1;
        if *attempt >= self.backoff.max_attempts {
            let operation = "TransactWriteItems";
            return Err(match retry {
                Retry::Conflict => StoreError::Conflict { operation },
                Retry::Throttled => StoreError::Throttled { operation },
            });
        }
        self.backoff.sleep(*attempt - 1).await;
        Ok(())
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies one chunk (≤ 100 actions) until every accrual is credited or
    /// found credited. Returns the chunk's outcome.
    async fn apply_chunk(
        &self,
        by: MessageRef,
        chunk: &[&Accrual],
        now: &str,
        key_time: &str,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut outcome = ApplyOutcome::default();
        let mut remaining: Vec<&Accrual> = chunk.to_vec();
        let mut attempt = 0u32;
        let job = by.job_id.to_string();
        let seq = by.seq.to_string();
        while !remaining.is_empty() {
            let items = ledger_transaction(&self.table, by, &remaining, now, key_time)?;
            self.count();
            self.write_units.charge_ledger(1, transaction_units(&items));
            let indexed = index_units(
                items.iter().filter_map(|action| action.put()).map(|put| put.item()),
                WriteKind::Transactional,
            );
            outcome.requests += 1;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .client_request_token(request_token(by, &remaining))
                .send()
                .await;
            let error = match sent {
                Ok(_) => {
                    self.write_units.charge_ledger(0, indexed);
                    outcome.applied += remaining.len() as u64;
                    break;
                }
                Err(e) => e,
            };
            let retry = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let reasons = cancel.cancellation_reasons();
                    let mut found = vec![false; remaining.len()];
                    let mut retryable: Option<Retry> = None;
                    for (index, reason) in reasons.iter().enumerate() {
                        match reason.code() {
                            None | Some("None") => {}
                            Some("ConditionalCheckFailed") if index < remaining.len() => {
                                found[index] = true;
                                let owner = reason
                                    .item()
                                    .map(|item| (string_attr(item, "job_id"), number_text(item, "seq")));
                                // Our own earlier write (a redelivery, or a
                                // retried transaction whose answer was lost):
                                // it counts as applied, not duplicate.
                                if owner == Some((Some(job.as_str()), Some(seq.as_str()))) {
                                    outcome.applied += 1;
                                    outcome.replayed += 1;
                                } else {
                                    outcome.duplicate += 1;
                                }
                            }
                            other => match retry_of_reasons([other]) {
                                Some(r) => retryable = retryable.or(Some(r)),
                                None => return Err(backend("TransactWriteItems", error)),
                            },
                        }
                    }
                    let progressed = found.iter().any(|f| *f);
                    let mut keep = found.iter().map(|f| !f);
                    remaining.retain(|_| keep.next().unwrap_or(true));
                    if progressed {
                        // Retry the rest at once: nothing was contended.
                        continue;
                    }
                    match retryable {
                        Some(retry) => retry,
                        None => return Err(backend("TransactWriteItems", error)),
                    }
                }
                _ => match retry_of_error(&error) {
                    Some(retry) => retry,
                    None => return Err(backend("TransactWriteItems", error)),
                },
            };
            self.back_off(&mut attempt, retry).await?;
        }
        Ok(outcome)
    }

    /// A marker item (`pk`, `sk`, `attributes`, expiring after
    /// [`MARKER_TTL_SECONDS`]) put only if it does not exist yet.
    fn marker_put<const N: usize>(
        &self,
        pk: String,
        sk: &str,
        attributes: [(&str, AttributeValue); N],
        now: OffsetDateTime,
    ) -> Result<Put, StoreError> {
        let mut marker: Item = HashMap::from([
            ("pk".to_owned(), s(pk)),
            ("sk".to_owned(), s(sk)),
            (
                "expires_at".to_owned(),
                AttributeValue::N((now.unix_timestamp() + MARKER_TTL_SECONDS).to_string()),
            ),
        ]);
        marker.extend(attributes.into_iter().map(|(name, value)| (name.to_owned(), value)));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| backend("TransactWriteItems", e))
    }

    /// Runs "put this marker unless it exists + update this job if it exists"
    /// as one transaction, retrying conflicts and throttling.
    async fn marker_and_update(&self, marker: Put, update: Update) -> Result<Marked, StoreError> {
        self.guarded_pair(TransactWriteItem::builder().put(marker).build(), update)
            .await
    }

    /// Runs "write this marker if its condition holds + update this job if
    /// its condition holds" as one transaction, retrying conflicts and
    /// throttling; says which condition failed, if one did.
    async fn guarded_pair(&self, marker: TransactWriteItem, update: Update) -> Result<Marked, StoreError> {
        let items = vec![marker, TransactWriteItem::builder().update(update).build()];
        // The marker by its size (a message's item ids), the job update small.
        let units = transaction_units(&items);
        let mut attempt = 0u32;
        loop {
            self.count();
            self.write_units.charge_jobs(1, units);
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Marked::Done),
                Err(e) => e,
            };
            let retry = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let codes: Vec<Option<&str>> = cancel.cancellation_reasons().iter().map(|r| r.code()).collect();
                    match codes.as_slice() {
                        [Some("ConditionalCheckFailed"), ..] => {
                            let old = cancel.cancellation_reasons().first().and_then(|r| r.item().cloned());
                            return Ok(Marked::Before(old));
                        }
                        [_, Some("ConditionalCheckFailed")] => return Ok(Marked::NoJob),
                        codes => match retry_of_reasons(codes.iter().copied()) {
                            Some(retry) => retry,
                            None => return Err(backend("TransactWriteItems", error)),
                        },
                    }
                }
                _ => match retry_of_error(&error) {
                    Some(retry) => retry,
                    None => return Err(backend("TransactWriteItems", error)),
                },
            };
            self.back_off(&mut attempt, retry).await?;
        }
    }

    /// Moves a message's counts from `failed` to applied/duplicate once its
    /// accruals were applied after all (a DLQ redrive): the marker's
    /// condition `failed = :before` makes it happen once.
    async fn resettle(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        failed_before: u64,
        now: &str,
    ) -> Result<bool, StoreError> {
        let marker = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{job_id}#{seq}")))
            .key("sk", s("MSG"))
            .update_expression("SET applied = :a, duplicate = :d, refused = :r, failed = :zero, folded_at = :now")
            .condition_expression("failed = :before")
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":before", n(failed_before))
            .expression_attribute_values(":now", s(now))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let job = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression("SET updated_at = :now ADD applied :a, duplicate :d, refused :r, failed :minus")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":minus", AttributeValue::N(format!("-{failed_before}")))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        self.count();
        self.write_units.charge_jobs(1, MARKER_AND_UPDATE_UNITS);
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(marker).build())
            .transact_items(TransactWriteItem::builder().update(job).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Resettled by a concurrent delivery, or the job is gone.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) if is_throttling(&e) => Err(StoreError::Throttled {
                operation: "TransactWriteItems",
            }),
            Err(e) => Err(backend("TransactWriteItems", e)),
        }
    }

    async fn try_complete(&self, job_id: JobId, now: &str) -> Result<(), StoreError> {
        self.count_small_write();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression("SET completed_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND remaining <= :zero AND reading = :no AND attribute_not_exists(completed_at)",
            )
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(backend("UpdateItem", e)),
        }
    }
}

/// Groups accruals into transactions of at most [`MAX_TRANSACTION_ACTIONS`]
/// actions: one put per accrual plus one update per distinct balance.
pub fn plan_transactions(accruals: &[Accrual]) -> Vec<Vec<&Accrual>> {
    let mut chunks: Vec<Vec<&Accrual>> = Vec::new();
    let mut current: Vec<&Accrual> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for accrual in accruals {
        let new_key = !keys.contains(&accrual.balance_key());
        let actions = current.len() + keys.len() + 1 + usize::from(new_key);
        if actions > MAX_TRANSACTION_ACTIONS {
            chunks.push(std::mem::take(&mut current));
            keys.clear();
        }
        keys.insert(accrual.balance_key());
        current.push(accrual);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Sums accruals per balance item: DynamoDB refuses two actions on one item
/// in a transaction.
pub fn sum_by_balance<'a>(accruals: &[&'a Accrual]) -> BTreeMap<(&'a str, &'a str), u64> {
    let mut sums = BTreeMap::new();
    for a in accruals {
        *sums.entry((a.member_id.as_str(), a.point_type.as_str())).or_insert(0) += a.amount;
    }
    sums
}

/// Sums accruals per balance item and, within it, per lot.
pub fn sum_by_lot<'a>(accruals: &[&'a Accrual]) -> BTreeMap<(&'a str, &'a str), BTreeMap<LotKey, u64>> {
    let mut sums: BTreeMap<(&str, &str), BTreeMap<LotKey, u64>> = BTreeMap::new();
    for a in accruals {
        *sums
            .entry((a.member_id.as_str(), a.point_type.as_str()))
            .or_default()
            .entry(a.lot())
            .or_insert(0) += a.amount;
    }
    sums
}

/// What a marker-and-update transaction found.
enum Marked {
    /// Marker written, job updated.
    Done,
    /// The marker existed (as returned): done by an earlier call.
    Before(Option<Item>),
    /// No such job.
    NoJob,
}

/// The history index keys of a member's entry (`key_time`: [`history::key_time`]).
fn history_keys(
    member_id: &str,
    key_time: &str,
    kind: EntryKind,
    reverses: Option<ReversalKind>,
    id: &str,
) -> [(String, AttributeValue); 2] {
    [
        ("hist_pk".to_owned(), s(format!("MEMBER#{member_id}"))),
        ("hist_sk".to_owned(), s(history::sort_key(key_time, kind, reverses, id))),
    ]
}

/// The ledger entry of an accrual credited by message `by`, in its member's
/// history at `key_time`.
fn ledger_entry(by: MessageRef, a: &Accrual, now: &str, key_time: &str) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(format!("ACCRUAL#{}", a.accrual_id))),
        ("sk".to_owned(), s("ACCRUAL")),
        ("accrual_id".to_owned(), s(&a.accrual_id)),
        ("member_id".to_owned(), s(&a.member_id)),
        ("point_type".to_owned(), s(&a.point_type)),
        ("amount".to_owned(), n(a.amount)),
        ("job_id".to_owned(), s(by.job_id.to_string())),
        ("seq".to_owned(), n(u64::from(by.seq))),
        ("applied_at".to_owned(), s(now)),
    ]);
    item.extend(history_keys(
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

/// The update crediting a balance item (creating it if missing): each lot's
/// sum to its attribute (`balance` for the plain lot), the total to
/// `earned`, and `lots = true` once a lot other than the plain one exists.
fn balance_update(
    table: &str,
    member: &str,
    point_type: &str,
    lots: &BTreeMap<LotKey, u64>,
    now: &str,
) -> Result<Update, StoreError> {
    let mut set = "SET member_id = :m, point_type = :p, updated_at = :now".to_owned();
    let mut add = "ADD earned :earned".to_owned();
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(balance_key(member, point_type)))
        .expression_attribute_values(":m", s(member))
        .expression_attribute_values(":p", s(point_type))
        .expression_attribute_values(":now", s(now))
        .expression_attribute_values(":earned", n(lots.values().sum()));
    for (i, (lot, sum)) in lots.iter().enumerate() {
        if lot.is_plain() {
            add.push_str(", balance :plain");
            update = update.expression_attribute_values(":plain", n(*sum));
        } else {
            add.push_str(&format!(", #l{i} :l{i}"));
            update = update
                .expression_attribute_names(format!("#l{i}"), lot.attribute())
                .expression_attribute_values(format!(":l{i}"), n(*sum));
        }
    }
    if lots.keys().any(|lot| !lot.is_plain()) {
        set.push_str(", lots = :yes");
        update = update.expression_attribute_values(":yes", AttributeValue::Bool(true));
    }
    update
        .update_expression(format!("{set} {add}"))
        .build()
        .map_err(|e| backend("TransactWriteItems", e))
}

fn ledger_transaction(
    table: &str,
    by: MessageRef,
    accruals: &[&Accrual],
    now: &str,
    key_time: &str,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut items = Vec::with_capacity(accruals.len() * 2);
    for a in accruals {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(ledger_entry(by, a, now, key_time)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    for ((member, point_type), lots) in sum_by_lot(accruals) {
        let update = balance_update(table, member, point_type, &lots, now)?;
        items.push(TransactWriteItem::builder().update(update).build());
    }
    Ok(items)
}

/// A balance item's lots and counters.
fn sheet_from_item(item: &Item) -> Result<BalanceSheet, StoreError> {
    let point_type = string_attr(item, "point_type")
        .ok_or_else(|| corrupt(item, "point_type missing"))?
        .to_owned();
    let mut lots = Vec::new();
    let plain = number_attr(item, "balance")?;
    if plain > 0 {
        lots.push(Lot {
            key: LotKey::PLAIN,
            amount: plain,
        });
    }
    for name in item.keys() {
        if let Some(key) = LotKey::from_attribute(name) {
            let amount = number_attr(item, name)?;
            if amount > 0 {
                lots.push(Lot { key, amount });
            }
        }
    }
    lots.sort_by_key(|lot| lot.key);
    let used = number_attr(item, "used")?;
    // Balances credited before the counters existed have none: what they
    // hold plus what was used is what was earned.
    let earned = match item.get("earned") {
        Some(_) => number_attr(item, "earned")?,
        None => lots.iter().map(|lot| lot.amount).sum::<u64>() + used,
    };
    Ok(BalanceSheet {
        point_type,
        lots,
        earned,
        used,
    })
}

/// A use's balance update when the balance has only its plain lot: no read
/// needed. The condition fails if it holds too little or has other lots
/// (whose points must go first if they expire), and the use plans again.
fn use_update_plain(table: &str, u: &Use, now: &str) -> Result<(Update, Item), StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(balance_key(&u.member_id, &u.point_type)))
        .update_expression("SET updated_at = :now ADD balance :minus, used :amount")
        .condition_expression("balance >= :amount AND attribute_not_exists(lots)")
        .expression_attribute_values(":now", s(now))
        .expression_attribute_values(":minus", AttributeValue::N(format!("-{}", u.amount)))
        .expression_attribute_values(":amount", n(u.amount))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(|e| backend("TransactWriteItems", e))?;
    Ok((update, HashMap::from([("balance".to_owned(), n(u.amount))])))
}

/// A use's balance update taking `plan` from the lots, each under the
/// condition that its lot still holds what is taken: the overdraft guard.
fn use_update_lots(table: &str, u: &Use, plan: &[Lot], now: &str) -> Result<(Update, Item), StoreError> {
    let mut add = vec!["used :amount".to_owned()];
    let mut conditions = Vec::new();
    let mut consumed = Item::new();
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(balance_key(&u.member_id, &u.point_type)))
        .expression_attribute_values(":now", s(now))
        .expression_attribute_values(":amount", n(u.amount))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    for (i, take) in plan.iter().enumerate() {
        let name = if take.key.is_plain() {
            "balance".to_owned()
        } else {
            take.key.attribute()
        };
        update = update
            .expression_attribute_names(format!("#t{i}"), &name)
            .expression_attribute_values(format!(":minus{i}"), AttributeValue::N(format!("-{}", take.amount)))
            .expression_attribute_values(format!(":take{i}"), n(take.amount));
        add.push(format!("#t{i} :minus{i}"));
        conditions.push(format!("#t{i} >= :take{i}"));
        consumed.insert(name, n(take.amount));
    }
    let update = update
        .update_expression(format!("SET updated_at = :now ADD {}", add.join(", ")))
        .condition_expression(conditions.join(" AND "))
        .build()
        .map_err(|e| backend("TransactWriteItems", e))?;
    Ok((update, consumed))
}

/// The entry of a use; `consumed` says what it took from each lot.
fn use_entry(u: &Use, consumed: &Item, now: &str, key_time: &str) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(format!("USE#{}", u.use_id))),
        ("sk".to_owned(), s("USE")),
        ("use_id".to_owned(), s(&u.use_id)),
        ("member_id".to_owned(), s(&u.member_id)),
        ("point_type".to_owned(), s(&u.point_type)),
        ("amount".to_owned(), n(u.amount)),
        ("applied_at".to_owned(), s(now)),
        ("consumed".to_owned(), AttributeValue::M(consumed.clone())),
    ]);
    item.extend(history_keys(&u.member_id, key_time, EntryKind::Use, None, &u.use_id));
    if let Some(reason) = &u.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    item
}

/// The history entry of a reversal: an item of its own, so that the history
/// shows it at its own time.
fn reversal_entry(record: &ReversalRecord, now: &str, key_time: &str) -> Item {
    let tag = match record.kind {
        ReversalKind::Accrual => "ACCRUAL",
        ReversalKind::Use => "USE",
    };
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(format!("REVERSAL#{tag}#{}", record.id))),
        ("sk".to_owned(), s("REVERSAL")),
        ("reverses".to_owned(), s(tag.to_ascii_lowercase())),
        ("target_id".to_owned(), s(&record.id)),
        ("member_id".to_owned(), s(&record.member_id)),
        ("point_type".to_owned(), s(&record.point_type)),
        ("amount".to_owned(), n(record.amount)),
        ("applied_at".to_owned(), s(now)),
    ]);
    item.extend(history_keys(
        &record.member_id,
        key_time,
        EntryKind::Reversal,
        Some(record.kind),
        &record.id,
    ));
    item
}

/// A history entry from an item of the `history` index.
fn history_from_item(item: &Item) -> Result<HistoryEntry, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> {
        string_attr(item, name)
            .map(str::to_owned)
            .ok_or_else(|| corrupt(item, format!("{name} is missing")))
    };
    let at = |name: &str| -> Result<OffsetDateTime, StoreError> {
        time_attr(item, name)?.ok_or_else(|| corrupt(item, format!("{name} is missing")))
    };
    let pk = text("pk")?;
    if pk.starts_with("ACCRUAL#") {
        let job = text("job_id")?;
        let job_id = job
            .parse()
            .map(JobId)
            .map_err(|_| corrupt(item, format!("job_id is not a UUID: {job}")))?;
        let accrual = Accrual {
            accrual_id: text("accrual_id")?,
            member_id: text("member_id")?,
            point_type: text("point_type")?,
            amount: number_attr(item, "amount")?,
            reason: string_attr(item, "reason").map(str::to_owned),
            apply_at: time_attr(item, "apply_at")?,
            expires_at: time_attr(item, "expires_at")?,
        };
        Ok(HistoryEntry::accrual(&accrual, Some(job_id), at("applied_at")?))
    } else if pk.starts_with("USE#") {
        Ok(HistoryEntry::use_of(&use_from_item(item)?))
    } else if pk.starts_with("REVERSAL#") {
        let kind = match text("reverses")?.as_str() {
            "accrual" => ReversalKind::Accrual,
            "use" => ReversalKind::Use,
            other => return Err(corrupt(item, format!("reverses is not accrual or use: {other}"))),
        };
        Ok(HistoryEntry::reversal(&ReversalRecord {
            kind,
            id: text("target_id")?,
            member_id: text("member_id")?,
            point_type: text("point_type")?,
            amount: number_attr(item, "amount")?,
            reversed_at: at("applied_at")?,
        }))
    } else {
        Err(corrupt(item, "not a history entry"))
    }
}

fn use_from_item(item: &Item) -> Result<UseRecord, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> {
        string_attr(item, name)
            .map(str::to_owned)
            .ok_or_else(|| corrupt(item, format!("{name} is missing")))
    };
    Ok(UseRecord {
        use_id: text("use_id")?,
        member_id: text("member_id")?,
        point_type: text("point_type")?,
        amount: number_attr(item, "amount")?,
        reason: string_attr(item, "reason").map(str::to_owned),
        applied_at: time_attr(item, "applied_at")?.ok_or_else(|| corrupt(item, "applied_at is missing"))?,
    })
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

/// Write units of a transaction: puts by their item's size, updates as small
/// items (balances and jobs stay far below 1 KiB).
fn transaction_units(items: &[TransactWriteItem]) -> u64 {
    items
        .iter()
        .map(|action| {
            let bytes = action.put().map_or(0, |put| item_bytes(put.item()));
            write_units(bytes, WriteKind::Transactional)
        })
        .sum()
}

/// Write units of the history index entries a write of these items made:
/// charged only when the write succeeded, as a failed condition writes no
/// index ([`crate::domain::capacity::indexed_write_units`] for the rate).
fn index_units<'a>(items: impl IntoIterator<Item = &'a Item>, kind: WriteKind) -> u64 {
    items
        .into_iter()
        .filter(|item| item.contains_key("hist_pk"))
        .map(|item| write_units(item_bytes(item), kind))
        .sum()
}

/// ClientRequestToken: the same transaction content gives the same token, so
/// AWS treats a resend within 10 minutes as the same transaction (moto does
/// not; the `job_id` read back through `ALL_OLD` covers that case).
fn request_token(by: MessageRef, accruals: &[&Accrual]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{}#{}", by.job_id, by.seq).as_bytes());
    for a in accruals {
        hasher.update(b"\n");
        hasher.update(a.accrual_id.as_bytes());
    }
    // Tokens are at most 36 characters.
    hex::encode(hasher.finalize())[..36].to_owned()
}

/// Why a write may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Conflict,
    Throttled,
}

/// The retryable cause among a cancelled transaction's reasons (a conflict
/// before throttling); `None` if a reason is neither, nor a pass.
fn retry_of_reasons<'a>(codes: impl IntoIterator<Item = Option<&'a str>>) -> Option<Retry> {
    let mut retry = None;
    for code in codes {
        match code {
            None | Some("None") | Some("ConditionalCheckFailed") => {}
            Some("TransactionConflict") => retry = Some(Retry::Conflict),
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded") => {
                retry = retry.or(Some(Retry::Throttled))
            }
            Some(_) => return None,
        }
    }
    retry
}

/// Whether a failed `TransactWriteItems` call, other than a cancellation,
/// may succeed when tried again (transactions are safe to resend).
fn retry_of_error(
    error: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Retry> {
    match error.as_service_error() {
        Some(
            TransactWriteItemsError::TransactionInProgressException(_)
            | TransactWriteItemsError::InternalServerError(_),
        ) => Some(Retry::Conflict),
        Some(
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_),
        ) => Some(Retry::Throttled),
        _ if is_throttling(error) || is_transport(error) => Some(Retry::Throttled),
        _ => None,
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn balance_key(member_id: &str, point_type: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(format!("MEMBER#{member_id}"))),
        ("sk".to_owned(), s(format!("BALANCE#{point_type}"))),
    ])
}

fn job_key(job_id: JobId) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(format!("JOB#{job_id}"))),
        ("sk".to_owned(), s("JOB")),
    ])
}

/// A number attribute's text as stored (`None` if absent or not a number).
fn number_text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => Some(v),
        _ => None,
    }
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

fn corrupt(item: &Item, detail: impl Into<String>) -> StoreError {
    let key = [string_attr(item, "pk"), string_attr(item, "sk")]
        .iter()
        .map(|p| p.unwrap_or("?"))
        .collect::<Vec<_>>()
        .join("/");
    StoreError::Corrupt {
        key,
        detail: detail.into(),
    }
}

fn number_attr(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            // Counters may dip below zero only transiently (`remaining`); the
            // ones read here never do.
            v.parse::<u64>()
                .map_err(|_| corrupt(item, format!("{name} is not a whole number: {v}")))
        }
        None => Ok(0),
        Some(_) => Err(corrupt(item, format!("{name} is not a number"))),
    }
}

fn time_attr(item: &Item, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    match string_attr(item, name) {
        Some(v) => OffsetDateTime::parse(v, &Rfc3339)
            .map(Some)
            .map_err(|_| corrupt(item, format!("{name} is not an RFC 3339 time: {v}"))),
        None => Ok(None),
    }
}

fn job_from_item(item: &Item) -> Result<Job, StoreError> {
    let job_id = string_attr(item, "job_id")
        .and_then(|v| v.parse::<JobId>().ok())
        .ok_or_else(|| corrupt(item, "job_id missing or not a UUID"))?;
    Ok(Job {
        job_id,
        request_hash: string_attr(item, "request_hash").unwrap_or_default().to_owned(),
        total: number_attr(item, "total")?,
        deduplicated: number_attr(item, "deduplicated")?,
        messages: number_attr(item, "messages")?,
        source: string_attr(item, "source").map(str::to_owned),
        created_at: time_attr(item, "created_at")?.ok_or_else(|| corrupt(item, "created_at missing"))?,
        enqueued: matches!(item.get("enqueued"), Some(AttributeValue::Bool(true))),
        reading: matches!(item.get("reading"), Some(AttributeValue::Bool(true))),
        rejected: number_attr(item, "rejected")?,
        error: string_attr(item, "error").map(str::to_owned),
        applied: number_attr(item, "applied")?,
        duplicate: number_attr(item, "duplicate")?,
        failed: number_attr(item, "failed")?,
        // Missing on jobs recorded before bulk uses: 0.
        refused: number_attr(item, "refused")?,
        completed_at: time_attr(item, "completed_at")?,
        cancel: match time_attr(item, "cancel_requested_at")? {
            None => None,
            Some(requested_at) => Some(CancelProgress {
                requested_at,
                counts: CancelCounts {
                    reversed: number_attr(item, "cancel_reversed")?,
                    spent: number_attr(item, "cancel_spent")?,
                    skipped: number_attr(item, "cancel_skipped")?,
                },
                messages: number_attr(item, "cancel_messages")?,
                completed_at: time_attr(item, "cancel_completed_at")?,
            }),
        },
    })
}

fn job_to_item(job: &NewJob) -> Item {
    let mut item = job_key(job.job_id);
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
    item
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn backend<E>(operation: &'static str, error: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Backend {
        operation,
        source: Box::new(error),
    }
}

/// Network failures and 5xx answers: worth retrying after a pause (DynamoDB
/// documents 500 InternalServerError as retryable).
fn is_transport<E>(error: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => e.raw().status().is_server_error(),
        _ => false,
    }
}

fn is_throttling<E: ProvideErrorMetadata>(error: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool {
    matches!(
        error.as_service_error().and_then(|e| e.code()),
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded")
    ) || is_transport(error)
}

/// Maps an SDK error of a single-item call: throttling and transport errors
/// are transient, the rest is a backend failure.
fn single_call_error<E>(
    operation: &'static str,
    error: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_throttling(&error) {
        StoreError::Throttled { operation }
    } else {
        backend(operation, error)
    }
}

#[async_trait]
impl Credits for DynamoStore {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let key_time = history::key_time(now);
        let now = rfc3339(now);
        let mut total = ApplyOutcome::default();
        for chunk in plan_transactions(accruals) {
            let outcome = self.apply_chunk(by, &chunk, &now, &key_time).await?;
            total.applied += outcome.applied;
            total.replayed += outcome.replayed;
            total.duplicate += outcome.duplicate;
            total.requests += outcome.requests;
        }
        Ok(total)
    }
}

#[async_trait]
impl Debits for DynamoStore {
    async fn apply_use(&self, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        let now_text = rfc3339(now);
        let key_time = history::key_time(now);
        // The balance item as last seen (through ALL_OLD): `None` until a
        // first attempt fails, which tries the fast path (plain lot only).
        let mut seen: Option<Option<Item>> = None;
        let mut attempt = 0u32;
        loop {
            let (update, consumed) = match &seen {
                None => use_update_plain(&self.table, u, &now_text)?,
                Some(None) => return Ok(UseOutcome::Insufficient { available: 0 }),
                Some(Some(item)) => match sheet_from_item(item)?.plan_use(u.amount, now) {
                    Ok(plan) => use_update_lots(&self.table, u, &plan, &now_text)?,
                    Err(available) => return Ok(UseOutcome::Insufficient { available }),
                },
            };
            let entry = use_entry(u, &consumed, &now_text, &key_time);
            let units =
                write_units(item_bytes(&entry), WriteKind::Transactional) + write_units(0, WriteKind::Transactional);
            let indexed = index_units([&entry], WriteKind::Transactional);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(entry))
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .map_err(|e| backend("TransactWriteItems", e))?;
            self.count();
            self.write_units.charge_ledger(1, units);
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(update).build())
                .send()
                .await;
            let error = match result {
                Ok(_) => {
                    self.write_units.charge_ledger(0, indexed);
                    return Ok(UseOutcome::Applied(UseRecord::of(u, now)));
                }
                Err(e) => e,
            };
            let retry = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let reasons = cancel.cancellation_reasons();
                    let code = |i: usize| reasons.get(i).and_then(|r| r.code());
                    let old = |i: usize| reasons.get(i).and_then(|r| r.item());
                    if code(0) == Some("ConditionalCheckFailed") {
                        let record = match old(0) {
                            Some(item) => use_from_item(item)?,
                            None => return Err(backend("TransactWriteItems", error)),
                        };
                        return Ok(if record.matches(u) {
                            UseOutcome::Replayed(record)
                        } else {
                            UseOutcome::IdReused(record)
                        });
                    }
                    if code(1) == Some("ConditionalCheckFailed") {
                        // The balance is not what the plan assumed (it has
                        // lots, holds too little, or a concurrent use took
                        // points first): plan again from what it holds.
                        let first = seen.is_none();
                        seen = Some(old(1).filter(|item| !item.is_empty()).cloned());
                        if first {
                            continue;
                        }
                        Retry::Conflict
                    } else {
                        match retry_of_reasons((0..reasons.len()).map(code)) {
                            Some(retry) => retry,
                            None => return Err(backend("TransactWriteItems", error)),
                        }
                    }
                }
                _ => match retry_of_error(&error) {
                    Some(retry) => retry,
                    None => return Err(backend("TransactWriteItems", error)),
                },
            };
            self.back_off(&mut attempt, retry).await?;
        }
    }

    async fn reverse(&self, target: &ReversalTarget, now: OffsetDateTime) -> Result<ReversalOutcome, StoreError> {
        let (kind, prefix) = match target {
            ReversalTarget::Accrual(_) | ReversalTarget::CreditBy { .. } => (ReversalKind::Accrual, "ACCRUAL"),
            ReversalTarget::Use(_) => (ReversalKind::Use, "USE"),
        };
        let id = target.id();
        let entry_key: Item = HashMap::from([
            ("pk".to_owned(), s(format!("{prefix}#{id}"))),
            ("sk".to_owned(), s(prefix)),
        ]);
        self.count();
        let entry = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(entry_key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        let Some(entry) = entry.item() else {
            return Ok(ReversalOutcome::NotFound);
        };
        if let ReversalTarget::CreditBy { by, .. } = target {
            let seq = by.seq.to_string();
            let job = by.job_id.to_string();
            if string_attr(entry, "job_id") != Some(job.as_str()) || number_text(entry, "seq") != Some(seq.as_str()) {
                return Ok(ReversalOutcome::NotFound);
            }
        }
        let member_id = string_attr(entry, "member_id").ok_or_else(|| corrupt(entry, "member_id missing"))?;
        let point_type = string_attr(entry, "point_type").ok_or_else(|| corrupt(entry, "point_type missing"))?;
        let amount = number_attr(entry, "amount")?;
        let record = |at: OffsetDateTime| ReversalRecord {
            kind,
            id: id.to_owned(),
            member_id: member_id.to_owned(),
            point_type: point_type.to_owned(),
            amount,
            reversed_at: at,
        };
        if let Some(at) = time_attr(entry, "reversed_at")? {
            return Ok(ReversalOutcome::Replayed(record(at)));
        }
        let now_text = rfc3339(now);
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(entry_key))
            .update_expression("SET reversed_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(reversed_at)")
            .expression_attribute_values(":now", s(&now_text))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let mut balance = Update::builder()
            .table_name(&self.table)
            .set_key(Some(balance_key(member_id, point_type)))
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":minus", AttributeValue::N(format!("-{amount}")))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let lot_name = match kind {
            ReversalKind::Accrual => {
                let lot = LotKey::new(time_attr(entry, "apply_at")?, time_attr(entry, "expires_at")?);
                let name = if lot.is_plain() {
                    "balance".to_owned()
                } else {
                    lot.attribute()
                };
                balance = balance
                    .update_expression("SET updated_at = :now ADD #lot :minus, earned :minus")
                    .condition_expression("#lot >= :amount")
                    .expression_attribute_names("#lot", &name)
                    .expression_attribute_values(":amount", n(amount));
                Some(name)
            }
            ReversalKind::Use => {
                let mut add = vec!["used :minus".to_owned()];
                if let Some(AttributeValue::M(consumed)) = entry.get("consumed") {
                    for (i, (lot, given)) in consumed.iter().enumerate() {
                        let given = match given {
                            AttributeValue::N(v) => v.clone(),
                            _ => return Err(corrupt(entry, format!("consumed[{lot}] is not a number"))),
                        };
                        balance = balance
                            .expression_attribute_names(format!("#g{i}"), lot)
                            .expression_attribute_values(format!(":g{i}"), AttributeValue::N(given));
                        add.push(format!("#g{i} :g{i}"));
                    }
                }
                balance = balance.update_expression(format!("SET updated_at = :now ADD {}", add.join(", ")));
                None
            }
        };
        let balance = balance.build().map_err(|e| backend("TransactWriteItems", e))?;
        let reversal = reversal_entry(&record(now), &now_text, &history::key_time(now));
        // The mark changes no attribute the history index projects.
        let units = write_units(item_bytes(entry), WriteKind::Transactional)
            + write_units(0, WriteKind::Transactional)
            + write_units(item_bytes(&reversal), WriteKind::Transactional);
        let indexed = index_units([&reversal], WriteKind::Transactional);
        // Unconditional: the mark's condition already makes the whole
        // transaction happen once.
        let reversal = Put::builder()
            .table_name(&self.table)
            .set_item(Some(reversal))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let mut attempt = 0u32;
        loop {
            self.count();
            self.write_units.charge_ledger(1, units);
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(mark.clone()).build())
                .transact_items(TransactWriteItem::builder().update(balance.clone()).build())
                .transact_items(TransactWriteItem::builder().put(reversal.clone()).build())
                .send()
                .await;
            let error = match result {
                Ok(_) => {
                    self.write_units.charge_ledger(0, indexed);
                    return Ok(ReversalOutcome::Reversed(record(now)));
                }
                Err(e) => e,
            };
            let retry = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => {
                    let reasons = cancel.cancellation_reasons();
                    let code = |i: usize| reasons.get(i).and_then(|r| r.code());
                    let old = |i: usize| reasons.get(i).and_then(|r| r.item());
                    if code(0) == Some("ConditionalCheckFailed") {
                        // Reversed by a concurrent call meanwhile.
                        let at = old(0).map(|item| time_attr(item, "reversed_at")).transpose()?.flatten();
                        return Ok(ReversalOutcome::Replayed(record(at.unwrap_or(now))));
                    }
                    if code(1) == Some("ConditionalCheckFailed") {
                        let remaining = match (old(1), &lot_name) {
                            (Some(item), Some(name)) => number_attr(item, name)?,
                            _ => 0,
                        };
                        return Ok(ReversalOutcome::AlreadySpent { remaining });
                    }
                    match retry_of_reasons((0..reasons.len()).map(code)) {
                        Some(retry) => retry,
                        None => return Err(backend("TransactWriteItems", error)),
                    }
                }
                _ => match retry_of_error(&error) {
                    Some(retry) => retry,
                    None => return Err(backend("TransactWriteItems", error)),
                },
            };
            self.back_off(&mut attempt, retry).await?;
        }
    }
}

#[async_trait]
impl LedgerReads for DynamoStore {
    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        // Above every sort key (they start with a year's digits).
        let before = before.unwrap_or("~");
        while entries.len() < limit {
            self.count();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(HISTORY_INDEX)
                .key_condition_expression("hist_pk = :pk AND hist_sk < :before")
                .expression_attribute_values(":pk", s(format!("MEMBER#{member_id}")))
                .expression_attribute_values(":before", s(before))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - entries.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(point_type) = point_type {
                query = query
                    .filter_expression("point_type = :pt")
                    .expression_attribute_values(":pt", s(point_type));
            }
            let page = query.send().await.map_err(|e| single_call_error("Query", e))?;
            for item in page.items() {
                entries.push(history_from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(entries)
    }

    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError> {
        let mut sheets = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.count();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(format!("MEMBER#{member_id}")))
                .expression_attribute_values(":prefix", s("BALANCE#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| single_call_error("Query", e))?;
            for item in page.items() {
                sheets.push(sheet_from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        sheets.sort_by(|a, b| a.point_type.cmp(&b.point_type));
        Ok(sheets)
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        self.count_small_write();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(job_to_item(job)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateJob::Created(Job::from_new(job))),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(ccf)) => match ccf.item() {
                    Some(item) => Ok(CreateJob::Existing(job_from_item(item)?)),
                    None => match self.get_job(job.job_id).await? {
                        Some(existing) => Ok(CreateJob::Existing(existing)),
                        None => Err(backend("PutItem", e)),
                    },
                },
                _ => Err(single_call_error("PutItem", e)),
            },
        }
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.count_small_write();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression("SET enqueued = :yes")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| single_call_error("UpdateItem", e))?;
        Ok(())
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.count();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        output.item().map(job_from_item).transpose()
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now_text = rfc3339(now);
        let put = self.marker_put(
            format!("MSG#{job_id}#{seq}"),
            "MSG",
            [
                ("applied", n(counts.applied)),
                ("duplicate", n(counts.duplicate)),
                ("failed", n(counts.failed)),
                ("refused", n(counts.refused)),
                ("folded_at", s(&now_text)),
                // Ids cannot hold a newline: one string is the smallest item.
                ("items", s(items.join("\n"))),
            ],
            now,
        )?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression(
                "SET updated_at = :now ADD applied :a, duplicate :d, failed :f, refused :r, remaining :settled",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":f", n(counts.failed))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":settled", AttributeValue::N(format!("-{}", counts.settled())))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let folded = match self.marker_and_update(put, update).await? {
            Marked::Done => true,
            Marked::Before(old) => {
                let failed_before = old.as_ref().map_or(Ok(0), |item| number_attr(item, "failed"))?;
                if failed_before > 0 && counts.failed == 0 && counts.settled() == failed_before {
                    self.resettle(job_id, seq, counts, failed_before, &now_text).await?
                } else {
                    false
                }
            }
            Marked::NoJob => {
                tracing::warn!(%job_id, seq, "message of an unknown job: counts not recorded");
                return Ok(false);
            }
        };
        // Also on a redelivery: the earlier delivery may have died between
        // folding and stamping completion.
        self.try_complete(job_id, &now_text).await?;
        Ok(folded)
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        let now_text = rfc3339(now);
        let put = self.marker_put(
            format!("CHUNK#{job_id}#{}", chunk.index),
            "CHUNK",
            [("recorded_at", s(&now_text))],
            now,
        )?;
        // `remaining` grows by what this chunk queued; workers may already
        // have folded some of it (it dips below zero meanwhile), which is why
        // completion also waits for `reading` to turn false.
        let mut expression =
            "SET updated_at = :now ADD #total :acc, deduplicated :dedup, rejected :rej, messages :msgs, remaining :acc"
                .to_owned();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#total", "total")
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":acc", n(chunk.accepted))
            .expression_attribute_values(":dedup", n(chunk.deduplicated))
            .expression_attribute_values(":rej", n(chunk.rejected))
            .expression_attribute_values(":msgs", n(chunk.messages));
        if chunk.is_final() {
            expression = expression.replacen("SET ", "SET reading = :no, enqueued = :yes, ", 1);
            update = update
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":yes", AttributeValue::Bool(true));
            if let Some(reason) = chunk.failure() {
                expression = expression.replacen("SET ", "SET #error = :error, ", 1);
                update = update
                    .expression_attribute_names("#error", "error")
                    .expression_attribute_values(":error", s(reason));
            }
        }
        let update = update
            .update_expression(expression)
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let recorded = match self.marker_and_update(put, update).await? {
            Marked::Done => true,
            Marked::Before(_) => false,
            Marked::NoJob => {
                tracing::warn!(%job_id, chunk = chunk.index, "chunk of an unknown job: counts not recorded");
                return Ok(false);
            }
        };
        if chunk.is_final() {
            self.try_complete(job_id, &now_text).await?;
        }
        Ok(recorded)
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.count();
        let key: Item = HashMap::from([
            ("pk".to_owned(), s(format!("CHUNK#{job_id}#{index}"))),
            ("sk".to_owned(), s("CHUNK")),
        ]);
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .projection_expression("pk")
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        Ok(output.item().is_some())
    }

    async fn begin_cancel(&self, job_id: JobId, now: OffsetDateTime) -> Result<Option<Job>, StoreError> {
        self.count_small_write();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression("SET cancel_requested_at = if_not_exists(cancel_requested_at, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(rfc3339(now)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes().map(job_from_item).transpose(),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(single_call_error("UpdateItem", e)),
        }
    }

    async fn folded_items(&self, job_id: JobId, seq: u32) -> Result<Option<FoldedItems>, StoreError> {
        self.count();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(message_marker_key(job_id, seq)))
            .consistent_read(true)
            .projection_expression("pk, #items, cancelled_at")
            .expression_attribute_names("#items", "items")
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        Ok(output.item().map(|item| FoldedItems {
            items: string_attr(item, "items")
                .unwrap_or_default()
                .split('\n')
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
            cancelled: item.contains_key("cancelled_at"),
        }))
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now_text = rfc3339(now);
        let marker = Update::builder()
            .table_name(&self.table)
            .set_key(Some(message_marker_key(job_id, seq)))
            .update_expression("SET cancelled_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(cancelled_at)")
            .expression_attribute_values(":now", s(&now_text))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        let job = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression(
                "SET updated_at = :now ADD cancel_reversed :r, cancel_spent :s, cancel_skipped :k, cancel_messages :one",
            )
            .condition_expression("attribute_exists(cancel_requested_at)")
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":r", n(counts.reversed))
            .expression_attribute_values(":s", n(counts.spent))
            .expression_attribute_values(":k", n(counts.skipped))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| backend("TransactWriteItems", e))?;
        // Recorded before (the marker's condition), or no such cancel.
        let recorded = matches!(
            self.guarded_pair(TransactWriteItem::builder().update(marker).build(), job)
                .await?,
            Marked::Done
        );
        // Also when recorded before: an earlier call may have died before
        // stamping the completion.
        self.count_small_write();
        let stamped = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(job_id)))
            .update_expression("SET cancel_completed_at = :now")
            .condition_expression("cancel_messages >= messages AND attribute_not_exists(cancel_completed_at)")
            .expression_attribute_values(":now", s(&now_text))
            .send()
            .await;
        match stamped {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) => {}
            Err(e) => return Err(single_call_error("UpdateItem", e)),
        }
        Ok(recorded)
    }
}

/// The key of message `seq`'s marker (its counts, item ids, cancel).
fn message_marker_key(job_id: JobId, seq: u32) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(format!("MSG#{job_id}#{seq}"))),
        ("sk".to_owned(), s("MSG")),
    ])
}

/// The naive baseline's writes: a conditional `PutItem` of the ledger entry
/// and a separate `UpdateItem` of the balance, each its own request.
#[cfg(feature = "testkit")]
#[async_trait]
impl SingleWrites for DynamoStore {
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError> {
        let item = ledger_entry(by, accrual, &rfc3339(now), &history::key_time(now));
        self.count();
        self.write_units
            .charge_ledger(1, write_units(item_bytes(&item), WriteKind::Standard));
        let indexed = index_units([&item], WriteKind::Standard);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => {
                self.write_units.charge_ledger(0, indexed);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(single_call_error("PutItem", e)),
        }
    }

    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError> {
        let update = balance_update(
            &self.table,
            &accrual.member_id,
            &accrual.point_type,
            &BTreeMap::from([(accrual.lot(), accrual.amount)]),
            &rfc3339(now),
        )?;
        self.count();
        self.write_units.charge_ledger(1, SMALL_WRITE_UNITS);
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .send()
            .await
            .map_err(|e| single_call_error("UpdateItem", e))?;
        Ok(())
    }
}

/// Creates the Pointflow table (as `template.yaml` declares it) unless it
/// exists. For tests and local runs against an emulator (which creates
/// tables active at once).
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| backend("CreateTable", e))
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| backend("CreateTable", e))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .attribute_definitions(attribute("hist_pk")?)
        .attribute_definitions(attribute("hist_sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(HISTORY_INDEX)
                .key_schema(key("hist_pk", KeyType::Hash)?)
                .key_schema(key("hist_sk", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(HISTORY_PROJECTION.iter().map(|a| (*a).to_owned()).collect()))
                        .build(),
                )
                .build()
                .map_err(|e| backend("CreateTable", e))?,
        )
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        // Already there (a second local run): use it.
        Err(e) if matches!(e.as_service_error(), Some(CreateTableError::ResourceInUseException(_))) => Ok(()),
        Err(e) => Err(backend("CreateTable", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accrual(id: usize, member: usize, point_type: &str) -> Accrual {
        Accrual {
            accrual_id: format!("a{id}"),
            member_id: format!("m{member}"),
            point_type: point_type.into(),
            amount: 10,
            reason: None,
            apply_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn the_capacity_model_sizes_ledger_entries_as_written() {
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(99)),
            seq: 12_345,
        };
        let mut a = accrual(1, 2, "PT1");
        a.reason = Some("spring campaign".into());
        let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
        assert_eq!(item_bytes(&item), crate::domain::capacity::ledger_entry_bytes(&a, by));
        a.reason = None;
        let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
        assert_eq!(item_bytes(&item), crate::domain::capacity::ledger_entry_bytes(&a, by));
        a.apply_at = Some(
            OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap() + time::Duration::nanoseconds(123_456_789),
        );
        a.expires_at =
            Some(OffsetDateTime::from_unix_timestamp(1_827_619_200).unwrap() + time::Duration::nanoseconds(1));
        let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
        assert_eq!(item_bytes(&item), crate::domain::capacity::ledger_entry_bytes(&a, by));
    }

    #[test]
    fn the_capacity_model_sizes_use_entries_as_written() {
        let mut u = Use {
            use_id: "order-42".into(),
            member_id: "m0000001".into(),
            point_type: "PT".into(),
            amount: 1500,
            reason: Some("checkout".into()),
        };
        let plain = HashMap::from([("balance".to_owned(), n(u.amount))]);
        let item = use_entry(&u, &plain, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
        assert_eq!(item_bytes(&item), crate::domain::capacity::use_entry_bytes(&u));
        u.reason = None;
        let item = use_entry(&u, &plain, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
        assert_eq!(item_bytes(&item), crate::domain::capacity::use_entry_bytes(&u));
        let record = use_from_item(&item).unwrap();
        assert!(record.matches(&u));
    }

    #[test]
    fn cancellations_retry_on_conflict_or_throttling_only() {
        let codes = |c: &[Option<&'static str>]| retry_of_reasons(c.iter().copied());
        assert_eq!(
            codes(&[Some("None"), Some("TransactionConflict")]),
            Some(Retry::Conflict)
        );
        assert_eq!(
            codes(&[Some("ThrottlingError"), Some("TransactionConflict")]),
            Some(Retry::Conflict)
        );
        assert_eq!(
            codes(&[None, Some("ProvisionedThroughputExceeded")]),
            Some(Retry::Throttled)
        );
        assert_eq!(codes(&[Some("ConditionalCheckFailed"), Some("None")]), None);
        assert_eq!(codes(&[Some("ValidationError"), Some("TransactionConflict")]), None);
    }

    #[test]
    fn distinct_members_take_two_actions_each() {
        let accruals: Vec<Accrual> = (0..120).map(|i| accrual(i, i, "P")).collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
    }

    #[test]
    fn one_member_many_accruals_share_one_update() {
        let accruals: Vec<Accrual> = (0..150).map(|i| accrual(i, 1, "P")).collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [99, 51]);
        let sums = sum_by_balance(&chunks[0]);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("m1", "P")], 990);
    }

    #[test]
    fn every_chunk_fits_a_transaction() {
        let accruals: Vec<Accrual> = (0..1000)
            .map(|i| accrual(i, i % 37, if i % 3 == 0 { "A" } else { "B" }))
            .collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 1000);
        for chunk in chunks {
            let actions = chunk.len() + sum_by_balance(&chunk).len();
            assert!(actions <= MAX_TRANSACTION_ACTIONS, "{actions}");
        }
    }

    #[test]
    fn request_token_is_short_and_content_bound() {
        let a = accrual(1, 1, "P");
        let b = accrual(2, 1, "P");
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 3,
        };
        let t1 = request_token(by, &[&a, &b]);
        assert_eq!(t1.len(), 36);
        assert_eq!(t1, request_token(by, &[&a, &b]));
        assert_ne!(t1, request_token(by, &[&a]));
        assert_ne!(t1, request_token(MessageRef { seq: 4, ..by }, &[&a, &b]));
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
        };
        assert_eq!(job_from_item(&job_to_item(&new)).unwrap(), Job::from_new(&new));
    }
}
