//! The embedded backend: one SQLite database holds the ledger, the jobs and
//! the queues.

use std::sync::Arc;

use super::{Ports, QueuePolicy};
use crate::adapters::metered::Metered;
use crate::adapters::sqlite::SqliteStore;

/// The ports over `store`, with work queue `queue` redriving to `dlq` after
/// `policy.max_receive_count` receives (both queues in the same database).
/// The ledger and jobs are [`Metered`]: `store_write_cost` counts what the
/// same writes would cost on DynamoDB.
pub fn ports(store: &SqliteStore, queue: &str, dlq: &str, policy: QueuePolicy) -> Ports {
    metered_ports(&Metered::new(store.clone()), queue, dlq, policy)
}

/// [`ports`] over a [`Metered`] store the caller keeps too, so that other
/// writers through it (the benchmarks' naive baseline) are charged to the
/// same meter.
pub fn metered_ports(store: &Metered<SqliteStore>, queue: &str, dlq: &str, policy: QueuePolicy) -> Ports {
    let work = store.inner().queue(
        queue,
        policy.visibility_timeout,
        Some((policy.max_receive_count, dlq.to_owned())),
    );
    let dead = store.inner().queue(dlq, policy.visibility_timeout, None);
    let counter = store.inner().clone();
    let meter = store.clone();
    Ports {
        ledger: Arc::new(store.clone()),
        jobs: Arc::new(store.clone()),
        queue: Arc::new(work),
        dlq: Arc::new(dead),
        store_requests: Arc::new(move || counter.requests()),
        store_write_cost: Arc::new(move || meter.write_cost()),
    }
}
