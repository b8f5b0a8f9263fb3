//! The file side of a run: files dropped in the bucket at their virtual
//! time (their creation events queued on the import queue, sometimes
//! twice), and the import function, the production [`Importer`], invoked
//! one message at a time as the template's event source mapping does
//! (`BatchSize: 1`), over the faulty bucket, job store and queues.

use crate::adapters::memory::MemoryObjects;
use crate::ports::objects::ObjectRef;
use crate::services::import::task::{object_created_notification, parse_tasks};
use crate::services::import::{BlockingReads, ImportSettings, Importer};

use super::super::files::BUCKET;
use super::super::objects::FaultyObjects;
use super::*;

/// A drop still to come: file `file` of the scenario, at `at` (virtual ms);
/// `again`: the second drop of its bytes, at another key.
struct PendingDrop {
    at: u64,
    file: usize,
    again: bool,
}

/// A file dropped (a first drop or a second): its object as its event
/// names it.
pub(super) struct Dropped {
    pub file: usize,
    pub object: ObjectRef,
}

/// Everything of the run that reads files.
pub(super) struct ImportSide {
    pub importer: Importer,
    /// The bucket without faults: where files are dropped, and where the
    /// checks read the reports.
    pub bucket: MemoryObjects,
    /// The import queue and its DLQ, without and behind fault gates.
    pub queue: Arc<SimQueue>,
    pub dead: Arc<SimQueue>,
    pub faulty_queue: Arc<dyn WorkQueue>,
    pub faulty_dead: Arc<dyn WorkQueue>,
    pending: Vec<PendingDrop>,
    pub dropped: Vec<Dropped>,
    pub concurrency: usize,
    pub invocations: u64,
}

impl ImportSide {
    /// The import side of `scenario`: the importer writes to `jobs` and
    /// queues accruals on `accruals`, both behind their fault gates.
    pub(super) fn new(sim: &Sim, scenario: &Scenario, jobs: Arc<dyn JobStore>, accruals: Arc<dyn WorkQueue>) -> Self {
        let bucket = MemoryObjects::new();
        let queue = Arc::new(SimQueue {
            sim: sim.clone(),
            id: QueueId::Imports,
        });
        let dead = Arc::new(SimQueue {
            sim: sim.clone(),
            id: QueueId::ImportsDead,
        });
        let faulty_queue: Arc<dyn WorkQueue> = Arc::new(FaultyQueue {
            inner: queue.clone(),
            sim: sim.clone(),
        });
        let faulty_dead: Arc<dyn WorkQueue> = Arc::new(FaultyQueue {
            inner: dead.clone(),
            sim: sim.clone(),
        });
        let objects = Arc::new(FaultyObjects {
            inner: Arc::new(bucket.clone()),
            sim: sim.clone(),
        });
        let settings = ImportSettings {
            chunk_bytes: scenario.files.chunk_bytes,
            packing: scenario.packing,
            ..ImportSettings::default()
        };
        // The simulation polls by hand, without a runtime: the importer
        // parses on the task that polls it.
        let importer = Importer::new(objects, jobs, accruals, faulty_queue.clone(), settings)
            .with_blocking_reads(BlockingReads::Inline);
        let mut pending = Vec::new();
        for (file, spec) in scenario.files.files.iter().enumerate() {
            pending.push(PendingDrop {
                at: spec.at,
                file,
                again: false,
            });
            if let Some((_, at)) = &spec.again {
                pending.push(PendingDrop {
                    at: *at,
                    file,
                    again: true,
                });
            }
        }
        ImportSide {
            importer,
            bucket,
            queue,
            dead,
            faulty_queue,
            faulty_dead,
            pending,
            dropped: Vec::new(),
            concurrency: scenario.files.concurrency.max(1),
            invocations: 0,
        }
    }

    /// Whether every file was dropped.
    pub(super) fn all_dropped(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the next file is dropped.
    pub(super) fn next_drop(&self) -> Option<u64> {
        self.pending.iter().map(|d| d.at).min()
    }
}

impl Run {
    /// Import invocations running.
    pub(super) fn import_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.kind, TaskKind::Import { .. }))
            .count()
    }

    /// Drops the files due by now (`all`: every file left, as the calm
    /// phase does): writes each to the bucket and queues its creation event.
    pub(super) fn drop_due_files(&mut self, all: bool) {
        let now = self.sim.lock().now_ms;
        let (due, later): (Vec<PendingDrop>, Vec<PendingDrop>) = std::mem::take(&mut self.imports.pending)
            .into_iter()
            .partition(|d| all || d.at <= now);
        self.imports.pending = later;
        for due in due {
            let spec = &self.scenario.files.files[due.file];
            let key = match (&spec.again, due.again) {
                (Some((key, _)), true) => key.clone(),
                _ => spec.key.clone(),
            };
            let body = spec.render(&self.scenario.pool);
            let object = self
                .imports
                .bucket
                .drop_file(BUCKET, &key, body, &[("campaign", &spec.campaign)]);
            let event = object_created_notification(&object);
            let twice = spec.duplicate_event && !due.again;
            let mut core = self.sim.lock();
            core.note(|| format!("file {} dropped at {key} (job {})", due.file, short(object.job_id())));
            core.push_messages(QueueId::Imports, std::slice::from_ref(&event));
            if twice {
                core.count(FaultKind::DuplicateEvent);
                core.note(|| format!("S3 sends the event of {key} again"));
                core.push_messages(QueueId::Imports, &[event]);
            }
            drop(core);
            self.imports.dropped.push(Dropped { file: due.file, object });
        }
    }

    /// The import queue's event source invokes the import function with
    /// one message (a duplicate delivery, when SQS makes one, goes to an
    /// invocation of its own).
    pub(super) fn invoke_importer(&mut self) {
        let received = self.sim.lock().receive(QueueId::Imports, 1);
        for message in received {
            self.imports.invocations += 1;
            let importer = self.imports.importer.clone();
            let body = message.body.clone();
            let message_id = message.message_id.clone();
            let id = self.spawn(
                TaskKind::Import { message },
                Box::pin(async move {
                    // What the csv-import handler does with one message: a
                    // task that fails reports the message failed.
                    let result = match parse_tasks(&body) {
                        Ok(tasks) => {
                            let mut result = Ok(());
                            for task in &tasks {
                                if let Err(e) = importer.run(task).await {
                                    result = Err(e.to_string());
                                    break;
                                }
                            }
                            result
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    TaskOutput::Imported(result)
                }),
            );
            self.note(|| format!("task {id}: import function invoked with {message_id}"));
        }
    }

    /// Takes in what an import invocation returned: the event source
    /// deletes its message unless it failed.
    pub(super) fn finish_import(&mut self, id: TaskId, message: &ReceivedMessage, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.note(|| format!("task {id}: import function returns"));
                let handle = [message.receipt_handle.clone()];
                self.sim.lock().delete(QueueId::Imports, &handle, true);
            }
            Err(e) => self.note(|| format!("task {id}: import function reports {} failed: {e}", message.message_id)),
        }
    }
}
