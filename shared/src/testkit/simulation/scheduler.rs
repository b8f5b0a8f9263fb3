//! The seeded driver: plays the clients, Lambda's SQS event source and the
//! fault injector over the production services, then checks the outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::{waker, ArcWake};

use crate::adapters::sqlite::SqliteStore;
use crate::backend::{self, Ports, QueuePolicy};
use crate::domain::lots::LotKey;
use crate::domain::submission::job_id_for_key;
use crate::domain::JobId;
use crate::ports::{JobStore, Ledger, QueueError, ReceivedMessage, WorkQueue};
use crate::services::api::{ApiRequest, ApiResponse};
use crate::services::api::{ApiService, ApiSettings};
use crate::services::dlq::{QueueKind, Redriven};
use crate::services::worker::{BatchReport, IncomingMessage, MessageRetry, Worker, WorkerSettings};

use super::exec::{Core, GatePoint, Sim, StoreFault, TaskId, Verdict};
use super::faults::{FaultyJobStore, FaultyLedger, FaultyQueue};
use super::model::{ModelJobs, ModelLedger, SharedModel};
use super::objects::S3_OP;
use super::queue::{short, QueueId, SimQueue};
use super::scenario::Scenario;
use super::tokens::{TokenLedger, TokenSettings};
use super::{FaultKind, SeedOutcome, SimBackend, SimOptions};

// The checks a run makes of the stores once it has drained.
mod checks;
// Polling the run's tasks and taking in what each one returned.
mod tasks;
// The clients that use, reverse and cancel, and what they are answered.
mod ledger_clients;
// The checks of the ledger against the reference model once the run drained.
mod ledger_checks;
// Files dropped, and the import function that reads them chunk by chunk.
mod imports;
// The checks of the file jobs and their reports once the run drained.
mod import_checks;
// The operator's DLQ redrives, mid-run and at the end.
mod redrives;

use imports::ImportSide;

use ledger_clients::Role;

/// Scheduler steps with faults before they stop, whatever state the run is in.
const CHAOS_STEPS: u64 = 2_000;
/// Redrives an operator starts while faults still happen, at most.
const MAX_REDRIVES_MID_RUN: u32 = 3;
/// Steps allowed for the pipeline to settle once faults stop.
const CALM_STEPS: u64 = 2_000;

type TaskFuture = Pin<Box<dyn Future<Output = TaskOutput> + Send>>;

enum TaskOutput {
    Answer(ApiResponse),
    Batch(BatchReport),
    Redriven(Result<Redriven, QueueError>),
    /// An import invocation's message: done, or failed (with why).
    Imported(Result<(), String>),
}

enum TaskKind {
    /// `abandoned`: the client stopped waiting for this answer.
    Ingest {
        client: usize,
        abandoned: bool,
    },
    Worker {
        batch: Vec<ReceivedMessage>,
    },
    /// The import function, invoked with one message of the import queue.
    Import {
        message: ReceivedMessage,
    },
    Redrive,
}

/// A task's waker only marks it for polling.
struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

struct Task {
    future: TaskFuture,
    flag: Arc<Flag>,
    kind: TaskKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Client {
    /// Sends once submission 0 is accepted (the client reusing its key).
    Blocked,
    /// Sends (again) at this virtual time.
    Waiting {
        at: u64,
    },
    InFlight,
    /// Refused for now (a cancel of a job still running) while no faults
    /// happen: asks again once the pipeline has nothing else to do.
    Parked,
    Done,
}

struct Run {
    sim: Sim,
    scenario: Scenario,
    ingest: ApiService,
    worker: Worker,
    /// The store underneath, without faults, for the checks.
    ledger: Arc<dyn Ledger>,
    jobs: Arc<dyn JobStore>,
    main: Arc<SimQueue>,
    dead: Arc<SimQueue>,
    /// The queues behind fault-injecting wrappers, for a redrive mid-run.
    faulty_main: Arc<dyn WorkQueue>,
    faulty_dead: Arc<dyn WorkQueue>,
    /// The bucket, the import queues and the import function.
    imports: ImportSide,
    tasks: BTreeMap<TaskId, Task>,
    next_task: TaskId,
    clients: Vec<Client>,
    requests: Vec<ApiRequest>,
    /// What each client asks for (same indices as `clients`).
    roles: Vec<Role>,
    /// The reference ledger every store call is checked against.
    model: SharedModel,
    violations: Vec<String>,
    steps: u64,
    invocations: u64,
    ingest_requests: u64,
    jobs_failed_before_redrive: u64,
    redrives: u32,
}

/// Runs one seed (see [`super::run_seed`]).
pub(crate) fn run(seed: u64, options: &SimOptions) -> SeedOutcome {
    // On this thread only, for this seed only: the seed runs on it.
    let _flaw = crate::flaws::switch_on(options.flaw);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_unguarded(seed, options)));
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        SeedOutcome {
            seed,
            violations: vec![format!("panicked: {message}")],
            faults: Default::default(),
            trace: Vec::new(),
            steps: 0,
            items: 0,
            invocations: 0,
            requests: 0,
            import_invocations: 0,
            dead_lettered: 0,
            jobs_failed_before_redrive: 0,
        }
    })
}

fn run_unguarded(seed: u64, options: &SimOptions) -> SeedOutcome {
    // SQLite runs its calls with `spawn_blocking`, which needs a runtime's
    // blocking pool (never its scheduler: the simulation polls by itself).
    let runtime = match options.backend {
        SimBackend::Memory => None,
        SimBackend::Sqlite => match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => Some(rt),
            Err(e) => return failed_to_start(seed, format!("no runtime for SQLite: {e}")),
        },
    };
    let _context = runtime.as_ref().map(|rt| rt.enter());
    // The simulation brings its own queues (on its virtual clock); of a
    // backend's ports it takes the store.
    let policy = QueuePolicy {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 3,
    };
    let Ports { ledger, jobs, .. } = match options.backend {
        SimBackend::Memory => backend::memory::ports(policy),
        SimBackend::Sqlite => match SqliteStore::in_memory() {
            Ok(store) => backend::sqlite::ports(&store, "unused", "unused-dlq", policy),
            Err(e) => return failed_to_start(seed, format!("cannot open SQLite: {e}")),
        },
    };
    let scenario = Scenario::generate(seed);
    let transactions = TokenSettings::generate(seed);
    let visibility_ms = transactions.visibility_ms.unwrap_or(scenario.visibility_ms);
    let mut core = Core::new(seed, scenario.rates, options.trace);
    core.queues[QueueId::Main as usize].visibility_ms = visibility_ms;
    core.queues[QueueId::Main as usize].max_receive_count = Some(scenario.max_receive_count);
    core.queues[QueueId::Dead as usize].visibility_ms = visibility_ms;
    core.queues[QueueId::Imports as usize].visibility_ms = visibility_ms;
    core.queues[QueueId::Imports as usize].max_receive_count = Some(scenario.max_receive_count);
    core.queues[QueueId::ImportsDead as usize].visibility_ms = visibility_ms;
    core.note(|| {
        format!(
            "transactions of at most {} actions; {transactions:?}",
            transactions.max_actions
        )
    });
    let sim = Sim::new(core);
    let main = Arc::new(SimQueue {
        sim: sim.clone(),
        id: QueueId::Main,
    });
    let dead = Arc::new(SimQueue {
        sim: sim.clone(),
        id: QueueId::Dead,
    });
    let production_ledger: Arc<dyn Ledger> = ledger.clone();
    let model = SharedModel::default();
    let production_ledger: Arc<dyn Ledger> = Arc::new(ModelLedger {
        inner: production_ledger,
        model: model.clone(),
    });
    // The model sees each transaction that took effect; the token ledger
    // above the fault gates splits a message's credit into them.
    let faulty_ledger: Arc<dyn Ledger> = Arc::new(TokenLedger::new(
        Arc::new(FaultyLedger {
            inner: production_ledger,
            sim: sim.clone(),
        }),
        sim.clone(),
        transactions.max_actions,
    ));
    let production_jobs: Arc<dyn JobStore> = Arc::new(ModelJobs {
        inner: jobs.clone(),
        model: model.clone(),
    });
    let faulty_jobs: Arc<dyn JobStore> = Arc::new(FaultyJobStore {
        inner: production_jobs,
        sim: sim.clone(),
    });
    let faulty_queue: Arc<dyn WorkQueue> = Arc::new(FaultyQueue {
        inner: main.clone(),
        sim: sim.clone(),
    });
    let faulty_dead: Arc<dyn WorkQueue> = Arc::new(FaultyQueue {
        inner: dead.clone(),
        sim: sim.clone(),
    });
    let ingest = ApiService::new(
        faulty_jobs.clone(),
        faulty_ledger.clone(),
        faulty_queue.clone(),
        ApiSettings {
            packing: scenario.packing,
            ..ApiSettings::default()
        },
    );
    let imports = ImportSide::new(&sim, &scenario, faulty_jobs.clone(), faulty_queue.clone());
    let worker = Worker::new(
        faulty_ledger,
        faulty_jobs,
        WorkerSettings {
            max_receive_count: scenario.max_receive_count,
            message_concurrency: scenario.message_concurrency,
        },
    )
    // Retries within a delivery, without waiting: the simulation's clock is
    // virtual, and a wait would need a timer.
    .with_retry(MessageRetry {
        base: std::time::Duration::ZERO,
        cap: std::time::Duration::ZERO,
        ..MessageRetry::default()
    });
    // Clients: one per submission, then the one reusing a key, if any.
    let mut requests: Vec<ApiRequest> = (0..scenario.submissions.len())
        .map(|s| scenario.request(s))
        .chain(scenario.conflicting_request())
        .collect();
    let mut clients = vec![Client::Waiting { at: 0 }; scenario.submissions.len()];
    let mut roles: Vec<Role> = (0..scenario.submissions.len()).map(Role::Submission).collect();
    if scenario.conflicting.is_some() {
        clients.push(Client::Blocked);
        roles.push(Role::KeyReuse);
    }
    ledger_clients::add_clients(&scenario, &mut clients, &mut roles, &mut requests);
    let items = scenario.submissions.iter().map(|s| s.items.len() as u64).sum();
    let mut run = Run {
        sim,
        clients,
        requests,
        roles,
        model,
        scenario,
        ingest,
        worker,
        ledger,
        jobs,
        main,
        dead,
        faulty_main: faulty_queue,
        faulty_dead,
        imports,
        tasks: BTreeMap::new(),
        next_task: 0,
        violations: Vec::new(),
        steps: 0,
        invocations: 0,
        ingest_requests: 0,
        jobs_failed_before_redrive: 0,
        redrives: 0,
    };
    run.describe_scenario();
    run.chaos();
    run.calm("settle");
    run.check_settled();
    run.redrive();
    run.calm("drain the redriven messages");
    run.check_final();
    run.check_ledger();
    let mut core = run.sim.lock();
    SeedOutcome {
        seed,
        violations: run.violations.clone(),
        faults: core.faults.clone(),
        trace: core.take_trace(),
        steps: run.steps,
        items,
        invocations: run.invocations,
        requests: run.ingest_requests,
        import_invocations: run.imports.invocations,
        dead_lettered: core.dead_lettered,
        jobs_failed_before_redrive: run.jobs_failed_before_redrive,
    }
}

fn failed_to_start(seed: u64, why: String) -> SeedOutcome {
    SeedOutcome {
        seed,
        violations: vec![why],
        faults: Default::default(),
        trace: Vec::new(),
        steps: 0,
        items: 0,
        invocations: 0,
        requests: 0,
        import_invocations: 0,
        dead_lettered: 0,
        jobs_failed_before_redrive: 0,
    }
}

/// The scheduler's possible moves in one step.
#[derive(Debug, Clone, Copy)]
enum Move {
    Gate,
    Send,
    Invoke,
    Expire,
    GiveUp,
    Redrive,
    Import,
}

impl Run {
    fn note(&self, line: impl FnOnce() -> String) {
        self.sim.lock().note(line);
    }

    fn describe_scenario(&self) {
        let s = &self.scenario;
        self.note(|| {
            format!(
                "scenario: {} submissions, {} pool accruals, packing {} per message, maxReceiveCount {}, \
                 batch {}, MaximumConcurrency {}, {} messages at once, rates {:?}",
                s.submissions.len(),
                s.pool.len(),
                s.packing.max_accruals,
                s.max_receive_count,
                s.batch_size,
                s.maximum_concurrency,
                s.message_concurrency,
                s.rates
            )
        });
        for (i, sub) in s.submissions.iter().enumerate() {
            let job = short(job_id_for_key(&sub.key));
            self.note(|| format!("submission {i}: key {} (job {job}), items {:?}", sub.key, sub.items));
        }
        for (i, file) in s.files.files.iter().enumerate() {
            self.note(|| {
                format!(
                    "file {i}: {} at {} ms (again: {:?}), chunks of {} bytes, rows {:?}",
                    file.key, file.at, file.again, s.files.chunk_bytes, file.rows
                )
            });
        }
    }

    fn all_done(&self) -> bool {
        self.clients.iter().all(|c| matches!(c, Client::Done | Client::Parked))
    }

    fn worker_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.kind, TaskKind::Worker { .. }))
            .count()
    }

    /// Faults on: the scheduler picks one move at a time at random.
    fn chaos(&mut self) {
        for _ in 0..CHAOS_STEPS {
            if self.all_done() && self.tasks.is_empty() && self.imports.all_dropped() && {
                let core = self.sim.lock();
                core.queues[QueueId::Main as usize].messages.is_empty()
                    && core.queues[QueueId::Imports as usize].messages.is_empty()
            } {
                break;
            }
            self.steps += 1;
            self.drop_due_files(false);
            let (moves, expirable) = {
                let mut core = self.sim.lock();
                let dt = core.rng.u64(0..=1_500);
                core.now_ms += dt;
                let now = core.now_ms;
                let mut moves: Vec<(Move, f64)> = Vec::new();
                if !core.pending_gates().is_empty() {
                    moves.push((Move::Gate, 8.0));
                }
                if self
                    .clients
                    .iter()
                    .any(|c| matches!(c, Client::Waiting { at } if *at <= now))
                {
                    moves.push((Move::Send, 2.0));
                }
                if core.has_visible(QueueId::Main) && self.worker_tasks() < self.scenario.maximum_concurrency {
                    moves.push((Move::Invoke, 3.0));
                }
                if core.has_visible(QueueId::Imports) && self.import_tasks() < self.imports.concurrency {
                    moves.push((Move::Import, 3.0));
                }
                // In-flight messages whose delivery a live worker or import
                // function still holds.
                let expirable: Vec<(QueueId, String)> = self
                    .tasks
                    .values()
                    .flat_map(|t| match &t.kind {
                        TaskKind::Worker { batch } => batch.iter().map(|m| (QueueId::Main, m)).collect(),
                        TaskKind::Import { message } => vec![(QueueId::Imports, message)],
                        TaskKind::Ingest { .. } | TaskKind::Redrive => Vec::new(),
                    })
                    .filter(|(q, m)| {
                        core.queues[*q as usize]
                            .messages
                            .iter()
                            .any(|q| q.receipt.as_deref() == Some(m.receipt_handle.as_str()) && q.visible_at > now)
                    })
                    .map(|(q, m)| (q, m.message_id.clone()))
                    .collect();
                if !expirable.is_empty() && core.rates.expire > 0.0 {
                    moves.push((Move::Expire, 10.0 * core.rates.expire));
                }
                if self.waited_on().is_some() {
                    moves.push((Move::GiveUp, 3.0 * core.rates.crash));
                }
                if self.redrives < MAX_REDRIVES_MID_RUN
                    && Self::dead_letters_waiting(&core)
                    && !self.tasks.values().any(|t| matches!(t.kind, TaskKind::Redrive))
                {
                    moves.push((Move::Redrive, 0.2));
                }
                (moves, expirable)
            };
            if moves.is_empty() {
                self.idle();
                continue;
            }
            let chosen = {
                let mut core = self.sim.lock();
                let total: f64 = moves.iter().map(|(_, w)| w).sum();
                let mut x = core.rng.f64() * total;
                let mut chosen = moves[moves.len() - 1].0;
                for (m, w) in &moves {
                    if x < *w {
                        chosen = *m;
                        break;
                    }
                    x -= w;
                }
                chosen
            };
            match chosen {
                Move::Gate => self.open_a_gate(),
                Move::Send => self.send_a_request(),
                Move::Invoke => self.invoke_worker(),
                Move::Expire => {
                    let mut core = self.sim.lock();
                    let (q, id) = expirable[core.rng.usize(..expirable.len())].clone();
                    core.expire(q, &id);
                }
                Move::GiveUp => self.give_up(),
                Move::Redrive => self.start_redrive(),
                Move::Import => self.invoke_importer(),
            }
            self.poll_tasks();
        }
    }

    /// Nothing to do now: let time pass to the next thing that will happen.
    fn idle(&mut self) {
        let mut core = self.sim.lock();
        let next_client = self
            .clients
            .iter()
            .filter_map(|c| match c {
                Client::Waiting { at } => Some(*at),
                _ => None,
            })
            .min();
        let next = [
            core.next_visible(QueueId::Main),
            core.next_visible(QueueId::Imports),
            next_client,
            self.imports.next_drop(),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(t) = next {
            core.now_ms = core.now_ms.max(t);
        }
    }

    /// Lets one waiting call go on: maybe failing it, maybe crashing its task.
    fn open_a_gate(&mut self) {
        let crashed = {
            let mut core = self.sim.lock();
            let gates = core.pending_gates();
            let gate = gates[core.rng.usize(..gates.len())];
            let roll = core.rng.f64();
            let (store_error, crash) = (core.rates.store_error, core.rates.crash);
            match gate.point {
                GatePoint::Before if roll < store_error => {
                    let fault = [
                        StoreFault::Throttling,
                        StoreFault::ProvisionedThroughputExceeded,
                        StoreFault::TransactionConflict,
                    ][core.rng.usize(..3)];
                    if gate.op.starts_with(S3_OP) {
                        core.count(FaultKind::ObjectStoreError);
                    } else {
                        core.count(fault.kind());
                    }
                    core.note(|| format!("task {}: {} fails with {fault:?}", gate.task, gate.op));
                    core.open(gate.id, Verdict::Fail(fault));
                    None
                }
                // Before a call: the task dies between two calls (or right
                // after being invoked) without the next one's effect.
                GatePoint::Before if roll < store_error + crash / 2.0 => Some(gate),
                GatePoint::After if roll < crash => Some(gate),
                _ => {
                    if gate.point == GatePoint::Before {
                        core.note(|| format!("task {}: {}", gate.task, gate.op));
                    }
                    core.open(gate.id, Verdict::Proceed);
                    None
                }
            }
        };
        if let Some(gate) = crashed {
            // Dropped outside the lock: its gates deregister on drop.
            if let Some(task) = self.tasks.remove(&gate.task) {
                let mut core = self.sim.lock();
                match task.kind {
                    TaskKind::Ingest { client, abandoned } => {
                        core.count(FaultKind::IngestCrash);
                        core.note(|| format!("task {}: ingest crashes {}, no answer", gate.task, gate.describe()));
                        if !abandoned {
                            let at = core.now_ms + core.rng.u64(1_000..=30_000);
                            self.clients[client] = Client::Waiting { at };
                        }
                    }
                    TaskKind::Redrive => {
                        core.count(FaultKind::RedriveCrash);
                        core.note(|| format!("task {}: redrive crashes {}", gate.task, gate.describe()));
                    }
                    TaskKind::Worker { .. } => {
                        core.count(FaultKind::WorkerCrash);
                        core.note(|| format!("task {}: worker crashes {}", gate.task, gate.describe()));
                    }
                    TaskKind::Import { .. } => {
                        core.count(FaultKind::ImportCrash);
                        core.note(|| format!("task {}: import function crashes {}", gate.task, gate.describe()));
                    }
                }
                drop(core);
                drop(task);
            }
        }
    }

    /// An ingest task whose client still waits for it.
    fn waited_on(&self) -> Option<TaskId> {
        self.tasks
            .iter()
            .find(|(_, t)| matches!(t.kind, TaskKind::Ingest { abandoned: false, .. }))
            .map(|(id, _)| *id)
    }

    /// The client of a running request stops waiting (API Gateway answers
    /// 504 after 29 s) and will send the same request again, while the first
    /// still runs.
    fn give_up(&mut self) {
        let Some(id) = self.waited_on() else {
            return;
        };
        let Some(TaskKind::Ingest { client, abandoned }) = self.tasks.get_mut(&id).map(|t| &mut t.kind) else {
            return;
        };
        *abandoned = true;
        let client = *client;
        let mut core = self.sim.lock();
        core.count(FaultKind::ClientTimeout);
        core.note(|| format!("task {id}: client {client} times out and will retry; the request still runs"));
        let at = core.now_ms + core.rng.u64(0..=5_000);
        self.clients[client] = Client::Waiting { at };
    }

    fn spawn(&mut self, kind: TaskKind, future: TaskFuture) -> TaskId {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(
            id,
            Task {
                future,
                flag: Arc::new(Flag(AtomicBool::new(true))),
                kind,
            },
        );
        id
    }

    /// A client sends its request (again).
    fn send_a_request(&mut self) {
        let now = self.sim.lock().now_ms;
        let Some(client) = self
            .clients
            .iter()
            .position(|c| matches!(c, Client::Waiting { at } if *at <= now))
        else {
            return;
        };
        self.start_request(client);
    }

    fn start_request(&mut self, client: usize) {
        self.clients[client] = Client::InFlight;
        self.ingest_requests += 1;
        let ingest = self.ingest.clone();
        let request = self.requests[client].clone();
        let id = self.spawn(
            TaskKind::Ingest {
                client,
                abandoned: false,
            },
            Box::pin(async move { TaskOutput::Answer(ingest.handle(&request).await) }),
        );
        let (method, path) = (&self.requests[client].method, &self.requests[client].path);
        self.note(|| format!("task {id}: client {client} sends {method} {path}"));
    }

    /// Lambda's event source receives a batch and invokes the worker.
    fn invoke_worker(&mut self) {
        let batch = {
            let mut core = self.sim.lock();
            core.receive(QueueId::Main, self.scenario.batch_size)
        };
        if batch.is_empty() {
            return;
        }
        self.invocations += 1;
        let worker = self.worker.clone();
        let incoming: Vec<IncomingMessage> = batch
            .iter()
            .map(|m| IncomingMessage {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
            })
            .collect();
        let ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
        let id = self.spawn(
            TaskKind::Worker { batch },
            Box::pin(async move { TaskOutput::Batch(worker.process_batch(incoming).await) }),
        );
        self.note(|| format!("task {id}: worker invoked with {ids:?}"));
    }

    /// Faults off: open every gate, send every request, invoke workers while
    /// messages are visible, let time pass to the next visibility timeout,
    /// until nothing is left to do.
    fn calm(&mut self, phase: &str) {
        {
            let mut core = self.sim.lock();
            core.calm = true;
            core.note(|| format!("calm ({phase}): faults stop"));
        }
        // A parked client (a cancel refused while its job still ran) asks
        // again whenever the pipeline has gone quiet, a few times a phase.
        let mut unparks = 3;
        self.drop_due_files(true);
        for _ in 0..CALM_STEPS {
            self.steps += 1;
            let gates = self.sim.lock().pending_gates();
            {
                let mut core = self.sim.lock();
                for gate in &gates {
                    core.open(gate.id, Verdict::Proceed);
                }
            }
            self.poll_tasks();
            for client in 0..self.clients.len() {
                if matches!(self.clients[client], Client::Waiting { .. }) {
                    self.start_request(client);
                    self.poll_tasks();
                }
            }
            while self.sim.lock().has_visible(QueueId::Main) && self.worker_tasks() < self.scenario.maximum_concurrency
            {
                self.invoke_worker();
                self.poll_tasks();
            }
            while self.sim.lock().has_visible(QueueId::Imports) && self.import_tasks() < self.imports.concurrency {
                self.invoke_importer();
                self.poll_tasks();
            }
            if self.tasks.is_empty() && self.all_done() {
                let mut core = self.sim.lock();
                let next = [core.next_visible(QueueId::Main), core.next_visible(QueueId::Imports)]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) => core.now_ms = t,
                    None if !core.has_visible(QueueId::Main) && !core.has_visible(QueueId::Imports) => {
                        drop(core);
                        if unparks > 0 && self.unpark() {
                            unparks -= 1;
                            continue;
                        }
                        return;
                    }
                    None => {}
                }
            }
        }
        self.violations.push(format!(
            "the pipeline did not settle within {CALM_STEPS} calm steps ({phase})"
        ));
    }
}
