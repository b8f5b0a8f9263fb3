//! Cancelling a whole job: every accrual it credited is reversed, once,
//! by the same rule as a single reversal ([`crate::domain::reversal`]): points
//! already spent are not taken back (counted `spent`), and an id the job
//! did not credit itself (another job had, or its message failed) is left
//! alone (counted `skipped`). A bulk-use job's uses are given back the same
//! way: each use its message applied is reversed (`reversed`), the rest
//! (refused, failed, or an id another deduction holds) are `skipped`.
//!
//! Work goes message by message, from the item ids each message's fold
//! recorded ([`JobStore::begin_message_cancel`], which first stops every
//! later credit or use of the message: a message still queued, redelivered
//! or redriven from the DLQ after its cancel credits or deducts nothing, so
//! a `skipped` item stays unapplied for good). A message's counts are recorded
//! once, after all its reversals; reversals are idempotent, so a cancel
//! that stops part-way (a crash, a throttled table) is finished by running
//! it again: done messages are skipped, a half-done one is redone and its
//! earlier reversals replay.

use futures::stream::{self, StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tracing::info;

use crate::domain::audit::Audit;
use crate::domain::message::QueueMessage;
use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
use crate::domain::{CancelCounts, Job, JobId, MessageRef};
use crate::ports::{Debits, JobStore, QueueError, StoreError, WorkQueue};

/// Why a job cannot be cancelled (now).
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error(
        "job {job_id} is still running ({settled} of {total} settled); wait until it completes (pointflow wait), \
         then cancel it"
    )]
    Running { job_id: JobId, settled: u64, total: u64 },
    #[error(
        "message {seq} of job {job_id} has no record of its accruals (message records are kept 90 days); \
         reverse its accruals one by one instead"
    )]
    Forgotten { job_id: JobId, seq: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cancel could not be queued; ask again")]
    Queue(#[from] QueueError),
}

/// Asks for job `job_id` to be cancelled by the workers: records the
/// cancel and queues one cancel message per message of the job (each
/// skipped by the worker once done, so asking again resumes a cancel
/// whose messages were lost or dead-lettered). Returns the job as it
/// stands.
/// `audit` says who asked and why (kept from the first request).
pub async fn request_cancel(
    jobs: &dyn JobStore,
    queue: &dyn WorkQueue,
    job_id: JobId,
    audit: Option<&Audit>,
) -> Result<Job, CancelError> {
    let job = begin(jobs, job_id, audit).await?;
    if is_done(&job) {
        return Ok(job);
    }
    let messages = u32::try_from(job.messages).unwrap_or(u32::MAX);
    // The cancel's first request time (kept by the store): asking again
    // queues the very same bodies.
    let queued_at = job.cancel.as_ref().map_or(job.created_at, |c| c.requested_at);
    // Bounded batches: a job of millions of accruals has thousands of
    // messages, never all in memory at once.
    let seqs: Vec<u32> = (0..messages).collect();
    for chunk in seqs.chunks(1_000) {
        let bodies: Vec<String> = chunk
            .iter()
            .map(|seq| QueueMessage::cancel_of(job_id, *seq).queued(queued_at).encode())
            .collect();
        queue.send_messages(&bodies).await?;
    }
    info!(%job_id, messages, "job cancel queued");
    Ok(job)
}

/// Cancels job `job_id` (or resumes its cancel) here, `concurrency`
/// messages at a time, without the queue; returns the job with its
/// cancel's counts. `audit` says who asked and why (kept from the first
/// request).
pub async fn cancel_job<L: Debits + ?Sized>(
    ledger: &L,
    jobs: &dyn JobStore,
    job_id: JobId,
    audit: Option<&Audit>,
    concurrency: usize,
) -> Result<Job, CancelError> {
    let job = begin(jobs, job_id, audit).await?;
    if is_done(&job) {
        return Ok(job);
    }
    // A job holds far fewer than u32::MAX messages (seq is a u32).
    let messages = u32::try_from(job.messages).unwrap_or(u32::MAX);
    stream::iter(0..messages)
        .map(|seq| cancel_message(ledger, jobs, MessageRef { job_id, seq }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let job = jobs.get_job(job_id).await?.ok_or(CancelError::NotFound(job_id))?;
    if let Some(cancel) = &job.cancel {
        info!(%job_id, reversed = cancel.counts.reversed, spent = cancel.counts.spent,
              skipped = cancel.counts.skipped, "job cancelled");
    }
    Ok(job)
}

/// Records the cancel of a completed job (refusing one still running) and
/// returns the job.
async fn begin(jobs: &dyn JobStore, job_id: JobId, audit: Option<&Audit>) -> Result<Job, CancelError> {
    let job = jobs.get_job(job_id).await?.ok_or(CancelError::NotFound(job_id))?;
    if job.completed_at.is_none() {
        return Err(CancelError::Running {
            job_id,
            settled: job.settled(),
            total: job.total,
        });
    }
    jobs.begin_cancel(job_id, audit, OffsetDateTime::now_utc())
        .await?
        .ok_or(CancelError::NotFound(job_id))
}

fn is_done(job: &Job) -> bool {
    job.cancel.as_ref().is_some_and(|c| c.completed_at.is_some())
}

/// Reverses what message `by` credited, then records its counts once (a
/// cancel message's work in the worker; see [`request_cancel`]).
pub async fn cancel_message<L: Debits + ?Sized>(
    ledger: &L,
    jobs: &dyn JobStore,
    by: MessageRef,
) -> Result<(), CancelError> {
    let folded = jobs
        .begin_message_cancel(by.job_id, by.seq, OffsetDateTime::now_utc())
        .await?
        .ok_or(CancelError::Forgotten {
            job_id: by.job_id,
            seq: by.seq,
        })?;
    if folded.cancelled {
        // Recorded before, but the job's cancel may not be stamped complete:
        // where the stamp is a write of its own (DynamoDB), the call that
        // recorded this message can have failed right after. Recording again
        // adds nothing and stamps it.
        jobs.record_cancelled(by.job_id, by.seq, CancelCounts::default(), OffsetDateTime::now_utc())
            .await?;
        return Ok(());
    }
    let mut counts = CancelCounts::default();
    for id in folded.items {
        // A message's items are accruals or uses, and the marker does not
        // say which: whichever this message applied is reversed (an id this
        // message did not apply is NotFound both ways).
        let credit = ReversalTarget::CreditBy {
            accrual_id: id.clone(),
            by,
        };
        let mut outcome = ledger.reverse(&credit, OffsetDateTime::now_utc()).await?;
        if outcome == ReversalOutcome::NotFound {
            let target = ReversalTarget::UseBy { use_id: id, by };
            outcome = ledger.reverse(&target, OffsetDateTime::now_utc()).await?;
        }
        match outcome {
            ReversalOutcome::Reversed(_) | ReversalOutcome::Replayed(_) => counts.reversed += 1,
            ReversalOutcome::AlreadySpent { .. } => counts.spent += 1,
            ReversalOutcome::NotFound => counts.skipped += 1,
        }
    }
    jobs.record_cancelled(by.job_id, by.seq, counts, OffsetDateTime::now_utc())
        .await?;
    Ok(())
}
