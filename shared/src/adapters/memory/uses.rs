//! Uses on the in-memory store: a use deducted, replayed, or refused (a
//! bulk use's refusal recorded so that it stands), all under the one lock.

use time::OffsetDateTime;

use super::{lock, Applied, MemoryStore, StoreState};
use crate::domain::audit::Audit;
use crate::domain::history::pruned_expiry;
use crate::domain::lots::{BalanceSheet, Lot};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::MessageRef;

impl MemoryStore {
    /// A use, on behalf of message `by` if given (checked against its cancel).
    pub(super) fn use_points(
        &self,
        by: Option<MessageRef>,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> UseOutcome {
        self.count();
        let mut state = lock(&self.state);
        if by.is_some_and(|by| state.cancel_begun.contains(&(by.job_id, by.seq))) {
            return UseOutcome::Cancelled;
        }
        if let Some(Applied { record, .. }) = state.uses.get(&u.use_id) {
            return if record.matches(u) {
                UseOutcome::Replayed(record.clone())
            } else {
                UseOutcome::IdReused(record.clone())
            };
        }
        if let Some((record, refused_by)) = state.refusals.get(&u.use_id) {
            return if by == Some(*refused_by) && record.matches(u) {
                UseOutcome::RefusedBefore
            } else {
                UseOutcome::IdReused(record.clone())
            };
        }
        let outcome = Self::deduct(&mut state, by, u, audit, now);
        // A bulk use's refusal is recorded under the same lock, so that no
        // later delivery of its message applies it.
        if let (Some(by), UseOutcome::Insufficient { .. } | UseOutcome::TooManyLots { .. }) = (by, &outcome) {
            state.refusals.insert(u.use_id.clone(), (UseRecord::of(u, now), by));
        }
        outcome
    }

    /// Deducts `u` if the balance covers it, recording the use.
    fn deduct(
        state: &mut StoreState,
        by: Option<MessageRef>,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> UseOutcome {
        let key = (u.member_id.clone(), u.point_type.clone());
        let Some(sheet) = state.balances.get_mut(&key) else {
            return UseOutcome::Insufficient { available: 0 };
        };
        let current = BalanceSheet {
            point_type: u.point_type.clone(),
            lots: sheet
                .lots
                .iter()
                .map(|(key, amount)| Lot {
                    key: *key,
                    amount: *amount,
                })
                .collect(),
            earned: sheet.earned,
            used: sheet.used,
            expired: sheet.expired,
        };
        let (plan, prunes) = match current.plan_use(u.amount, now) {
            Ok(plan) => (plan.takes, plan.prunes),
            Err(shortfall) => return shortfall.into(),
        };
        for lot in &prunes {
            sheet.lots.remove(&lot.key);
            sheet.expired += lot.amount;
        }
        for take in &plan {
            if let Some(amount) = sheet.lots.get_mut(&take.key) {
                *amount -= take.amount;
                // A spent lot goes, as the other stores remove it; the
                // plain lot stays (at zero).
                if *amount == 0 && !take.key.is_plain() {
                    sheet.lots.remove(&take.key);
                }
            }
        }
        sheet.used += u.amount;
        let expiries = prunes
            .iter()
            .filter_map(|lot| pruned_expiry(&u.point_type, lot.key, lot.amount, &u.use_id))
            .map(|entry| (u.member_id.clone(), entry));
        state.expiries.extend(expiries);
        let record = UseRecord::of(u, now).with_audit(audit);
        state.uses.insert(
            u.use_id.clone(),
            Applied {
                record: record.clone(),
                taken: plan,
                by,
                reversed: None,
                reversal_audit: None,
            },
        );
        UseOutcome::Applied(record)
    }
}
