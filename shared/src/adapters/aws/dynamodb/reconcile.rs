//! What reconcile reads and writes on DynamoDB: a member's whole ledger
//! (from the `history` index, plus each use's own entry for what it took)
//! and the conditional rewrite of one balance item; a job's folded counts
//! (its message markers) and the conditional rewrite of the job's counts.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::errors::single_call_error;
use super::items::{n, rfc3339, s, ItemExt};
use super::keys;
use super::schema::HISTORY_INDEX;
use super::{DynamoStore, Item};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reconcile::{CreditEntry, ExpiryEntry, MemberLedger, UseEntry};
use crate::domain::{JobId, MessageCounts};
use crate::ports::{LedgerRepairs, StoreError};

impl DynamoStore {
    /// Every item of the member's history index, oldest first. The index is
    /// eventually consistent: an entry written a moment ago may be missing
    /// (docs/operations.md, "reconcile").
    async fn member_history_items(&self, member_id: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.count();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(HISTORY_INDEX)
                .key_condition_expression("hist_pk = :pk")
                .expression_attribute_values(":pk", s(keys::member_pk(member_id)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| single_call_error("Query", e))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// What a use took from each lot, from its own entry (the index does
    /// not project `consumed`), read consistently.
    async fn use_consumed(&self, use_id: &str) -> Result<Vec<Lot>, StoreError> {
        self.count();
        let (pk, sk) = keys::use_entry(use_id);
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        let Some(entry) = got.item() else {
            return Err(StoreError::Corrupt {
                key: format!("USE#{use_id}"),
                detail: "in the history index but not in the table".into(),
            });
        };
        let mut lots = Vec::new();
        if let Some(AttributeValue::M(consumed)) = entry.get("consumed") {
            for (name, amount) in consumed {
                let key = if name == "balance" {
                    LotKey::PLAIN
                } else {
                    LotKey::from_attribute(name)
                        .ok_or_else(|| entry.corrupt(format!("consumed lot {name:?} is not a lot name")))?
                };
                let amount = match amount {
                    AttributeValue::N(v) => v
                        .parse()
                        .map_err(|_| entry.corrupt(format!("consumed[{name}] is not a whole number")))?,
                    _ => return Err(entry.corrupt(format!("consumed[{name}] is not a number"))),
                };
                lots.push(Lot { key, amount });
            }
        }
        Ok(lots)
    }

    /// [`crate::ports::LedgerReads::member_ledger`]: credits from the index
    /// (it projects their amount and lot times), reversals from the
    /// reversal entries, uses from the index and their own entries.
    pub(super) async fn read_member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError> {
        let items = self.member_history_items(member_id).await?;
        let mut reversed: HashSet<(String, String)> = HashSet::new();
        for item in &items {
            if item.required_string("pk")?.starts_with(keys::REVERSAL_PREFIX) {
                reversed.insert((item.required_string("reverses")?, item.required_string("target_id")?));
            }
        }
        let is_reversed = |kind: &str, id: &str| reversed.contains(&(kind.to_owned(), id.to_owned()));
        let mut ledger = MemberLedger::default();
        for item in &items {
            let pk = item.required_string("pk")?;
            if pk.starts_with(keys::ACCRUAL_PREFIX) {
                let accrual_id = item.required_string("accrual_id")?;
                ledger.credits.push(CreditEntry {
                    point_type: item.required_string("point_type")?,
                    amount: item.number("amount")?,
                    lot: LotKey::new(item.time("apply_at")?, item.time("expires_at")?),
                    reversed: is_reversed("accrual", &accrual_id),
                    accrual_id,
                });
            } else if pk.starts_with(keys::USE_PREFIX) {
                let use_id = item.required_string("use_id")?;
                ledger.uses.push(UseEntry {
                    point_type: item.required_string("point_type")?,
                    amount: item.number("amount")?,
                    consumed: self.use_consumed(&use_id).await?,
                    reversed: is_reversed("use", &use_id),
                    use_id,
                });
            } else if pk.starts_with(keys::EXPIRY_PREFIX) {
                // A lot a use pruned: its times name the lot.
                ledger.expiries.push(ExpiryEntry {
                    point_type: item.required_string("point_type")?,
                    lot: LotKey::new(item.time("apply_at")?, item.time("expires_at")?),
                    amount: item.number("amount")?,
                });
            }
        }
        Ok(ledger)
    }
}

impl DynamoStore {
    /// [`crate::ports::JobStore::folded_counts`]: the job's `messages`, then
    /// each marker `MSG#<job>#<seq>` for `seq` in `0..messages`, one
    /// consistent `GetItem` each (only the counts are projected: a marker
    /// also holds up to 260 KB of ids).
    pub(super) async fn read_folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        let Some(job) = crate::ports::JobStore::get_job(self, job_id).await? else {
            return Ok(Vec::new());
        };
        let messages = u32::try_from(job.messages).unwrap_or(u32::MAX);
        let mut counts = Vec::new();
        for seq in 0..messages {
            self.count();
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(keys::message_marker_key(job_id, seq)))
                .projection_expression("applied, duplicate, failed, refused")
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| single_call_error("GetItem", e))?;
            if let Some(marker) = got.item() {
                counts.push((
                    seq,
                    MessageCounts {
                        applied: marker.number("applied")?,
                        duplicate: marker.number("duplicate")?,
                        failed: marker.number("failed")?,
                        refused: marker.number("refused")?,
                    },
                ));
            }
        }
        Ok(counts)
    }

    /// [`crate::ports::JobStore::replace_job_counts`]: one `UpdateItem`
    /// setting the four counts and moving `remaining` by the change in what
    /// is settled, under the condition that the counts are still those read
    /// (`refused`, absent on a job no use was refused in, passes when read
    /// as 0).
    pub(super) async fn write_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let settled_change = i128::from(counts.settled()) - i128::from(read.settled());
        let refused = if read.refused == 0 {
            "(refused = :rr OR attribute_not_exists(refused))"
        } else {
            "refused = :rr"
        };
        self.count_small_write();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::job_key(job_id)))
            .update_expression(
                "SET applied = :a, duplicate = :d, failed = :f, refused = :r, updated_at = :now ADD remaining :left",
            )
            .condition_expression(format!(
                "attribute_exists(pk) AND applied = :ra AND duplicate = :rd AND failed = :rf AND {refused}"
            ))
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":f", n(counts.failed))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":ra", n(read.applied))
            .expression_attribute_values(":rd", n(read.duplicate))
            .expression_attribute_values(":rf", n(read.failed))
            .expression_attribute_values(":rr", n(read.refused))
            .expression_attribute_values(":now", s(rfc3339(now)))
            // `remaining` counts down as accruals settle.
            .expression_attribute_values(":left", AttributeValue::N((-settled_change).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(
                    UpdateItemError::ConditionalCheckFailedException(_)
                    | UpdateItemError::TransactionConflictException(_),
                ) => Ok(false),
                _ => Err(single_call_error("UpdateItem", e)),
            },
        }
    }
}

/// The name of a lot's attribute on the balance item.
fn lot_attribute(key: LotKey) -> String {
    if key.is_plain() {
        "balance".to_owned()
    } else {
        key.attribute()
    }
}

#[async_trait]
impl LedgerRepairs for DynamoStore {
    /// One `UpdateItem`: `SET` every lot of `sheet`, `earned`, `used` and `expired`,
    /// `REMOVE` the lots read that `sheet` does not hold, under the
    /// condition that `earned`, `used`, `expired` and every lot read still hold what
    /// was read (an item without `earned`, written before the counter
    /// existed, passes on `attribute_not_exists`: its first credit adds it;
    /// so does an item without `used` read as using 0: no use ever wrote it).
    /// Its expressions grow with the lots, about 3 operators per lot
    /// against DynamoDB's 300: a balance of more than about 90 lots is
    /// refused by DynamoDB and reported as an error, never half written.
    async fn replace_balance_sheet(
        &self,
        member_id: &str,
        read: Option<&BalanceSheet>,
        sheet: &BalanceSheet,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut names: HashMap<String, String> = HashMap::new();
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":m".to_owned(), s(member_id)),
            (":p".to_owned(), s(&sheet.point_type)),
            (":now".to_owned(), s(rfc3339(now))),
            (":earned".to_owned(), n(sheet.earned)),
            (":used".to_owned(), n(sheet.used)),
            (":expired".to_owned(), n(sheet.expired)),
        ]);
        let mut set = vec![
            "member_id = :m".to_owned(),
            "point_type = :p".to_owned(),
            "updated_at = :now".to_owned(),
            "earned = :earned".to_owned(),
            "used = :used".to_owned(),
            "expired = :expired".to_owned(),
        ];
        let plain = sheet
            .lots
            .iter()
            .find(|lot| lot.key.is_plain())
            .map_or(0, |lot| lot.amount);
        set.push("balance = :plain".to_owned());
        values.insert(":plain".to_owned(), n(plain));
        for (i, lot) in sheet.lots.iter().filter(|lot| !lot.key.is_plain()).enumerate() {
            names.insert(format!("#s{i}"), lot.key.attribute());
            values.insert(format!(":s{i}"), n(lot.amount));
            set.push(format!("#s{i} = :s{i}"));
        }
        if sheet.lots.iter().any(|lot| !lot.key.is_plain()) {
            set.push("lots = :yes".to_owned());
            values.insert(":yes".to_owned(), AttributeValue::Bool(true));
        }
        let mut remove = Vec::new();
        let condition = match read {
            None => "attribute_not_exists(pk)".to_owned(),
            Some(read) => {
                values.insert(":read_earned".to_owned(), n(read.earned));
                values.insert(":read_used".to_owned(), n(read.used));
                // A balance never used has no `used` attribute (credits
                // only `ADD earned`), which the read saw as 0.
                let used = if read.used == 0 {
                    "(used = :read_used OR attribute_not_exists(used))"
                } else {
                    "used = :read_used"
                };
                // Likewise `expired`, until a use first prunes a lot.
                values.insert(":read_expired".to_owned(), n(read.expired));
                let expired = if read.expired == 0 {
                    "(expired = :read_expired OR attribute_not_exists(expired))"
                } else {
                    "expired = :read_expired"
                };
                let mut condition = vec![
                    "(earned = :read_earned OR attribute_not_exists(earned))".to_owned(),
                    used.to_owned(),
                    expired.to_owned(),
                ];
                for (i, lot) in read.lots.iter().enumerate() {
                    names.insert(format!("#r{i}"), lot_attribute(lot.key));
                    values.insert(format!(":r{i}"), n(lot.amount));
                    condition.push(format!("#r{i} = :r{i}"));
                    if !lot.key.is_plain() && !sheet.lots.iter().any(|kept| kept.key == lot.key) {
                        remove.push(format!("#r{i}"));
                    }
                }
                condition.join(" AND ")
            }
        };
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        self.count_small_write();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::balance_key(member_id, &sheet.point_type)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                // Changed since it was read (or being changed): read again.
                Some(
                    UpdateItemError::ConditionalCheckFailedException(_)
                    | UpdateItemError::TransactionConflictException(_),
                ) => Ok(false),
                _ => Err(single_call_error("UpdateItem", e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_lot_is_the_balance_attribute() {
        assert_eq!(lot_attribute(LotKey::PLAIN), "balance");
        let lot = LotKey { from: 5, until: None };
        assert_eq!(lot_attribute(lot), "L#5#-");
    }
}
