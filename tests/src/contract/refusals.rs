//! The refusal cases of the contract suite: a bulk use refused on one
//! delivery of its message stays refused on every later one, whatever the
//! balance holds by then, and two racing deliveries decide it once.

use std::time::Duration;

use pointflow::domain::history::EntryKind;
use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
use pointflow::domain::uses::UseOutcome;
use pointflow::domain::JobId;
use pointflow::services::reconcile::reconcile_member;

use super::{a_use, accrual, balance, message, now, whole_history};
use crate::backend::Backend;

/// A use refused for lack of points on its message's first delivery, then
/// the member is credited: the message's redelivery replays the refusal
/// (balance unchanged), a single use through the API with the same
/// `use_id` is told the id is taken, the job's cancel finds nothing to give
/// back, and the refusal is neither history nor a use to reconcile.
pub async fn a_bulk_use_refused_once_stays_refused(b: &Backend) {
    let tag = JobId::random();
    let member = format!("rf-{tag}");
    let credit = |id: &str, amount: u64| accrual(&format!("{tag}-{id}"), &member, "PT", amount);
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[credit("c1", 10)], now())
        .await
        .unwrap();
    let by = message(JobId::random(), 0);
    let spend = a_use(&format!("{tag}-u"), &member, "PT", 30);
    let first = b.ledger.apply_message_use(by, &spend, now()).await.unwrap();
    assert_eq!(first, UseOutcome::Insufficient { available: 10 });

    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[credit("c2", 100)], now())
        .await
        .unwrap();
    let again = b.ledger.apply_message_use(by, &spend, now()).await.unwrap();
    assert_eq!(
        again,
        UseOutcome::RefusedBefore,
        "the redelivery must replay the refusal"
    );
    assert_eq!(b.ledger.balances(&member).await.unwrap(), [balance("PT", 110)]);

    // The same id through the API, or from another message: taken.
    let single = b.ledger.apply_use(&spend, now()).await.unwrap();
    assert!(
        matches!(&single, UseOutcome::IdReused(r) if r.use_id == spend.use_id),
        "{single:?}"
    );
    let other = b
        .ledger
        .apply_message_use(message(by.job_id, 1), &spend, now())
        .await
        .unwrap();
    assert!(matches!(other, UseOutcome::IdReused(_)), "{other:?}");
    assert_eq!(b.ledger.balances(&member).await.unwrap(), [balance("PT", 110)]);

    // Nothing to give back, by the job's cancel or by hand.
    for target in [
        ReversalTarget::UseBy {
            use_id: spend.use_id.clone(),
            by,
        },
        ReversalTarget::Use(spend.use_id.clone()),
    ] {
        let outcome = b.ledger.reverse(&target, now()).await.unwrap();
        assert_eq!(outcome, ReversalOutcome::NotFound, "{target:?}");
    }
    assert_eq!(b.ledger.balances(&member).await.unwrap(), [balance("PT", 110)]);

    let history = whole_history(b, &member, None, 10, now()).await;
    assert!(
        history.iter().all(|entry| entry.kind == EntryKind::Accrual),
        "a refusal is not a balance change: {history:?}"
    );
    let ledger = b.ledger.member_ledger(&member).await.unwrap();
    assert_eq!(ledger.uses.len(), 0, "{ledger:?}");
    let report = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, now())
        .await
        .unwrap();
    assert_eq!(report.differences, []);
}

/// Two deliveries of one message race with a credit that makes its use
/// affordable: whichever decides first, the use is applied once or refused
/// for good, never refused to one delivery and applied by the other.
pub async fn racing_deliveries_decide_a_bulk_use_once(b: &Backend) {
    assert!(b.races_are_safe, "every backend of the suite races");
    let tag = JobId::random();
    let rounds = 6;
    let members: Vec<String> = (0..rounds).map(|i| format!("rr-{tag}-{i}")).collect();
    for member in &members {
        b.ledger
            .apply_accruals(
                message(JobId::random(), 0),
                &[accrual(&format!("{member}-c1"), member, "PT", 20)],
                now(),
            )
            .await
            .unwrap();
    }
    if let Some(strict) = &b.strict {
        strict.hold_transactions(1);
    }
    // Per member: a delivery, the credit, the other delivery, all at once
    // (spawned in that order, so even a store that runs them one by one
    // sees the credit land between the two deliveries).
    let mut deliveries = Vec::new();
    let mut credits = Vec::new();
    for member in &members {
        let by = message(JobId::random(), 0);
        let spend = a_use(&format!("{member}-u"), member, "PT", 30);
        let late = accrual(&format!("{member}-c2"), member, "PT", 20);
        let deliver = |spend: &pointflow::domain::uses::Use| {
            let (ledger, spend) = (b.ledger.clone(), spend.clone());
            tokio::spawn(async move { ledger.apply_message_use(by, &spend, now()).await.unwrap() })
        };
        deliveries.push(deliver(&spend));
        let ledger = b.ledger.clone();
        credits.push(tokio::spawn(async move {
            ledger
                .apply_accruals(message(JobId::random(), 0), &[late], now())
                .await
                .unwrap()
        }));
        deliveries.push(deliver(&spend));
    }
    let mut outcomes = Vec::new();
    for task in deliveries {
        outcomes.push(task.await.unwrap());
    }
    for task in credits {
        task.await.unwrap();
    }
    for (member, pair) in members.iter().zip(outcomes.chunks(2)) {
        let applied = pair
            .iter()
            .filter(|o| matches!(o, UseOutcome::Applied(_) | UseOutcome::Replayed(_)))
            .count();
        let refused = pair
            .iter()
            .filter(|o| matches!(o, UseOutcome::Insufficient { .. } | UseOutcome::RefusedBefore))
            .count();
        let held = b.ledger.balances(member).await.unwrap();
        match (applied, refused) {
            (2, 0) => assert_eq!(held, [balance("PT", 10)], "{pair:?}"),
            (0, 2) => assert_eq!(held, [balance("PT", 40)], "{pair:?}"),
            _ => panic!("one delivery refused the use, the other applied it: {pair:?}, balance {held:?}"),
        }
        let new = pair
            .iter()
            .filter(|o| matches!(o, UseOutcome::Applied(_) | UseOutcome::Insufficient { .. }))
            .count();
        assert_eq!(new, 1, "exactly one delivery decides: {pair:?}");
    }
}
