//! The ports: small traits that speak the domain. The services in
//! [`crate::ingest`] and [`crate::worker`] only see these; each backend
//! (DynamoDB + SQS, in-memory, later embedded) implements them and must pass
//! the same contract suite (`tests/src/contract.rs`).

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    Accrual, Balance, CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob,
};
use crate::history::HistoryEntry;
use crate::lots::BalanceSheet;
use crate::reversal::{ReversalOutcome, ReversalTarget};
use crate::uses::{Use, UseOutcome};

/// Any error from a backend's client library, kept whole as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store throttled {operation} and retries were exhausted")]
    Throttled { operation: &'static str },
    #[error("{operation} kept conflicting with concurrent transactions and retries were exhausted")]
    Conflict { operation: &'static str },
    #[error("{operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("stored item {key} is malformed: {detail}")]
    Corrupt { key: String, detail: String },
}

impl StoreError {
    /// Whether trying again later may succeed (a queue redelivery will).
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Corrupt { .. })
    }
}

/// What applying a set of accruals did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Accruals now credited by this message: newly, or found already
    /// credited by this same message (a redelivery or a retried transaction).
    pub applied: u64,
    /// Of `applied`, those found already credited by this message.
    pub replayed: u64,
    /// Accruals skipped because another message (of another job, or another
    /// message of this job repeating the id) had credited their id.
    pub duplicate: u64,
    /// Store requests made (for requests-per-accrual accounting).
    pub requests: u64,
}

/// The ledger: credits accruals exactly once and keeps balances.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Credits each accrual whose id has never been credited, on behalf of
    /// message `by`, and says which were new. Per accrual, the ledger entry and
    /// the balance change happen together or not at all; safe to call again
    /// with the same accruals (nothing is credited twice).
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError>;

    /// A member's balances as stored, by point type (sorted): their lots and
    /// lifetime counters; empty for an unknown member.
    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError>;

    /// A member's available balances now, by point type (sorted); empty for
    /// an unknown member.
    async fn balances(&self, member_id: &str) -> Result<Vec<Balance>, StoreError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .balance_sheets(member_id)
            .await?
            .into_iter()
            .map(|sheet| Balance {
                balance: sheet.available(now),
                point_type: sheet.point_type,
            })
            .collect())
    }

    /// Deducts a use from its balance unless its `use_id` was applied before,
    /// taking the points available at `now` that expire soonest
    /// ([`BalanceSheet::plan_use`]). Recording the use and deducting happen
    /// together or not at all, and only while every lot it takes from holds
    /// what it takes — checked by the store in that same atomic write, so
    /// concurrent uses never overdraw a balance.
    async fn apply_use(&self, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError>;

    /// Reverses one credited accrual or applied use, once (a second call is
    /// a replay). An accrual's points leave the lot they went to, only while
    /// it still holds them all (else [`ReversalOutcome::AlreadySpent`]); a
    /// use's points go back to the lots it took them from. The entry's mark
    /// and the balance change are one atomic write.
    async fn reverse(&self, target: &ReversalTarget, now: OffsetDateTime) -> Result<ReversalOutcome, StoreError>;

    /// A member's stored history, newest first ([`HistoryEntry::sort_key`]
    /// descending): credits, uses and reversals (expiries follow from the
    /// lots, see [`crate::history::history_page`]), of `point_type` if
    /// given, with a sort key below `before` if given, at most `limit`.
    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// Result of creating a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateJob {
    Created(Job),
    /// A job with this id already existed: returned as stored.
    Existing(Job),
}

/// Jobs and their counts.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates the job unless one with its id exists, in which case the
    /// existing job is returned untouched.
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError>;

    /// Records that every message of the job has been queued.
    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError>;

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError>;

    /// Adds one message's counts to its job, once per `(job_id, seq)` however
    /// often it is called, and stamps `completed_at` when every accrual of the
    /// job is settled. One exception: a message whose accruals were counted
    /// `failed` (its last delivery failed) and is later applied (redriven from
    /// the DLQ) moves its counts from `failed` to `applied`/`duplicate`, once.
    /// `items` are the ids of the message's accruals (or uses), kept with
    /// its counts so that the job can be cancelled later
    /// ([`crate::cancel`]).
    /// Returns whether this call changed the job.
    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Adds one chunk's counts to its file job, once per `(job_id, index)`
    /// however often it is called. A final chunk ends the reading (and with
    /// [`crate::domain::ChunkEnd::Failed`] records the error); the job then
    /// completes once every queued accrual is settled, which may be at once.
    /// Returns whether this call did the recording.
    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Whether chunk `index` of the job has been recorded.
    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError>;

    /// Records that the job is being cancelled (the first call's time
    /// stays) and returns it; `None` if there is no such job.
    async fn begin_cancel(&self, job_id: JobId, now: OffsetDateTime) -> Result<Option<Job>, StoreError>;

    /// The item ids message `seq` of the job was folded with, and whether
    /// its cancel is recorded; `None` if it was never folded.
    async fn folded_items(&self, job_id: JobId, seq: u32) -> Result<Option<FoldedItems>, StoreError>;

    /// Adds one message's cancel counts to its job, once per `(job_id,
    /// seq)` however often it is called, and stamps the cancel complete when
    /// every message of the job is done. Returns whether this call recorded.
    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

/// A queue operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{unsent} of {total} messages could not be queued after retries")]
    Unsent {
        unsent: usize,
        total: usize,
        #[source]
        source: Option<BoxError>,
    },
    #[error("the queue refused a message: {reason}")]
    Rejected { reason: String },
    #[error("{operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// Handle to delete this delivery with.
    pub receipt_handle: String,
    pub body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// A queue with SQS semantics: at-least-once delivery, a visibility timeout,
/// redrive to a dead-letter queue after a number of receives.
#[async_trait]
pub trait AccrualQueue: Send + Sync {
    /// Queues every body, batching as the backend allows. All or error: an
    /// error means some bodies may not be queued (resending all is safe).
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError>;

    /// Receives up to `max` messages (at most 10 per call on SQS), waiting up
    /// to `wait` for the first.
    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes deliveries by receipt handle.
    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError>;

    /// Makes deliveries visible again at once, unprocessed (SQS: visibility
    /// timeout 0), e.g. after only looking at them.
    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError>;

    /// Requests made to the backend so far (for requests-per-accrual accounting).
    fn requests(&self) -> u64;
}
