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
    let work = store.queue(
        queue,
        policy.visibility_timeout,
        Some((policy.max_receive_count, dlq.to_owned())),
    );
    let dead = store.queue(dlq, policy.visibility_timeout, None);
    let counter = store.clone();
    let metered = Metered::new(store.clone());
    let meter = metered.clone();
    Ports {
        ledger: Arc::new(metered.clone()),
        jobs: Arc::new(metered),
        queue: Arc::new(work),
        dlq: Arc::new(dead),
        store_requests: Arc::new(move || counter.requests()),
        store_write_cost: Arc::new(move || meter.write_cost()),
    }
}
