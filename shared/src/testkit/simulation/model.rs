//! A tiny reference ledger, written from the rules of
//! `docs/ledger-model.md` and not from the stores' code, fed with every
//! call that reaches the store: it predicts each call's outcome, and the
//! recording wrappers compare the store's answer and its balances with it
//! after every call.
//!
//! The wrappers sit between the production code (and the fault injectors)
//! and the store, so they see exactly the calls that took effect, in the
//! order they did: the simulation is single-threaded and each call runs in
//! one piece.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::lots::{BalanceSheet, LotKey};
use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome};
use crate::domain::{Accrual, CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob};
use crate::ports::{ApplyOutcome, CreateJob, CreditTally, Credits, Debits, JobStore, Ledger, StoreError};

/// One balance of the model: its lots, and what was ever credited and used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModelSheet {
    pub lots: BTreeMap<LotKey, u64>,
    pub earned: u64,
    pub used: u64,
    /// Points of expired lots a use pruned.
    pub expired: u64,
}

/// An accrual the store credited.
#[derive(Debug, Clone)]
pub(crate) struct ModelCredit {
    pub by: MessageRef,
    pub member_id: String,
    pub point_type: String,
    pub lot: LotKey,
    pub amount: u64,
    pub reversed: bool,
}

/// A use the store applied, with what it took from each lot.
#[derive(Debug, Clone)]
pub(crate) struct ModelUse {
    /// The bulk-use message that applied it, if any.
    pub by: Option<MessageRef>,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    pub consumed: BTreeMap<LotKey, u64>,
    pub reversed: bool,
}

/// Balance key: member, point type.
type SheetKey = (String, String);

/// The reference ledger and what it saw.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub sheets: BTreeMap<SheetKey, ModelSheet>,
    pub credits: BTreeMap<String, ModelCredit>,
    pub uses: BTreeMap<String, ModelUse>,
    /// Bulk uses refused once, by `use_id`: the message and what it asked
    /// (member, point type, amount); the refusal stands for good.
    pub refusals: BTreeMap<String, (MessageRef, String, String, u64)>,
    /// Messages whose cancel began (no credit of theirs may follow).
    pub cancel_begun: BTreeSet<(JobId, u32)>,
    /// Accruals a cancel found spent (its reversal refused `already_spent`).
    pub spent_at_cancel: BTreeSet<String>,
    /// Where the store disagreed with the model.
    pub violations: Vec<String>,
}

/// The unix second of an optional time, as a lot names it.
fn seconds(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(OffsetDateTime::unix_timestamp)
}

/// The lot an accrual's points go to: one per (start, expiry), 0 = at once.
fn lot_of(a: &Accrual) -> LotKey {
    LotKey {
        from: seconds(a.apply_at).unwrap_or(0).max(0),
        until: seconds(a.expires_at),
    }
}

impl Model {
    pub(crate) fn fail(&mut self, what: String) {
        // One seed can disagree many times over; the first few tell the story.
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    /// Credits what `by` may credit of `accruals`; returns the counts the
    /// store must answer (applied, replayed, duplicate, cancelled).
    fn credit(&mut self, by: MessageRef, accruals: &[Accrual]) -> (u64, u64, u64, u64) {
        if self.cancel_begun.contains(&(by.job_id, by.seq)) {
            return (0, 0, 0, accruals.len() as u64);
        }
        let (mut applied, mut replayed, mut duplicate) = (0, 0, 0);
        for a in accruals {
            match self.credits.get(&a.accrual_id) {
                Some(c) if c.by == by => {
                    applied += 1;
                    replayed += 1;
                }
                Some(_) => duplicate += 1,
                None => {
                    let lot = lot_of(a);
                    let sheet = self
                        .sheets
                        .entry((a.member_id.clone(), a.point_type.clone()))
                        .or_default();
                    *sheet.lots.entry(lot).or_default() += a.amount;
                    sheet.earned += a.amount;
                    self.credits.insert(
                        a.accrual_id.clone(),
                        ModelCredit {
                            by,
                            member_id: a.member_id.clone(),
                            point_type: a.point_type.clone(),
                            lot,
                            amount: a.amount,
                            reversed: false,
                        },
                    );
                    applied += 1;
                }
            }
        }
        (applied, replayed, duplicate, 0)
    }

    /// Applies `u` at `at` by the rule: once per `use_id`; only available
    /// lots (started, not expired), soonest expiry first (never-expiring
    /// last), then earliest start; all or nothing. A use on behalf of
    /// message `by` is refused once that message's cancel began, a replay
    /// included. An applied use prunes the expired lots still holding
    /// points, soonest expiry first, at most `MAX_PRUNE_LOTS`: they leave
    /// the balance for its `expired` count.
    fn apply_use(&mut self, by: Option<MessageRef>, u: &Use, at: OffsetDateTime) -> UseVerdict {
        if by.is_some_and(|by| self.cancel_begun.contains(&(by.job_id, by.seq))) {
            return UseVerdict::Cancelled;
        }
        if let Some(prior) = self.uses.get(&u.use_id) {
            let same = prior.member_id == u.member_id && prior.point_type == u.point_type && prior.amount == u.amount;
            return if same {
                UseVerdict::Replayed
            } else {
                UseVerdict::IdReused
            };
        }
        if let Some((refused_by, member_id, point_type, amount)) = self.refusals.get(&u.use_id) {
            let same = *member_id == u.member_id && *point_type == u.point_type && *amount == u.amount;
            return if same && by == Some(*refused_by) {
                UseVerdict::RefusedBefore
            } else {
                UseVerdict::IdReused
            };
        }
        let verdict = self.deduct(by, u, at);
        if let (Some(by), UseVerdict::Insufficient | UseVerdict::TooManyLots) = (by, verdict) {
            self.refusals.insert(
                u.use_id.clone(),
                (by, u.member_id.clone(), u.point_type.clone(), u.amount),
            );
        }
        verdict
    }

    /// Deducts `u` if the balance covers it, by the rule of [`Model::apply_use`].
    fn deduct(&mut self, by: Option<MessageRef>, u: &Use, at: OffsetDateTime) -> UseVerdict {
        let now = at.unix_timestamp();
        let key = (u.member_id.clone(), u.point_type.clone());
        let sheet = self.sheets.get(&key).cloned().unwrap_or_default();
        let mut available: Vec<(LotKey, u64)> = sheet
            .lots
            .iter()
            .filter(|(k, n)| **n > 0 && k.from <= now && k.until.is_none_or(|until| until > now))
            .map(|(k, n)| (*k, *n))
            .collect();
        available.sort_by_key(|(k, _)| (k.until.unwrap_or(i64::MAX), k.from));
        let total: u64 = available.iter().map(|(_, n)| n).sum();
        if total < u.amount {
            return UseVerdict::Insufficient;
        }
        let mut left = u.amount;
        let mut consumed = BTreeMap::new();
        for (k, n) in available {
            if left == 0 {
                break;
            }
            let take = n.min(left);
            consumed.insert(k, take);
            left -= take;
        }
        if consumed.len() > crate::domain::lots::MAX_USE_LOTS {
            return UseVerdict::TooManyLots;
        }
        let mut expired: Vec<(LotKey, u64)> = sheet
            .lots
            .iter()
            .filter(|(k, n)| **n > 0 && k.until.is_some_and(|until| until <= now))
            .map(|(k, n)| (*k, *n))
            .collect();
        expired.sort_by_key(|(k, _)| (k.until.unwrap_or(i64::MAX), k.from));
        expired.truncate(crate::domain::lots::MAX_PRUNE_LOTS);
        let sheet = self.sheets.entry(key).or_default();
        for (k, n) in expired {
            sheet.lots.remove(&k);
            sheet.expired += n;
        }
        for (k, take) in &consumed {
            if let Some(n) = sheet.lots.get_mut(k) {
                *n -= take;
            }
        }
        sheet.used += u.amount;
        self.uses.insert(
            u.use_id.clone(),
            ModelUse {
                by,
                member_id: u.member_id.clone(),
                point_type: u.point_type.clone(),
                amount: u.amount,
                consumed,
                reversed: false,
            },
        );
        UseVerdict::Applied
    }

    /// Reverses `target` by the rule: once; an accrual only if its lot
    /// still holds its points; a use gives back what it took.
    fn reverse(&mut self, target: &ReversalTarget) -> ReversalVerdict {
        match target {
            ReversalTarget::Accrual(id) | ReversalTarget::CreditBy { accrual_id: id, .. } => {
                let owner = match target {
                    ReversalTarget::CreditBy { by, .. } => Some(*by),
                    _ => None,
                };
                let Some(c) = self.credits.get(id).cloned() else {
                    return ReversalVerdict::NotFound;
                };
                if owner.is_some_and(|o| o != c.by) {
                    return ReversalVerdict::NotFound;
                }
                if c.reversed {
                    return ReversalVerdict::Replayed;
                }
                let sheet = self
                    .sheets
                    .entry((c.member_id.clone(), c.point_type.clone()))
                    .or_default();
                let lot = sheet.lots.entry(c.lot).or_default();
                if *lot < c.amount {
                    return ReversalVerdict::AlreadySpent;
                }
                *lot -= c.amount;
                sheet.earned -= c.amount;
                if let Some(c) = self.credits.get_mut(id) {
                    c.reversed = true;
                }
                ReversalVerdict::Reversed
            }
            ReversalTarget::Use(id) | ReversalTarget::UseBy { use_id: id, .. } => {
                let Some(u) = self.uses.get(id).cloned() else {
                    return ReversalVerdict::NotFound;
                };
                if target.by().is_some_and(|owner| Some(owner) != u.by) {
                    return ReversalVerdict::NotFound;
                }
                if u.reversed {
                    return ReversalVerdict::Replayed;
                }
                let sheet = self
                    .sheets
                    .entry((u.member_id.clone(), u.point_type.clone()))
                    .or_default();
                for (k, n) in &u.consumed {
                    *sheet.lots.entry(*k).or_default() += n;
                }
                sheet.used -= u.amount;
                if let Some(u) = self.uses.get_mut(id) {
                    u.reversed = true;
                }
                ReversalVerdict::Reversed
            }
        }
    }

    /// What every balance must hold, from the records alone: the credits
    /// not reversed, minus what the uses not reversed took, lot by lot
    /// (signed: a lot below zero is a broken rule no store may show).
    pub(crate) fn expected_from_records(&self) -> BTreeMap<SheetKey, BTreeMap<LotKey, i128>> {
        let mut out: BTreeMap<SheetKey, BTreeMap<LotKey, i128>> = BTreeMap::new();
        for c in self.credits.values().filter(|c| !c.reversed) {
            *out.entry((c.member_id.clone(), c.point_type.clone()))
                .or_default()
                .entry(c.lot)
                .or_default() += i128::from(c.amount);
        }
        for u in self.uses.values().filter(|u| !u.reversed) {
            let lots = out.entry((u.member_id.clone(), u.point_type.clone())).or_default();
            for (k, n) in &u.consumed {
                *lots.entry(*k).or_default() -= i128::from(*n);
            }
        }
        for lots in out.values_mut() {
            lots.retain(|_, n| *n != 0);
        }
        out.retain(|_, lots| !lots.is_empty());
        out
    }

    /// Compares one member's balances in the store with the model.
    fn compare(&mut self, member: &str, sheets: &[BalanceSheet], when: &str) {
        let actual: BTreeMap<String, ModelSheet> = sheets
            .iter()
            .map(|s| {
                (
                    s.point_type.clone(),
                    ModelSheet {
                        lots: s
                            .lots
                            .iter()
                            .filter(|l| l.amount > 0)
                            .map(|l| (l.key, l.amount))
                            .collect(),
                        earned: s.earned,
                        used: s.used,
                        expired: s.expired,
                    },
                )
            })
            .filter(|(_, s)| *s != ModelSheet::default())
            .collect();
        let wanted: BTreeMap<String, ModelSheet> = self
            .sheets
            .iter()
            .filter(|((m, _), _)| m == member)
            .map(|((_, pt), s)| {
                (
                    pt.clone(),
                    ModelSheet {
                        lots: s.lots.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (*k, *n)).collect(),
                        earned: s.earned,
                        used: s.used,
                        expired: s.expired,
                    },
                )
            })
            .filter(|(_, s)| *s != ModelSheet::default())
            .collect();
        if actual != wanted {
            self.fail(format!(
                "{when}: balances of {member} in the store {actual:?}, the reference model says {wanted:?}"
            ));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UseVerdict {
    Applied,
    Replayed,
    Insufficient,
    TooManyLots,
    IdReused,
    RefusedBefore,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReversalVerdict {
    Reversed,
    Replayed,
    NotFound,
    AlreadySpent,
}

/// The model, shared by the recording wrappers and the checks.
#[derive(Clone, Default)]
pub(crate) struct SharedModel(Arc<Mutex<Model>>);

impl SharedModel {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Model> {
        // Single-threaded per seed: a poisoned lock means a panic already failed the run.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A [`Ledger`] that tells the model every call that took effect and
/// checks the store's answer, and the balances it touched, against it.
pub(crate) struct ModelLedger {
    pub inner: Arc<dyn Ledger>,
    pub model: SharedModel,
}

impl ModelLedger {
    /// Compares the balances of `members` with the model after `when`.
    async fn compare(&self, members: BTreeSet<String>, when: String) {
        for member in members {
            match self.inner.balance_sheets(&member).await {
                Ok(sheets) => self.model.lock().compare(&member, &sheets, &when),
                Err(e) => self.model.lock().fail(format!("reading balances of {member}: {e}")),
            }
        }
    }
}

#[async_trait]
impl Credits for ModelLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let outcome = self.inner.apply_accruals(by, accruals, now).await?;
        {
            let mut model = self.model.lock();
            let want = model.credit(by, accruals);
            let got = (outcome.applied, outcome.replayed, outcome.duplicate, outcome.cancelled);
            if got != want {
                model.fail(format!(
                    "message {}#{} credited (applied, replayed, duplicate, cancelled) {got:?}; the reference model says {want:?}",
                    by.job_id, by.seq
                ));
            }
        }
        // Balances after a credit are compared once the run drained
        // (`check_ledger`): credits are most of the calls, and reading every
        // member's balances after each one doubled the suite's time. A use
        // or a reversal, which decide from the balance, is compared at once.
        Ok(outcome)
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        self.inner.tally_credits(by, accrual_ids).await
    }
}

#[async_trait]
impl Debits for ModelLedger {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        let outcome = self.inner.apply_use_audited(u, audit, now).await?;
        self.check_use(None, u, now, &outcome).await;
        Ok(outcome)
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        let outcome = self.inner.apply_message_use(by, u, now).await?;
        self.check_use(Some(by), u, now, &outcome).await;
        Ok(outcome)
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        let outcome = self.inner.reverse_audited(target, audit, now).await?;
        let member = {
            let mut model = self.model.lock();
            let want = model.reverse(target);
            let got = match &outcome {
                ReversalOutcome::Reversed(_) => ReversalVerdict::Reversed,
                ReversalOutcome::Replayed(_) => ReversalVerdict::Replayed,
                ReversalOutcome::NotFound => ReversalVerdict::NotFound,
                ReversalOutcome::AlreadySpent { .. } => ReversalVerdict::AlreadySpent,
            };
            if got != want {
                model.fail(format!(
                    "reversal of {target:?}: the store answered {got:?}; the reference model says {want:?}"
                ));
            }
            if let (ReversalTarget::CreditBy { accrual_id, .. }, ReversalVerdict::AlreadySpent) = (target, got) {
                model.spent_at_cancel.insert(accrual_id.clone());
            }
            match target {
                ReversalTarget::Use(id) | ReversalTarget::UseBy { use_id: id, .. } => {
                    model.uses.get(id).map(|u| u.member_id.clone())
                }
                _ => model.credits.get(target.id()).map(|c| c.member_id.clone()),
            }
        };
        if let Some(member) = member {
            self.compare(BTreeSet::from([member]), format!("after reversing {}", target.id()))
                .await;
        }
        Ok(outcome)
    }
}

impl ModelLedger {
    /// Checks a use's answer against the model, then the member's balances.
    async fn check_use(&self, by: Option<MessageRef>, u: &Use, now: OffsetDateTime, outcome: &UseOutcome) {
        {
            let mut model = self.model.lock();
            let want = model.apply_use(by, u, now);
            let got = match &outcome {
                UseOutcome::Applied(_) => UseVerdict::Applied,
                UseOutcome::Replayed(_) => UseVerdict::Replayed,
                UseOutcome::Insufficient { .. } => UseVerdict::Insufficient,
                UseOutcome::TooManyLots { .. } => UseVerdict::TooManyLots,
                UseOutcome::IdReused(_) => UseVerdict::IdReused,
                UseOutcome::RefusedBefore => UseVerdict::RefusedBefore,
                UseOutcome::Cancelled => UseVerdict::Cancelled,
            };
            if got != want {
                model.fail(format!(
                    "use {} ({} {} of {}): the store answered {got:?}; the reference model says {want:?}",
                    u.use_id, u.amount, u.point_type, u.member_id
                ));
            }
        }
        self.compare(BTreeSet::from([u.member_id.clone()]), format!("after use {}", u.use_id))
            .await;
    }
}

// Reads and repairs pass through unchecked: the model follows writes only.
crate::forward_ledger_reads!(ModelLedger, self => self.inner);

crate::forward_ledger_repairs!(ModelLedger, self => self.inner);

/// A [`JobStore`] that tells the model when a message's cancel began.
pub(crate) struct ModelJobs {
    pub inner: Arc<dyn JobStore>,
    pub model: SharedModel,
}

#[async_trait]
impl JobStore for ModelJobs {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        self.inner.create_job(job).await
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.inner.mark_enqueued(job_id).await
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get_job(job_id).await
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.fold_message(job_id, seq, counts, items, now).await
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.inner.record_chunk(job_id, chunk, now).await
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.inner.chunk_recorded(job_id, index).await
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        self.inner.begin_cancel(job_id, audit, now).await
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        let result = self.inner.begin_message_cancel(job_id, seq, now).await?;
        // The store wrote the cancel item before reading the marker: from
        // now on no credit of this message may land.
        self.model.lock().cancel_begun.insert((job_id, seq));
        Ok(result)
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.record_cancelled(job_id, seq, counts, now).await
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
