//! The audit trail on every store: a job, its cancel, a use and a reversal
//! keep who asked, from which request and why; a replay answers with the
//! first request's record, and the history shows it.

use pointflow::domain::audit::{Audit, Caller, CallerKind, GatewayIdentity};
use pointflow::domain::history::EntryKind;
use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
use pointflow::domain::uses::UseOutcome;
use pointflow::domain::JobId;
use pointflow::ports::CreateJob;

use super::{a_use, accrual, message, new_job, now, whole_history};
use crate::backend::Backend;

/// An IAM caller's audit record for request `request_id`, with `reason`.
fn iam(user: &str, request_id: &str, reason: Option<&str>) -> Audit {
    let caller = Caller::from_gateway(&GatewayIdentity {
        user_arn: Some(format!("arn:aws:iam::123456789012:user/{user}")),
        account_id: Some("123456789012".into()),
        source_ip: Some("203.0.113.10".into()),
        ..GatewayIdentity::default()
    });
    assert_eq!(caller.kind, CallerKind::Iam);
    Audit::new(caller, Some(request_id)).with_reason(reason)
}

/// Who created a job, asked for its cancel, applied a use and reversed it
/// is stored with each, read back as written; asking again (a cancel, a
/// use or a reversal replayed by someone else) keeps the first record.
pub async fn the_audit_trail_keeps_who_asked_for_each_change(b: &Backend) {
    let tag = JobId::random();
    let member = format!("au-{tag}");

    // A job, and its cancel.
    let alice = iam("alice", &format!("{tag}-job"), None);
    let mut job = new_job(1, 1, "audit");
    job.audit = Some(alice.clone());
    let created = match b.jobs.create_job(&job).await.unwrap() {
        CreateJob::Created(created) => created,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(created.audit.as_ref(), Some(&alice));
    let read = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(read.audit.as_ref(), Some(&alice), "the job's caller as stored");

    let bob = iam("bob", &format!("{tag}-cancel"), Some("sent twice"));
    let cancelled = b
        .jobs
        .begin_cancel(job.job_id, Some(&bob), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.cancel.and_then(|c| c.audit).as_ref(), Some(&bob));
    let carol = iam("carol", &format!("{tag}-again"), Some("other reason"));
    let resumed = b
        .jobs
        .begin_cancel(job.job_id, Some(&carol), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resumed.cancel.and_then(|c| c.audit).as_ref(),
        Some(&bob),
        "asking again resumes the first cancel and keeps who asked for it"
    );
    let read = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(read.cancel.and_then(|c| c.audit).as_ref(), Some(&bob));

    // A use, and its reversal.
    let credit = accrual(&format!("{tag}-a"), &member, "PT", 100);
    b.ledger
        .apply_accruals(message(JobId::random(), 0), std::slice::from_ref(&credit), now())
        .await
        .unwrap();
    let spend = a_use(&format!("{tag}-u"), &member, "PT", 30);
    let user = iam("shop", &format!("{tag}-use"), None);
    match b.ledger.apply_use_audited(&spend, Some(&user), now()).await.unwrap() {
        UseOutcome::Applied(record) => assert_eq!(record.audit.as_ref(), Some(&user)),
        other => panic!("expected Applied, got {other:?}"),
    }
    match b.ledger.apply_use_audited(&spend, Some(&carol), now()).await.unwrap() {
        UseOutcome::Replayed(record) => assert_eq!(record.audit.as_ref(), Some(&user), "the first request's"),
        other => panic!("expected Replayed, got {other:?}"),
    }

    let refund = iam("support", &format!("{tag}-refund"), Some("order refunded"));
    let back = ReversalTarget::Use(spend.use_id.clone());
    match b.ledger.reverse_audited(&back, Some(&refund), now()).await.unwrap() {
        ReversalOutcome::Reversed(record) => assert_eq!(record.audit.as_ref(), Some(&refund)),
        other => panic!("expected Reversed, got {other:?}"),
    }
    match b.ledger.reverse_audited(&back, Some(&carol), now()).await.unwrap() {
        ReversalOutcome::Replayed(record) => assert_eq!(record.audit.as_ref(), Some(&refund), "the first reversal's"),
        other => panic!("expected Replayed, got {other:?}"),
    }
    let fraud = iam("risk", &format!("{tag}-fraud"), Some("fraud"));
    let take_back = ReversalTarget::Accrual(credit.accrual_id.clone());
    match b.ledger.reverse_audited(&take_back, Some(&fraud), now()).await.unwrap() {
        ReversalOutcome::Reversed(record) => assert_eq!(record.audit.as_ref(), Some(&fraud)),
        other => panic!("expected Reversed, got {other:?}"),
    }
    match b.ledger.reverse(&take_back, now()).await.unwrap() {
        ReversalOutcome::Replayed(record) => assert_eq!(record.audit.as_ref(), Some(&fraud)),
        other => panic!("expected Replayed, got {other:?}"),
    }

    // The history shows who asked for each use and reversal (an accrual's
    // caller is its job's).
    let history = whole_history(b, &member, None, 50, now()).await;
    let audits: Vec<(EntryKind, Option<&Audit>)> = history.iter().map(|e| (e.kind, e.audit.as_ref())).collect();
    assert_eq!(audits.len(), 4, "{history:?}");
    for (kind, expected) in [(EntryKind::Use, Some(&user)), (EntryKind::Accrual, None)] {
        assert!(audits.contains(&(kind, expected)), "{kind:?} in {audits:?}");
    }
    let reversals: Vec<Option<&Audit>> = history
        .iter()
        .filter(|e| e.kind == EntryKind::Reversal)
        .map(|e| e.audit.as_ref())
        .collect();
    assert_eq!(reversals.len(), 2, "{history:?}");
    assert!(
        reversals.contains(&Some(&refund)) && reversals.contains(&Some(&fraud)),
        "{reversals:?}"
    );
}
