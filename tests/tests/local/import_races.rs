//! Two interleavings of a file's chunks that the simulation found wrong
//! (docs/simulation.md, "What the file import cases found"), replayed
//! here step by step on the embedded backend: a chunk that hands the next
//! one on and dies before recording itself, and two readings of the last
//! chunk at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pointflow::domain::packing::PackingLimits;
use pointflow::domain::JobStatus;
use pointflow::ports::objects::{ObjectError, ObjectReader, ObjectRef, ObjectStore};
use pointflow::ports::{QueueError, ReceivedMessage, WorkQueue};
use pointflow::services::import::task::parse_tasks;
use pointflow::services::import::{ChunkOutcome, ImportError, ImportSettings, ImportTask, Importer};
use pointflow_tests::import::ImportRig;

fn settings() -> ImportSettings {
    ImportSettings {
        chunk_bytes: 40,
        packing: PackingLimits {
            max_accruals: 2,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    }
}

fn rig() -> ImportRig {
    ImportRig::sqlite(settings())
}

/// Three chunks of 40 bytes: rows without `accrual_id` (some repeating)
/// and a bad line in the first chunk and in the last.
const FILE: &str = "member_id,point_type,amount\n\
m-1,P,10\n\
m-2,P,0\n\
m-1,P,10\n\
m-3,P,30\n\
m-1,P,10\n\
m-4,P,40\n\
m-5,P,50\n\
m-6,P,60\n\
m-7,P,0\n";

/// The one import task waiting in the queue, taken off it.
async fn next_task(rig: &ImportRig) -> ImportTask {
    let messages = rig.tasks.receive_messages(1, Duration::from_millis(500)).await.unwrap();
    assert_eq!(messages.len(), 1, "one task waits");
    rig.tasks
        .delete_messages(&[messages[0].receipt_handle.clone()])
        .await
        .unwrap();
    parse_tasks(&messages[0].body).unwrap().remove(0)
}

/// A queue whose sends take effect and then never answer: the function
/// running them dies (times out) right after, as in a crash.
struct SendThenHang(Arc<dyn WorkQueue>);

#[async_trait]
impl WorkQueue for SendThenHang {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.0.send_messages(bodies).await?;
        std::future::pending().await
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.0.receive_messages(max, wait).await
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.0.delete_messages(receipt_handles).await
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.0.release_messages(receipt_handles).await
    }

    fn requests(&self) -> u64 {
        self.0.requests()
    }
}

/// Fails before the fix: the last chunk ended the job's reading while
/// chunk 1 was unrecorded, and the job showed `completed` with a total
/// short of chunk 1's rows.
#[tokio::test]
async fn the_last_chunk_waits_for_a_chunk_that_handed_it_on_and_died() {
    let rig = rig();
    let task = rig.drop_file("imports/died.csv", FILE.as_bytes()).await;
    rig.notify(&task).await;
    let first = next_task(&rig).await;
    assert!(matches!(
        rig.importer.run(&first).await,
        Ok(ChunkOutcome::Continued { .. })
    ));

    // Chunk 1 queues its accruals and the continuation, then dies.
    let chunk1 = next_task(&rig).await;
    let dying = Importer::new(
        rig.objects.clone(),
        rig.backend.jobs.clone(),
        rig.backend.queue.clone(),
        Arc::new(SendThenHang(rig.tasks.clone())),
        settings(),
    );
    assert!(tokio::time::timeout(Duration::from_millis(300), dying.run(&chunk1))
        .await
        .is_err());

    let last = next_task(&rig).await;
    assert_eq!(
        last.resume.as_ref().map(|r| r.chunk),
        Some(2),
        "the file has three chunks"
    );
    match rig.importer.run(&last).await {
        Err(ImportError::EarlierChunkPending { chunk: 1 }) => {}
        other => panic!("the last chunk must wait for chunk 1: {other:?}"),
    }
    assert_eq!(rig.job(&task).await.status(), JobStatus::Importing);

    // Chunk 1's redelivery records it (and hands chunk 2 on again).
    assert!(matches!(
        rig.importer.run(&chunk1).await,
        Ok(ChunkOutcome::Continued { .. })
    ));
    assert!(matches!(
        rig.importer.run(&last).await,
        Ok(ChunkOutcome::Finished { .. })
    ));
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(
        (job.total, job.applied, job.duplicate, job.rejected, job.status()),
        (7, 7, 0, 2, JobStatus::CompletedWithErrors)
    );
    let report = rig.report("imports/died.csv").await.expect("a report");
    let lines: Vec<&str> = report.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(lines, ["3", "10"]);
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A bucket that, when an occurrence table is first opened, runs `hook`
/// to completion first: another reading of the chunk overtakes this one.
struct Overtaken {
    inner: Arc<dyn ObjectStore>,
    hook: Mutex<Option<Hook>>,
}

#[async_trait]
impl ObjectStore for Overtaken {
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError> {
        if object.key.ends_with(".occurrences") {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook.await;
            }
        }
        self.inner.open(object, offset).await
    }

    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        self.inner.metadata(object, name).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        self.inner.put(bucket, key, body).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(bucket, key).await
    }

    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError> {
        self.inner.concat(bucket, key, head, parts).await
    }
}

/// Fails before the fix: the overtaken reading found the occurrence table
/// deleted and failed the chunk, rewriting the report without the last
/// chunk's bad line.
#[tokio::test]
async fn a_reading_overtaken_by_another_of_its_chunk_leaves_the_report_whole() {
    let rig = rig();
    let task = rig.drop_file("imports/twice.csv", FILE.as_bytes()).await;
    rig.notify(&task).await;
    for _ in 0..2 {
        let chunk = next_task(&rig).await;
        assert!(matches!(
            rig.importer.run(&chunk).await,
            Ok(ChunkOutcome::Continued { .. })
        ));
    }
    let last = next_task(&rig).await;
    let overtaking = rig.importer.clone();
    let again = last.clone();
    let hook: Hook = Box::pin(async move {
        let outcome = overtaking.run(&again).await;
        assert!(matches!(outcome, Ok(ChunkOutcome::Finished { .. })), "{outcome:?}");
    });
    let late = Importer::new(
        Arc::new(Overtaken {
            inner: rig.objects.clone(),
            hook: Mutex::new(Some(hook)),
        }),
        rig.backend.jobs.clone(),
        rig.backend.queue.clone(),
        rig.tasks.clone(),
        settings(),
    );
    let outcome = late.run(&last).await;
    assert!(matches!(outcome, Ok(ChunkOutcome::Skipped { .. })), "{outcome:?}");
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(
        (job.error.as_deref(), job.status()),
        (None, JobStatus::CompletedWithErrors)
    );
    let report = rig.report("imports/twice.csv").await.expect("a report");
    let lines: Vec<&str> = report.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(lines, ["3", "10"]);
}
