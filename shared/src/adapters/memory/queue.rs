//! The in-memory queue, with SQS's semantics (visibility timeout, receive
//! count, redrive to a dead-letter queue).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::lock;
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};

struct StoredMessage {
    message_id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt_handle: String,
}

/// A queue in memory with SQS semantics: visibility timeout, receive count,
/// redrive to a dead-letter queue after `max_receive_count` receives.
pub struct MemoryQueue {
    messages: Mutex<VecDeque<StoredMessage>>,
    visibility_timeout: Duration,
    redrive: Option<(u32, Arc<MemoryQueue>)>,
    next_id: AtomicU64,
    requests: AtomicU64,
}

impl MemoryQueue {
    /// A queue without a DLQ.
    pub fn new(visibility_timeout: Duration) -> Self {
        MemoryQueue {
            messages: Mutex::new(VecDeque::new()),
            visibility_timeout,
            redrive: None,
            next_id: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// A queue whose messages move to `dlq` when received more than
    /// `max_receive_count` times.
    pub fn with_dead_letter_queue(visibility_timeout: Duration, max_receive_count: u32, dlq: Arc<MemoryQueue>) -> Self {
        MemoryQueue {
            redrive: Some((max_receive_count, dlq)),
            ..Self::new(visibility_timeout)
        }
    }

    /// Messages held, visible or in flight.
    pub fn len(&self) -> usize {
        lock(&self.messages).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, body: String) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.messages).push_back(StoredMessage {
            message_id: format!("mem-{n:012}"),
            body,
            receive_count: 0,
            visible_at: Instant::now(),
            receipt_handle: String::new(),
        });
    }

    fn take_visible(&self, max: usize) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut messages = lock(&self.messages);
        let mut received = Vec::new();
        let mut index = 0;
        while index < messages.len() && received.len() < max {
            let m = &mut messages[index];
            if m.visible_at > now {
                index += 1;
                continue;
            }
            if let Some((max_receives, dlq)) = &self.redrive {
                if m.receive_count >= *max_receives {
                    if let Some(dead) = messages.remove(index) {
                        dlq.push(dead.body);
                    }
                    continue;
                }
            }
            m.receive_count += 1;
            m.visible_at = now + self.visibility_timeout;
            m.receipt_handle = format!("{}#{}", m.message_id, m.receive_count);
            received.push(ReceivedMessage {
                message_id: m.message_id.clone(),
                receipt_handle: m.receipt_handle.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
            });
            index += 1;
        }
        received
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        // Counted like SQS: one SendMessageBatch per 10 messages.
        self.requests
            .fetch_add(bodies.len().div_ceil(10) as u64, Ordering::Relaxed);
        for body in bodies {
            self.push(body.clone());
        }
        Ok(())
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        loop {
            let received = self.take_visible(max.min(10));
            if !received.is_empty() || Instant::now() >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.requests
            .fetch_add(receipt_handles.len().div_ceil(10) as u64, Ordering::Relaxed);
        let handles: HashSet<&str> = receipt_handles.iter().map(String::as_str).collect();
        lock(&self.messages).retain(|m| !handles.contains(m.receipt_handle.as_str()));
        Ok(())
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.requests
            .fetch_add(receipt_handles.len().div_ceil(10) as u64, Ordering::Relaxed);
        let handles: HashSet<&str> = receipt_handles.iter().map(String::as_str).collect();
        let now = Instant::now();
        for m in lock(&self.messages).iter_mut() {
            if handles.contains(m.receipt_handle.as_str()) {
                m.visible_at = now;
            }
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
