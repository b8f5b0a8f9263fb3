//! Deterministic simulation of the pipeline (issue #8).
//!
//! One `u64` seed builds a small campaign (a few submissions with repeats
//! inside and across them, several members and point types, scheduled and
//! expiring lots) and a schedule of faults, then runs the production code —
//! [`crate::services::api::ApiService`] answering `POST /v1/jobs`,
//! [`crate::services::worker::Worker`] applying batches, [`crate::services::dlq::redrive`] —
//! over a real store (the in-memory one, or SQLite in memory) wrapped in
//! fault-injecting adapters behind the same ports, and a simulated SQS queue
//! on a virtual clock. A seeded scheduler interleaves the tasks port call by
//! port call and injects the faults AWS can produce:
//!
//! - retryable store errors (`ThrottlingException`,
//!   `ProvisionedThroughputExceeded`, `TransactionConflict`), some after part
//!   of a message's transactions committed (a message is credited in
//!   several transactions, each with its `ClientRequestToken`, whose
//!   10-minute window the simulation keeps on its clock: `tokens.rs`);
//! - a crash of a worker or of the ingest function after any store or queue
//!   call took effect (the effect stays, the answer is lost);
//! - a visibility timeout expiring while a worker still runs, so another
//!   delivery of the message runs alongside;
//! - duplicate delivery, delivery in any order, a lost delete, a delete with
//!   a stale receipt handle that does nothing;
//! - `SendMessageBatch` failing for some entries.
//!
//! Then faults stop, the queue drains, the dead-letter queue is redriven and
//! drained, and the invariants are checked (see `docs/simulation.md`). The
//! same seed always makes the same run, so a failing seed replays exactly.

mod exec;
mod faults;
mod files;
mod model;
mod objects;
mod queue;
mod reconcile_check;
mod scenario;
mod scheduler;
mod tokens;

use std::fmt;
use std::time::{Duration, Instant};

/// A fault the simulation injected (or an SQS liberty it took).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// DynamoDB `ThrottlingException` (retries exhausted).
    Throttling,
    /// DynamoDB `ProvisionedThroughputExceededException` (retries exhausted).
    ProvisionedThroughputExceeded,
    /// DynamoDB `TransactionCanceledException` with `TransactionConflict`.
    TransactionConflict,
    /// Some of a message's transactions committed before one failed.
    PartialApply,
    /// A worker invocation died after a call took effect.
    WorkerCrash,
    /// The ingest function died after a call took effect, before answering.
    IngestCrash,
    /// A message became visible again while its worker still ran.
    VisibilityExpired,
    /// SQS delivered a message that was already in flight.
    DuplicateDelivery,
    /// SQS delivered messages out of the order they were sent.
    Reordered,
    /// A delete was acknowledged but the message stayed.
    DeleteLost,
    /// A delete with an older receipt handle left the message in the queue.
    StaleDeleteIgnored,
    /// `SendMessageBatch` queued some entries and failed the others.
    SendBatchPartial,
    /// A client stopped waiting (API Gateway's 29 s timeout) while its
    /// request still ran, and sent it again: two requests of one key at once.
    ClientTimeout,
    /// An operator redrove the DLQ while the pipeline still ran.
    RedriveMidRun,
    /// The redrive command died between its calls.
    RedriveCrash,
    /// A worker died while crediting a message in several transactions,
    /// after at least one of them committed.
    CrashBetweenTransactions,
    /// A transaction was resent with its `ClientRequestToken` within 10
    /// minutes of committing: answered as the first time, without effect.
    TokenReplay,
    /// A transaction was resent more than 10 minutes after it committed:
    /// its token was new again, and the store's conditions decided.
    TokenExpired,
    /// An S3 call failed (500 InternalError, 503 SlowDown) without effect.
    ObjectStoreError,
    /// A `GetObject` stream broke off part-way through the object.
    ReadInterrupted,
    /// The import function died after a call took effect.
    ImportCrash,
    /// S3 sent a file's creation event twice.
    DuplicateEvent,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 22] = [
        FaultKind::Throttling,
        FaultKind::ProvisionedThroughputExceeded,
        FaultKind::TransactionConflict,
        FaultKind::PartialApply,
        FaultKind::WorkerCrash,
        FaultKind::IngestCrash,
        FaultKind::VisibilityExpired,
        FaultKind::DuplicateDelivery,
        FaultKind::Reordered,
        FaultKind::DeleteLost,
        FaultKind::StaleDeleteIgnored,
        FaultKind::SendBatchPartial,
        FaultKind::ClientTimeout,
        FaultKind::RedriveMidRun,
        FaultKind::RedriveCrash,
        FaultKind::CrashBetweenTransactions,
        FaultKind::TokenReplay,
        FaultKind::TokenExpired,
        FaultKind::ObjectStoreError,
        FaultKind::ReadInterrupted,
        FaultKind::ImportCrash,
        FaultKind::DuplicateEvent,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Throttling => "throttling",
            FaultKind::ProvisionedThroughputExceeded => "provisioned-throughput-exceeded",
            FaultKind::TransactionConflict => "transaction-conflict",
            FaultKind::PartialApply => "partial-apply",
            FaultKind::WorkerCrash => "worker-crash",
            FaultKind::IngestCrash => "ingest-crash",
            FaultKind::VisibilityExpired => "visibility-expired",
            FaultKind::DuplicateDelivery => "duplicate-delivery",
            FaultKind::Reordered => "reordered-receive",
            FaultKind::DeleteLost => "delete-lost",
            FaultKind::StaleDeleteIgnored => "stale-delete-ignored",
            FaultKind::SendBatchPartial => "send-batch-partial",
            FaultKind::ClientTimeout => "client-timeout",
            FaultKind::RedriveMidRun => "redrive-mid-run",
            FaultKind::RedriveCrash => "redrive-crash",
            FaultKind::CrashBetweenTransactions => "crash-between-transactions",
            FaultKind::TokenReplay => "token-replay",
            FaultKind::TokenExpired => "token-expired",
            FaultKind::ObjectStoreError => "s3-error",
            FaultKind::ReadInterrupted => "s3-read-interrupted",
            FaultKind::ImportCrash => "import-crash",
            FaultKind::DuplicateEvent => "duplicate-s3-event",
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts([u64; FaultKind::ALL.len()]);

impl FaultCounts {
    /// Faults of `kind` so far.
    pub fn get(&self, kind: FaultKind) -> u64 {
        self.0[kind as usize]
    }

    /// Counts `n` more faults of `kind`.
    pub fn add(&mut self, kind: FaultKind, n: u64) {
        self.0[kind as usize] += n;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &FaultCounts) {
        for kind in FaultKind::ALL {
            self.add(kind, other.get(kind));
        }
    }

    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in FaultKind::ALL {
            writeln!(f, "  {:<32} {}", kind.name(), self.get(kind))?;
        }
        Ok(())
    }
}

/// Probabilities of the faults in one seed's run (drawn from the seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// Of a call at its first gate: fails with a retryable error.
    pub store_error: f64,
    /// Of a call at its second gate: its task crashes.
    pub crash: f64,
    /// Weight of "a visibility timeout expires now" among the scheduler's moves.
    pub expire: f64,
    /// Of a receive: also delivers a message already in flight.
    pub duplicate_delivery: f64,
    /// Of a delete: lost.
    pub lost_delete: f64,
}

/// The deliberate defects the simulation can switch on in the production
/// code, to show that its checks catch them (see [`crate::flaws`]). They are
/// branches of the in-memory store, the worker, the ingest and the token:
/// run them on [`SimBackend::Memory`].
pub use crate::flaws::Flaw;

/// The store under the fault-injecting wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimBackend {
    /// [`crate::adapters::memory::MemoryStore`].
    Memory,
    /// [`crate::adapters::sqlite::SqliteStore`] on a private in-memory database.
    Sqlite,
}

/// How to run seeds.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub backend: SimBackend,
    pub flaw: Option<Flaw>,
    /// Keep a trace of the run's events (slower; for replaying one seed).
    pub trace: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            backend: SimBackend::Memory,
            flaw: None,
            trace: false,
        }
    }
}

/// What one seed's run did and found.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    /// Broken invariants; empty when the run is correct.
    pub violations: Vec<String>,
    pub faults: FaultCounts,
    /// The run's events, if a trace was kept.
    pub trace: Vec<String>,
    /// Scheduler steps taken.
    pub steps: u64,
    /// Accruals submitted (items of all requests).
    pub items: u64,
    /// Worker invocations and ingest requests made.
    pub invocations: u64,
    pub requests: u64,
    /// Import function invocations made (one import-queue message each).
    pub import_invocations: u64,
    /// Messages that went to the dead-letter queue (and were redriven).
    pub dead_lettered: u64,
    /// Jobs with accruals counted `failed` before the redrive (they must
    /// end with none).
    pub jobs_failed_before_redrive: u64,
}

impl SeedOutcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The seed, the violations, how to replay it and the trace, for people.
    pub fn report(&self) -> String {
        let mut out = format!("simulation seed {} FAILED:\n", self.seed);
        for v in &self.violations {
            out.push_str(&format!("  - {v}\n"));
        }
        out.push_str(&format!(
            "replay: POINTFLOW_SIM_SEED={} cargo test -p pointflow-tests --test local simulation::every_seed -- --nocapture\n\
             or:     pointflow simulate --seed {} --trace\n",
            self.seed, self.seed
        ));
        if !self.trace.is_empty() {
            out.push_str("trace:\n");
            for line in &self.trace {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: &SimOptions) -> SeedOutcome {
    scheduler::run(seed, options)
}

/// What a range of seeds did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seeds_run: u64,
    /// Failing seeds, each with its violations (no trace: replay it).
    pub failures: Vec<SeedOutcome>,
    pub faults: FaultCounts,
    pub steps: u64,
    pub items: u64,
    pub invocations: u64,
    pub requests: u64,
    pub import_invocations: u64,
    pub dead_lettered: u64,
    pub jobs_failed_before_redrive: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seeds run          {} ({} failed) in {:.2} s",
            self.seeds_run,
            self.failures.len(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "accruals           {}", self.items)?;
        writeln!(f, "ingest requests    {}", self.requests)?;
        writeln!(f, "worker invocations {}", self.invocations)?;
        writeln!(f, "import invocations {}", self.import_invocations)?;
        writeln!(
            f,
            "dead-lettered      {} messages; {} jobs had accruals counted failed before the redrive",
            self.dead_lettered, self.jobs_failed_before_redrive
        )?;
        writeln!(f, "scheduler steps    {}", self.steps)?;
        writeln!(f, "faults injected    {}", self.faults.total())?;
        write!(f, "{}", self.faults)
    }
}

/// Whether `seed` drops a CSV file (an eighth of the seeds do): only those
/// can catch a flaw of the importer.
pub fn seed_drops_a_file(seed: u64) -> bool {
    files::seed_drops_a_file(seed)
}

/// Runs `count` seeds from `first` on `threads` threads (each seed alone is
/// single-threaded and deterministic; threads only share the range out).
/// With `stop_at_first`, stops soon after a seed fails.
pub fn run_seeds(first: u64, count: u64, options: &SimOptions, threads: usize, stop_at_first: bool) -> Summary {
    run_seed_list(count, |i| first.wrapping_add(i), options, threads, stop_at_first)
}

/// Runs the seeds `list` names on `threads` threads, as [`run_seeds`].
pub fn run_listed_seeds(list: &[u64], options: &SimOptions, threads: usize, stop_at_first: bool) -> Summary {
    run_seed_list(list.len() as u64, |i| list[i as usize], options, threads, stop_at_first)
}

/// Runs seeds `seed_at(0..count)`.
fn run_seed_list(
    count: u64,
    seed_at: impl Fn(u64) -> u64 + Sync,
    options: &SimOptions,
    threads: usize,
    stop_at_first: bool,
) -> Summary {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let threads = threads.max(1);
    let parts: Vec<Summary> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Summary::default();
                    loop {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let outcome = run_seed(seed_at(i), options);
                        part.seeds_run += 1;
                        part.faults.merge(&outcome.faults);
                        part.steps += outcome.steps;
                        part.items += outcome.items;
                        part.invocations += outcome.invocations;
                        part.requests += outcome.requests;
                        part.import_invocations += outcome.import_invocations;
                        part.dead_lettered += outcome.dead_lettered;
                        part.jobs_failed_before_redrive += outcome.jobs_failed_before_redrive;
                        if !outcome.passed() {
                            if stop_at_first {
                                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            part.failures.push(outcome);
                        }
                    }
                    part
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut summary = Summary::default();
    for part in parts {
        summary.seeds_run += part.seeds_run;
        summary.faults.merge(&part.faults);
        summary.steps += part.steps;
        summary.items += part.items;
        summary.invocations += part.invocations;
        summary.requests += part.requests;
        summary.import_invocations += part.import_invocations;
        summary.dead_lettered += part.dead_lettered;
        summary.jobs_failed_before_redrive += part.jobs_failed_before_redrive;
        summary.failures.extend(part.failures);
    }
    summary.failures.sort_by_key(|o| o.seed);
    summary.elapsed = started.elapsed();
    summary
}
