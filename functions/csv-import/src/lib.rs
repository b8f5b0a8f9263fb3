//! Translation between Lambda events and the importer. No business rule
//! lives here.
//!
//! The template delivers S3 notifications through the import queue (an SQS
//! event, answered with `batchItemFailures`); a direct S3 invocation (e.g.
//! `sam local invoke -e events/s3-object-created.json`) works too, and fails
//! the invocation if a chunk fails so Lambda retries it.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use pointflow::services::import::task::{parse_tasks, parse_tasks_value};
use pointflow::services::import::{ChunkOutcome, ImportError, ImportTask, Importer};
use serde_json::{json, Value};
use tracing::warn;

/// Handles one invocation: an SQS event from the import queue, or a direct
/// S3 event.
pub async fn handle(importer: &Importer, event: Value) -> Result<Value, lambda_runtime::Error> {
    if is_sqs_event(&event) {
        let event: SqsEvent = serde_json::from_value(event)?;
        let response = handle_sqs(importer, event).await;
        return Ok(serde_json::to_value(response)?);
    }
    let tasks = parse_tasks_value(&event)?;
    let mut outcomes = Vec::new();
    for task in &tasks {
        outcomes.push(summary(&importer.run(task).await?));
    }
    Ok(json!({ "chunks": outcomes }))
}

fn is_sqs_event(event: &Value) -> bool {
    event
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str)
        .is_some_and(|source| source == "aws:sqs")
}

/// Runs every task of every message; a message whose task failed is reported
/// in `batchItemFailures`, so only it is redelivered (and, after
/// `maxReceiveCount` deliveries, dead-lettered).
pub async fn handle_sqs(importer: &Importer, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let message_id = record.message_id.unwrap_or_default();
        let ok = match parse_tasks(record.body.as_deref().unwrap_or_default()) {
            Ok(tasks) => run_all(importer, &tasks).await.is_ok(),
            Err(error) => {
                warn!(%message_id, error = %pointflow::ports::log_form(&error), "unusable import message");
                false
            }
        };
        if !ok {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

async fn run_all(importer: &Importer, tasks: &[ImportTask]) -> Result<(), ImportError> {
    for task in tasks {
        importer.run(task).await?;
    }
    Ok(())
}

/// One chunk's outcome, as a direct invocation answers it.
pub fn summary(outcome: &ChunkOutcome) -> Value {
    let job_id = outcome.job_id().to_string();
    match outcome {
        ChunkOutcome::Skipped { reason, .. } => json!({ "job_id": job_id, "skipped": reason }),
        ChunkOutcome::Continued { chunk, .. } => json!({
            "job_id": job_id, "chunk": chunk.index, "accepted": chunk.accepted,
            "rejected": chunk.rejected, "continues": true,
        }),
        ChunkOutcome::Finished { chunk, report, .. } => json!({
            "job_id": job_id, "chunk": chunk.index, "accepted": chunk.accepted,
            "rejected": chunk.rejected, "continues": false, "report": report,
        }),
        ChunkOutcome::Failed { chunk, report, .. } => json!({
            "job_id": job_id, "chunk": chunk.index, "failed": chunk.failure(), "report": report,
        }),
    }
}
