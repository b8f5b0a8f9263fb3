//! The checks of the ledger once the run has drained, against the
//! reference model (`model.rs`) that saw every store call: balances lot by
//! lot, uses, reversals, and a cancelled job's accounting.

use super::*;
use crate::domain::JobId;

impl Run {
    /// After the last drain: what the model found call by call, then every
    /// balance, bulk-use job and cancel against the ledger's records.
    pub(super) fn check_ledger(&mut self) {
        let found = std::mem::take(&mut self.model.lock().violations);
        self.violations.extend(found);
        self.check_balances_against_records();
        self.check_credits_against_campaign();
        self.check_jobs_against_credits();
        self.check_use_jobs();
        if let Some(s) = self.scenario.extras.cancel {
            self.check_cancel(s);
        }
    }

    /// Every balance equals its credits minus its uses plus its reversed
    /// uses minus its reversed credits, lot by lot, and what the model
    /// holds; `earned` and `used` too.
    fn check_balances_against_records(&mut self) {
        let expected = self.model.lock().expected_from_records();
        let members: BTreeSet<String> = self
            .scenario
            .members()
            .into_iter()
            .chain(expected.keys().map(|(m, _)| m.clone()))
            .collect();
        for member in members {
            let sheets = match futures::executor::block_on(self.ledger.balance_sheets(&member)) {
                Ok(sheets) => sheets,
                Err(e) => {
                    self.violations.push(format!("reading balances of {member}: {e}"));
                    continue;
                }
            };
            let actual: BTreeMap<String, BTreeMap<LotKey, i128>> = sheets
                .iter()
                .map(|s| {
                    let lots = s
                        .lots
                        .iter()
                        .filter(|l| l.amount > 0)
                        .map(|l| (l.key, i128::from(l.amount)))
                        .collect();
                    (s.point_type.clone(), lots)
                })
                .filter(|(_, lots): &(String, BTreeMap<LotKey, i128>)| !lots.is_empty())
                .collect();
            let wanted: BTreeMap<String, BTreeMap<LotKey, i128>> = expected
                .iter()
                .filter(|((m, _), _)| *m == member)
                .map(|((_, pt), lots)| (pt.clone(), lots.clone()))
                .collect();
            if actual != wanted {
                self.violations.push(format!(
                    "balances of {member}: {actual:?}; credits - uses + reversed uses - reversed credits give {wanted:?}"
                ));
            }
            let model = self.model.lock();
            for sheet in &sheets {
                let m = model
                    .sheets
                    .get(&(member.clone(), sheet.point_type.clone()))
                    .cloned()
                    .unwrap_or_default();
                if (sheet.earned, sheet.used) != (m.earned, m.used) {
                    self.violations.push(format!(
                        "{member} {}: earned {} used {}; the reference model says earned {} used {}",
                        sheet.point_type, sheet.earned, sheet.used, m.earned, m.used
                    ));
                }
            }
        }
    }

    /// What the ledger credited is what the campaign submitted: every
    /// distinct accrual once (reversed or not), except, in a cancelled job,
    /// those whose message the cancel stopped first.
    fn check_credits_against_campaign(&mut self) {
        let mut credited: BTreeMap<String, BTreeMap<String, BTreeMap<LotKey, u64>>> = BTreeMap::new();
        for c in self.model.lock().credits.values() {
            *credited
                .entry(c.member_id.clone())
                .or_default()
                .entry(c.point_type.clone())
                .or_default()
                .entry(c.lot)
                .or_default() += c.amount;
        }
        let submitted = self.scenario.expected_balances();
        if self.scenario.extras.cancel.is_none() {
            if credited != submitted {
                self.violations.push(format!(
                    "the ledger credited {credited:?}; the campaign submitted {submitted:?}"
                ));
            }
            return;
        }
        for (member, types) in &credited {
            for (pt, lots) in types {
                for (lot, n) in lots {
                    let most = submitted
                        .get(member)
                        .and_then(|t| t.get(pt))
                        .and_then(|l| l.get(lot))
                        .copied()
                        .unwrap_or(0);
                    if *n > most {
                        self.violations.push(format!(
                            "the ledger credited {member} {pt} {lot:?} {n} points; the campaign submitted {most}"
                        ));
                    }
                }
            }
        }
    }

    /// A job that was not cancelled (a file's too) counts `applied`
    /// exactly the accruals its messages credited.
    fn check_jobs_against_credits(&mut self) {
        let mut by_job: BTreeMap<JobId, u64> = BTreeMap::new();
        for c in self.model.lock().credits.values() {
            *by_job.entry(c.by.job_id).or_default() += 1;
        }
        let submitted = (0..self.scenario.submissions.len())
            .filter(|s| self.scenario.extras.cancel != Some(*s))
            .map(|s| job_id_for_key(&self.scenario.submissions[s].key));
        let jobs: Vec<JobId> = submitted
            .chain(self.file_jobs().into_iter().map(|(job, _, _)| job))
            .collect();
        for job_id in jobs {
            let Some(job) = self.job(job_id) else {
                continue;
            };
            let credited = by_job.get(&job_id).copied().unwrap_or(0);
            if job.applied != credited {
                self.violations.push(format!(
                    "job {} counts {} applied; its messages credited {credited}",
                    short(job_id),
                    job.applied
                ));
            }
        }
    }

    /// A bulk-use job settles every use, applied or refused, and its counts
    /// agree with the ledger: `applied` is exactly the uses the ledger holds
    /// applied by that job, `refused` the others. A use refused on one
    /// delivery must stay refused on every later one (a redelivery after
    /// credits arrived must not apply it).
    fn check_use_jobs(&mut self) {
        for i in 0..self.scenario.extras.use_jobs.len() {
            let (spec, _) = &self.scenario.extras.use_jobs[i];
            let job_id = job_id_for_key(&spec.key);
            let in_ledger = {
                let model = self.model.lock();
                spec.uses
                    .iter()
                    .filter(|u| {
                        model
                            .uses
                            .get(&u.use_id)
                            .is_some_and(|held| held.by.is_some_and(|by| by.job_id == job_id))
                    })
                    .count() as u64
            };
            let total = spec.uses.len() as u64;
            let Some(job) = self.job(job_id) else {
                self.violations.push(format!("bulk-use job {} missing", short(job_id)));
                continue;
            };
            if job.total != total
                || job.applied + job.refused != total
                || job.failed != 0
                || job.duplicate != 0
                || job.completed_at.is_none()
                || job.applied != in_ledger
            {
                self.violations.push(format!(
                    "bulk-use job {} at the end: total {} applied {} refused {} failed {} completed {}; \
                     {total} uses submitted, {in_ledger} applied by the job in the ledger",
                    short(job_id),
                    job.total,
                    job.applied,
                    job.refused,
                    job.failed,
                    job.completed_at.is_some()
                ));
            }
        }
    }

    /// The cancel of submission `s`'s job completed; every accrual the job
    /// credited is reversed or was found spent; its counts add up.
    fn check_cancel(&mut self, s: usize) {
        if self
            .roles
            .iter()
            .zip(&self.clients)
            .any(|(r, c)| *r == Role::Cancel(s) && *c != Client::Done)
        {
            self.violations
                .push(format!("the cancel of submission {s}'s job was never accepted"));
        }
        let job_id = job_id_for_key(&self.scenario.submissions[s].key);
        let Some(job) = self.job(job_id) else {
            return;
        };
        let (credited, unreversed_unspent) = {
            let model = self.model.lock();
            let mine: Vec<(&String, &super::super::model::ModelCredit)> =
                model.credits.iter().filter(|(_, c)| c.by.job_id == job_id).collect();
            let unreversed: Vec<String> = mine
                .iter()
                .filter(|(id, c)| !c.reversed && !model.spent_at_cancel.contains(*id))
                .map(|(id, _)| (*id).clone())
                .collect();
            (mine.len() as u64, unreversed)
        };
        let Some(cancel) = &job.cancel else {
            self.violations
                .push(format!("job {}: no cancel recorded", short(job_id)));
            return;
        };
        let c = cancel.counts;
        if cancel.completed_at.is_none()
            || cancel.messages != job.messages
            || c.reversed + c.spent != credited
            || c.skipped != job.total.saturating_sub(credited)
            || !unreversed_unspent.is_empty()
        {
            self.violations.push(format!(
                "cancelled job {}: completed {} messages {}/{} reversed {} spent {} skipped {}; \
                 its messages credited {credited} of {}; neither reversed nor found spent: {unreversed_unspent:?}",
                short(job_id),
                cancel.completed_at.is_some(),
                cancel.messages,
                job.messages,
                c.reversed,
                c.spent,
                c.skipped,
                job.total
            ));
        }
        if job.applied + job.duplicate + job.failed != job.total || job.completed_at.is_none() {
            self.violations.push(format!(
                "cancelled job {}: total {} applied {} duplicate {} failed {} completed {}",
                short(job_id),
                job.total,
                job.applied,
                job.duplicate,
                job.failed,
                job.completed_at.is_some()
            ));
        }
    }
}
