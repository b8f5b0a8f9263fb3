//! The backends the local runner can run on: the embedded SQLite store
//! (default) or the AWS adapters (moto, LocalStack or a real account, through
//! the SDK's usual configuration).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::adapters::local_dir::DirObjects;
use pointflow::adapters::metered::Metered;
use pointflow::adapters::sqlite::SqliteStore;
use pointflow::backend::QueuePolicy;
use pointflow::domain::capacity::WriteCost;
use pointflow::ports::objects::{ObjectRef, ObjectStore};
use pointflow::ports::{JobStore, Ledger, WorkQueue};
use pointflow::services::import::service::{CAMPAIGN_METADATA, ENCODING_METADATA, SHEET_METADATA};
use pointflow::services::import::task::object_created_notification;
use pointflow::testkit::baseline::{NaiveLedger, Unbatched};
use sha2::{Digest, Sha256};

use crate::settings::{StackSettings, DLQ_NAME, IMPORT_DLQ_NAME, IMPORT_QUEUE_NAME, QUEUE_NAME};

/// Default database of the embedded backend.
pub const DEFAULT_DB: &str = ".pointflow/local.db";
/// Default folder standing in for the import bucket (embedded backend).
pub const DEFAULT_BUCKET_DIR: &str = ".pointflow/bucket";
/// Where files are dropped, as the template's notification filter says.
pub const IMPORT_PREFIX: &str = "imports/";

/// Which backend, and where its resources are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// SQLite at `db` (`:memory:` for a throw-away one); files under `bucket_dir`.
    Embedded { db: PathBuf, bucket_dir: PathBuf },
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
    /// The import bucket; with `create`, `<table>-imports`.
    pub bucket: Option<String>,
    /// The import queue; with `create`, created with its DLQ.
    pub import_queue_url: Option<String>,
    /// Create the table, queues and bucket (with its notification) first, for an emulator.
    pub create: bool,
}

/// The import bucket and queue.
#[derive(Clone)]
pub struct ImportSide {
    /// The import queue (bucket notifications and chunk continuations).
    pub queue: Arc<dyn WorkQueue>,
    /// Where files are dropped and reports written.
    pub objects: Arc<dyn ObjectStore>,
    pub bucket: String,
    /// The folder of the embedded bucket; `None` on S3.
    pub bucket_dir: Option<PathBuf>,
    /// The S3 client (aws backend), whose bucket notifies the import queue;
    /// without it, dropping a file also queues its event.
    pub s3: Option<aws_sdk_s3::Client>,
    /// Where the importer writes reports (from the stack's settings).
    pub report_prefix: String,
}

/// Every port of the chosen backend.
#[derive(Clone)]
pub struct LocalBackend {
    pub ledger: Arc<dyn Ledger>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn WorkQueue>,
    pub dlq: Arc<dyn WorkQueue>,
    /// The file-import side, if configured (always on the embedded backend;
    /// on aws with `--create` or `--bucket` and `--import-queue-url`).
    pub import: Option<ImportSide>,
    /// Store requests made so far.
    pub store_requests: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// DynamoDB write requests and units so far (on the embedded backend:
    /// those the same writes would make on DynamoDB).
    pub store_write_cost: Arc<dyn Fn() -> WriteCost + Send + Sync>,
    /// The naive baseline's ledger over the same store ([`LocalBackend::baseline`]).
    pub baseline_ledger: Arc<dyn Ledger>,
    /// The SQLite store, when embedded (for whole-table verification).
    pub embedded: Option<SqliteStore>,
    /// The embedded database's file (none in memory or on AWS): a runner
    /// takes its lock and releases the leases a gone runner left.
    pub db_file: Option<PathBuf>,
    /// Human-readable description for banners.
    pub description: String,
}

impl LocalBackend {
    /// Opens (and if needed creates) the chosen backend.
    pub async fn open(choice: &BackendChoice, settings: &StackSettings) -> anyhow::Result<Self> {
        match choice {
            BackendChoice::Embedded { db, bucket_dir } => Self::embedded(db, bucket_dir, settings),
            BackendChoice::Aws(resources) => Self::aws(resources, settings).await,
        }
    }

    fn embedded(db: &Path, bucket_dir: &Path, settings: &StackSettings) -> anyhow::Result<Self> {
        let store = if db.as_os_str() == ":memory:" {
            SqliteStore::in_memory()
        } else {
            SqliteStore::open(db)
        }
        .with_context(|| format!("opening the embedded database {}", db.display()))?;
        let policy = QueuePolicy {
            visibility_timeout: settings.visibility_timeout,
            max_receive_count: settings.max_receive_count,
        };
        let metered = Metered::new(store.clone());
        let ports = pointflow::backend::sqlite::metered_ports(&metered, QUEUE_NAME, DLQ_NAME, policy);
        let import_queue = store.queue(
            IMPORT_QUEUE_NAME,
            settings.import_visibility_timeout,
            Some((settings.max_receive_count, IMPORT_DLQ_NAME.to_owned())),
        );
        Ok(LocalBackend {
            // Through the same meter as the ports, so `bench e2e` charges the
            // baseline's writes as it charges Pointflow's.
            baseline_ledger: Arc::new(NaiveLedger::new(Arc::new(metered))),
            store_write_cost: ports.store_write_cost,
            ledger: ports.ledger,
            jobs: ports.jobs,
            queue: ports.queue,
            dlq: ports.dlq,
            import: Some(ImportSide {
                queue: Arc::new(import_queue),
                // The folder is the bucket: `<bucket dir>/imports/…`, `<bucket dir>/reports/…`.
                objects: Arc::new(DirObjects::new(bucket_dir.parent().unwrap_or(Path::new("")))),
                bucket: bucket_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("--bucket-dir must end in a folder name")?
                    .to_owned(),
                bucket_dir: Some(bucket_dir.to_owned()),
                s3: None,
                report_prefix: settings.import.report_prefix.clone(),
            }),
            store_requests: ports.store_requests,
            embedded: Some(store),
            db_file: (db.as_os_str() != ":memory:").then(|| db.to_owned()),
            description: format!("embedded SQLite at {}", db.display()),
        })
    }

    async fn aws(resources: &AwsResources, settings: &StackSettings) -> anyhow::Result<Self> {
        let sdk = pointflow::adapters::aws::load_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let s3 = pointflow::adapters::aws::s3_client(&sdk);
        let import = if resources.create {
            let bucket = format!("{}-imports", resources.table.to_ascii_lowercase());
            let (url, _) = create_queue_with_dlq(
                &sqs,
                &format!("{}-imports", resources.table),
                settings.import_visibility_timeout,
                settings.max_receive_count,
            )
            .await
            .context("creating the import queues")?;
            create_bucket_notifying(&s3, &sqs, &bucket, &url).await?;
            Some((bucket, url))
        } else {
            match (&resources.bucket, &resources.import_queue_url) {
                (Some(bucket), Some(url)) => Some((bucket.clone(), url.clone())),
                (None, None) => None,
                _ => anyhow::bail!("--bucket and --import-queue-url go together"),
            }
        };
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
        // The baseline writes through the ports' store, so that its requests
        // and write units are counted with Pointflow's.
        let ports = pointflow::backend::aws::store_ports(store.clone(), &sdk, &queue_url, &dlq_url, None);
        Ok(LocalBackend {
            baseline_ledger: Arc::new(NaiveLedger::new(store)),
            store_write_cost: ports.store_write_cost,
            ledger: ports.ledger,
            jobs: ports.jobs,
            queue: ports.queue,
            dlq: ports.dlq,
            import: import.map(|(bucket, url)| ImportSide {
                queue: Arc::new(SqsQueue::new(sqs, url)),
                objects: Arc::new(S3Objects::new(s3.clone())),
                bucket,
                bucket_dir: None,
                s3: Some(s3),
                report_prefix: settings.import.report_prefix.clone(),
            }),
            store_requests: ports.store_requests,
            embedded: None,
            db_file: None,
            description: format!("AWS: table {} and queue {queue_url}", resources.table),
        })
    }
}

impl LocalBackend {
    /// The same backend run as the naive baseline ([`pointflow::testkit::baseline`]):
    /// the baseline ledger, and every message sent in a request of its own.
    /// (One accrual per message is a packing setting, not a backend's.)
    pub fn baseline(mut self) -> Self {
        self.ledger = self.baseline_ledger.clone();
        self.queue = Arc::new(Unbatched::new(self.queue));
        self.description = format!("{} (naive baseline)", self.description);
        self
    }
}

impl ImportSide {
    /// Drops `file` into the bucket at `key`, as an operator would, with
    /// the user metadata `campaign` when given (`aws s3 cp --metadata
    /// campaign=…`) and `encoding` when given (`--metadata encoding=cp949`),
    /// and returns the object its event names. The embedded bucket has no
    /// notifications, so its event is queued here.
    pub async fn drop_file(
        &self,
        file: &Path,
        key: &str,
        campaign: Option<&str>,
        encoding: Option<&str>,
    ) -> anyhow::Result<ObjectRef> {
        self.drop_file_with(file, key, campaign, encoding, None).await
    }

    /// [`ImportSide::drop_file`], naming also the sheet of a workbook to
    /// read (metadata `sheet`).
    pub async fn drop_file_with(
        &self,
        file: &Path,
        key: &str,
        campaign: Option<&str>,
        encoding: Option<&str>,
        sheet: Option<&str>,
    ) -> anyhow::Result<ObjectRef> {
        self.drop_body(DropBody::File(file), key, metadata(campaign, encoding, sheet))
            .await
    }

    /// Drops `body` (a file received whole, as the operator console
    /// receives one) into the bucket at `key`, like [`ImportSide::drop_file`].
    pub async fn drop_bytes(&self, body: Vec<u8>, key: &str, campaign: Option<&str>) -> anyhow::Result<ObjectRef> {
        self.drop_body(DropBody::Bytes(body), key, metadata(campaign, None, None))
            .await
    }

    async fn drop_body(
        &self,
        body: DropBody<'_>,
        key: &str,
        metadata: BTreeMap<String, String>,
    ) -> anyhow::Result<ObjectRef> {
        let what = match &body {
            DropBody::File(file) => file.display().to_string(),
            DropBody::Bytes(bytes) => format!("{} bytes received", bytes.len()),
        };
        let object = match &self.s3 {
            Some(s3) => {
                let (body, size) = match body {
                    DropBody::File(file) => (
                        ByteStream::from_path(file)
                            .await
                            .with_context(|| format!("reading {what}"))?,
                        std::fs::metadata(file)?.len(),
                    ),
                    DropBody::Bytes(bytes) => {
                        let size = bytes.len() as u64;
                        (ByteStream::from(bytes), size)
                    }
                };
                let output = s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(body)
                    .set_metadata((!metadata.is_empty()).then(|| metadata.clone().into_iter().collect()))
                    .send()
                    .await
                    .with_context(|| format!("uploading to s3://{}/{key}", self.bucket))?;
                ObjectRef {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    size,
                    etag: output.e_tag().map(|e| e.trim_matches('"').to_owned()),
                    version_id: output.version_id().map(str::to_owned),
                }
            }
            None => {
                let dir = self
                    .bucket_dir
                    .clone()
                    .context("the embedded backend has no bucket folder")?;
                let root = dir.parent().unwrap_or(Path::new(""));
                let objects = DirObjects::new(root);
                let target = objects.path(&self.bucket, key)?;
                let (size, etag) = match body {
                    DropBody::File(file) => {
                        let source = file.to_owned();
                        tokio::task::spawn_blocking(move || copy_hashing(&source, &target)).await?
                    }
                    DropBody::Bytes(bytes) => {
                        tokio::task::spawn_blocking(move || write_hashing(&bytes, &target)).await?
                    }
                }
                .with_context(|| format!("copying {what} into {}", dir.display()))?;
                // Replaces (or clears) what an earlier drop at `key` set.
                objects.set_metadata(&self.bucket, key, &metadata)?;
                ObjectRef {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    size,
                    etag: Some(etag),
                    version_id: None,
                }
            }
        };
        if self.s3.is_none() {
            self.queue
                .send_messages(&[object_created_notification(&object)])
                .await?;
        }
        Ok(object)
    }
}

/// What a drop puts in the bucket: a file on disk, or bytes received.
enum DropBody<'a> {
    File(&'a Path),
    Bytes(Vec<u8>),
}

/// A dropped object's user metadata: its campaign, encoding and sheet, those given.
fn metadata(campaign: Option<&str>, encoding: Option<&str>, sheet: Option<&str>) -> BTreeMap<String, String> {
    campaign
        .map(|c| (CAMPAIGN_METADATA.to_owned(), c.to_owned()))
        .into_iter()
        .chain(encoding.map(|e| (ENCODING_METADATA.to_owned(), e.to_owned())))
        .chain(sheet.map(|s| (SHEET_METADATA.to_owned(), s.to_owned())))
        .collect()
}

/// Writes `body` to `target` (creating folders) and returns its size and
/// the same content hash as [`copy_hashing`].
fn write_hashing(body: &[u8], target: &Path) -> std::io::Result<(u64, String)> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(target, body)?;
    Ok((body.len() as u64, hex::encode(&Sha256::digest(body)[..16])))
}

/// Copies `source` to `target` (creating folders) and returns its size and
/// a content hash standing in for S3's ETag.
fn copy_hashing(source: &Path, target: &Path) -> std::io::Result<(u64, String)> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut input = std::fs::File::open(source)?;
    let mut output = std::io::BufWriter::new(std::fs::File::create(target)?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        std::io::Write::write_all(&mut output, &buffer[..n])?;
        size += n as u64;
    }
    std::io::Write::flush(&mut output)?;
    Ok((size, hex::encode(&hasher.finalize()[..16])))
}

/// Creates `bucket` (if missing) with an `s3:ObjectCreated:*` notification
/// for `imports/` to the queue at `queue_url`, as the template does.
pub async fn create_bucket_notifying(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
    queue_url: &str,
) -> anyhow::Result<()> {
    if let Err(e) = s3.create_bucket().bucket(bucket).send().await {
        let exists = e
            .as_service_error()
            .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists());
        if !exists {
            return Err(e).with_context(|| format!("creating bucket {bucket}"));
        }
    }
    let arn = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading the import queue's ARN")?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("the import queue has no ARN")?;
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value(IMPORT_PREFIX)
                        .build(),
                )
                .build(),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()?,
                )
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("configuring notifications of bucket {bucket}"))?;
    Ok(())
}

/// The accrual queue and its dead-letter queue alone, for `pointflow dlq`:
/// in the embedded database at `db`, or on SQS at the given URLs.
pub async fn open_queues(
    db: Option<&Path>,
    urls: Option<(&str, &str)>,
    settings: &StackSettings,
) -> anyhow::Result<(Arc<dyn WorkQueue>, Arc<dyn WorkQueue>)> {
    open_queue_pair(db, urls, (QUEUE_NAME, DLQ_NAME), settings.visibility_timeout, settings).await
}

/// The import queue and its dead-letter queue alone, for `pointflow dlq
/// --queue imports`: in the embedded database at `db`, or on SQS at the
/// given URLs.
pub async fn open_import_queues(
    db: Option<&Path>,
    urls: Option<(&str, &str)>,
    settings: &StackSettings,
) -> anyhow::Result<(Arc<dyn WorkQueue>, Arc<dyn WorkQueue>)> {
    open_queue_pair(
        db,
        urls,
        (IMPORT_QUEUE_NAME, IMPORT_DLQ_NAME),
        settings.import_visibility_timeout,
        settings,
    )
    .await
}

/// A queue and its dead-letter queue, by embedded names or SQS URLs.
async fn open_queue_pair(
    db: Option<&Path>,
    urls: Option<(&str, &str)>,
    (queue_name, dlq_name): (&str, &str),
    visibility_timeout: Duration,
    settings: &StackSettings,
) -> anyhow::Result<(Arc<dyn WorkQueue>, Arc<dyn WorkQueue>)> {
    match (db, urls) {
        (_, Some((queue_url, dlq_url))) => {
            let sqs = aws_sdk_sqs::Client::new(&pointflow::adapters::aws::load_config().await);
            Ok((
                Arc::new(SqsQueue::new(sqs.clone(), queue_url)),
                Arc::new(SqsQueue::new(sqs, dlq_url)),
            ))
        }
        (Some(db), None) => {
            let store = SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?;
            let queue = store.queue(
                queue_name,
                visibility_timeout,
                Some((settings.max_receive_count, dlq_name.to_owned())),
            );
            let dlq = store.queue(dlq_name, visibility_timeout, None);
            Ok((Arc::new(queue), Arc::new(dlq)))
        }
        (None, None) => anyhow::bail!("name the queues: --db for the embedded backend, or --queue-url and --dlq-url"),
    }
}
