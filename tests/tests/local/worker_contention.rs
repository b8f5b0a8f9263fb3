//! The worker under contention, on the in-memory backend with injected
//! conflicts: a whale member's messages of one batch do not fight over
//! its balance, and a conflict or throttle that outlasts the store's own
//! retries is retried within the delivery instead of burning it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::{
    Accrual, CancelCounts, ChunkReport, FoldedItems, Job, JobId, JobStatus, MessageCounts, MessageRef, NewJob,
};
use pointflow::ports::{ApplyOutcome, CreateJob, CreditTally, Credits, JobStore, Ledger, StoreError};
use pointflow::services::worker::{IncomingMessage, MessageRetry, Worker, WorkerSettings};
use pointflow_tests::backend;
use time::OffsetDateTime;

/// A ledger that answers like DynamoDB when two writes hold one balance
/// item at once: a call whose members are being credited by another call
/// in flight fails with a conflict (its retries exhausted). It also fails
/// the first `fail_first` calls with a conflict, whatever they touch.
struct ContendedLedger {
    inner: Arc<dyn Ledger>,
    in_flight: Mutex<HashSet<String>>,
    conflicts: AtomicU64,
    fail_first: AtomicU32,
}

impl ContendedLedger {
    fn new(inner: Arc<dyn Ledger>, fail_first: u32) -> Self {
        ContendedLedger {
            inner,
            in_flight: Mutex::new(HashSet::new()),
            conflicts: AtomicU64::new(0),
            fail_first: AtomicU32::new(fail_first),
        }
    }
}

fn conflict() -> StoreError {
    StoreError::Conflict {
        operation: "TransactWriteItems",
    }
}

#[async_trait]
impl Credits for ContendedLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
            return Err(conflict());
        }
        let members: HashSet<String> = accruals.iter().map(|a| a.member_id.clone()).collect();
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            if !in_flight.is_disjoint(&members) {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
                return Err(conflict());
            }
            in_flight.extend(members.iter().cloned());
        }
        // A write takes a while: other messages of the batch run meanwhile.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let result = self.inner.apply_accruals(by, accruals, now).await;
        self.in_flight.lock().unwrap().retain(|m| !members.contains(m));
        result
    }
}

/// A job store whose first `fail_first` folds fail with a conflict,
/// unapplied.
struct ConflictingFolds {
    inner: Arc<dyn JobStore>,
    fail_first: AtomicU32,
}

#[async_trait]
impl JobStore for ConflictingFolds {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        self.inner.create_job(job).await
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.inner.mark_enqueued(job_id).await
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get_job(job_id).await
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(conflict());
        }
        self.inner.fold_message(job_id, seq, counts, items, now).await
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.inner.record_chunk(job_id, chunk, now).await
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.inner.chunk_recorded(job_id, index).await
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&pointflow::domain::audit::Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        self.inner.begin_cancel(job_id, audit, now).await
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        self.inner.begin_message_cancel(job_id, seq, now).await
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.record_cancelled(job_id, seq, counts, now).await
    }
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.inner.folded_counts(job_id).await
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.replace_job_counts(job_id, read, counts, now).await
    }
}

/// Message `seq` of `n` accruals, all of `member`.
fn message(job_id: JobId, seq: u32, n: usize, member: &str) -> String {
    QueueMessage::new(
        job_id,
        seq,
        Payload::Accruals(
            (0..n)
                .map(|i| Accrual {
                    accrual_id: format!("c-{job_id}-{seq}-{i}"),
                    member_id: member.into(),
                    point_type: "P".into(),
                    amount: 1,
                    reason: None,
                    apply_at: None,
                    expires_at: None,
                })
                .collect(),
        ),
    )
    .encode()
}

async fn job(jobs: &dyn JobStore, total: u64, messages: u64) -> JobId {
    let job_id = JobId::random();
    jobs.create_job(&NewJob {
        job_id,
        request_hash: String::new(),
        total,
        deduplicated: 0,
        messages,
        source: None,
        reading: false,
        created_at: OffsetDateTime::now_utc(),
        audit: None,
    })
    .await
    .unwrap();
    job_id
}

fn incoming(id: &str, body: String, receive_count: u32) -> IncomingMessage {
    IncomingMessage {
        message_id: id.into(),
        body,
        receive_count,
    }
}

#[tokio::test]
async fn a_whale_members_messages_in_one_batch_do_not_contend_for_its_balance() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let ledger = Arc::new(ContendedLedger::new(b.ledger.clone(), 0));
    let worker = Worker::from_parts(
        ledger.clone(),
        b.ledger.clone(),
        b.jobs.clone(),
        WorkerSettings {
            max_receive_count: 3,
            message_concurrency: 4,
        },
    );
    let job_id = job(b.jobs.as_ref(), 40, 5).await;
    // Consecutive messages of one member (more accruals than one message
    // holds), and one of somebody else.
    let mut batch: Vec<IncomingMessage> = (0..4)
        .map(|seq| incoming(&format!("whale-{seq}"), message(job_id, seq, 8, "whale"), 1))
        .collect();
    batch.push(incoming("minnow", message(job_id, 4, 8, "minnow"), 1));
    let report = worker.process_batch(batch).await;
    assert_eq!(report.failed_message_ids, Vec::<String>::new());
    assert_eq!(
        ledger.conflicts.load(Ordering::SeqCst),
        0,
        "the whale's messages were applied one after another"
    );
    let done = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.status()), (40, JobStatus::Completed));
}

#[tokio::test]
async fn a_conflict_that_outlasts_the_stores_retries_is_retried_within_the_delivery() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let ledger = Arc::new(ContendedLedger::new(b.ledger.clone(), 2));
    let worker = Worker::from_parts(
        ledger.clone(),
        b.ledger.clone(),
        b.jobs.clone(),
        WorkerSettings::default(),
    );
    let job_id = job(b.jobs.as_ref(), 8, 1).await;
    let report = worker
        .process_batch(vec![incoming("m", message(job_id, 0, 8, "whale"), 1)])
        .await;
    assert_eq!(report.failed_message_ids, Vec::<String>::new(), "not a delivery burnt");
    assert_eq!(ledger.conflicts.load(Ordering::SeqCst), 2);
    let done = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.status()), (8, JobStatus::Completed));
}

#[tokio::test]
async fn a_fold_conflict_on_the_last_delivery_does_not_leave_the_job_running() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let jobs = Arc::new(ConflictingFolds {
        inner: b.jobs.clone(),
        fail_first: AtomicU32::new(2),
    });
    let worker = Worker::new(
        b.ledger.clone(),
        jobs,
        WorkerSettings {
            max_receive_count: 3,
            message_concurrency: 1,
        },
    );
    let job_id = job(b.jobs.as_ref(), 8, 1).await;
    let report = worker
        .process_batch(vec![incoming("m", message(job_id, 0, 8, "m"), 3)])
        .await;
    assert_eq!(report.failed_message_ids, Vec::<String>::new());
    let done = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.status()), (8, JobStatus::Completed));
    assert!(done.completed_at.is_some());
}

/// A ledger that credits only the first `credited` accruals of a call, then
/// fails: DynamoDB's transactions of a message committed in part.
struct PartlyApplyingLedger {
    inner: Arc<dyn Ledger>,
    credited: usize,
}

#[async_trait]
impl Credits for PartlyApplyingLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        self.inner
            .apply_accruals(by, &accruals[..self.credited.min(accruals.len())], now)
            .await?;
        Err(StoreError::Throttled {
            operation: "TransactWriteItems",
        })
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        self.inner.tally_credits(by, accrual_ids).await
    }
}

#[tokio::test]
async fn a_partly_applied_message_that_dead_letters_counts_failed_only_what_was_not_credited() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let worker = Worker::from_parts(
        Arc::new(PartlyApplyingLedger {
            inner: b.ledger.clone(),
            credited: 3,
        }),
        b.ledger.clone(),
        b.jobs.clone(),
        WorkerSettings {
            max_receive_count: 1,
            message_concurrency: 1,
        },
    )
    .with_retry(MessageRetry {
        attempts: 1,
        ..MessageRetry::default()
    });
    let job_id = job(b.jobs.as_ref(), 8, 1).await;
    let body = message(job_id, 0, 8, "m");
    let report = worker.process_batch(vec![incoming("m", body.clone(), 1)]).await;
    assert_eq!(report.failed_message_ids, ["m"], "it goes to the DLQ");
    let settled = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(
        (settled.applied, settled.failed, settled.status()),
        (3, 5, JobStatus::CompletedWithErrors)
    );
    // The redrive applies the rest: only the failed part moves.
    let healthy = Worker::new(b.ledger.clone(), b.jobs.clone(), WorkerSettings::default());
    let report = healthy.process_batch(vec![incoming("m", body, 1)]).await;
    assert_eq!(report.failed_message_ids, Vec::<String>::new());
    let done = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.failed, done.status()), (8, 0, JobStatus::Completed));
}
