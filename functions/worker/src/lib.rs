//! Translation between SQS events and the worker. No business rule lives here.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use pointflow::services::worker::{IncomingMessage, Worker};
use pointflow::telemetry::metrics::BatchMetrics;

/// Reads one SQS record as a delivery.
pub fn to_incoming(record: SqsMessage) -> IncomingMessage {
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    IncomingMessage {
        message_id: record.message_id.unwrap_or_default(),
        body: record.body.unwrap_or_default(),
        receive_count,
    }
}

/// Processes one SQS batch and reports the failed messages, so only they are
/// retried (`ReportBatchItemFailures`).
pub async fn handle(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
    handle_measured(worker, event, now_millis()).await.0
}

/// [`handle`], also measuring the batch for CloudWatch ([`BatchMetrics`]);
/// `started_ms` is when the batch began (unix milliseconds).
pub async fn handle_measured(worker: &Worker, event: SqsEvent, started_ms: i64) -> (SqsBatchResponse, BatchMetrics) {
    // SQS stamps each message with when it was queued.
    let oldest_sent_ms = event
        .records
        .iter()
        .filter_map(|r| r.attributes.get("SentTimestamp").and_then(|v| v.parse::<i64>().ok()))
        .min();
    let messages = event.records.len() as u64;
    let batch = event.records.into_iter().map(to_incoming).collect();
    let report = worker.process_batch(batch).await;
    let ended_ms = now_millis();
    let metrics = BatchMetrics {
        messages,
        failed_messages: report.failed_message_ids.len() as u64,
        applied: report.counts.applied,
        duplicate: report.counts.duplicate,
        duration_ms: (ended_ms - started_ms).max(0) as f64,
        enqueue_to_apply_ms: oldest_sent_ms.map(|sent| (ended_ms - sent).max(0) as f64),
    };
    let mut response = SqsBatchResponse::default();
    for message_id in report.failed_message_ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        response.batch_item_failures.push(failure);
    }
    (response, metrics)
}

/// Wall-clock now in unix milliseconds.
pub fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The SQS event Lambda's event source mapping builds for these deliveries:
/// the inverse of [`to_incoming`], for runners and tests that play the
/// mapping's part.
pub fn to_sqs_event(messages: &[pointflow::ports::ReceivedMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in messages {
        let mut record = SqsMessage::default();
        record.message_id = Some(m.message_id.clone());
        record.receipt_handle = Some(m.receipt_handle.clone());
        record.body = Some(m.body.clone());
        record.attributes =
            std::collections::HashMap::from([("ApproximateReceiveCount".to_owned(), m.receive_count.to_string())]);
        record.event_source = Some("aws:sqs".into());
        event.records.push(record);
    }
    event
}
