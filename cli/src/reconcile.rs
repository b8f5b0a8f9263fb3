//! `pointflow reconcile`: a member's balances recomputed from its ledger,
//! or a job's counts from its messages' markers, straight on the store (the
//! embedded database or the DynamoDB table, not through the API), every
//! difference reported and, with `--repair`, rewritten (docs/operations.md,
//! "Reconcile"). The rules are the library's
//! ([`pointflow::services::reconcile`]); this opens the store and words the
//! outcome.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pointflow::adapters::aws::dynamodb::DynamoStore;
use pointflow::adapters::sqlite::SqliteStore;
use pointflow::domain::JobId;
use pointflow::ports::{JobStore, Ledger};
use pointflow::services::reconcile::{reconcile_job, reconcile_member, JobReport, MemberReport};
use time::OffsetDateTime;

/// Exit status when differences remain in the store (found without
/// `--repair`): as `submit` and `cancel`, 3 means "done, but look".
pub const EXIT_UNREPAIRED: u8 = 3;

/// The store reconcile reads: the embedded database `db`, or the DynamoDB
/// `table` (configured like the AWS SDK).
pub enum ReconcileStore<'a> {
    Embedded { db: &'a Path },
    Aws { table: &'a str },
}

/// The opened store: its ledger and job store, and the settle time its
/// ledger reads need (see [`reconcile_members`]).
pub struct OpenedStore {
    pub ledger: Arc<dyn Ledger>,
    pub jobs: Arc<dyn JobStore>,
    pub settle: Duration,
}

/// Opens `store`. The embedded database must exist: a reconcile of a file
/// that is not there would create an empty one and find nothing.
pub async fn open_store(store: ReconcileStore<'_>) -> anyhow::Result<OpenedStore> {
    match store {
        ReconcileStore::Embedded { db } => {
            anyhow::ensure!(db.exists(), "no embedded database at {}", db.display());
            let store = SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?;
            Ok(OpenedStore {
                ledger: Arc::new(store.clone()),
                jobs: Arc::new(store),
                settle: Duration::ZERO,
            })
        }
        ReconcileStore::Aws { table } => {
            let sdk = pointflow::adapters::aws::load_config().await;
            let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
            Ok(OpenedStore {
                ledger: store.clone(),
                jobs: store,
                settle: AWS_SETTLE,
            })
        }
    }
}

/// How long after reading a member's balances DynamoDB's ledger is read:
/// longer than the history index's usual lag behind the table, so a credit
/// the balance read saw is in the ledger read (docs/operations.md,
/// "Reconcile"). The embedded store reads consistently and waits nothing.
pub const AWS_SETTLE: Duration = Duration::from_secs(2);

/// Reconciles each of `members` in turn (with `repair`, rewriting what
/// differs), reading the ledger `settle` after the balances, stopping at
/// the first member that cannot be reconciled.
pub async fn reconcile_members(
    ledger: &dyn Ledger,
    members: &[String],
    repair: bool,
    settle: Duration,
) -> anyhow::Result<Vec<MemberReport>> {
    let mut reports = Vec::with_capacity(members.len());
    for member in members {
        let report = reconcile_member(ledger, member, repair, settle, OffsetDateTime::now_utc())
            .await
            .with_context(|| format!("reconciling member {member}"))?;
        reports.push(report);
    }
    Ok(reports)
}

/// Reconciles each of `jobs` in turn (with `repair`, rewriting what
/// differs), stopping at the first that cannot be reconciled (an unknown
/// job among them).
pub async fn reconcile_jobs(store: &dyn JobStore, jobs: &[JobId], repair: bool) -> anyhow::Result<Vec<JobReport>> {
    let mut reports = Vec::with_capacity(jobs.len());
    for job in jobs {
        let report = reconcile_job(store, *job, repair, OffsetDateTime::now_utc())
            .await
            .with_context(|| format!("reconciling job {job}"))?;
        reports.push(report);
    }
    Ok(reports)
}

/// The command's exit status: 0 when nothing differs any more (clean, or
/// repaired), [`EXIT_UNREPAIRED`] when a difference remains in the store.
pub fn exit_status(reports: &[MemberReport]) -> u8 {
    if reports.iter().any(MemberReport::has_unrepaired) {
        EXIT_UNREPAIRED
    } else {
        0
    }
}

/// [`exit_status`] of job reports.
pub fn jobs_exit_status(reports: &[JobReport]) -> u8 {
    if reports.iter().any(JobReport::has_unrepaired) {
        EXIT_UNREPAIRED
    } else {
        0
    }
}

/// The job reports for people: per job, how many of its messages are
/// folded, one line per differing count, and what became of them.
pub fn human_jobs(reports: &[JobReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let job = report.job_id;
        let folded = format!("{} of {} messages folded", report.folded, report.messages);
        if report.differences.is_empty() {
            let _ = writeln!(out, "job {job}: counts match its messages ({folded})");
            continue;
        }
        let _ = writeln!(
            out,
            "job {job}: {} count(s) differ from its messages ({folded}){}",
            report.differences.len(),
            if report.repaired {
                " (repaired)"
            } else {
                " (not repaired: run again with --repair to rewrite them)"
            }
        );
        for d in &report.differences {
            let _ = writeln!(out, "  {}: messages {}, stored {}", d.field, d.expected, d.stored);
        }
    }
    out
}

/// The reports for people: per member, one line per differing value (what
/// the ledger says, what the item holds), and what became of them.
pub fn human(reports: &[MemberReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let member = &report.member_id;
        if report.differences.is_empty() {
            let _ = writeln!(out, "member {member}: balances match the ledger");
            continue;
        }
        let _ = writeln!(
            out,
            "member {member}: {} value(s) differ from the ledger{}",
            report.differences.len(),
            if report.repaired {
                " (repaired)"
            } else {
                " (not repaired: run again with --repair to rewrite them)"
            }
        );
        for d in &report.differences {
            let _ = writeln!(
                out,
                "  {} {}: ledger {}, stored {}",
                d.point_type, d.field, d.expected, d.stored
            );
        }
    }
    out
}
