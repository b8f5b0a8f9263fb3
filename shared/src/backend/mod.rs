//! Wiring: the one place that builds each backend's set of ports (and,
//! for the Lambdas, the services over them). The CLI, the integration
//! tests and the simulation all start from here.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::capacity::WriteCost;
use crate::ports::{JobStore, Ledger, WorkQueue};

/// How the work queue behaves: SQS's visibility timeout and redrive policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// How long a received message stays invisible before it is delivered again.
    pub visibility_timeout: Duration,
    /// Receives after which a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

/// Every port of one backend: the store behind the ledger and the jobs, the
/// work queue and its dead-letter queue, and the store's request counters.
#[derive(Clone)]
pub struct Ports {
    pub ledger: Arc<dyn Ledger>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn WorkQueue>,
    pub dlq: Arc<dyn WorkQueue>,
    /// Store requests so far (for requests-per-accrual accounting).
    pub store_requests: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// DynamoDB write requests and units so far; on another store, those the
    /// same writes would take on DynamoDB.
    pub store_write_cost: Arc<dyn Fn() -> WriteCost + Send + Sync>,
}
