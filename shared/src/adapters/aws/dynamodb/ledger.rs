//! The ledger on DynamoDB: [`Credits`], [`Debits`] and [`LedgerReads`].
//!
//! Crediting chunks a message's accruals into transactions of at most
//! [`MAX_TRANSACTION_ACTIONS`] actions ([`crate::domain::transaction_plan`]), one conditional put per ledger entry
//! plus one update per balance item (summed per lot), and recognises its own
//! earlier writes in the `CancellationReasons`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use time::OffsetDateTime;

use super::errors::{backend, single_call_error};
use super::items::{
    expiry_entry, history_from_item, item_bytes, ledger_entry, minus, n, refusal_entry, reversal_entry, rfc3339, s,
    sheet_from_item, stored_use_from_item, use_entry, ItemExt, StoredUse,
};
use super::keys;
use super::schema::HISTORY_INDEX;
use super::transaction::{put_new, Code, Meter, Request, Retry, Sent, OPERATION};
use super::{DynamoStore, Item};
use crate::domain::audit::Audit;
use crate::domain::capacity::{reversal_mark_bytes, write_units, WriteKind};
use crate::domain::history::{self, HistoryEntry};
use crate::domain::lots::{BalanceSheet, LotKey, UsePlan};
use crate::domain::reconcile::MemberLedger;
use crate::domain::reversal::{ReversalKind, ReversalOutcome, ReversalRecord, ReversalTarget};
use crate::domain::transaction_plan::{plan_transactions, request_token, sum_by_lot, use_expressions};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::{Accrual, MessageRef};
use crate::ports::{ApplyOutcome, CreditTally, Credits, Debits, LedgerReads, StoreError};

/// The update crediting a balance item (creating it if missing): each lot's
/// sum to its attribute (`balance` for the plain lot), the total to
/// `earned`, and `lots = true` once a lot other than the plain one exists.
pub(super) fn balance_update(
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
        .set_key(Some(keys::balance_key(member, point_type)))
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
        .map_err(|e| backend(OPERATION, e))
}

/// The actions crediting `accruals`: their ledger entries' puts, in order,
/// then one update per balance item, then (last) the check that the
/// message's cancel has not begun ([`keys::cancel_begun_key`]).
fn ledger_transaction(
    table: &str,
    by: MessageRef,
    accruals: &[&Accrual],
    now: &str,
    key_time: &str,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut items = Vec::with_capacity(accruals.len() * 2);
    for a in accruals {
        let put = put_new(table, ledger_entry(by, a, now, key_time))?;
        items.push(TransactWriteItem::builder().put(put).build());
    }
    for ((member, point_type), lots) in sum_by_lot(accruals) {
        let update = balance_update(table, member, point_type, &lots, now)?;
        items.push(TransactWriteItem::builder().update(update).build());
    }
    items.push(cancel_check(table, by)?);
    Ok(items)
}

/// The check that message `by`'s cancel has not begun: its cancel item is
/// absent ([`keys::cancel_begun_key`]).
fn cancel_check(table: &str, by: MessageRef) -> Result<TransactWriteItem, StoreError> {
    let check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(keys::cancel_begun_key(by.job_id, by.seq)))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| backend(OPERATION, e))?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

/// A use's balance update when the balance has only its plain lot: no read
/// needed. The condition fails if it holds too little or has other lots
/// (whose points must go first if they expire), and the use plans again.
fn use_update_plain(table: &str, u: &Use, now: &str) -> Result<(Update, Item), StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(keys::balance_key(&u.member_id, &u.point_type)))
        .update_expression("SET updated_at = :now ADD balance :minus, used :amount")
        .condition_expression("balance >= :amount AND attribute_not_exists(lots)")
        .expression_attribute_values(":now", s(now))
        .expression_attribute_values(":minus", minus(u.amount))
        .expression_attribute_values(":amount", n(u.amount))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(|e| backend(OPERATION, e))?;
    Ok((update, HashMap::from([("balance".to_owned(), n(u.amount))])))
}

/// A use's balance update taking `plan` from the lots, each under the
/// condition that its lot still holds what is taken: the overdraft guard. A
/// lot taken whole is removed ([`use_expressions`]).
fn use_update_lots(table: &str, u: &Use, plan: &UsePlan, now: &str) -> Result<(Update, Item), StoreError> {
    let expressions = use_expressions(plan, u.amount);
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(keys::balance_key(&u.member_id, &u.point_type)))
        .update_expression(expressions.update)
        .condition_expression(expressions.condition)
        .expression_attribute_values(":now", s(now))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    for (placeholder, name) in expressions.names {
        update = update.expression_attribute_names(placeholder, name);
    }
    for (placeholder, number) in expressions.values {
        update = update.expression_attribute_values(placeholder, AttributeValue::N(number));
    }
    let mut consumed = Item::new();
    for take in &plan.takes {
        let name = if take.key.is_plain() {
            "balance".to_owned()
        } else {
            take.key.attribute()
        };
        consumed.insert(name, n(take.amount));
    }
    let update = update.build().map_err(|e| backend(OPERATION, e))?;
    Ok((update, consumed))
}

impl DynamoStore {
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
        let mut tx = self.transaction(Meter::Ledger);
        let job = by.job_id.to_string();
        let seq = by.seq.to_string();
        while !remaining.is_empty() {
            let actions = ledger_transaction(&self.table, by, &remaining, now, key_time)?;
            let request = Request::new(actions).token(request_token(by, &remaining, now));
            let cancel = match tx.send(&request).await? {
                Sent::Committed => {
                    outcome.applied += remaining.len() as u64;
                    break;
                }
                Sent::Cancelled(cancel) => cancel,
            };
            let mut found = vec![false; remaining.len()];
            let mut retryable: Option<Retry> = None;
            let mut unmendable = false;
            let mut cancel_begun = false;
            let check = cancel.reasons.len().saturating_sub(1);
            for (index, reason) in cancel.reasons.iter().enumerate() {
                match reason.code {
                    Code::Passed => {}
                    // The last action: the message's cancel has begun.
                    Code::ConditionFailed if index == check && index >= remaining.len() => cancel_begun = true,
                    Code::ConditionFailed if index < remaining.len() => {
                        found[index] = true;
                        let owner = reason
                            .old
                            .as_ref()
                            .map(|item| (item.string("job_id"), item.number_text("seq")));
                        // Our own earlier write (a redelivery, or a retried
                        // transaction whose answer was lost): it counts as
                        // applied, not duplicate.
                        if owner == Some((Some(job.as_str()), Some(seq.as_str()))) {
                            outcome.applied += 1;
                            outcome.replayed += 1;
                        } else {
                            outcome.duplicate += 1;
                        }
                    }
                    Code::Conflict => retryable = retryable.or(Some(Retry::Conflict)),
                    Code::Throttled => retryable = retryable.or(Some(Retry::Throttled)),
                    // A failed condition of a balance update (which has
                    // none), or a reason no retry mends.
                    Code::ConditionFailed | Code::Other => {
                        unmendable = true;
                        break;
                    }
                }
            }
            if unmendable {
                return Err(cancel.into_error());
            }
            if cancel_begun {
                outcome.cancelled += found.iter().filter(|f| !**f).count() as u64;
                break;
            }
            let progressed = found.iter().any(|f| *f);
            let mut keep = found.iter().map(|f| !f);
            remaining.retain(|_| keep.next().unwrap_or(true));
            if progressed {
                // Retry the rest at once: nothing was contended.
                continue;
            }
            match retryable {
                Some(retry) => tx.back_off(retry).await?,
                None => return Err(cancel.into_error()),
            }
        }
        outcome.requests = tx.requests();
        Ok(outcome)
    }
}

#[async_trait]
impl Credits for DynamoStore {
    /// One consistent `GetItem` per id: only a message failing on its last
    /// delivery asks.
    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        let (job, seq) = (by.job_id.to_string(), by.seq.to_string());
        let mut tally = CreditTally::default();
        for id in accrual_ids {
            self.count();
            let entry = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(keys::entry_key(ReversalKind::Accrual, id)))
                .consistent_read(true)
                .projection_expression("job_id, seq")
                .send()
                .await
                .map_err(|e| single_call_error("GetItem", e))?;
            match entry.item() {
                Some(item)
                    if item.string("job_id") == Some(job.as_str()) && item.number_text("seq") == Some(seq.as_str()) =>
                {
                    tally.by_message += 1
                }
                Some(_) => tally.by_other += 1,
                None => tally.not_credited += 1,
            }
        }
        Ok(Some(tally))
    }

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
            if total.cancelled > 0 {
                // The cancel has begun: the rest would be refused alike.
                total.cancelled += chunk.len() as u64;
                continue;
            }
            let outcome = self.apply_chunk(by, &chunk, &now, &key_time).await?;
            total.applied += outcome.applied;
            total.replayed += outcome.replayed;
            total.duplicate += outcome.duplicate;
            total.cancelled += outcome.cancelled;
            total.requests += outcome.requests;
        }
        Ok(total)
    }
}

impl DynamoStore {
    /// A use, on behalf of message `by` if given: the entry records it, and
    /// the transaction checks (last action) that the message's cancel has
    /// not begun. A bulk use refused (too few points, too many lots) is
    /// recorded so under the use entry's key, so that no later delivery
    /// applies it ([`Self::refuse`]).
    // A refusal travels as the plan's error: an answer, not a failure, and
    // as large as an applied use's record (its audit included).
    #[allow(clippy::result_large_err)]
    async fn use_points(
        &self,
        by: Option<MessageRef>,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        let now_text = rfc3339(now);
        let key_time = history::key_time(now);
        // The balance item as last seen (through ALL_OLD): `None` until a
        // first attempt fails, which tries the fast path (plain lot only).
        let mut seen: Option<Option<Item>> = None;
        let mut tx = self.transaction(Meter::Ledger);
        loop {
            let planned = match &seen {
                None => use_update_plain(&self.table, u, &now_text)
                    .map(|(update, consumed)| Ok((update, consumed, Vec::new())))?,
                Some(None) => Err(UseOutcome::Insufficient { available: 0 }),
                Some(Some(item)) => match sheet_from_item(item)?.plan_use(u.amount, now) {
                    Ok(plan) => {
                        let (update, consumed) = use_update_lots(&self.table, u, &plan, &now_text)?;
                        Ok((update, consumed, plan.prunes))
                    }
                    Err(shortfall) => Err(shortfall.into()),
                },
            };
            let (update, consumed, prunes) = match (planned, by) {
                (Ok(planned), _) => planned,
                (Err(refusal), None) => return Ok(refusal),
                (Err(refusal), Some(by)) => match self.refuse(by, u, &now_text, refusal).await? {
                    Some(outcome) => return Ok(outcome),
                    // A use or refusal came first: read it by trying again.
                    None => {
                        seen = None;
                        continue;
                    }
                },
            };
            let entry = put_new(&self.table, use_entry(u, by, audit, &consumed, &now_text, &key_time))?;
            let mut actions = vec![
                TransactWriteItem::builder().put(entry).build(),
                TransactWriteItem::builder().update(update).build(),
            ];
            if let Some(by) = by {
                actions.push(cancel_check(&self.table, by)?);
            }
            // The expiries of the lots the update prunes, last: the actions
            // above keep their places. Plain puts: the use's entry commits
            // once, and so do they, under keys of that use.
            for lot in &prunes {
                if let Some(item) = expiry_entry(u, lot.key, lot.amount) {
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .build()
                        .map_err(|e| backend(OPERATION, e))?;
                    actions.push(TransactWriteItem::builder().put(put).build());
                }
            }
            let request = Request::new(actions);
            let cancel = match tx.send(&request).await? {
                Sent::Committed => return Ok(UseOutcome::Applied(UseRecord::of(u, now).with_audit(audit))),
                Sent::Cancelled(cancel) => cancel,
            };
            if cancel.condition_failed(2) {
                return Ok(UseOutcome::Cancelled);
            }
            if cancel.condition_failed(0) {
                return match cancel.old(0) {
                    Some(item) => stored_use_outcome(item, by, u),
                    None => Err(cancel.into_error()),
                };
            }
            if cancel.condition_failed(1) {
                // The balance is not what the plan assumed (it has lots,
                // holds too little, or a concurrent use took points first):
                // plan again from what it holds.
                let first = seen.is_none();
                seen = Some(cancel.old(1).filter(|item| !item.is_empty()).cloned());
                if !first {
                    tx.back_off(Retry::Conflict).await?;
                }
            } else {
                tx.retry(cancel).await?;
            }
        }
    }

    /// Records that message `by` refused `u` (`refusal`, the answer): a put
    /// under the use entry's key if nothing is there, with the check that
    /// the message's cancel has not begun, in one transaction (2 small
    /// actions; refusals are rare). `None` when an entry came first (a
    /// concurrent delivery applied or refused the use): the caller reads it.
    async fn refuse(
        &self,
        by: MessageRef,
        u: &Use,
        now: &str,
        refusal: UseOutcome,
    ) -> Result<Option<UseOutcome>, StoreError> {
        let mut tx = self.transaction(Meter::Ledger);
        let request = Request::new(vec![
            TransactWriteItem::builder()
                .put(put_new(&self.table, refusal_entry(u, by, now))?)
                .build(),
            cancel_check(&self.table, by)?,
        ]);
        loop {
            let cancel = match tx.send(&request).await? {
                Sent::Committed => return Ok(Some(refusal)),
                Sent::Cancelled(cancel) => cancel,
            };
            if cancel.condition_failed(1) {
                return Ok(Some(UseOutcome::Cancelled));
            }
            if cancel.condition_failed(0) {
                return Ok(None);
            }
            tx.retry(cancel).await?;
        }
    }
}

/// The answer to a use whose entry is already there: a replay of the same
/// use, the replay of this message's refusal, or an id taken by another
/// deduction (or refused on behalf of another message).
fn stored_use_outcome(item: &Item, by: Option<MessageRef>, u: &Use) -> Result<UseOutcome, StoreError> {
    Ok(match stored_use_from_item(item)? {
        StoredUse::Applied(record) if record.matches(u) => UseOutcome::Replayed(record),
        StoredUse::Refused(record, refused_by) if record.matches(u) && by == Some(refused_by) => {
            UseOutcome::RefusedBefore
        }
        StoredUse::Applied(record) | StoredUse::Refused(record, _) => UseOutcome::IdReused(record),
    })
}

#[async_trait]
impl Debits for DynamoStore {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        self.use_points(None, u, audit, now).await
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        self.use_points(Some(by), u, None, now).await
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        let kind = target.kind();
        let id = target.id();
        let entry_key = keys::entry_key(kind, id);
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
        // A refusal (a bulk use never applied) under a use's key: nothing
        // to give back.
        let Some(entry) = entry.item().filter(|entry| !entry.contains_key("refused_at")) else {
            return Ok(ReversalOutcome::NotFound);
        };
        if let Some(by) = target.by() {
            let seq = by.seq.to_string();
            let job = by.job_id.to_string();
            if entry.string("job_id") != Some(job.as_str()) || entry.number_text("seq") != Some(seq.as_str()) {
                return Ok(ReversalOutcome::NotFound);
            }
        }
        let member_id = entry
            .string("member_id")
            .ok_or_else(|| entry.corrupt("member_id missing"))?;
        let point_type = entry
            .string("point_type")
            .ok_or_else(|| entry.corrupt("point_type missing"))?;
        let amount = entry.number("amount")?;
        let record = |at: OffsetDateTime, audit: Option<Audit>| ReversalRecord {
            kind,
            id: id.to_owned(),
            member_id: member_id.to_owned(),
            point_type: point_type.to_owned(),
            amount,
            reversed_at: at,
            audit,
        };
        if let Some(at) = entry.time("reversed_at")? {
            return Ok(ReversalOutcome::Replayed(record(at, entry.audit("reversal_audit")?)));
        }
        let now_text = rfc3339(now);
        // The entry keeps who reversed it, so a replay answers with the
        // first reversal's record.
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(entry_key))
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(reversed_at)")
            .expression_attribute_values(":now", s(&now_text));
        let mark = match audit {
            Some(audit) => mark
                .update_expression("SET reversed_at = :now, reversal_audit = :audit")
                .expression_attribute_values(":audit", s(audit.to_json())),
            None => mark.update_expression("SET reversed_at = :now"),
        };
        let mark = mark
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let mut balance = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::balance_key(member_id, point_type)))
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":minus", minus(amount))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let lot_name = match kind {
            ReversalKind::Accrual => {
                let lot = LotKey::new(entry.time("apply_at")?, entry.time("expires_at")?);
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
                            _ => return Err(entry.corrupt(format!("consumed[{lot}] is not a number"))),
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
        let balance = balance.build().map_err(|e| backend(OPERATION, e))?;
        let reversal = reversal_entry(&record(now, audit.cloned()), &now_text, &history::key_time(now));
        // The mark writes the whole entry again (sized as it will be: an
        // update is charged on the larger of before and after), the balance
        // update is small; the mark changes no attribute the history index
        // projects, so only the reversal's entry is indexed.
        let marked = item_bytes(entry) + reversal_mark_bytes(now, audit);
        let units = write_units(marked, WriteKind::Transactional)
            + write_units(0, WriteKind::Transactional)
            + write_units(item_bytes(&reversal), WriteKind::Transactional);
        // Unconditional: the mark's condition already makes the whole
        // transaction happen once.
        let reversal = Put::builder()
            .table_name(&self.table)
            .set_item(Some(reversal))
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let request = Request::new(vec![
            TransactWriteItem::builder().update(mark).build(),
            TransactWriteItem::builder().update(balance).build(),
            TransactWriteItem::builder().put(reversal).build(),
        ])
        .units(units);
        let mut tx = self.transaction(Meter::Ledger);
        loop {
            let cancel = match tx.send(&request).await? {
                Sent::Committed => return Ok(ReversalOutcome::Reversed(record(now, audit.cloned()))),
                Sent::Cancelled(cancel) => cancel,
            };
            if cancel.condition_failed(0) {
                // Reversed by a concurrent call meanwhile.
                let old = cancel.old(0);
                let at = old.map(|item| item.time("reversed_at")).transpose()?.flatten();
                let first = old.map(|item| item.audit("reversal_audit")).transpose()?.flatten();
                return Ok(ReversalOutcome::Replayed(record(at.unwrap_or(now), first)));
            }
            if cancel.condition_failed(1) {
                let remaining = match (cancel.old(1), &lot_name) {
                    (Some(item), Some(name)) => item.number(name)?,
                    _ => 0,
                };
                return Ok(ReversalOutcome::AlreadySpent { remaining });
            }
            tx.retry(cancel).await?;
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
                .expression_attribute_values(":pk", s(keys::member_pk(member_id)))
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
                .expression_attribute_values(":pk", s(keys::member_pk(member_id)))
                .expression_attribute_values(":prefix", s(keys::BALANCE_PREFIX))
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

    async fn member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError> {
        self.read_member_ledger(member_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::accrual::sample as accrual;
    use crate::domain::JobId;

    /// AWS answers a resend of a token with different content with
    /// `IdempotentParameterMismatch`, which no retry mends: a token must
    /// name one transaction content only, whatever time it is sent at.
    #[test]
    fn a_request_token_never_names_two_different_transactions() {
        let a = accrual(1, 1, "P");
        let b = accrual(2, 1, "P");
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 3,
        };
        let request = |at: OffsetDateTime| {
            let items = ledger_transaction("t", by, &[&a, &b], &rfc3339(at), &history::key_time(at)).unwrap();
            (request_token(by, &[&a, &b], &rfc3339(at)), items)
        };
        let first = time::macros::datetime!(2026-11-29 17:00:00 UTC);
        // A redelivery after the visibility timeout, inside AWS's 10 minutes.
        let (token, items) = request(first);
        let (again, items_again) = request(first + time::Duration::seconds(360));
        assert!(
            token != again || items == items_again,
            "the same ClientRequestToken for two different transactions"
        );
        assert_eq!(request(first), (token, items), "the same content gives the same token");
    }
}
