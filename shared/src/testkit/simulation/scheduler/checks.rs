//! What a simulated run checks once it has drained: every job's counts,
//! the DLQ accounting for what is not settled, and the balances against the
//! accruals credited.

use super::*;

impl Run {
    pub(super) fn job(&mut self, job_id: JobId) -> Option<crate::domain::Job> {
        match futures::executor::block_on(self.jobs.get_job(job_id)) {
            Ok(job) => job,
            Err(e) => {
                self.violations.push(format!("reading job {job_id}: {e}"));
                None
            }
        }
    }

    /// After the first drain: nothing in flight, every job's counts
    /// consistent, and every accrual not yet settled accounted for by a
    /// message in the DLQ.
    pub(super) fn check_settled(&mut self) {
        if !self.all_done() {
            self.violations.push("a client never got its 202".into());
        }
        let (main_left, dlq_by_job, sent) = {
            let core = self.sim.lock();
            let mut by_job: BTreeMap<JobId, BTreeMap<u32, usize>> = BTreeMap::new();
            for m in &core.queues[QueueId::Dead as usize].messages {
                if let Some((job, seq, n)) = m.describe() {
                    by_job.entry(job).or_default().insert(seq, n);
                }
                if m.dead_reason.is_none() {
                    self.violations
                        .push(format!("{} is in the DLQ without a reason", m.message_id));
                }
            }
            (
                core.queues[QueueId::Main as usize].messages.len(),
                by_job,
                core.queues[QueueId::Main as usize].sent.clone(),
            )
        };
        if main_left > 0 {
            self.violations
                .push(format!("{main_left} messages still in the queue after draining"));
        }
        self.check_imports_settled();
        for s in 0..self.scenario.submissions.len() {
            let job_id = job_id_for_key(&self.scenario.submissions[s].key);
            let Some(job) = self.job(job_id) else {
                self.violations.push(format!("submission {s}: job {job_id} missing"));
                continue;
            };
            let (total, deduplicated) = self.scenario.expected_counts(s);
            let seqs: BTreeSet<u32> = sent.iter().filter(|(j, _)| *j == job_id).map(|(_, q)| *q).collect();
            let expected_seqs: BTreeSet<u32> = (0..job.messages as u32).collect();
            if job.total != total || job.deduplicated != deduplicated || !job.enqueued || seqs != expected_seqs {
                self.violations.push(format!(
                    "job {}: total {} deduplicated {} enqueued {} messages {} (sent seqs {seqs:?}); expected total {total} deduplicated {deduplicated}",
                    short(job_id), job.total, job.deduplicated, job.enqueued, job.messages
                ));
            }
            if job.settled() > job.total {
                self.violations.push(format!(
                    "job {}: settled {} > total {}",
                    short(job_id),
                    job.settled(),
                    job.total
                ));
            }
            if job.completed_at.is_some() != (job.settled() >= job.total) {
                self.violations.push(format!(
                    "job {}: completed_at {:?} with {} of {} settled",
                    short(job_id),
                    job.completed_at.is_some(),
                    job.settled(),
                    job.total
                ));
            }
            if job.failed > 0 {
                self.jobs_failed_before_redrive += 1;
            }
            let missing = job.total.saturating_sub(job.applied + job.duplicate);
            let in_dlq: u64 = dlq_by_job
                .get(&job_id)
                .map_or(0, |m| m.values().map(|n| *n as u64).sum());
            // A cancelled job's message redriven after the cancel began is
            // deleted without folding: its accruals stay `failed` (the cancel
            // counted them `skipped`), out of the DLQ.
            if missing > in_dlq && job.cancel.is_none() {
                self.violations.push(format!(
                    "job {}: {missing} accruals neither applied nor duplicate, but only {in_dlq} in the DLQ (stuck without a reason; counts applied {} duplicate {} failed {})",
                    short(job_id), job.applied, job.duplicate, job.failed
                ));
            }
        }
    }

    /// After redriving and draining again: everything applied exactly once.
    pub(super) fn check_final(&mut self) {
        {
            let core = self.sim.lock();
            let left = core.queues[QueueId::Main as usize].messages.len();
            let dead = core.queues[QueueId::Dead as usize].messages.len();
            drop(core);
            if left + dead > 0 {
                self.violations.push(format!(
                    "after redrive: {left} messages in the queue, {dead} in the DLQ"
                ));
            }
        }
        let mut applied_total = 0;
        for s in 0..self.scenario.submissions.len() {
            let job_id = job_id_for_key(&self.scenario.submissions[s].key);
            let Some(job) = self.job(job_id) else {
                continue;
            };
            applied_total += job.applied;
            let only_here = self.scenario.only_in(s);
            if self.scenario.extras.cancel == Some(s) {
                // Checked against the ledger in `check_ledger`.
                continue;
            }
            if job.applied + job.duplicate != job.total
                || job.failed != 0
                || job.completed_at.is_none()
                || job.applied < only_here
            {
                self.violations.push(format!(
                    "job {} at the end: total {} applied {} duplicate {} failed {} completed {} (its own accruals: {only_here})",
                    short(job_id),
                    job.total,
                    job.applied,
                    job.duplicate,
                    job.failed,
                    job.completed_at.is_some()
                ));
            }
        }
        applied_total += self.check_imports_final();
        let distinct = self.scenario.distinct_credits().len() as u64;
        if applied_total != distinct && self.scenario.extras.cancel.is_none() {
            self.violations.push(format!(
                "jobs applied {applied_total} accruals in all; {distinct} distinct were submitted"
            ));
        }
        if !self.scenario.extras.is_empty() {
            // Uses, reversals and cancels change balances: `check_ledger`
            // checks them against the reference model.
            return;
        }
        let expected = self.scenario.expected_balances();
        for member in self.scenario.members() {
            let sheets = match futures::executor::block_on(self.ledger.balance_sheets(&member)) {
                Ok(sheets) => sheets,
                Err(e) => {
                    self.violations.push(format!("reading balances of {member}: {e}"));
                    continue;
                }
            };
            let actual: BTreeMap<String, BTreeMap<LotKey, u64>> = sheets
                .iter()
                .map(|s| (s.point_type.clone(), s.lots.iter().map(|l| (l.key, l.amount)).collect()))
                .collect();
            let wanted = expected.get(&member).cloned().unwrap_or_default();
            if actual != wanted {
                self.violations
                    .push(format!("balances of {member}: {actual:?}, expected {wanted:?}"));
            }
            for sheet in &sheets {
                let sum: u64 = sheet.lots.iter().map(|l| l.amount).sum();
                if sheet.earned != sum || sheet.used != 0 {
                    self.violations.push(format!(
                        "{member} {}: earned {} used {} but lots hold {sum}",
                        sheet.point_type, sheet.earned, sheet.used
                    ));
                }
            }
        }
        self.check_reconciled();
    }

    /// Every member's balances recomputed from its ledger entries, and every
    /// job's counts recomputed from its message markers, match the stored
    /// ones (the `reconcile` command's checks).
    fn check_reconciled(&mut self) {
        let members = self.scenario.members();
        let found = super::super::reconcile_check::reconcile_violations(self.ledger.as_ref(), &members);
        self.violations.extend(found);
        let jobs: BTreeSet<JobId> = self
            .scenario
            .submissions
            .iter()
            .map(|submission| job_id_for_key(&submission.key))
            .chain(self.file_jobs().into_iter().map(|(job, _, _)| job))
            .collect();
        let found = super::super::reconcile_check::job_violations(self.jobs.as_ref(), &jobs);
        self.violations.extend(found);
    }
}
