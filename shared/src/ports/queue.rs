//! The work queue port: SQS semantics for the messages the worker applies.

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::QueueError;

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
pub trait WorkQueue: Send + Sync {
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
