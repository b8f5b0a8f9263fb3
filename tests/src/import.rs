//! A rig for the file import: a bucket (a local folder, or S3 on the
//! emulator), the import queue, the importer and the worker over one backend,
//! and a loop that plays both event source mappings until all is quiet.

use std::io::Read;

use sha2::Digest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pointflow::adapters::local_dir::DirObjects;
use pointflow::domain::Job;
use pointflow::ports::objects::{ObjectRef, ObjectStore};
use pointflow::ports::{ReceivedMessage, WorkQueue};
use pointflow::services::import::task::object_created_notification;
use pointflow::services::import::{ImportSettings, ImportTask, Importer};
use pointflow::services::worker::{Worker, WorkerSettings};
use pointflow_cli::poller::invoke_and_acknowledge;

use crate::backend::Backend;

/// How long a message of [`ImportRig::sqlite`]'s queues stays invisible.
pub const SQLITE_RIG_VISIBILITY: Duration = Duration::from_millis(500);

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a file import touches.
pub struct ImportRig {
    pub backend: Backend,
    pub tasks: Arc<dyn WorkQueue>,
    pub objects: Arc<dyn ObjectStore>,
    pub bucket: String,
    pub importer: Importer,
    pub worker: Worker,
    /// Keeps a local bucket's folder alive.
    pub _dir: Option<TempDir>,
}

/// What running until quiet did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// Import-function invocations (one message each, as the template's batch size 1).
    pub import_invocations: usize,
    /// Import messages reported failed.
    pub import_failures: usize,
}

impl ImportRig {
    /// A rig on an in-memory SQLite store, its bucket a temporary folder:
    /// queues that redeliver after [`SQLITE_RIG_VISIBILITY`] and
    /// dead-letter on the third receive.
    pub fn sqlite(settings: ImportSettings) -> Self {
        Self::sqlite_with_import_dlq(settings).0
    }

    /// [`ImportRig::sqlite`], and the import queue's dead-letter queue.
    pub fn sqlite_with_import_dlq(settings: ImportSettings) -> (Self, Arc<dyn WorkQueue>) {
        crate::init_logging();
        let visibility = SQLITE_RIG_VISIBILITY;
        let store = pointflow::adapters::sqlite::SqliteStore::in_memory().expect("open SQLite");
        let queue = store.queue("accruals", visibility, Some((3, "accruals-dlq".to_owned())));
        let dlq = store.queue("accruals-dlq", visibility, None);
        let tasks = store.queue("imports", visibility, Some((3, "imports-dlq".to_owned())));
        let import_dlq: Arc<dyn WorkQueue> = Arc::new(store.queue("imports-dlq", visibility, None));
        let store = Arc::new(store);
        let counter = store.clone();
        let backend = Backend {
            ledger: store.clone(),
            jobs: store,
            queue: Arc::new(queue),
            dlq: Arc::new(dlq),
            visibility_timeout: visibility,
            max_receive_count: 3,
            store_requests: Arc::new(move || counter.requests()),
            races_are_safe: true,
            strict: None,
        };
        (Self::local(backend, Arc::new(tasks), settings), import_dlq)
    }

    /// A rig on `backend` with a local folder as the bucket and `tasks` as
    /// the import queue.
    pub fn local(backend: Backend, tasks: Arc<dyn WorkQueue>, settings: ImportSettings) -> Self {
        let dir = TempDir::new("pointflow-bucket");
        let objects: Arc<dyn ObjectStore> = Arc::new(DirObjects::new(&dir.0));
        Self::new(backend, tasks, objects, "local-bucket".to_owned(), settings, Some(dir))
    }

    pub fn new(
        backend: Backend,
        tasks: Arc<dyn WorkQueue>,
        objects: Arc<dyn ObjectStore>,
        bucket: String,
        settings: ImportSettings,
        dir: Option<TempDir>,
    ) -> Self {
        let importer = Importer::new(
            objects.clone(),
            backend.jobs.clone(),
            backend.queue.clone(),
            tasks.clone(),
            settings,
        );
        let worker = Worker::new(
            backend.ledger.clone(),
            backend.jobs.clone(),
            WorkerSettings {
                max_receive_count: backend.max_receive_count,
                message_concurrency: 1,
            },
        );
        ImportRig {
            backend,
            tasks,
            objects,
            bucket,
            importer,
            worker,
            _dir: dir,
        }
    }

    /// Writes `content` at `key` and returns the task its creation event
    /// would start (the ETag stands in for S3's: a hash of the content).
    pub async fn drop_file(&self, key: &str, content: &[u8]) -> ImportTask {
        self.objects
            .put(&self.bucket, key, content.to_vec())
            .await
            .expect("put object");
        let etag = hex::encode(&sha2::Sha256::digest(content)[..16]);
        ImportTask {
            object: ObjectRef {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                size: content.len() as u64,
                etag: Some(etag),
                version_id: None,
            },
            resume: None,
            audit: None,
        }
    }

    /// [`ImportRig::drop_file`] with the user metadata `campaign` set, as
    /// `aws s3 cp --metadata campaign=<campaign>` sets it (local rig only;
    /// the emulator tests put with metadata themselves).
    pub async fn drop_file_in_campaign(&self, key: &str, content: &[u8], campaign: &str) -> ImportTask {
        self.drop_file_with_metadata(key, content, &[("campaign", campaign)])
            .await
    }

    /// [`ImportRig::drop_file`] with user metadata (`campaign`,
    /// `encoding`), as `aws s3 cp --metadata` sets it (local rig only).
    pub async fn drop_file_with_metadata(&self, key: &str, content: &[u8], metadata: &[(&str, &str)]) -> ImportTask {
        let task = self.drop_file(key, content).await;
        let dir = self._dir.as_ref().expect("metadata on the local rig only");
        let metadata = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DirObjects::new(&dir.0)
            .set_metadata(&self.bucket, key, &metadata)
            .expect("set metadata");
        task
    }

    /// Sends a start task to the import queue, as the bucket notification does.
    pub async fn notify(&self, task: &ImportTask) {
        self.tasks
            .send_messages(&[object_created_notification(&task.object)])
            .await
            .expect("notify");
    }

    /// The error report of the latest file dropped at `key` (the one its
    /// `reports/<key>.job.json` names), or `None` if it has none.
    pub async fn report(&self, key: &str) -> Option<String> {
        let pointer = self.read(&format!("reports/{key}.job.json")).await?;
        let pointer: serde_json::Value = serde_json::from_str(&pointer).expect("the job pointer is JSON");
        let report = pointer["report"].as_str().expect("the job pointer names the report");
        self.read(report).await
    }

    /// A whole object's text, or `None` if it does not exist.
    pub async fn read(&self, key: &str) -> Option<String> {
        let object = ObjectRef {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            size: 0,
            etag: None,
            version_id: None,
        };
        let mut reader = self.objects.open(&object, 0).await.ok()?;
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).map(|_| text)
        })
        .await
        .expect("join")
        .ok()
    }

    pub async fn job(&self, task: &ImportTask) -> Job {
        self.backend
            .jobs
            .get_job(task.object.job_id())
            .await
            .expect("get job")
            .expect("the job exists")
    }

    /// Plays the import and accrual event source mappings until both queues
    /// stay empty.
    pub async fn run_until_quiet(&self) -> Quiet {
        let mut quiet = Quiet::default();
        let mut idle_rounds = 0;
        let poll = Duration::from_millis(200);
        while idle_rounds < 2 {
            let mut busy = false;
            let tasks = self.tasks.receive_messages(1, poll).await.expect("receive task");
            if !tasks.is_empty() {
                busy = true;
                quiet.import_invocations += 1;
                quiet.import_failures += self.invoke_import(&tasks).await;
            }
            loop {
                let messages = self.backend.queue.receive_messages(10, poll).await.expect("receive");
                if messages.is_empty() {
                    break;
                }
                busy = true;
                invoke_and_acknowledge(self.backend.queue.as_ref(), &self.worker, &messages)
                    .await
                    .expect("acknowledge");
            }
            idle_rounds = if busy { 0 } else { idle_rounds + 1 };
        }
        quiet
    }

    /// One import-function invocation with these messages, as the event
    /// source mapping makes it; returns how many it reported failed.
    pub async fn invoke_import(&self, messages: &[ReceivedMessage]) -> usize {
        let (_, failed) = invoke_and_acknowledge(self.tasks.as_ref(), &self.importer, messages)
            .await
            .expect("acknowledge");
        failed
    }
}
