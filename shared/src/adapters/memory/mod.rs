//! In-memory backend: every port, with the semantics of the AWS adapters
//! (checked by the shared contract suite). For tests and simulations; nothing
//! survives the process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::history::HistoryEntry;
use crate::domain::job_list::{JobListKey, JobRange};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reconcile::{CreditEntry, ExpiryEntry, MemberLedger, UseEntry};
use crate::domain::reversal::{ReversalKind, ReversalOutcome, ReversalRecord, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::{
    Accrual, CancelCounts, CancelProgress, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob,
};
use crate::flaws::{self, Flaw};
use crate::ports::{ApplyOutcome, CreateJob, CreditTally, JobStore, StoreError};
use crate::ports::{Credits, Debits, LedgerReads, LedgerRepairs};

mod objects;
mod queue;
mod uses;

pub use objects::MemoryObjects;
pub use queue::MemoryQueue;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One balance: its lots and lifetime counters.
#[derive(Default)]
struct Sheet {
    lots: BTreeMap<LotKey, u64>,
    earned: u64,
    used: u64,
    /// Points of expired lots pruned by uses.
    expired: u64,
}

impl Sheet {
    /// The sheet as the ports show it: lots holding points only.
    fn to_balance_sheet(&self, point_type: &str) -> BalanceSheet {
        BalanceSheet {
            point_type: point_type.to_owned(),
            lots: self
                .lots
                .iter()
                .filter(|(_, amount)| **amount > 0)
                .map(|(key, amount)| Lot {
                    key: *key,
                    amount: *amount,
                })
                .collect(),
            earned: self.earned,
            used: self.used,
            expired: self.expired,
        }
    }
}

/// A credited accrual as the memory ledger keeps it.
struct Credited {
    accrual: Accrual,
    by: MessageRef,
    at: OffsetDateTime,
    reversed: Option<OffsetDateTime>,
    /// Who reversed it (with `reversed`).
    reversal_audit: Option<Audit>,
}

#[derive(Default)]
struct StoreState {
    /// accrual_id → the accrual, the message that credited it, when, and
    /// when it was reversed.
    ledger: HashMap<String, Credited>,
    balances: BTreeMap<(String, String), Sheet>,
    jobs: HashMap<JobId, Job>,
    /// (job, seq) → the message's counts and item ids.
    folded: HashMap<(JobId, u32), (MessageCounts, Vec<String>)>,
    chunks: HashSet<(JobId, u32)>,
    /// Messages whose cancel is recorded.
    cancelled: HashSet<(JobId, u32)>,
    /// Messages whose cancel has begun: never credited again.
    cancel_begun: HashSet<(JobId, u32)>,
    /// use_id → the use, what it took from each lot, when it was reversed.
    uses: HashMap<String, Applied>,
    /// The bulk uses refused once, by `use_id`: what was asked and by which
    /// message, so that a redelivery replays the refusal.
    refusals: HashMap<String, (UseRecord, MessageRef)>,
    /// The expiry entries of pruned lots, with their member.
    expiries: Vec<(String, HistoryEntry)>,
}

/// An applied use as the memory ledger keeps it.
struct Applied {
    record: UseRecord,
    /// What it took from each lot.
    taken: Vec<Lot>,
    /// The bulk-use message that applied it, if any.
    by: Option<MessageRef>,
    reversed: Option<OffsetDateTime>,
    /// Who reversed it (with `reversed`).
    reversal_audit: Option<Audit>,
}

/// Ledger and job store in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
    requests: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls made to this store so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Credits for MemoryStore {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        let mut outcome = ApplyOutcome {
            requests: 1,
            ..ApplyOutcome::default()
        };
        if state.cancel_begun.contains(&(by.job_id, by.seq)) {
            outcome.cancelled = accruals.len() as u64;
            return Ok(outcome);
        }
        // The simulation's deliberate defect: the credit's condition lost.
        let unconditional = flaws::active(Flaw::DoubleCredit);
        for accrual in accruals {
            match state.ledger.get(&accrual.accrual_id).filter(|_| !unconditional) {
                Some(credited) if credited.by == by => {
                    outcome.applied += 1;
                    outcome.replayed += 1;
                }
                Some(_) => outcome.duplicate += 1,
                None => {
                    state.ledger.insert(
                        accrual.accrual_id.clone(),
                        Credited {
                            accrual: accrual.clone(),
                            by,
                            at: now,
                            reversed: None,
                            reversal_audit: None,
                        },
                    );
                    let sheet = state
                        .balances
                        .entry((accrual.member_id.clone(), accrual.point_type.clone()))
                        .or_default();
                    *sheet.lots.entry(accrual.lot()).or_default() += accrual.amount;
                    sheet.earned += accrual.amount;
                    outcome.applied += 1;
                }
            }
        }
        Ok(outcome)
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        self.count();
        let state = lock(&self.state);
        let mut tally = CreditTally::default();
        for id in accrual_ids {
            match state.ledger.get(id) {
                Some(credited) if credited.by == by => tally.by_message += 1,
                Some(_) => tally.by_other += 1,
                None => tally.not_credited += 1,
            }
        }
        Ok(Some(tally))
    }
}

#[async_trait]
impl Debits for MemoryStore {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        Ok(self.use_points(None, u, audit, now))
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        Ok(self.use_points(Some(by), u, None, now))
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        self.count();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        match target {
            ReversalTarget::Accrual(_) | ReversalTarget::CreditBy { .. } => {
                let id = target.id();
                let owner = match target {
                    ReversalTarget::CreditBy { by, .. } => Some(*by),
                    _ => None,
                };
                let Some(Credited {
                    accrual,
                    reversed,
                    by,
                    reversal_audit,
                    ..
                }) = state.ledger.get_mut(id)
                else {
                    return Ok(ReversalOutcome::NotFound);
                };
                if owner.is_some_and(|owner| owner != *by) {
                    return Ok(ReversalOutcome::NotFound);
                }
                let record = |at, audit: Option<&Audit>| ReversalRecord {
                    kind: ReversalKind::Accrual,
                    id: id.to_owned(),
                    member_id: accrual.member_id.clone(),
                    point_type: accrual.point_type.clone(),
                    amount: accrual.amount,
                    reversed_at: at,
                    audit: audit.cloned(),
                };
                if let Some(at) = *reversed {
                    return Ok(ReversalOutcome::Replayed(record(at, reversal_audit.as_ref())));
                }
                let sheet = state
                    .balances
                    .entry((accrual.member_id.clone(), accrual.point_type.clone()))
                    .or_default();
                let lot = sheet.lots.entry(accrual.lot()).or_default();
                if *lot < accrual.amount {
                    return Ok(ReversalOutcome::AlreadySpent { remaining: *lot });
                }
                *lot -= accrual.amount;
                sheet.earned -= accrual.amount;
                *reversed = Some(now);
                *reversal_audit = audit.cloned();
                Ok(ReversalOutcome::Reversed(record(now, audit)))
            }
            ReversalTarget::Use(_) | ReversalTarget::UseBy { .. } => {
                let id = target.id();
                let Some(Applied {
                    record: u,
                    taken,
                    by,
                    reversed,
                    reversal_audit,
                }) = state.uses.get_mut(id)
                else {
                    return Ok(ReversalOutcome::NotFound);
                };
                if target.by().is_some_and(|owner| Some(owner) != *by) {
                    return Ok(ReversalOutcome::NotFound);
                }
                let record = |at, audit: Option<&Audit>| ReversalRecord {
                    kind: ReversalKind::Use,
                    id: id.to_owned(),
                    member_id: u.member_id.clone(),
                    point_type: u.point_type.clone(),
                    amount: u.amount,
                    reversed_at: at,
                    audit: audit.cloned(),
                };
                if let Some(at) = *reversed {
                    return Ok(ReversalOutcome::Replayed(record(at, reversal_audit.as_ref())));
                }
                let sheet = state
                    .balances
                    .entry((u.member_id.clone(), u.point_type.clone()))
                    .or_default();
                for take in taken.iter() {
                    *sheet.lots.entry(take.key).or_default() += take.amount;
                }
                sheet.used -= u.amount;
                *reversed = Some(now);
                *reversal_audit = audit.cloned();
                Ok(ReversalOutcome::Reversed(record(now, audit)))
            }
        }
    }
}

#[async_trait]
impl LedgerReads for MemoryStore {
    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError> {
        self.count();
        let state = lock(&self.state);
        Ok(state
            .balances
            .range((member_id.to_owned(), String::new())..)
            .take_while(|((member, _), _)| member == member_id)
            .map(|((_, point_type), sheet)| sheet.to_balance_sheet(point_type))
            .collect())
    }

    async fn member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError> {
        self.count();
        let state = lock(&self.state);
        let mut ledger = MemberLedger::default();
        for credited in state.ledger.values().filter(|c| c.accrual.member_id == member_id) {
            ledger.credits.push(CreditEntry {
                accrual_id: credited.accrual.accrual_id.clone(),
                point_type: credited.accrual.point_type.clone(),
                amount: credited.accrual.amount,
                lot: credited.accrual.lot(),
                reversed: credited.reversed.is_some(),
            });
        }
        for applied in state.uses.values().filter(|a| a.record.member_id == member_id) {
            ledger.uses.push(UseEntry {
                use_id: applied.record.use_id.clone(),
                point_type: applied.record.point_type.clone(),
                amount: applied.record.amount,
                consumed: applied.taken.clone(),
                reversed: applied.reversed.is_some(),
            });
        }
        ledger.expiries = state
            .expiries
            .iter()
            .filter(|(member, _)| member == member_id)
            .filter_map(|(_, entry)| ExpiryEntry::from_history(entry))
            .collect();
        Ok(ledger)
    }

    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.count();
        let state = lock(&self.state);
        let mut entries = Vec::new();
        for credited in state.ledger.values() {
            let a = &credited.accrual;
            if a.member_id != member_id {
                continue;
            }
            entries.push(HistoryEntry::accrual(a, Some(credited.by.job_id), credited.at));
            if let Some(at) = credited.reversed {
                entries.push(HistoryEntry::reversal(&ReversalRecord {
                    kind: ReversalKind::Accrual,
                    id: a.accrual_id.clone(),
                    member_id: a.member_id.clone(),
                    point_type: a.point_type.clone(),
                    amount: a.amount,
                    reversed_at: at,
                    audit: credited.reversal_audit.clone(),
                }));
            }
        }
        for applied in state.uses.values().filter(|a| a.record.member_id == member_id) {
            let record = &applied.record;
            entries.push(HistoryEntry::use_of(record));
            if let Some(at) = applied.reversed {
                entries.push(HistoryEntry::reversal(&ReversalRecord {
                    kind: ReversalKind::Use,
                    id: record.use_id.clone(),
                    member_id: record.member_id.clone(),
                    point_type: record.point_type.clone(),
                    amount: record.amount,
                    reversed_at: at,
                    audit: applied.reversal_audit.clone(),
                }));
            }
        }
        let pruned = state.expiries.iter().filter(|(member, _)| member == member_id);
        entries.extend(pruned.map(|(_, entry)| entry.clone()));
        let mut keyed: Vec<(String, HistoryEntry)> = entries
            .into_iter()
            .filter(|e| point_type.is_none_or(|wanted| wanted == e.point_type))
            .map(|e| (e.sort_key(), e))
            .filter(|(key, _)| before.is_none_or(|before| key.as_str() < before))
            .collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(keyed.into_iter().take(limit).map(|(_, e)| e).collect())
    }
}

#[async_trait]
impl LedgerRepairs for MemoryStore {
    async fn replace_balance_sheet(
        &self,
        member_id: &str,
        read: Option<&BalanceSheet>,
        sheet: &BalanceSheet,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        let key = (member_id.to_owned(), sheet.point_type.clone());
        let current = state.balances.get(&key).map(|s| s.to_balance_sheet(&sheet.point_type));
        if current.as_ref() != read {
            return Ok(false);
        }
        state.balances.insert(
            key,
            Sheet {
                lots: sheet.lots.iter().map(|lot| (lot.key, lot.amount)).collect(),
                earned: sheet.earned,
                used: sheet.used,
                expired: sheet.expired,
            },
        );
        Ok(true)
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        if let Some(existing) = state.jobs.get(&job.job_id) {
            return Ok(CreateJob::Existing(existing.clone()));
        }
        let created = Job::from_new(job);
        state.jobs.insert(job.job_id, created.clone());
        Ok(CreateJob::Created(created))
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.count();
        if let Some(job) = lock(&self.state).jobs.get_mut(&job_id) {
            job.enqueued = true;
        }
        Ok(())
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.count();
        Ok(lock(&self.state).jobs.get(&job_id).cloned())
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        // Like the DynamoDB adapter: no job, nothing recorded.
        if !state.jobs.contains_key(&job_id) {
            return Ok(false);
        }
        // The simulation's deliberate defect: a replay folded as new.
        let marker = if flaws::active(Flaw::FoldWithoutMarker) {
            None
        } else {
            state.folded.get(&(job_id, seq)).map(|(counts, _)| *counts)
        };
        if let Some(before) = marker {
            if !is_resettled(before, counts) {
                return Ok(false);
            }
            state.folded.insert((job_id, seq), (counts, items.to_vec()));
            // What the marker counted settled before (part of it may have
            // been applied then) is replaced by what it counts now.
            if let Some(job) = state.jobs.get_mut(&job_id) {
                job.failed -= before.failed;
                job.applied = job.applied + counts.applied - before.applied;
                job.duplicate = job.duplicate + counts.duplicate - before.duplicate;
                job.refused = job.refused + counts.refused - before.refused;
            }
            return Ok(true);
        }
        state.folded.insert((job_id, seq), (counts, items.to_vec()));
        if let Some(job) = state.jobs.get_mut(&job_id) {
            job.applied += counts.applied;
            job.duplicate += counts.duplicate;
            job.failed += counts.failed;
            job.refused += counts.refused;
            complete_if_settled(job, now);
        }
        Ok(true)
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        if !state.jobs.contains_key(&job_id) || !state.chunks.insert((job_id, chunk.index)) {
            return Ok(false);
        }
        if let Some(job) = state.jobs.get_mut(&job_id) {
            job.total += chunk.accepted;
            job.deduplicated += chunk.deduplicated;
            job.rejected += chunk.rejected;
            job.messages += chunk.messages;
            if chunk.is_final() {
                job.reading = false;
                job.enqueued = true;
                job.error = chunk.failure().map(str::to_owned);
            }
            complete_if_settled(job, now);
        }
        Ok(true)
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.count();
        Ok(lock(&self.state).chunks.contains(&(job_id, index)))
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        Ok(state.jobs.get_mut(&job_id).map(|job| {
            job.cancel.get_or_insert_with(|| CancelProgress {
                requested_at: now,
                counts: CancelCounts::default(),
                messages: 0,
                completed_at: None,
                audit: audit.cloned(),
            });
            job.clone()
        }))
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        _now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        state.cancel_begun.insert((job_id, seq));
        Ok(state.folded.get(&(job_id, seq)).map(|(_, items)| FoldedItems {
            items: items.clone(),
            cancelled: state.cancelled.contains(&(job_id, seq)),
        }))
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.count();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some(cancel) = state
            .jobs
            .get_mut(&job_id)
            .and_then(|job| job.cancel.as_mut().map(|c| (c, job.messages)))
        else {
            return Ok(false);
        };
        if !state.folded.contains_key(&(job_id, seq)) || !state.cancelled.insert((job_id, seq)) {
            return Ok(false);
        }
        let (cancel, messages) = cancel;
        cancel.counts.reversed += counts.reversed;
        cancel.counts.spent += counts.spent;
        cancel.counts.skipped += counts.skipped;
        cancel.messages += 1;
        if cancel.messages >= messages && cancel.completed_at.is_none() {
            cancel.completed_at = Some(now);
        }
        Ok(true)
    }
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.count();
        let state = lock(&self.state);
        let mut counts: Vec<(u32, MessageCounts)> = state
            .folded
            .iter()
            .filter(|((job, _), _)| *job == job_id)
            .map(|((_, seq), (counts, _))| (*seq, *counts))
            .collect();
        counts.sort_by_key(|(seq, _)| *seq);
        Ok(counts)
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.count();
        let mut state = lock(&self.state);
        let Some(job) = state.jobs.get_mut(&job_id) else {
            return Ok(false);
        };
        if job.counts() != read {
            return Ok(false);
        }
        job.applied = counts.applied;
        job.duplicate = counts.duplicate;
        job.failed = counts.failed;
        job.refused = counts.refused;
        Ok(true)
    }

    async fn list_jobs(&self, range: &JobRange, limit: usize, _now: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.count();
        let state = lock(&self.state);
        let mut listed: Vec<(JobListKey, &Job)> = state
            .jobs
            .values()
            .map(|job| (JobListKey::of_job(job), job))
            .filter(|(key, _)| range.contains(key))
            .collect();
        listed.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(listed.into_iter().take(limit).map(|(_, job)| job.clone()).collect())
    }
}

/// A message first counted failed (wholly or in part), now applied in full
/// (a DLQ redrive).
fn is_resettled(before: MessageCounts, now: MessageCounts) -> bool {
    before.failed > 0 && now.failed == 0 && now.settled() == before.settled()
}

fn complete_if_settled(job: &mut Job, now: OffsetDateTime) {
    if job.completed_at.is_none() && !job.reading && job.settled() >= job.total {
        job.completed_at = Some(now);
    }
}
