//! The job store port: jobs, their counts, and what each message folded.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::{CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, NewJob};
use crate::ports::StoreError;

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
    /// ([`crate::services::cancel`]).
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

    /// Records that the job is being cancelled, by whom and why (`audit`;
    /// the first call's time and audit stay, a later call resumes the same
    /// cancel) and returns it; `None` if there is no such job.
    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError>;

    /// Begins the cancel of message `seq` of the job: from the moment this
    /// returns, no credit on behalf of that message can happen
    /// ([`crate::ports::Credits::apply_accruals`] of the same store checks it
    /// in its atomic write), whatever delivers it later (a redelivery, a
    /// DLQ redrive). Returns the item ids the message was folded with, and
    /// whether its cancel is recorded; `None` if it was never folded. Safe
    /// to call again.
    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError>;

    /// Adds one message's cancel counts to its job, once per `(job_id,
    /// seq)` however often it is called, and stamps the cancel complete when
    /// every message of the job is done: on every call, also one that
    /// records nothing, so calling again finishes a stamp an earlier call
    /// did not make. Returns whether this call recorded.
    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// The counts each folded message of the job recorded (its marker), by
    /// `seq`; messages not folded yet are absent. What
    /// [`crate::services::reconcile::reconcile_job`] recomputes the job's
    /// counts from. Reads every message of the job: an operator's tool, not
    /// a request path.
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError>;

    /// Replaces the job's `applied`, `duplicate`, `failed` and `refused` by
    /// `counts`, only if they still are `read`, as one conditional write
    /// (reconcile's repair). Returns whether it wrote; `false` means the job
    /// changed since it was read (a fold landed) or does not exist. It
    /// stamps no completion (the next fold does); `now` is the job's
    /// `updated_at` where the store keeps one.
    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}
