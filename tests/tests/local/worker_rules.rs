//! The worker's rules on the in-memory backend: failures stay per message,
//! and a message's last delivery before the DLQ settles its job.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pointflow::domain::audit::Audit;
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
use pointflow::domain::uses::{Use, UseOutcome};
use pointflow::domain::{Accrual, JobId, JobStatus, MessageRef, NewJob};
use pointflow::ports::{ApplyOutcome, StoreError};
use pointflow::ports::{Credits, Debits};
use pointflow::services::worker::{IncomingMessage, Worker, WorkerSettings};
use pointflow_tests::backend;
use time::OffsetDateTime;

/// A ledger whose store is down.
struct DownLedger;

#[async_trait]
impl Credits for DownLedger {
    async fn apply_accruals(
        &self,
        _: MessageRef,
        _: &[Accrual],
        _: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        Err(StoreError::Throttled {
            operation: "TransactWriteItems",
        })
    }
}

#[async_trait]
impl Debits for DownLedger {
    async fn apply_use_audited(&self, _: &Use, _: Option<&Audit>, _: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        Err(StoreError::Throttled {
            operation: "TransactWriteItems",
        })
    }

    async fn apply_message_use(&self, _: MessageRef, _: &Use, _: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        Err(StoreError::Throttled {
            operation: "TransactWriteItems",
        })
    }

    async fn reverse_audited(
        &self,
        _: &ReversalTarget,
        _: Option<&Audit>,
        _: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        Err(StoreError::Throttled {
            operation: "TransactWriteItems",
        })
    }
}

fn message(job_id: JobId, seq: u32, n: usize) -> QueueMessage {
    QueueMessage::new(
        job_id,
        seq,
        Payload::Accruals(
            (0..n)
                .map(|i| Accrual {
                    accrual_id: format!("w-{seq}-{i}"),
                    member_id: format!("m{i}"),
                    point_type: "P".into(),
                    amount: 1,
                    reason: None,
                    apply_at: None,
                    expires_at: None,
                })
                .collect(),
        ),
    )
}

async fn job(b: &backend::Backend, total: u64, messages: u64) -> JobId {
    let job_id = JobId::random();
    b.jobs
        .create_job(&NewJob {
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
async fn only_the_bad_messages_of_a_batch_fail() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), WorkerSettings::default());
    let job_id = job(&b, 30, 3).await;
    let mut batch: Vec<IncomingMessage> = (0..3)
        .map(|seq| incoming(&format!("good-{seq}"), message(job_id, seq, 10).encode(), 1))
        .collect();
    batch.insert(1, incoming("garbage", "{".into(), 1));
    batch.push(incoming(
        "invalid",
        message(job_id, 9, 1).encode().replace("\"amount\":1", "\"amount\":0"),
        1,
    ));
    let report = worker.process_batch(batch).await;
    let mut failed = report.failed_message_ids.clone();
    failed.sort();
    assert_eq!(failed, ["garbage", "invalid"]);
    assert_eq!(report.counts.applied, 30);
    let done = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::Completed);
}

#[tokio::test]
async fn a_message_failing_on_its_last_delivery_counts_as_failed() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let worker = Worker::from_parts(
        Arc::new(DownLedger),
        Arc::new(DownLedger),
        b.jobs.clone(),
        WorkerSettings {
            max_receive_count: 3,
            message_concurrency: 2,
        },
    );
    let job_id = job(&b, 5, 1).await;
    let body = message(job_id, 0, 5).encode();
    for receive_count in 1..=2 {
        let report = worker
            .process_batch(vec![incoming("m", body.clone(), receive_count)])
            .await;
        assert_eq!(report.failed_message_ids, ["m"]);
        let pending = b.jobs.get_job(job_id).await.unwrap().unwrap();
        assert_eq!((pending.failed, pending.status()), (0, JobStatus::Queued));
    }
    let report = worker.process_batch(vec![incoming("m", body, 3)]).await;
    assert_eq!(report.failed_message_ids, ["m"], "it still goes to the DLQ");
    let settled = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(settled.failed, 5);
    assert_eq!(settled.status(), JobStatus::CompletedWithErrors);
    assert!(settled.completed_at.is_some());
}

/// The function's metrics of a batch: counts from the report, and the
/// oldest message's wait from its SQS `SentTimestamp`.
#[tokio::test]
async fn a_batch_is_measured_for_cloudwatch() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), WorkerSettings::default());
    let job_id = job(&b, 20, 2).await;
    let received: Vec<pointflow::ports::ReceivedMessage> = (0..2)
        .map(|seq| pointflow::ports::ReceivedMessage {
            message_id: format!("m-{seq}"),
            receipt_handle: format!("r-{seq}"),
            body: message(job_id, seq, 10).encode(),
            receive_count: 1,
        })
        .chain(std::iter::once(pointflow::ports::ReceivedMessage {
            message_id: "bad".into(),
            receipt_handle: "r-bad".into(),
            body: "{".into(),
            receive_count: 1,
        }))
        .collect();
    let mut event = worker::to_sqs_event(&received);
    let now = worker::now_millis();
    for (record, sent) in event.records.iter_mut().zip([now - 5_000, now - 60_000, now - 1_000]) {
        record.attributes.insert("SentTimestamp".into(), sent.to_string());
    }
    let (response, metrics) = worker::handle_measured(&worker, event, now).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(
        (
            metrics.messages,
            metrics.failed_messages,
            metrics.applied,
            metrics.duplicate
        ),
        (3, 1, 20, 0)
    );
    let age = metrics.enqueue_to_apply_ms.unwrap();
    assert!((60_000.0..120_000.0).contains(&age), "{age}");
    assert!(metrics.duration_ms >= 0.0);
    let line: serde_json::Value = serde_json::from_str(&metrics.to_emf("worker", now)).unwrap();
    assert_eq!(line["AccrualsApplied"], 20);
}
