//! Fault-injecting wrappers of the ports. Each call stops at a gate before
//! it runs (where the scheduler may interleave other tasks or fail it with a
//! retryable error, without effect) and at a gate after it took effect
//! (where the scheduler may crash the task). Apart from that they delegate:
//! a new port method needs one line here, and default methods are left to
//! the trait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::history::HistoryEntry;
use crate::domain::lots::BalanceSheet;
use crate::domain::reconcile::MemberLedger;
use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome};
use crate::domain::{Accrual, CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob};
use crate::ports::{
    ApplyOutcome, CreateJob, CreditTally, JobStore, Ledger, QueueError, ReceivedMessage, StoreError, WorkQueue,
};

use super::exec::{GatePoint, Sim, StoreFault, Verdict};
use super::FaultKind;
use crate::ports::{Credits, Debits, LedgerReads};

/// Runs one port call of the store underneath to completion: in the
/// simulation a call is one atomic step. (The in-memory store never waits;
/// SQLite's `spawn_blocking` finishes on its own thread.)
fn run<F: Future>(call: F) -> F::Output {
    futures::executor::block_on(call)
}

impl Sim {
    /// The gate before a call: `Some` if the call is to fail unapplied.
    async fn before(&self, op: &'static str) -> Option<StoreFault> {
        match self.gate(GatePoint::Before, op).await {
            Verdict::Proceed => None,
            Verdict::Fail(fault) => Some(fault),
        }
    }

    /// The gate after a call: the task may be crashed (dropped) here.
    async fn after(&self, op: &'static str) {
        self.gate(GatePoint::After, op).await;
    }
}

/// One store call between its two gates.
macro_rules! store_call {
    ($sim:expr, $op:literal, $call:expr) => {{
        if let Some(fault) = $sim.before($op).await {
            return Err(fault.store_error($op));
        }
        let result = run($call);
        $sim.after($op).await;
        result
    }};
}

/// A [`Ledger`] whose calls can fail, interleave and be followed by a crash.
pub(crate) struct FaultyLedger {
    pub inner: Arc<dyn Ledger>,
    pub sim: Sim,
}

#[async_trait]
impl Credits for FaultyLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        // One call is one transaction: `TokenLedger` above splits a
        // message's credit as DynamoDB does, so a failure or a crash here
        // may come after earlier transactions of the message committed.
        store_call!(self.sim, "apply_accruals", self.inner.apply_accruals(by, accruals, now))
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        store_call!(self.sim, "tally_credits", self.inner.tally_credits(by, accrual_ids))
    }
}

#[async_trait]
impl Debits for FaultyLedger {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        store_call!(self.sim, "apply_use", self.inner.apply_use_audited(u, audit, now))
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        store_call!(self.sim, "apply_use", self.inner.apply_message_use(by, u, now))
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        store_call!(self.sim, "reverse", self.inner.reverse_audited(target, audit, now))
    }
}

#[async_trait]
impl LedgerReads for FaultyLedger {
    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError> {
        store_call!(self.sim, "balance_sheets", self.inner.balance_sheets(member_id))
    }

    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        store_call!(
            self.sim,
            "history_entries",
            self.inner.history_entries(member_id, point_type, before, limit)
        )
    }

    async fn member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError> {
        self.inner.member_ledger(member_id).await
    }
}

crate::forward_ledger_repairs!(FaultyLedger, self => self.inner);

/// A [`JobStore`] whose calls can fail, interleave and be followed by a crash.
pub(crate) struct FaultyJobStore {
    pub inner: Arc<dyn JobStore>,
    pub sim: Sim,
}

#[async_trait]
impl JobStore for FaultyJobStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        store_call!(self.sim, "create_job", self.inner.create_job(job))
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        store_call!(self.sim, "mark_enqueued", self.inner.mark_enqueued(job_id))
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        store_call!(self.sim, "get_job", self.inner.get_job(job_id))
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        store_call!(
            self.sim,
            "fold_message",
            self.inner.fold_message(job_id, seq, counts, items, now)
        )
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        store_call!(self.sim, "record_chunk", self.inner.record_chunk(job_id, chunk, now))
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        store_call!(self.sim, "chunk_recorded", self.inner.chunk_recorded(job_id, index))
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        store_call!(self.sim, "begin_cancel", self.inner.begin_cancel(job_id, audit, now))
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        store_call!(
            self.sim,
            "begin_message_cancel",
            self.inner.begin_message_cancel(job_id, seq, now)
        )
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        store_call!(
            self.sim,
            "record_cancelled",
            self.inner.record_cancelled(job_id, seq, counts, now)
        )
    }
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.inner.folded_counts(job_id).await
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.replace_job_counts(job_id, read, counts, now).await
    }
}

/// The error of a queue call the simulation failed.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0:?}")]
pub(crate) struct InjectedFault(pub StoreFault);

/// One queue call between its two gates.
macro_rules! queue_call {
    ($sim:expr, $op:literal, $call:expr) => {{
        if let Some(fault) = $sim.before($op).await {
            return Err(QueueError::Backend {
                operation: $op,
                source: Box::new(InjectedFault(fault)),
            });
        }
        let result = run($call);
        $sim.after($op).await;
        result
    }};
}

/// An [`WorkQueue`] whose calls can fail, interleave and be followed by a
/// crash; a failed `send_messages` may have queued some of its messages
/// (SendMessageBatch answers per entry).
pub(crate) struct FaultyQueue {
    pub inner: Arc<dyn WorkQueue>,
    pub sim: Sim,
}

#[async_trait]
impl WorkQueue for FaultyQueue {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        if let Some(fault) = self.sim.before("send_messages").await {
            let sent: Vec<String> = {
                let mut core = self.sim.lock();
                let sent: Vec<String> = bodies.iter().filter(|_| core.rng.bool()).cloned().collect();
                if !sent.is_empty() {
                    core.count(FaultKind::SendBatchPartial);
                }
                let (n, total) = (sent.len(), bodies.len());
                core.note(|| format!("  send_messages: {n} of {total} queued, the rest failed"));
                sent
            };
            if !sent.is_empty() {
                run(self.inner.send_messages(&sent))?;
            }
            return Err(QueueError::Unsent {
                unsent: bodies.len() - sent.len(),
                total: bodies.len(),
                source: Some(Box::new(InjectedFault(fault))),
            });
        }
        let result = run(self.inner.send_messages(bodies));
        self.sim.after("send_messages").await;
        result
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        queue_call!(self.sim, "receive_messages", self.inner.receive_messages(max, wait))
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        queue_call!(self.sim, "delete_messages", self.inner.delete_messages(receipt_handles))
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        queue_call!(
            self.sim,
            "release_messages",
            self.inner.release_messages(receipt_handles)
        )
    }

    fn requests(&self) -> u64 {
        self.inner.requests()
    }
}
