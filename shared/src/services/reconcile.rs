//! Reconcile: recompute a member's balances from the ledger and report
//! (and with `repair`, rewrite) every value that differs — the operator's
//! tool of last resort (docs/operations.md, "reconcile"). The rules are in
//! [`crate::domain::reconcile`]; this holds the sequencing.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::reconcile::{
    compare_job_counts, compare_member, expected_job_counts, expected_sheets, CountDifference, SheetDifference,
};
use crate::domain::JobId;
use crate::ports::{JobStore, LedgerReads, LedgerRepairs, StoreError};

/// How often a repair reads again when the balance changed under it before
/// giving up: each retry means a credit or use landed meanwhile, and the
/// next read sees it.
pub const REPAIR_ATTEMPTS: u32 = 5;

/// What reconciling one member found, and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    pub member_id: String,
    /// Every value of the member's balance items that differed from the
    /// ledger (with `repair`, as it was before the repair).
    pub differences: Vec<SheetDifference>,
    /// Whether the differences were written away (only with `repair`).
    pub repaired: bool,
}

impl MemberReport {
    /// Whether a difference remains in the store: found and not repaired.
    pub fn has_unrepaired(&self) -> bool {
        !self.differences.is_empty() && !self.repaired
    }
}

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger takes more out of a lot than it put in (or a count does
    /// not fit): there is no right value to write, so nothing is written.
    #[error("the ledger of {member_id} is itself inconsistent for point type {point_type}: not repaired")]
    LedgerInconsistent { member_id: String, point_type: String },
    /// No job has this id.
    #[error("no job {job_id}")]
    NoSuchJob { job_id: JobId },
    /// Every repair attempt found the job's counts changed since they were
    /// read.
    #[error("the counts of job {job_id} kept changing during {REPAIR_ATTEMPTS} repair attempts: not repaired")]
    JobKeptChanging { job_id: JobId },
    /// Every repair attempt found the balance changed since it was read.
    #[error("the balances of {member_id} kept changing during {REPAIR_ATTEMPTS} repair attempts: not repaired")]
    KeptChanging { member_id: String },
}

/// Reconciles `member_id`'s balances with its ledger at `now`; with
/// `repair`, writes the recomputed balance items over the differing ones.
///
/// The balances are read **before** the ledger: a credit or use between the
/// two reads is then in the ledger read (each is one atomic write of entry
/// and balance) and changes the balance item's `earned` or `used` since it
/// was read, so the repair's conditional write fails and reads again; it can
/// never write a balance missing a change it did not see.
///
/// That holds if the ledger read sees every change made before the balance
/// read. A store whose ledger read lags its writes (DynamoDB's history index
/// is eventually consistent: an entry committed a moment ago can be missing
/// from it) passes a `settle` longer than that lag: the ledger is read that
/// long after the balances, so a credit the balance read saw is in it. Without
/// it, a repair just after a credit could write the credit away. `ZERO` for
/// stores whose reads are consistent (memory, SQLite).
pub async fn reconcile_member<L>(
    ledger: &L,
    member_id: &str,
    repair: bool,
    settle: Duration,
    now: OffsetDateTime,
) -> Result<MemberReport, ReconcileError>
where
    L: LedgerReads + LedgerRepairs + ?Sized,
{
    // Differences repaired by an attempt that wrote some point types, then
    // found another changed: reported with those the final attempt finds.
    let mut repaired_earlier: Vec<SheetDifference> = Vec::new();
    for _ in 0..REPAIR_ATTEMPTS {
        let stored = ledger.balance_sheets(member_id).await?;
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
        }
        let entries = ledger.member_ledger(member_id).await?;
        let differences = compare_member(&entries, &stored);
        if !repair || differences.is_empty() {
            let mut all = repaired_earlier;
            let repaired = !all.is_empty() && differences.is_empty();
            all.extend(differences);
            return Ok(MemberReport {
                member_id: member_id.to_owned(),
                differences: all,
                repaired,
            });
        }
        let expected = expected_sheets(&entries);
        let mut point_types: Vec<&str> = differences.iter().map(|d| d.point_type.as_str()).collect();
        point_types.dedup();
        let mut all_written = true;
        for point_type in point_types {
            let sheet = match expected.iter().find(|e| e.point_type == point_type) {
                Some(e) => e.to_sheet().ok_or_else(|| ReconcileError::LedgerInconsistent {
                    member_id: member_id.to_owned(),
                    point_type: point_type.to_owned(),
                })?,
                // A stored item no entry explains must hold nothing.
                None => crate::domain::lots::BalanceSheet {
                    point_type: point_type.to_owned(),
                    ..Default::default()
                },
            };
            let read = stored.iter().find(|s| s.point_type == point_type);
            if ledger.replace_balance_sheet(member_id, read, &sheet, now).await? {
                repaired_earlier.extend(differences.iter().filter(|d| d.point_type == point_type).cloned());
            } else {
                all_written = false;
                break;
            }
        }
        if all_written {
            return Ok(MemberReport {
                member_id: member_id.to_owned(),
                differences: repaired_earlier,
                repaired: true,
            });
        }
    }
    Err(ReconcileError::KeptChanging {
        member_id: member_id.to_owned(),
    })
}

/// What reconciling one job found, and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobReport {
    pub job_id: JobId,
    /// The job's messages, and how many of them are folded (have a marker).
    pub messages: u64,
    pub folded: u64,
    /// Every count that differed from the sum of the markers' (with
    /// `repair`, as it was before the repair).
    pub differences: Vec<CountDifference>,
    /// Whether the differences were written away (only with `repair`).
    pub repaired: bool,
}

impl JobReport {
    /// Whether a difference remains in the store: found and not repaired.
    pub fn has_unrepaired(&self) -> bool {
        !self.differences.is_empty() && !self.repaired
    }
}

/// Reconciles job `job_id`'s counts with what its folded messages recorded
/// (their markers); with `repair`, writes the sums over the job's counts.
///
/// The job is read **before** the markers: a fold between the two reads
/// writes its marker and the job's counts in one atomic write, so it is in
/// the marker read and has changed the job's counts since they were read;
/// the repair's conditional write then fails and reads again. Both reads
/// are consistent on every store, so no wait is needed.
pub async fn reconcile_job<J>(
    jobs: &J,
    job_id: JobId,
    repair: bool,
    now: OffsetDateTime,
) -> Result<JobReport, ReconcileError>
where
    J: JobStore + ?Sized,
{
    for _ in 0..REPAIR_ATTEMPTS {
        let job = jobs
            .get_job(job_id)
            .await?
            .ok_or(ReconcileError::NoSuchJob { job_id })?;
        let folded = jobs.folded_counts(job_id).await?;
        let expected = expected_job_counts(&folded);
        let differences = compare_job_counts(expected, job.counts());
        let done = !repair || differences.is_empty();
        if done || jobs.replace_job_counts(job_id, job.counts(), expected, now).await? {
            return Ok(JobReport {
                job_id,
                messages: job.messages,
                folded: folded.len() as u64,
                repaired: !done,
                differences,
            });
        }
        // A fold landed since the read: read again.
    }
    Err(ReconcileError::JobKeptChanging { job_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::lots::{BalanceSheet, Lot, LotKey};
    use crate::domain::reconcile::SheetField;
    use crate::domain::uses::Use;
    use crate::domain::{Accrual, JobId, MessageRef};
    use crate::ports::{Credits, Debits};

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid time")
    }

    async fn store_with_points() -> MemoryStore {
        let store = MemoryStore::new();
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        let accrual = Accrual {
            accrual_id: "a-1".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 100,
            reason: None,
            apply_at: None,
            expires_at: None,
        };
        store.apply_accruals(by, &[accrual], now()).await.unwrap();
        let u = Use {
            use_id: "u-1".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 30,
            reason: None,
        };
        store.apply_use(&u, now()).await.unwrap();
        store
    }

    fn tampered(plain: u64) -> BalanceSheet {
        BalanceSheet {
            point_type: "PT".into(),
            lots: vec![Lot {
                key: LotKey::PLAIN,
                amount: plain,
            }],
            earned: 100,
            used: 30,
            expired: 0,
        }
    }

    #[tokio::test]
    async fn an_untouched_member_reconciles_clean() {
        let store = store_with_points().await;
        let report = reconcile_member(&store, "m-1", true, Duration::ZERO, now())
            .await
            .unwrap();
        assert_eq!(report.differences, []);
        assert!(!report.repaired && !report.has_unrepaired());
    }

    #[tokio::test]
    async fn a_tampered_balance_is_reported_then_repaired() {
        let store = store_with_points().await;
        let read = store.balance_sheets("m-1").await.unwrap();
        assert!(store
            .replace_balance_sheet("m-1", read.first(), &tampered(75), now())
            .await
            .unwrap());

        let report = reconcile_member(&store, "m-1", false, Duration::ZERO, now())
            .await
            .unwrap();
        let found: Vec<(SheetField, i128, i128)> = report
            .differences
            .iter()
            .map(|d| (d.field, d.expected, d.stored))
            .collect();
        assert_eq!(found, [(SheetField::Lot(LotKey::PLAIN), 70, 75)]);
        assert!(report.has_unrepaired());

        let repaired = reconcile_member(&store, "m-1", true, Duration::ZERO, now())
            .await
            .unwrap();
        assert_eq!(repaired.differences, report.differences);
        assert!(repaired.repaired && !repaired.has_unrepaired());
        assert_eq!(store.balance_sheets("m-1").await.unwrap(), [tampered(70)]);
        let again = reconcile_member(&store, "m-1", false, Duration::ZERO, now())
            .await
            .unwrap();
        assert_eq!(again.differences, []);
    }

    #[tokio::test]
    async fn a_repair_never_overwrites_a_balance_changed_since_it_was_read() {
        let store = store_with_points().await;
        let read = store.balance_sheets("m-1").await.unwrap();
        // A stale read: the balance changed since (the tamper).
        store
            .replace_balance_sheet("m-1", read.first(), &tampered(75), now())
            .await
            .unwrap();
        let written = store
            .replace_balance_sheet("m-1", read.first(), &tampered(1), now())
            .await
            .unwrap();
        assert!(!written);
        assert_eq!(store.balance_sheets("m-1").await.unwrap(), [tampered(75)]);
    }

    /// A store whose ledger read lags its writes, as DynamoDB's history
    /// index does: the entry of `hidden` is missing from `member_ledger`
    /// until `lag` after the balances were last read.
    struct LaggingLedger {
        inner: MemoryStore,
        hidden: &'static str,
        lag: Duration,
        balances_read_at: std::sync::Mutex<Option<std::time::Instant>>,
    }

    #[async_trait::async_trait]
    impl LedgerReads for LaggingLedger {
        async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError> {
            *self.balances_read_at.lock().unwrap() = Some(std::time::Instant::now());
            self.inner.balance_sheets(member_id).await
        }

        async fn history_entries(
            &self,
            member_id: &str,
            point_type: Option<&str>,
            before: Option<&str>,
            limit: usize,
        ) -> Result<Vec<crate::domain::history::HistoryEntry>, StoreError> {
            self.inner.history_entries(member_id, point_type, before, limit).await
        }

        async fn member_ledger(&self, member_id: &str) -> Result<crate::domain::reconcile::MemberLedger, StoreError> {
            let mut ledger = self.inner.member_ledger(member_id).await?;
            let read_at = self.balances_read_at.lock().unwrap().expect("balances read first");
            if read_at.elapsed() < self.lag {
                ledger.credits.retain(|c| c.accrual_id != self.hidden);
            }
            Ok(ledger)
        }
    }

    #[async_trait::async_trait]
    impl LedgerRepairs for LaggingLedger {
        async fn replace_balance_sheet(
            &self,
            member_id: &str,
            read: Option<&BalanceSheet>,
            sheet: &BalanceSheet,
            now: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            self.inner.replace_balance_sheet(member_id, read, sheet, now).await
        }
    }

    #[tokio::test]
    async fn a_repair_waits_out_a_lagging_ledger_read_and_keeps_a_fresh_credit() {
        let store = store_with_points().await;
        let late = Accrual {
            accrual_id: "a-late".into(),
            member_id: "m-1".into(),
            point_type: "PT".into(),
            amount: 5,
            reason: None,
            apply_at: None,
            expires_at: None,
        };
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 1,
        };
        store.apply_accruals(by, &[late], now()).await.unwrap();
        let lagging = LaggingLedger {
            inner: store,
            hidden: "a-late",
            lag: Duration::from_millis(300),
            balances_read_at: std::sync::Mutex::new(None),
        };
        // The ledger is read at least `settle` after the balances: the
        // fresh credit is in it, so there is nothing to repair.
        let report = reconcile_member(&lagging, "m-1", true, Duration::from_millis(300), now())
            .await
            .unwrap();
        assert_eq!(report.differences, []);
        let sheets = lagging.inner.balance_sheets("m-1").await.unwrap();
        assert_eq!((sheets[0].earned, sheets[0].lots[0].amount), (105, 75));
    }
}
