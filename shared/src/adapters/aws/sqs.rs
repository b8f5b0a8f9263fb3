//! SQS adapter for [`WorkQueue`].

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::adapters::aws::redact::Redact;
use crate::adapters::retry::Backoff;
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};

/// SendMessageBatch / DeleteMessageBatch take at most 10 entries.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// SendMessageBatch carries at most 1 MiB of bodies in all.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// ReceiveMessage long-polls at most 20 s.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// SendMessageBatch calls in flight at once for one `send_messages`.
const SEND_CONCURRENCY: usize = 8;

/// An SQS queue.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    backoff: Backoff,
    requests: AtomicU64,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            backoff: Backoff::default(),
            requests: AtomicU64::new(0),
        }
    }

    /// Replaces the retry policy for failed batch entries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends one batch (≤ 10 entries, ≤ 1 MiB), retrying the entries SQS
    /// failed on its side with jittered backoff.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        let mut pending: Vec<(usize, &String)> = bodies.iter().enumerate().collect();
        let mut attempt = 0u32;
        let mut last_error = None;
        while !pending.is_empty() {
            if attempt > 0 {
                self.backoff.sleep(attempt - 1).await;
            }
            if attempt >= self.backoff.max_attempts {
                return Err(QueueError::Unsent {
                    unsent: pending.len(),
                    total: bodies.len(),
                    source: last_error,
                });
            }
            attempt += 1;
            let mut entries = Vec::with_capacity(pending.len());
            for (index, body) in &pending {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body.as_str())
                    .build()
                    .map_err(|e| QueueError::Backend {
                        operation: "SendMessageBatch",
                        source: Box::new(e.redacted()),
                    })?;
                entries.push(entry);
            }
            self.count();
            let output = match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => output,
                Err(e) => {
                    // The whole call failed (throttled, network): retry all.
                    last_error = Some(Box::new(e.redacted()) as _);
                    continue;
                }
            };
            let mut retry = Vec::new();
            for failed in output.failed() {
                if failed.sender_fault() {
                    return Err(QueueError::Rejected {
                        reason: format!("{}: {}", failed.code(), failed.message().unwrap_or("")),
                    });
                }
                if let Some(entry) = pending.iter().find(|(i, _)| i.to_string() == failed.id()) {
                    retry.push(*entry);
                }
            }
            pending = retry;
        }
        Ok(())
    }
}

/// Splits bodies into SendMessageBatch calls (ranges of `bodies`): ≤ 10
/// entries and ≤ 1 MiB each.
pub fn plan_send_batches(bodies: &[String]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0usize;
    for (index, body) in bodies.iter().enumerate() {
        let count = index - start;
        if count == MAX_BATCH_ENTRIES || (count > 0 && bytes + body.len() > MAX_BATCH_BYTES) {
            batches.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        batches.push(start..bodies.len());
    }
    batches
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        let total = bodies.len();
        stream::iter(plan_send_batches(bodies))
            .map(|range| self.send_batch(&bodies[range]))
            .buffer_unordered(SEND_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map_err(|e| match e {
                QueueError::Unsent { unsent, source, .. } => QueueError::Unsent { unsent, total, source },
                other => other,
            })?;
        Ok(())
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.count();
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH_ENTRIES) as i32)
            .wait_time_seconds(wait.min(MAX_WAIT).as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| QueueError::Backend {
                operation: "ReceiveMessage",
                source: Box::new(e.redacted()),
            })?;
        Ok(output
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        for chunk in receipt_handles.chunks(MAX_BATCH_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueueError::Backend {
                    operation: "DeleteMessageBatch",
                    source: Box::new(e.redacted()),
                })?;
            self.count();
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::Backend {
                    operation: "DeleteMessageBatch",
                    source: Box::new(e.redacted()),
                })?;
            if let Some(failed) = output.failed().first() {
                return Err(QueueError::Rejected {
                    reason: format!("delete failed: {}: {}", failed.code(), failed.message().unwrap_or("")),
                });
            }
        }
        Ok(())
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        for chunk in receipt_handles.chunks(MAX_BATCH_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueueError::Backend {
                    operation: "ChangeMessageVisibilityBatch",
                    source: Box::new(e.redacted()),
                })?;
            self.count();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::Backend {
                    operation: "ChangeMessageVisibilityBatch",
                    source: Box::new(e.redacted()),
                })?;
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Creates a queue with a dead-letter queue (as `template.yaml` declares
/// them) and returns `(queue_url, dlq_url)`. For tests and local runs against
/// an emulator.
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    visibility_timeout: Duration,
    max_receive_count: u32,
) -> Result<(String, String), QueueError> {
    fn backend<E: Redact>(operation: &'static str) -> impl Fn(E) -> QueueError {
        move |e| QueueError::Backend {
            operation,
            source: Box::new(e.redacted()),
        }
    }
    let dlq = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(backend("CreateQueue"))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let attributes = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(backend("GetQueueAttributes"))?;
    let dlq_arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string() });
    let queue = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.as_secs().to_string(),
        )
        .attributes(QueueAttributeName::MaximumMessageSize, "1048576")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(backend("CreateQueue"))?;
    Ok((queue.queue_url().unwrap_or_default().to_owned(), dlq_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_ten_entries() {
        let bodies: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        let sizes: Vec<usize> = plan_send_batches(&bodies).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
    }

    #[test]
    fn batches_hold_at_most_one_mebibyte() {
        let bodies: Vec<String> = (0..10).map(|_| "x".repeat(300_000)).collect();
        let batches = plan_send_batches(&bodies);
        assert_eq!(batches.iter().map(|r| r.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        for batch in batches {
            assert!(bodies[batch].iter().map(|b| b.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }
}
