//! The backends the suites run against.

use std::sync::Arc;
use std::time::Duration;

use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
use pointflow::adapters::aws::sqs::create_queue_with_dlq;
use pointflow::adapters::retry::Backoff;
use pointflow::adapters::sqlite::SqliteStore;
use pointflow::backend::{Ports, QueuePolicy};
use pointflow::ports::{JobStore, Ledger, WorkQueue};

use crate::strict::StrictProxy;

/// Every port of one backend, plus the queue's dead-letter queue.
#[derive(Clone)]
pub struct Backend {
    pub ledger: Arc<dyn Ledger>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn WorkQueue>,
    pub dlq: Arc<dyn WorkQueue>,
    /// The queue's visibility timeout.
    pub visibility_timeout: Duration,
    /// Receives after which the queue moves a message to the DLQ.
    pub max_receive_count: u32,
    /// Store requests so far (DynamoDB calls for the AWS backend).
    pub store_requests: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Whether concurrent transactions on one item are safe to race here
    /// (through the strict AWS layer, which sends them to moto one at a
    /// time; not on bare moto, whose transactions are not atomic against
    /// each other).
    pub races_are_safe: bool,
    /// The strict AWS layer the store talks through (AWS backend only).
    pub strict: Option<StrictProxy>,
}

impl Backend {
    /// How many transactions a test may run at once here: one where
    /// transactions may not race (bare moto, where a failed transaction can
    /// undo a concurrent one's writes).
    pub fn parallelism(&self) -> usize {
        if self.races_are_safe {
            4
        } else {
            1
        }
    }

    /// A worker's settings for this backend (one message at a time where
    /// transactions may not race).
    pub fn worker_settings(&self) -> pointflow::services::worker::WorkerSettings {
        pointflow::services::worker::WorkerSettings {
            message_concurrency: self.parallelism(),
            ..pointflow::services::worker::WorkerSettings::default()
        }
    }
}

impl Backend {
    /// The library's set of ports for a backend, with what the suites add.
    fn of(ports: Ports, policy: QueuePolicy, races_are_safe: bool) -> Backend {
        Backend {
            ledger: ports.ledger,
            jobs: ports.jobs,
            queue: ports.queue,
            dlq: ports.dlq,
            visibility_timeout: policy.visibility_timeout,
            max_receive_count: policy.max_receive_count,
            store_requests: ports.store_requests,
            races_are_safe,
            strict: None,
        }
    }
}

/// A fresh in-memory backend.
pub fn memory(visibility_timeout: Duration, max_receive_count: u32) -> Backend {
    crate::init_logging();
    let policy = QueuePolicy {
        visibility_timeout,
        max_receive_count,
    };
    Backend::of(pointflow::backend::memory::ports(policy), policy, true)
}

/// A fresh embedded backend on a private in-memory SQLite database: queue
/// "accruals" with dead-letter queue "accruals-dlq", both in that database.
pub fn sqlite(visibility_timeout: Duration, max_receive_count: u32) -> Backend {
    crate::init_logging();
    let store = SqliteStore::in_memory().expect("open in-memory SQLite database");
    let policy = QueuePolicy {
        visibility_timeout,
        max_receive_count,
    };
    let ports = pointflow::backend::sqlite::ports(&store, "accruals", "accruals-dlq", policy);
    Backend::of(ports, policy, true)
}

/// The AWS SDK configuration for the emulator, or `None` when no emulator
/// is configured (`AWS_ENDPOINT_URL` unset) and the test may be skipped.
/// With `POINTFLOW_REQUIRE_EMULATOR=1` (set by `scripts/test.sh`) a missing
/// emulator is a failure, so CI can never pass by skipping.
pub async fn emulator_config() -> Option<aws_config::SdkConfig> {
    crate::init_logging();
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        assert!(
            std::env::var("POINTFLOW_REQUIRE_EMULATOR").as_deref() != Ok("1"),
            "POINTFLOW_REQUIRE_EMULATOR=1 but AWS_ENDPOINT_URL is not set"
        );
        eprintln!("AWS_ENDPOINT_URL not set: skipping emulator test (run scripts/test.sh)");
        return None;
    }
    Some(pointflow::adapters::aws::load_config().await)
}

/// A unique resource name, so tests sharing one emulator never meet.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The AWS adapters over the emulator, on a new table and queue pair, the
/// store talking through the strict AWS layer ([`crate::strict`]), so its
/// transactions may race as they would on AWS.
pub async fn aws(visibility_timeout: Duration, max_receive_count: u32) -> Option<Backend> {
    let sdk = emulator_config().await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique_name("pointflow");
    create_table(&dynamo, &table).await.expect("create table");
    let (queue_url, dlq_url) =
        create_queue_with_dlq(&sqs, &unique_name("accruals"), visibility_timeout, max_receive_count)
            .await
            .expect("create queues");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("checked by emulator_config");
    let strict = StrictProxy::start(&endpoint);
    // Short pauses (the emulator never throttles, and tests should not
    // wait) but many attempts: racing transactions meet conflicts, and
    // requests reach moto one at a time, so a hot item stays held longer
    // than on AWS.
    let backoff = Backoff {
        base: Duration::from_millis(5),
        cap: Duration::from_millis(100),
        max_attempts: 40,
    };
    let policy = QueuePolicy {
        visibility_timeout,
        max_receive_count,
    };
    let store = DynamoStore::new(strict.dynamodb_client(&sdk), &table).with_backoff(backoff);
    let ports = pointflow::backend::aws::store_ports(Arc::new(store), &sdk, &queue_url, &dlq_url, Some(backoff));
    let mut backend = Backend::of(ports, policy, true);
    backend.strict = Some(strict);
    Some(backend)
}
