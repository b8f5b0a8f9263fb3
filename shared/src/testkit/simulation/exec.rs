//! The simulation's core: one seeded random source, a virtual clock, the
//! simulated queues, and the gates through which every port call passes.
//!
//! A gate is where a simulated task stops and waits for the scheduler: it
//! decides when the call runs (so tasks interleave call by call), whether it
//! fails with a retryable error, and whether the task crashes after it. A
//! port call itself runs to completion in one go, as a DynamoDB transaction
//! or an SQS request does: interleaving happens only between calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::ports::StoreError;

use super::queue::QueueState;
use super::{FaultCounts, FaultKind, FaultRates};

/// Identifies one simulated task (a worker invocation, an ingest request, a
/// redrive).
pub(crate) type TaskId = u64;

/// Where a gate stands relative to its port call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatePoint {
    /// The call has not run: it may still fail without effect.
    Before,
    /// The call has taken effect: the task may crash now and lose its result.
    After,
}

/// A retryable store error, as DynamoDB raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFault {
    Throttling,
    ProvisionedThroughputExceeded,
    TransactionConflict,
}

impl StoreFault {
    /// The port error the DynamoDB adapter returns for it once its own
    /// retries are exhausted (`Throttled` or `Conflict`, both transient).
    pub(crate) fn store_error(self, operation: &'static str) -> StoreError {
        match self {
            StoreFault::Throttling | StoreFault::ProvisionedThroughputExceeded => StoreError::Throttled { operation },
            StoreFault::TransactionConflict => StoreError::Conflict { operation },
        }
    }

    pub(crate) fn kind(self) -> FaultKind {
        match self {
            StoreFault::Throttling => FaultKind::Throttling,
            StoreFault::ProvisionedThroughputExceeded => FaultKind::ProvisionedThroughputExceeded,
            StoreFault::TransactionConflict => FaultKind::TransactionConflict,
        }
    }
}

/// What the scheduler decided for a call waiting at a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    Fail(StoreFault),
}

struct PendingGate {
    task: TaskId,
    point: GatePoint,
    op: &'static str,
    waker: Waker,
    verdict: Option<Verdict>,
}

/// A gate waiting for the scheduler, as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GateInfo {
    pub id: u64,
    pub task: TaskId,
    pub point: GatePoint,
    pub op: &'static str,
}

impl GateInfo {
    /// "before create_job", "after fold_message", for the trace.
    pub(crate) fn describe(&self) -> String {
        match self.point {
            GatePoint::Before => format!("before {}", self.op),
            GatePoint::After => format!("after {} took effect", self.op),
        }
    }
}

/// Everything one seed's run shares. One lock: the simulation is
/// single-threaded, the lock only satisfies the ports' `Send + Sync`.
pub(crate) struct Core {
    /// The only source of randomness of the run after the scenario is built.
    pub rng: fastrand::Rng,
    /// Virtual time in milliseconds since the start of the run.
    pub now_ms: u64,
    /// No more faults: gates open at once, queues deliver plainly.
    pub calm: bool,
    /// The task being polled; a gate registers under it.
    pub current_task: TaskId,
    pub rates: FaultRates,
    pub faults: FaultCounts,
    /// The accrual queue and its dead-letter queue, the import queue and
    /// its dead-letter queue, indexed by [`super::queue::QueueId`].
    pub queues: [QueueState; 4],
    pub next_message: u64,
    /// Messages moved to the dead-letter queue (not a fault: a consequence).
    pub dead_lettered: u64,
    gates: BTreeMap<u64, PendingGate>,
    next_gate: u64,
    trace: Option<Vec<String>>,
}

impl Core {
    pub(crate) fn new(seed: u64, rates: FaultRates, trace: bool) -> Self {
        Core {
            rng: fastrand::Rng::with_seed(seed),
            now_ms: 0,
            calm: false,
            current_task: 0,
            rates,
            faults: FaultCounts::default(),
            queues: Default::default(),
            next_message: 0,
            dead_lettered: 0,
            gates: BTreeMap::new(),
            next_gate: 0,
            trace: trace.then(Vec::new),
        }
    }

    /// Adds a line to the trace, if one is kept (the line is only built then).
    pub(crate) fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let now = self.now_ms;
            trace.push(format!("{:>5}.{:03}s {}", now / 1000, now % 1000, line()));
        }
    }

    /// Counts an injected fault.
    pub(crate) fn count(&mut self, kind: FaultKind) {
        self.faults.add(kind, 1);
    }

    pub(crate) fn take_trace(&mut self) -> Vec<String> {
        self.trace.take().unwrap_or_default()
    }

    /// Gates waiting for a decision, in the order they were reached.
    pub(crate) fn pending_gates(&self) -> Vec<GateInfo> {
        self.gates
            .iter()
            .filter(|(_, g)| g.verdict.is_none())
            .map(|(id, g)| GateInfo {
                id: *id,
                task: g.task,
                point: g.point,
                op: g.op,
            })
            .collect()
    }

    /// Opens a gate with `verdict` and wakes its task.
    pub(crate) fn open(&mut self, id: u64, verdict: Verdict) {
        if let Some(gate) = self.gates.get_mut(&id) {
            gate.verdict = Some(verdict);
            gate.waker.wake_by_ref();
        }
    }

    /// Whether `task` waits at some gate.
    pub(crate) fn waits_at_gate(&self, task: TaskId) -> bool {
        self.gates.values().any(|g| g.task == task)
    }
}

/// A shared handle on the run's [`Core`].
#[derive(Clone)]
pub(crate) struct Sim(Arc<Mutex<Core>>);

impl Sim {
    pub(crate) fn new(core: Core) -> Self {
        Sim(Arc::new(Mutex::new(core)))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // Single-threaded: a poisoned lock means a panic already failed the run.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits at a gate until the scheduler decides (at once when calm).
    pub(crate) fn gate(&self, point: GatePoint, op: &'static str) -> Gate {
        Gate {
            sim: self.clone(),
            point,
            op,
            id: None,
        }
    }
}

/// The future of one gate: pending until the scheduler opens it.
pub(crate) struct Gate {
    sim: Sim,
    point: GatePoint,
    op: &'static str,
    id: Option<u64>,
}

impl Future for Gate {
    type Output = Verdict;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        let sim = self.sim.clone();
        let mut core = sim.lock();
        match self.id {
            None => {
                if core.calm {
                    return Poll::Ready(Verdict::Proceed);
                }
                let id = core.next_gate;
                core.next_gate += 1;
                let gate = PendingGate {
                    task: core.current_task,
                    point: self.point,
                    op: self.op,
                    waker: cx.waker().clone(),
                    verdict: None,
                };
                core.gates.insert(id, gate);
                self.id = Some(id);
                Poll::Pending
            }
            Some(id) => {
                let verdict = core.gates.get_mut(&id).and_then(|g| {
                    g.waker.clone_from(cx.waker());
                    g.verdict
                });
                match verdict {
                    Some(verdict) => {
                        core.gates.remove(&id);
                        self.id = None;
                        Poll::Ready(verdict)
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // A crashed task is dropped while waiting: forget its gate.
        if let Some(id) = self.id {
            self.sim.lock().gates.remove(&id);
        }
    }
}
