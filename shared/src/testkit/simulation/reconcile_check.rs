//! The end-of-run reconcile check: after every seed, each member's balances
//! are recomputed from the ledger ([`crate::services::reconcile`]) and any
//! difference is a violation. Kept out of the scheduler so the check is one
//! call there.

use crate::domain::JobId;
use crate::ports::{JobStore, Ledger};
use crate::services::reconcile::{reconcile_job, reconcile_member, ReconcileError};

/// One violation per member whose balances differ from its ledger (or
/// cannot be reconciled), read-only: nothing is repaired.
pub(crate) fn reconcile_violations<'a>(
    ledger: &dyn Ledger,
    members: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    // Only a repair writes a time; this reads.
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let mut violations = Vec::new();
    for member in members {
        match futures::executor::block_on(reconcile_member(ledger, member, false, std::time::Duration::ZERO, now)) {
            Ok(report) if report.differences.is_empty() => {}
            Ok(report) => {
                let found: Vec<String> = report
                    .differences
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {}: ledger {} stored {}",
                            d.point_type, d.field, d.expected, d.stored
                        )
                    })
                    .collect();
                violations.push(format!("reconcile {member}: {}", found.join("; ")));
            }
            Err(e) => violations.push(format!("reconcile {member}: {e}")),
        }
    }
    violations
}

/// One violation per job whose counts differ from its message markers' (or
/// cannot be reconciled), read-only. A job the run never created (its
/// request was never answered) is no violation here.
pub(crate) fn job_violations<'a>(jobs: &dyn JobStore, ids: impl IntoIterator<Item = &'a JobId>) -> Vec<String> {
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let mut violations = Vec::new();
    for job_id in ids {
        match futures::executor::block_on(reconcile_job(jobs, *job_id, false, now)) {
            Ok(report) if report.differences.is_empty() => {}
            Ok(report) => {
                let found: Vec<String> = report
                    .differences
                    .iter()
                    .map(|d| format!("{}: messages {} stored {}", d.field, d.expected, d.stored))
                    .collect();
                violations.push(format!("reconcile job {job_id}: {}", found.join("; ")));
            }
            Err(ReconcileError::NoSuchJob { .. }) => {}
            Err(e) => violations.push(format!("reconcile job {job_id}: {e}")),
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::lots::{BalanceSheet, Lot, LotKey};
    use crate::domain::{Accrual, JobId, MessageRef};
    use crate::ports::{Credits, LedgerReads, LedgerRepairs};

    #[test]
    fn a_tampered_balance_is_a_violation() {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let store = MemoryStore::new();
        let accrual = Accrual {
            accrual_id: "a-1".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 10,
            reason: None,
            apply_at: None,
            expires_at: None,
        };
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        futures::executor::block_on(store.apply_accruals(by, &[accrual], now)).unwrap();
        let members = ["m-1".to_owned(), "m-2".to_owned()];
        assert_eq!(reconcile_violations(&store, &members), Vec::<String>::new());

        let read = futures::executor::block_on(store.balance_sheets("m-1")).unwrap();
        let tampered = BalanceSheet {
            point_type: "PT".into(),
            lots: vec![Lot {
                key: LotKey::PLAIN,
                amount: 11,
            }],
            earned: 10,
            used: 0,
            expired: 0,
        };
        assert!(futures::executor::block_on(store.replace_balance_sheet("m-1", read.first(), &tampered, now)).unwrap());
        assert_eq!(
            reconcile_violations(&store, &members),
            ["reconcile m-1: PT balance: ledger 10 stored 11"]
        );
    }
}
