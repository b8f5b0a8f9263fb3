//! Job tracking on DynamoDB: [`JobStore`].
//!
//! A message's or an import chunk's counts reach its job once: a marker
//! item put under `attribute_not_exists(pk)` and the job's `ADD` go in one
//! transaction, so a redelivery finds the marker and adds nothing.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use time::OffsetDateTime;

use super::errors::{backend, is_throttling, single_call_error};
use super::items::{item_bytes, job_from_item, job_to_item, minus, n, rfc3339, s, ItemExt};
use super::job_list::list_entry_units;
use super::keys;
use super::transaction::{put_new, Meter, Request, Sent, OPERATION};
use super::{DynamoStore, Item};
use crate::domain::capacity::{write_units, WriteKind, MARKER_AND_UPDATE_UNITS, SMALL_WRITE_UNITS};
// Message markers, cancel items and chunk markers expire after 90 days
// (DynamoDB TTL on `expires_at`): longer than any delivery of a message the
// redrive rule lets through (`domain::retention`).
use crate::domain::audit::Audit;
use crate::domain::job_list::JobRange;
use crate::domain::retention::MARKER_TTL_SECONDS;
use crate::domain::{CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, NewJob};
use crate::ports::{CreateJob, JobStore, StoreError};

/// What a marker-and-update transaction found.
enum Marked {
    /// Marker written, job updated.
    Done,
    /// The marker existed (as returned): done by an earlier call.
    Before(Option<Item>),
    /// No such job.
    NoJob,
}

impl DynamoStore {
    /// A marker item (`pk`, `sk`, `attributes`, expiring after
    /// [`MARKER_TTL_SECONDS`]) put only if it does not exist yet.
    fn marker_put<const N: usize>(
        &self,
        (pk, sk): (String, &str),
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
        put_new(&self.table, marker)
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
        // The marker by its size (a message's item ids), the job update small.
        let request = Request::new(vec![marker, TransactWriteItem::builder().update(update).build()]);
        let mut tx = self.transaction(Meter::Jobs);
        loop {
            let cancel = match tx.send(&request).await? {
                Sent::Committed => return Ok(Marked::Done),
                Sent::Cancelled(cancel) => cancel,
            };
            if cancel.condition_failed(0) {
                return Ok(Marked::Before(cancel.old(0).cloned()));
            }
            if cancel.reasons.len() == 2 && cancel.condition_failed(1) {
                return Ok(Marked::NoJob);
            }
            tx.retry(cancel).await?;
        }
    }

    /// Replaces a message's counts, `before` (some or all `failed`), by
    /// `counts` once its accruals were applied after all (a DLQ redrive):
    /// the marker's condition `failed = :before` makes it happen once.
    async fn resettle(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        before: MessageCounts,
        now: &str,
    ) -> Result<bool, StoreError> {
        let failed_before = before.failed;
        // Signed: what was applied before stays in `counts` too.
        let delta = |now: u64, before: u64| AttributeValue::N((i128::from(now) - i128::from(before)).to_string());
        let marker = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::message_marker_key(job_id, seq)))
            .update_expression("SET applied = :a, duplicate = :d, refused = :r, failed = :zero, folded_at = :now")
            .condition_expression("failed = :before")
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":before", n(failed_before))
            .expression_attribute_values(":now", s(now))
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let job = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::job_key(job_id)))
            .update_expression("SET updated_at = :now ADD applied :a, duplicate :d, refused :r, failed :minus")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":a", delta(counts.applied, before.applied))
            .expression_attribute_values(":d", delta(counts.duplicate, before.duplicate))
            .expression_attribute_values(":r", delta(counts.refused, before.refused))
            .expression_attribute_values(":minus", minus(failed_before))
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let request = Request::new(vec![
            TransactWriteItem::builder().update(marker).build(),
            TransactWriteItem::builder().update(job).build(),
        ])
        .units(MARKER_AND_UPDATE_UNITS);
        let mut tx = self.transaction(Meter::Jobs);
        loop {
            let cancel = match tx.send(&request).await? {
                Sent::Committed => return Ok(true),
                Sent::Cancelled(cancel) => cancel,
            };
            // Only a failed condition means there is nothing left to do: the
            // marker no longer says `failed = before` (a concurrent delivery
            // resettled it), or the job is gone. A conflict or throttling
            // is retried, and what no retry mends is an error, so that the
            // message fails and its redelivery tries again.
            if cancel.condition_failed(0) || cancel.condition_failed(1) {
                return Ok(false);
            }
            tx.retry(cancel).await?;
        }
    }

    /// Sends a plain `UpdateItem` of an item that transactions also write
    /// (the job item, written by every fold and cancel record; a message's
    /// cancel item, condition-checked by every credit of the message).
    /// While a transaction holds the item DynamoDB refuses the update with
    /// `TransactionConflictException`, which the SDK does not retry: it is
    /// retried here with the store's backoff, like throttling. `Ok(None)`:
    /// the update's condition failed.
    async fn update_retrying<F>(&self, update: F) -> Result<Option<UpdateItemOutput>, StoreError>
    where
        F: Fn() -> UpdateItemFluentBuilder,
    {
        let mut attempt = 0;
        loop {
            self.count_small_write();
            let error = match update().send().await {
                Ok(output) => return Ok(Some(output)),
                Err(e) => e,
            };
            let conflict = match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => return Ok(None),
                Some(UpdateItemError::TransactionConflictException(_)) => true,
                _ if is_throttling(&error) => false,
                _ => return Err(single_call_error("UpdateItem", error)),
            };
            attempt += 1;
            if attempt >= self.backoff.max_attempts {
                let operation = "UpdateItem";
                return Err(if conflict {
                    StoreError::Conflict { operation }
                } else {
                    StoreError::Throttled { operation }
                });
            }
            self.backoff.sleep(attempt - 1).await;
        }
    }

    /// Stamps `completed_at` if every accrual of the job is settled and
    /// it is not stamped yet (else its condition fails: nothing to do).
    async fn try_complete(&self, job_id: JobId, now: &str) -> Result<(), StoreError> {
        self.update_retrying(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::job_key(job_id)))
                .update_expression("SET completed_at = :now")
                .condition_expression(
                    "attribute_exists(pk) AND remaining <= :zero AND reading = :no AND attribute_not_exists(completed_at)",
                )
                .expression_attribute_values(":now", s(now))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":no", AttributeValue::Bool(false))
        })
        .await
        .map(|_| ())
    }

    /// [`Self::try_complete`] after a fold or a chunk that committed: if
    /// it still fails, the fold stands (it must not be reported failed and
    /// redelivered for this) and the completion is left to the next call,
    /// or to the read ([`job_from_item`] derives it from the counts).
    async fn complete_after_commit(&self, job_id: JobId, now: &str) {
        if let Err(error) = self.try_complete(job_id, now).await {
            tracing::warn!(%job_id, error = %crate::ports::log_form(&error), "could not stamp the job's completion; its reads derive it");
        }
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        let item = job_to_item(job);
        // The item by its size (an audit can pass 1 KB); its `job_list`
        // index entry only once the put succeeded.
        let list_entry = list_entry_units(&item);
        self.count();
        self.write_units
            .charge_jobs(1, write_units(item_bytes(&item), WriteKind::Standard));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => {
                self.write_units.charge_jobs(0, list_entry);
                Ok(CreateJob::Created(Job::from_new(job)))
            }
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
            .set_key(Some(keys::job_key(job_id)))
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
            .set_key(Some(keys::job_key(job_id)))
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
            keys::message_marker(job_id, seq),
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
            .set_key(Some(keys::job_key(job_id)))
            .update_expression(
                "SET updated_at = :now ADD applied :a, duplicate :d, failed :f, refused :r, remaining :settled",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(&now_text))
            .expression_attribute_values(":a", n(counts.applied))
            .expression_attribute_values(":d", n(counts.duplicate))
            .expression_attribute_values(":f", n(counts.failed))
            .expression_attribute_values(":r", n(counts.refused))
            .expression_attribute_values(":settled", minus(counts.settled()))
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let folded = match self.marker_and_update(put, update).await? {
            Marked::Done => true,
            Marked::Before(old) => {
                let before = match &old {
                    Some(item) => MessageCounts {
                        applied: item.number("applied")?,
                        duplicate: item.number("duplicate")?,
                        failed: item.number("failed")?,
                        refused: item.number("refused")?,
                    },
                    None => MessageCounts::default(),
                };
                if before.failed > 0 && counts.failed == 0 && counts.settled() == before.settled() {
                    self.resettle(job_id, seq, counts, before, &now_text).await?
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
        self.complete_after_commit(job_id, &now_text).await;
        Ok(folded)
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        let now_text = rfc3339(now);
        let put = self.marker_put(
            keys::chunk_marker(job_id, chunk.index),
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
            .set_key(Some(keys::job_key(job_id)))
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
            .map_err(|e| backend(OPERATION, e))?;
        let recorded = match self.marker_and_update(put, update).await? {
            Marked::Done => true,
            Marked::Before(_) => false,
            Marked::NoJob => {
                tracing::warn!(%job_id, chunk = chunk.index, "chunk of an unknown job: counts not recorded");
                return Ok(false);
            }
        };
        if chunk.is_final() {
            self.complete_after_commit(job_id, &now_text).await;
        }
        Ok(recorded)
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.count();
        let key = keys::chunk_marker_key(job_id, index);
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

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        let now = rfc3339(now);
        // The first request's time and caller stay: asking again resumes.
        let (expression, audit) = match audit {
            Some(audit) => (
                "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now), \
                 cancel_audit = if_not_exists(cancel_audit, :audit)",
                Some(s(audit.to_json())),
            ),
            None => (
                "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now)",
                None,
            ),
        };
        let updated = self
            .update_retrying(|| {
                let request = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(keys::job_key(job_id)))
                    .update_expression(expression)
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":now", s(&now))
                    .return_values(ReturnValue::AllNew);
                match &audit {
                    Some(audit) => request.expression_attribute_values(":audit", audit.clone()),
                    None => request,
                }
            })
            .await?;
        // No such job: the condition failed.
        let Some(output) = updated else {
            return Ok(None);
        };
        // The update was counted as a small write; it is billed on the job
        // item after it (its audit and the cancel's included), which the
        // answer holds.
        if let Some(item) = output.attributes() {
            let units = write_units(item_bytes(item), WriteKind::Standard);
            self.write_units.charge_jobs(0, units.saturating_sub(SMALL_WRITE_UNITS));
        }
        output.attributes().map(job_from_item).transpose()
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        // A small item of its own, not an attribute of the (large) marker:
        // every credit transaction of the message condition-checks it.
        let (now_text, ttl) = (rfc3339(now), (now.unix_timestamp() + MARKER_TTL_SECONDS).to_string());
        self.update_retrying(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::cancel_begun_key(job_id, seq)))
                .update_expression(
                    "SET begun_at = if_not_exists(begun_at, :now), expires_at = if_not_exists(expires_at, :ttl)",
                )
                .expression_attribute_values(":now", s(&now_text))
                .expression_attribute_values(":ttl", AttributeValue::N(ttl.clone()))
        })
        .await?;
        self.count();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::message_marker_key(job_id, seq)))
            .consistent_read(true)
            .projection_expression("pk, #items, cancelled_at")
            .expression_attribute_names("#items", "items")
            .send()
            .await
            .map_err(|e| single_call_error("GetItem", e))?;
        Ok(output.item().map(|item| FoldedItems {
            items: item
                .string("items")
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
            .set_key(Some(keys::message_marker_key(job_id, seq)))
            .update_expression("SET cancelled_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(cancelled_at)")
            .expression_attribute_values(":now", s(&now_text))
            .build()
            .map_err(|e| backend(OPERATION, e))?;
        let job = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::job_key(job_id)))
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
            .map_err(|e| backend(OPERATION, e))?;
        // Recorded before (the marker's condition), or no such cancel.
        let recorded = matches!(
            self.guarded_pair(TransactWriteItem::builder().update(marker).build(), job)
                .await?,
            Marked::Done
        );
        // Also when recorded before: an earlier call may have died before
        // stamping the completion.
        // Other messages' cancel records hold the job item in transactions:
        // the stamp is retried past them. Its condition failing means other
        // messages are still to be done, or it is stamped already.
        self.update_retrying(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::job_key(job_id)))
                .update_expression("SET cancel_completed_at = :now")
                .condition_expression("cancel_messages >= messages AND attribute_not_exists(cancel_completed_at)")
                .expression_attribute_values(":now", s(&now_text))
        })
        .await?;
        Ok(recorded)
    }

    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.read_folded_counts(job_id).await
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write_job_counts(job_id, read, counts, now).await
    }

    async fn list_jobs(&self, range: &JobRange, limit: usize, now: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.list_jobs_newest_first(range, limit, now).await
    }
}
