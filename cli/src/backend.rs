//! The backends the local runner can run on: the embedded SQLite store
//! (default) or the AWS adapters (moto, LocalStack or a real account, through
//! the SDK's usual configuration).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pointflow::adapters::dynamodb::{create_table, DynamoStore};
use pointflow::adapters::sqlite::SqliteStore;
use pointflow::adapters::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::ports::{AccrualQueue, JobStore, Ledger};

use crate::settings::{StackSettings, DLQ_NAME, QUEUE_NAME};

/// Default database of the embedded backend.
pub const DEFAULT_DB: &str = ".pointflow/local.db";

/// Which backend, and where its resources are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// SQLite at this path (`:memory:` for a throw-away one).
    Embedded { db: PathBuf },
    /// The AWS adapters on these resources.
    Aws(AwsResources),
}

/// Where the AWS backend's resources are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub table: String,
    /// Queue URLs; with `create`, queue names are derived from the table's.
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    /// Create the table and queues first (for an emulator).
    pub create: bool,
}

/// Every port of the chosen backend.
#[derive(Clone)]
pub struct LocalBackend {
    pub ledger: Arc<dyn Ledger>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn AccrualQueue>,
    pub dlq: Arc<dyn AccrualQueue>,
    /// Store requests made so far.
    pub store_requests: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The SQLite store, when embedded (for whole-table verification).
    pub embedded: Option<SqliteStore>,
    /// Human-readable description for banners.
    pub description: String,
}

impl LocalBackend {
    /// Opens (and if needed creates) the chosen backend.
    pub async fn open(choice: &BackendChoice, settings: &StackSettings) -> anyhow::Result<Self> {
        match choice {
            BackendChoice::Embedded { db } => Self::embedded(db, settings),
            BackendChoice::Aws(resources) => Self::aws(resources, settings).await,
        }
    }

    fn embedded(db: &Path, settings: &StackSettings) -> anyhow::Result<Self> {
        let store = if db.as_os_str() == ":memory:" {
            SqliteStore::in_memory()
        } else {
            SqliteStore::open(db)
        }
        .with_context(|| format!("opening the embedded database {}", db.display()))?;
        let queue = store.queue(
            QUEUE_NAME,
            settings.visibility_timeout,
            Some((settings.max_receive_count, DLQ_NAME.to_owned())),
        );
        let dlq = store.queue(DLQ_NAME, settings.visibility_timeout, None);
        let counter = store.clone();
        Ok(LocalBackend {
            ledger: Arc::new(store.clone()),
            jobs: Arc::new(store.clone()),
            queue: Arc::new(queue),
            dlq: Arc::new(dlq),
            store_requests: Arc::new(move || counter.requests()),
            embedded: Some(store),
            description: format!("embedded SQLite at {}", db.display()),
        })
    }

    async fn aws(resources: &AwsResources, settings: &StackSettings) -> anyhow::Result<Self> {
        let sdk = pointflow::aws::load_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let (queue_url, dlq_url) = if resources.create {
            create_table(&dynamo, &resources.table)
                .await
                .with_context(|| format!("creating table {}", resources.table))?;
            create_queue_with_dlq(
                &sqs,
                &format!("{}-accruals", resources.table),
                settings.visibility_timeout,
                settings.max_receive_count,
            )
            .await
            .context("creating the queues")?
        } else {
            (
                resources
                    .queue_url
                    .clone()
                    .context("--queue-url (or QUEUE_URL) is required with --backend aws")?,
                resources
                    .dlq_url
                    .clone()
                    .context("--dlq-url (or DLQ_URL) is required with --backend aws")?,
            )
        };
        let store = Arc::new(DynamoStore::new(dynamo, &resources.table));
        let counter = store.clone();
        Ok(LocalBackend {
            ledger: store.clone(),
            jobs: store,
            queue: Arc::new(SqsQueue::new(sqs.clone(), &queue_url)),
            dlq: Arc::new(SqsQueue::new(sqs, dlq_url)),
            store_requests: Arc::new(move || counter.requests()),
            embedded: None,
            description: format!("AWS: table {} and queue {queue_url}", resources.table),
        })
    }
}
