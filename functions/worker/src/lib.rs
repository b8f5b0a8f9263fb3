//! Translation between SQS events and the worker. No business rule lives here.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use pointflow::worker::{IncomingMessage, Worker};

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
    let messages = event.records.into_iter().map(to_incoming).collect();
    let report = worker.process_batch(messages).await;
    let mut response = SqsBatchResponse::default();
    for message_id in report.failed_message_ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        response.batch_item_failures.push(failure);
    }
    response
}
