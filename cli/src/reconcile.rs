//! `pointflow reconcile`: a member's balances recomputed from its ledger,
//! straight on the store (the embedded database or the DynamoDB table, not
//! through the API), every difference reported and, with `--repair`,
//! rewritten (docs/operations.md, "Reconcile"). The rules are the library's
//! ([`pointflow::services::reconcile`]); this opens the store and words the
//! outcome.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pointflow::adapters::aws::dynamodb::DynamoStore;
use pointflow::adapters::sqlite::SqliteStore;
use pointflow::ports::Ledger;
use pointflow::services::reconcile::{reconcile_member, MemberReport};
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

/// Opens the ledger of `store`, with the settle time its reads need (see
/// [`reconcile_members`]). The embedded database must exist: a reconcile of
/// a file that is not there would create an empty one and find nothing.
pub async fn open_ledger(store: ReconcileStore<'_>) -> anyhow::Result<(Arc<dyn Ledger>, Duration)> {
    match store {
        ReconcileStore::Embedded { db } => {
            anyhow::ensure!(db.exists(), "no embedded database at {}", db.display());
            let store = SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?;
            Ok((Arc::new(store), Duration::ZERO))
        }
        ReconcileStore::Aws { table } => {
            let sdk = pointflow::adapters::aws::load_config().await;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
            Ok((Arc::new(store), AWS_SETTLE))
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

/// The command's exit status: 0 when nothing differs any more (clean, or
/// repaired), [`EXIT_UNREPAIRED`] when a difference remains in the store.
pub fn exit_status(reports: &[MemberReport]) -> u8 {
    if reports.iter().any(MemberReport::has_unrepaired) {
        EXIT_UNREPAIRED
    } else {
        0
    }
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
