//! The in-memory backend: the fast fake for logic tests and the simulation.

use std::sync::Arc;

use super::{Ports, QueuePolicy};
use crate::adapters::memory::{MemoryQueue, MemoryStore};
use crate::domain::capacity::WriteCost;

/// A fresh in-memory store with a work queue and its dead-letter queue.
/// It charges no write units (only the DynamoDB and SQLite stores model them).
pub fn ports(policy: QueuePolicy) -> Ports {
    let store = Arc::new(MemoryStore::new());
    let dlq = Arc::new(MemoryQueue::new(policy.visibility_timeout));
    let queue = Arc::new(MemoryQueue::with_dead_letter_queue(
        policy.visibility_timeout,
        policy.max_receive_count,
        dlq.clone(),
    ));
    let counter = store.clone();
    Ports {
        ledger: store.clone(),
        jobs: store,
        queue,
        dlq,
        store_requests: Arc::new(move || counter.requests()),
        store_write_cost: Arc::new(WriteCost::default),
    }
}
