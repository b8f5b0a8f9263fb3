//! The reconcile cases of the contract suite: what every store must give
//! [`pointflow::services::reconcile`] — a member's whole ledger
//! (`member_ledger`) that explains its balance items exactly, and a
//! conditional rewrite of one balance item (`replace_balance_sheet`) that
//! never writes over a balance changed since it was read.

use std::time::Duration;

use pointflow::domain::lots::{BalanceSheet, Lot, LotKey};
use pointflow::domain::reconcile::SheetField;
use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
use pointflow::domain::uses::UseOutcome;
use pointflow::domain::{JobId, MessageCounts};
use pointflow::services::reconcile::{reconcile_job, reconcile_member};

use super::{a_use, accrual, lot_accrual, message, new_job, now};
use crate::backend::Backend;

/// A member with a plain and an expiring lot, a use across both, a reversed
/// use and a reversed credit, credited at `t0`: every kind of entry the
/// ledger holds. Its `PT` balance: 100 + 50 + 20 credited, the 20 reversed;
/// 60 used (50 from the expiring lot, taken whole, then 10 plain), 5 more
/// used and given back. So 90 plain, no other lot, earned 150, used 60.
async fn member_with_history(b: &Backend, t0: time::OffsetDateTime) -> String {
    let member = format!("r-{}", JobId::random());
    let credits = [
        lot_accrual(&format!("{member}-plain"), &member, 100, t0, None, None),
        lot_accrual(&format!("{member}-exp"), &member, 50, t0, None, Some(10)),
        accrual(&format!("{member}-back"), &member, "PT", 20),
    ];
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &credits, t0)
        .await
        .unwrap();
    for (id, amount) in [("u1", 60), ("u2", 5)] {
        let spend = a_use(&format!("{member}-{id}"), &member, "PT", amount);
        assert!(matches!(
            b.ledger.apply_use(&spend, t0).await.unwrap(),
            UseOutcome::Applied(_)
        ));
    }
    for target in [
        ReversalTarget::Use(format!("{member}-u2")),
        ReversalTarget::Accrual(format!("{member}-back")),
    ] {
        assert!(matches!(
            b.ledger.reverse(&target, t0).await.unwrap(),
            ReversalOutcome::Reversed(_)
        ));
    }
    member
}

fn plain_sheet(plain: u64, earned: u64, used: u64) -> BalanceSheet {
    BalanceSheet {
        point_type: "PT".into(),
        lots: vec![Lot {
            key: LotKey::PLAIN,
            amount: plain,
        }],
        earned,
        used,
        expired: 0,
    }
}

/// A member whose balance only ever changed through the ledger reconciles
/// clean: its ledger, every kind of entry included, explains its balance
/// item value for value; a member never seen has nothing to reconcile.
pub async fn reconcile_finds_a_clean_member_clean(b: &Backend) {
    let member = member_with_history(b, now()).await;
    assert_eq!(
        b.ledger.balance_sheets(&member).await.unwrap(),
        [plain_sheet(90, 150, 60)]
    );
    let entries = b.ledger.member_ledger(&member).await.unwrap();
    assert_eq!((entries.credits.len(), entries.uses.len()), (3, 2));
    assert_eq!(entries.credits.iter().filter(|c| c.reversed).count(), 1);
    assert_eq!(entries.uses.iter().filter(|u| u.reversed).count(), 1);

    let report = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, now())
        .await
        .unwrap();
    assert_eq!(report.differences, []);
    assert!(!report.has_unrepaired());
    let nobody = reconcile_member(
        b.ledger.as_ref(),
        &format!("{member}-nobody"),
        true,
        Duration::ZERO,
        now(),
    )
    .await
    .unwrap();
    assert_eq!((nobody.differences.len(), nobody.repaired), (0, false));
}

/// A balance item changed outside the ledger (a plain lot off by 5, a lot no
/// credit made) is reported value by value and left alone without
/// `repair`; with it, rewritten to what the ledger says (the stray lot
/// removed), after which it reconciles clean and still works.
pub async fn reconcile_reports_then_repairs_a_tampered_balance(b: &Backend) {
    let t0 = now();
    let member = member_with_history(b, t0).await;
    let read = b.ledger.balance_sheets(&member).await.unwrap();
    let stray = LotKey {
        from: 0,
        until: Some(4_000_000_000),
    };
    let mut tampered = plain_sheet(95, 150, 60);
    tampered.lots.push(Lot { key: stray, amount: 9 });
    assert!(b
        .ledger
        .replace_balance_sheet(&member, read.first(), &tampered, t0)
        .await
        .unwrap());
    assert_eq!(b.ledger.balance_sheets(&member).await.unwrap(), [tampered.clone()]);

    let report = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, t0)
        .await
        .unwrap();
    let found: Vec<(SheetField, i128, i128)> = report
        .differences
        .iter()
        .map(|d| (d.field, d.expected, d.stored))
        .collect();
    assert_eq!(
        found,
        [(SheetField::Lot(LotKey::PLAIN), 90, 95), (SheetField::Lot(stray), 0, 9)]
    );
    assert!(report.has_unrepaired());
    assert_eq!(b.ledger.balance_sheets(&member).await.unwrap(), [tampered]);

    let repaired = reconcile_member(b.ledger.as_ref(), &member, true, Duration::ZERO, t0)
        .await
        .unwrap();
    assert_eq!(repaired.differences, report.differences);
    assert!(repaired.repaired && !repaired.has_unrepaired());
    assert_eq!(
        b.ledger.balance_sheets(&member).await.unwrap(),
        [plain_sheet(90, 150, 60)]
    );
    let again = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, t0)
        .await
        .unwrap();
    assert_eq!(again.differences, []);
    // The repaired item is an ordinary balance: credits and uses go on.
    let spend = a_use(&format!("{member}-after"), &member, "PT", 90);
    assert!(matches!(
        b.ledger.apply_use(&spend, t0).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let last = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, t0)
        .await
        .unwrap();
    assert_eq!(last.differences, []);

    // A member only ever credited (on DynamoDB its item has no `used`
    // attribute yet) is repaired too.
    let credited = format!("{member}-credited");
    b.ledger
        .apply_accruals(
            message(JobId::random(), 0),
            &[accrual(&format!("{credited}-a"), &credited, "PT", 40)],
            t0,
        )
        .await
        .unwrap();
    let read = b.ledger.balance_sheets(&credited).await.unwrap();
    assert!(b
        .ledger
        .replace_balance_sheet(&credited, read.first(), &plain_sheet(44, 40, 0), t0)
        .await
        .unwrap());
    let repaired = reconcile_member(b.ledger.as_ref(), &credited, true, Duration::ZERO, t0)
        .await
        .unwrap();
    assert_eq!((repaired.differences.len(), repaired.repaired), (1, true));
    assert_eq!(
        b.ledger.balance_sheets(&credited).await.unwrap(),
        [plain_sheet(40, 40, 0)]
    );
}

/// A repair whose read is stale writes nothing: a credit landed after the
/// read (so the item's `earned` moved), or the item appeared after a read
/// that found none. The balance stays what the ledger made it.
pub async fn reconcile_repair_never_writes_over_a_stale_read(b: &Backend) {
    let t0 = now();
    let member = member_with_history(b, t0).await;
    let read = b.ledger.balance_sheets(&member).await.unwrap();
    b.ledger
        .apply_accruals(
            message(JobId::random(), 0),
            &[accrual(&format!("{member}-late"), &member, "PT", 3)],
            t0,
        )
        .await
        .unwrap();
    let fresh = b.ledger.balance_sheets(&member).await.unwrap();
    assert_eq!(fresh, [plain_sheet(93, 153, 60)]);
    let wrong = plain_sheet(1, 1, 0);
    assert!(!b
        .ledger
        .replace_balance_sheet(&member, read.first(), &wrong, t0)
        .await
        .unwrap());
    assert!(!b.ledger.replace_balance_sheet(&member, None, &wrong, t0).await.unwrap());
    assert_eq!(b.ledger.balance_sheets(&member).await.unwrap(), fresh);
    let report = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, t0)
        .await
        .unwrap();
    assert_eq!(report.differences, []);
}

fn counts(applied: u64, duplicate: u64, failed: u64) -> MessageCounts {
    MessageCounts {
        applied,
        duplicate,
        failed,
        refused: 0,
    }
}

/// A job's counts are the sum of what its folded messages recorded, a
/// redriven message's move from `failed` included: clean. Counts changed
/// behind the markers' back are reported field by field and, with
/// `repair`, rewritten; a rewrite against a stale read writes nothing.
pub async fn reconcile_recounts_a_job_from_its_messages(b: &Backend) {
    let job = new_job(6, 3, "reconcile");
    b.jobs.create_job(&job).await.unwrap();
    let id = job.job_id;
    let t = now();
    let ids = |seq: u32| vec![format!("{id}-{seq}")];
    b.jobs.fold_message(id, 0, counts(2, 1, 0), &ids(0), t).await.unwrap();
    b.jobs.fold_message(id, 1, counts(0, 0, 2), &ids(1), t).await.unwrap();
    // Redriven: its failed accruals are applied after all.
    b.jobs.fold_message(id, 1, counts(2, 0, 0), &ids(1), t).await.unwrap();
    let clean = reconcile_job(b.jobs.as_ref(), id, false, t).await.unwrap();
    assert_eq!((clean.messages, clean.folded), (3, 2));
    assert_eq!(clean.differences, []);

    let read = b.jobs.get_job(id).await.unwrap().unwrap().counts();
    assert_eq!(read, counts(4, 1, 0));
    assert!(b.jobs.replace_job_counts(id, read, counts(9, 1, 1), t).await.unwrap());
    assert!(
        !b.jobs.replace_job_counts(id, read, counts(0, 0, 0), t).await.unwrap(),
        "a stale read"
    );
    let found = reconcile_job(b.jobs.as_ref(), id, false, t).await.unwrap();
    let fields: Vec<(&str, u64, u64)> = found
        .differences
        .iter()
        .map(|d| (d.field, d.expected, d.stored))
        .collect();
    assert_eq!(fields, [("applied", 4, 9), ("failed", 0, 1)]);
    assert!(found.has_unrepaired());
    assert_eq!(b.jobs.get_job(id).await.unwrap().unwrap().counts(), counts(9, 1, 1));

    let repaired = reconcile_job(b.jobs.as_ref(), id, true, t).await.unwrap();
    assert_eq!((repaired.differences.len(), repaired.repaired), (2, true));
    let repaired_job = b.jobs.get_job(id).await.unwrap().unwrap();
    assert_eq!(repaired_job.counts(), counts(4, 1, 0));
    assert!(repaired_job.completed_at.is_none(), "5 of 6 settled");
    // The last message still folds on top of the repaired counts.
    b.jobs.fold_message(id, 2, counts(1, 0, 0), &ids(2), t).await.unwrap();
    let after = b.jobs.get_job(id).await.unwrap().unwrap();
    assert_eq!(after.counts(), counts(5, 1, 0));
    assert!(after.completed_at.is_some());
    assert_eq!(
        reconcile_job(b.jobs.as_ref(), id, false, t).await.unwrap().differences,
        []
    );
    let unknown = reconcile_job(b.jobs.as_ref(), JobId::random(), false, t).await;
    assert!(unknown.is_err());
}
