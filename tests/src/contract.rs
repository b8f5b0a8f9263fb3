//! The port contract suite. Every backend runs every case (see
//! [`contract_suite!`](crate::contract_suite)), so an adapter can never drift
//! from what the services rely on.

use std::collections::HashSet;
use std::time::Duration;

use pointflow::domain::history::{EntryKind, HistoryEntry, HistoryQuery};
use pointflow::domain::lots::{BalanceSheet, BalanceView, MAX_PRUNE_LOTS, MAX_USE_LOTS};
use pointflow::domain::reversal::{ReversalKind, ReversalOutcome, ReversalTarget};
use pointflow::domain::uses::{Use, UseOutcome};
use pointflow::domain::validation::accrual_from_json;
use pointflow::domain::{Accrual, Balance, ChunkEnd, ChunkReport, JobId, JobStatus, MessageCounts, MessageRef, NewJob};
use pointflow::ports::{CreateJob, CreditTally, ReceivedMessage};
use pointflow::services::history::history_page;
use pointflow::services::reconcile::reconcile_member;
use time::OffsetDateTime;

use crate::backend::Backend;

mod audit;
mod reconcile;
mod refusals;
pub use audit::the_audit_trail_keeps_who_asked_for_each_change;
pub use reconcile::{
    reconcile_finds_a_clean_member_clean, reconcile_recounts_a_job_from_its_messages,
    reconcile_repair_never_writes_over_a_stale_read, reconcile_reports_then_repairs_a_tampered_balance,
};
pub use refusals::{a_bulk_use_refused_once_stays_refused, racing_deliveries_decide_a_bulk_use_once};

fn accrual(id: &str, member: &str, point_type: &str, amount: u64) -> Accrual {
    Accrual {
        accrual_id: id.into(),
        member_id: member.into(),
        point_type: point_type.into(),
        amount,
        reason: Some("contract".into()),
        apply_at: None,
        expires_at: None,
    }
}

fn balance(point_type: &str, balance: u64) -> Balance {
    Balance {
        point_type: point_type.into(),
        balance,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Message `seq` of a fresh random job.
fn message(job_id: JobId, seq: u32) -> MessageRef {
    MessageRef { job_id, seq }
}

fn new_job(total: u64, messages: u64, hash: &str) -> NewJob {
    NewJob {
        job_id: JobId::random(),
        request_hash: hash.into(),
        total,
        deduplicated: 1,
        messages,
        source: None,
        reading: false,
        // Stores keep at least millisecond precision.
        created_at: OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid time"),
        audit: None,
    }
}

/// New accruals are credited, a repeat by the same message is "applied
/// (replayed)", a repeat by another job or another message of the same job
/// is "duplicate", and balances move only once.
pub async fn ledger_credits_each_accrual_once(b: &Backend) {
    let job_id = JobId::random();
    let (job, other, sibling) = (message(job_id, 0), message(JobId::random(), 0), message(job_id, 1));
    let batch = [
        accrual("c1-a", "c1-m1", "P", 10),
        accrual("c1-b", "c1-m1", "P", 5),
        accrual("c1-c", "c1-m2", "Q", 7),
    ];
    let first = b.ledger.apply_accruals(job, &batch, now()).await.unwrap();
    assert_eq!((first.applied, first.replayed, first.duplicate), (3, 0, 0));
    let again = b.ledger.apply_accruals(job, &batch, now()).await.unwrap();
    assert_eq!((again.applied, again.replayed, again.duplicate), (3, 3, 0));
    let by_other = b.ledger.apply_accruals(other, &batch, now()).await.unwrap();
    assert_eq!((by_other.applied, by_other.replayed, by_other.duplicate), (0, 0, 3));
    let by_sibling = b.ledger.apply_accruals(sibling, &batch[..1], now()).await.unwrap();
    assert_eq!(
        (by_sibling.applied, by_sibling.duplicate),
        (0, 1),
        "a file may repeat an id"
    );
    assert_eq!(b.ledger.balances("c1-m1").await.unwrap(), [balance("P", 15)]);
    assert_eq!(b.ledger.balances("c1-m2").await.unwrap(), [balance("Q", 7)]);
}

/// A crash after part of a message leaves part credited; the redelivery
/// credits the rest and counts the part as applied, not duplicate.
pub async fn ledger_completes_a_partially_applied_message(b: &Backend) {
    let job = message(JobId::random(), 7);
    let batch: Vec<Accrual> = (0..6)
        .map(|i| accrual(&format!("c2-{i}"), &format!("c2-m{}", i % 2), "P", 100))
        .collect();
    b.ledger.apply_accruals(job, &batch[..2], now()).await.unwrap();
    let full = b.ledger.apply_accruals(job, &batch, now()).await.unwrap();
    assert_eq!((full.applied, full.replayed, full.duplicate), (6, 2, 0));
    assert_eq!(b.ledger.balances("c2-m0").await.unwrap(), [balance("P", 300)]);
    assert_eq!(b.ledger.balances("c2-m1").await.unwrap(), [balance("P", 300)]);
}

/// More accruals of one balance than one DynamoDB transaction holds.
pub async fn ledger_sums_many_accruals_of_one_balance(b: &Backend) {
    let job = message(JobId::random(), 7);
    let batch: Vec<Accrual> = (0..150).map(|i| accrual(&format!("c3-{i}"), "c3-m", "P", 2)).collect();
    let outcome = b.ledger.apply_accruals(job, &batch, now()).await.unwrap();
    assert_eq!(outcome.applied, 150);
    assert_eq!(b.ledger.balances("c3-m").await.unwrap(), [balance("P", 300)]);
}

/// Balances come per point type, sorted; an unknown member has none.
pub async fn ledger_reports_balances_per_point_type(b: &Backend) {
    let job = message(JobId::random(), 7);
    let batch = [
        accrual("c4-1", "c4-m", "WELCOME", 2000),
        accrual("c4-2", "c4-m", "BONUS", 500),
    ];
    b.ledger.apply_accruals(job, &batch, now()).await.unwrap();
    assert_eq!(
        b.ledger.balances("c4-m").await.unwrap(),
        [balance("BONUS", 500), balance("WELCOME", 2000)]
    );
    assert_eq!(b.ledger.balances("c4-nobody").await.unwrap(), []);
}

/// A job is created once; a second create returns the stored job untouched.
pub async fn job_is_created_once(b: &Backend) {
    let job = new_job(5, 2, "hash-1");
    let created = match b.jobs.create_job(&job).await.unwrap() {
        CreateJob::Created(j) => j,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(created.status(), JobStatus::Queued);
    let retry = NewJob {
        request_hash: "hash-2".into(),
        total: 99,
        ..job.clone()
    };
    match b.jobs.create_job(&retry).await.unwrap() {
        CreateJob::Existing(existing) => assert_eq!(existing, created),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(b.jobs.get_job(job.job_id).await.unwrap(), Some(created));
    assert_eq!(b.jobs.get_job(JobId::random()).await.unwrap(), None);
    b.jobs.mark_enqueued(job.job_id).await.unwrap();
    assert!(b.jobs.get_job(job.job_id).await.unwrap().unwrap().enqueued);
}

/// Each message's counts are folded once, however often; the job completes
/// (and gets `completed_at`) when every accrual is settled.
pub async fn job_counts_fold_once_per_message(b: &Backend) {
    let job = new_job(5, 2, "h");
    b.jobs.create_job(&job).await.unwrap();
    let first = MessageCounts {
        applied: 3,
        duplicate: 0,
        failed: 0,
        refused: 0,
    };
    assert!(b.jobs.fold_message(job.job_id, 0, first, &[], now()).await.unwrap());
    assert!(!b.jobs.fold_message(job.job_id, 0, first, &[], now()).await.unwrap());
    let running = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(
        (running.applied, running.duplicate, running.status()),
        (3, 0, JobStatus::Running)
    );
    assert_eq!(running.completed_at, None);
    let second = MessageCounts {
        applied: 1,
        duplicate: 1,
        failed: 0,
        refused: 0,
    };
    assert!(b.jobs.fold_message(job.job_id, 1, second, &[], now()).await.unwrap());
    assert!(!b.jobs.fold_message(job.job_id, 1, second, &[], now()).await.unwrap());
    let done = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.duplicate, done.failed), (4, 1, 0));
    assert_eq!(done.status(), JobStatus::Completed);
    assert!(done.completed_at.is_some());
}

/// A job of two 2-accrual messages: seq 0 applied, seq 1 failed on its
/// last delivery. Returns the job and seq 1's counts.
async fn job_with_a_failed_message(b: &Backend) -> (NewJob, MessageCounts) {
    let job = new_job(4, 2, "h");
    b.jobs.create_job(&job).await.unwrap();
    let ok = MessageCounts {
        applied: 2,
        ..MessageCounts::default()
    };
    let failed = MessageCounts {
        failed: 2,
        ..MessageCounts::default()
    };
    b.jobs.fold_message(job.job_id, 0, ok, &[], now()).await.unwrap();
    b.jobs.fold_message(job.job_id, 1, failed, &[], now()).await.unwrap();
    (job, failed)
}

/// Failed accruals complete a job "with errors".
pub async fn job_with_failed_message_completes_with_errors(b: &Backend) {
    let (job, _) = job_with_a_failed_message(b).await;
    let done = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::CompletedWithErrors);
    assert!(done.completed_at.is_some());
}

/// A message counted failed (its last delivery failed) and applied later (a
/// DLQ redrive) moves its counts from failed to applied, once.
pub async fn redriven_message_moves_its_counts_from_failed(b: &Backend) {
    let (job, failed) = job_with_a_failed_message(b).await;
    let applied_later = MessageCounts {
        applied: 1,
        duplicate: 1,
        failed: 0,
        refused: 0,
    };
    assert!(b
        .jobs
        .fold_message(job.job_id, 1, applied_later, &[], now())
        .await
        .unwrap());
    assert!(!b
        .jobs
        .fold_message(job.job_id, 1, applied_later, &[], now())
        .await
        .unwrap());
    assert!(!b.jobs.fold_message(job.job_id, 1, failed, &[], now()).await.unwrap());
    let done = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.duplicate, done.failed), (3, 1, 0));
    assert_eq!(done.status(), JobStatus::Completed);
}

/// A message counted failed in part on its last delivery (some of its
/// accruals were credited, the ledger said which) and applied in full later
/// (a DLQ redrive): its new counts replace the old ones, once, and only its
/// failed part moves.
pub async fn partly_failed_message_moves_only_its_failed_part(b: &Backend) {
    let job = new_job(4, 1, "h");
    b.jobs.create_job(&job).await.unwrap();
    let partly = MessageCounts {
        applied: 1,
        duplicate: 1,
        failed: 2,
        refused: 0,
    };
    assert!(b.jobs.fold_message(job.job_id, 0, partly, &[], now()).await.unwrap());
    let settled = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(
        (settled.applied, settled.duplicate, settled.failed, settled.status()),
        (1, 1, 2, JobStatus::CompletedWithErrors)
    );
    let redriven = MessageCounts {
        applied: 3,
        duplicate: 1,
        failed: 0,
        refused: 0,
    };
    assert!(b.jobs.fold_message(job.job_id, 0, redriven, &[], now()).await.unwrap());
    assert!(!b.jobs.fold_message(job.job_id, 0, redriven, &[], now()).await.unwrap());
    let done = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(
        (done.applied, done.duplicate, done.failed, done.status()),
        (3, 1, 0, JobStatus::Completed)
    );
}

/// The ledger tells who credited each of a message's ids: that message,
/// another one, or nobody.
pub async fn ledger_tallies_who_credited_a_messages_ids(b: &Backend) {
    let (ours, theirs) = (message(JobId::random(), 0), message(JobId::random(), 3));
    let tag = JobId::random().to_string();
    let id = |n: &str| format!("tally-{tag}-{n}");
    b.ledger
        .apply_accruals(
            ours,
            &[accrual(&id("a"), "m", "P", 1), accrual(&id("b"), "m", "P", 1)],
            now(),
        )
        .await
        .unwrap();
    b.ledger
        .apply_accruals(theirs, &[accrual(&id("c"), "m", "P", 1)], now())
        .await
        .unwrap();
    let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|n| id(n)).collect();
    let tally = b.ledger.tally_credits(ours, &ids).await.unwrap();
    assert_eq!(
        tally,
        Some(CreditTally {
            by_message: 2,
            by_other: 1,
            not_credited: 1
        })
    );
}

/// Counts of a message whose job does not exist go nowhere and create nothing.
pub async fn fold_for_unknown_job_records_nothing(b: &Backend) {
    let ghost = JobId::random();
    let counts = MessageCounts {
        applied: 1,
        ..MessageCounts::default()
    };
    assert!(!b.jobs.fold_message(ghost, 0, counts, &[], now()).await.unwrap());
    assert_eq!(b.jobs.get_job(ghost).await.unwrap(), None);
}

fn chunk(index: u32, accepted: u64, rejected: u64, end: ChunkEnd) -> ChunkReport {
    ChunkReport {
        index,
        accepted,
        deduplicated: 0,
        rejected,
        messages: accepted.div_ceil(2),
        end,
    }
}

/// A file job grows chunk by chunk, each chunk counted once; it cannot
/// complete while its file is being read, even if every accrual queued so far
/// is settled, and completes once the last chunk is recorded.
pub async fn file_job_grows_by_chunks_and_completes_after_the_last(b: &Backend) {
    let job = NewJob {
        source: Some("s3://bucket/imports/a.csv".into()),
        reading: true,
        ..new_job(0, 0, "file")
    };
    b.jobs.create_job(&job).await.unwrap();
    let id = job.job_id;
    assert_eq!(
        b.jobs.get_job(id).await.unwrap().unwrap().status(),
        JobStatus::Importing
    );
    // Workers may fold a chunk's messages before the chunk is recorded.
    let applied = |n| MessageCounts {
        applied: n,
        ..MessageCounts::default()
    };
    assert!(b.jobs.fold_message(id, 0, applied(2), &[], now()).await.unwrap());
    assert!(b
        .jobs
        .record_chunk(id, &chunk(0, 4, 1, ChunkEnd::More), now())
        .await
        .unwrap());
    assert!(!b
        .jobs
        .record_chunk(id, &chunk(0, 4, 1, ChunkEnd::More), now())
        .await
        .unwrap());
    b.jobs.fold_message(id, 1, applied(2), &[], now()).await.unwrap();
    let between = b.jobs.get_job(id).await.unwrap().unwrap();
    assert_eq!((between.total, between.rejected, between.applied), (4, 1, 4));
    assert_eq!((between.status(), between.completed_at), (JobStatus::Importing, None));
    assert!(b
        .jobs
        .record_chunk(id, &chunk(1, 2, 0, ChunkEnd::Last), now())
        .await
        .unwrap());
    assert!(!b
        .jobs
        .record_chunk(id, &chunk(1, 2, 0, ChunkEnd::Last), now())
        .await
        .unwrap());
    let last = b.jobs.get_job(id).await.unwrap().unwrap();
    assert_eq!((last.total, last.messages, last.status()), (6, 3, JobStatus::Running));
    b.jobs.fold_message(id, 2, applied(2), &[], now()).await.unwrap();
    let done = b.jobs.get_job(id).await.unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::CompletedWithErrors, "a row was rejected");
    assert!(done.completed_at.is_some() && done.enqueued);
    assert_eq!(done.source.as_deref(), Some("s3://bucket/imports/a.csv"));
}

/// A file that cannot be read fails its job with the reason, and the job
/// completes at once when nothing was queued; a chunk of an unknown job
/// records nothing.
pub async fn unreadable_file_fails_its_job(b: &Backend) {
    let job = NewJob {
        reading: true,
        ..new_job(0, 0, "file")
    };
    b.jobs.create_job(&job).await.unwrap();
    let reason = "the header lacks the required column \"amount\"".to_owned();
    let end = ChunkEnd::Failed { reason: reason.clone() };
    assert!(b
        .jobs
        .record_chunk(job.job_id, &chunk(0, 0, 1, end.clone()), now())
        .await
        .unwrap());
    let failed = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status(), failed.error.as_deref()),
        (JobStatus::Failed, Some(reason.as_str()))
    );
    assert!(failed.completed_at.is_some());
    let ghost = JobId::random();
    assert!(!b.jobs.record_chunk(ghost, &chunk(0, 1, 0, end), now()).await.unwrap());
    assert_eq!(b.jobs.get_job(ghost).await.unwrap(), None);
}

async fn receive_all(b: &Backend, expected: usize) -> Vec<ReceivedMessage> {
    let mut received = Vec::new();
    for _ in 0..20 {
        if received.len() >= expected {
            break;
        }
        received.extend(b.queue.receive_messages(10, Duration::from_secs(1)).await.unwrap());
    }
    received
}

/// Every sent body is delivered; deleted deliveries never come back.
pub async fn queue_delivers_and_deletes(b: &Backend) {
    let bodies: Vec<String> = (0..23).map(|i| format!("{{\"n\":{i}}}")).collect();
    b.queue.send_messages(&bodies).await.unwrap();
    let received = receive_all(b, bodies.len()).await;
    let got: HashSet<&str> = received.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(got, bodies.iter().map(String::as_str).collect::<HashSet<_>>());
    assert!(received.iter().all(|m| m.receive_count == 1));
    let handles: Vec<String> = received.iter().map(|m| m.receipt_handle.clone()).collect();
    b.queue.delete_messages(&handles).await.unwrap();
    tokio::time::sleep(b.visibility_timeout + Duration::from_millis(200)).await;
    assert_eq!(
        b.queue.receive_messages(10, Duration::from_millis(500)).await.unwrap(),
        []
    );
}

/// An undeleted delivery comes back after the visibility timeout with a
/// higher receive count, and after `max_receive_count` receives it moves to
/// the dead-letter queue.
pub async fn queue_redelivers_then_dead_letters(b: &Backend) {
    b.queue.send_messages(&["poison".to_owned()]).await.unwrap();
    for expected_count in 1..=b.max_receive_count {
        let mut got = Vec::new();
        for _ in 0..10 {
            got = b.queue.receive_messages(10, Duration::from_secs(1)).await.unwrap();
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1, "delivery {expected_count}");
        assert_eq!(got[0].receive_count, expected_count);
        tokio::time::sleep(b.visibility_timeout + Duration::from_millis(200)).await;
    }
    assert_eq!(
        b.queue.receive_messages(10, Duration::from_millis(500)).await.unwrap(),
        []
    );
    let mut dead = Vec::new();
    for _ in 0..5 {
        dead = b.dlq.receive_messages(10, Duration::from_secs(1)).await.unwrap();
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

/// Released deliveries are visible again at once, with their receive count.
/// Run on a queue whose visibility timeout outlasts the test
/// ([`contract_suite!`](crate::contract_suite)'s `long_visibility`): only the
/// release can bring the messages back, so a release that does nothing fails.
pub async fn queue_releases_deliveries_at_once(b: &Backend) {
    assert!(
        b.visibility_timeout >= Duration::from_secs(600),
        "needs a visibility timeout the test cannot outlast"
    );
    let bodies: Vec<String> = (0..3).map(|i| format!("{{\"release\":{i}}}")).collect();
    b.queue.send_messages(&bodies).await.unwrap();
    let first = receive_all(b, 3).await;
    assert_eq!(first.len(), 3);
    let handles: Vec<String> = first.iter().map(|m| m.receipt_handle.clone()).collect();
    b.queue.release_messages(&handles).await.unwrap();
    let again = receive_all(b, 3).await;
    assert_eq!(again.len(), 3, "visible again before the visibility timeout");
    assert!(again.iter().all(|m| m.receive_count == 2));
    let handles: Vec<String> = again.iter().map(|m| m.receipt_handle.clone()).collect();
    b.queue.delete_messages(&handles).await.unwrap();
}

/// Generates one `#[tokio::test]` per contract case for a backend.
fn a_use(id: &str, member: &str, point_type: &str, amount: u64) -> Use {
    Use {
        use_id: id.into(),
        member_id: member.into(),
        point_type: point_type.into(),
        amount,
        reason: Some("contract".into()),
    }
}

/// A use deducts once: a retry is a replay, a larger use than the balance is
/// refused with what is available, an id reused for another deduction is
/// refused, and a balance never seen holds nothing.
pub async fn use_deducts_once_and_never_below_zero(b: &Backend) {
    let member = format!("u-{}", JobId::random());
    let credit = accrual(&format!("{member}-a"), &member, "PT", 100);
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[credit], now())
        .await
        .unwrap();
    let first = a_use(&format!("{member}-order-1"), &member, "PT", 60);
    let applied = match b.ledger.apply_use(&first, now()).await.unwrap() {
        UseOutcome::Applied(record) => record,
        other => panic!("expected Applied, got {other:?}"),
    };
    assert!(applied.matches(&first));
    match b.ledger.apply_use(&first, now()).await.unwrap() {
        UseOutcome::Replayed(record) => {
            assert_eq!(
                (record.use_id.as_str(), record.amount, record.reason.as_deref()),
                (first.use_id.as_str(), 60, Some("contract"))
            );
            // Stores keep at least millisecond precision.
            assert!((record.applied_at - applied.applied_at).abs() < time::Duration::milliseconds(1));
        }
        other => panic!("expected Replayed, got {other:?}"),
    }
    let too_much = a_use(&format!("{member}-order-2"), &member, "PT", 41);
    assert_eq!(
        b.ledger.apply_use(&too_much, now()).await.unwrap(),
        UseOutcome::Insufficient { available: 40 }
    );
    let reused = a_use(&first.use_id, &member, "PT", 10);
    assert!(matches!(
        b.ledger.apply_use(&reused, now()).await.unwrap(),
        UseOutcome::IdReused(record) if record.amount == 60
    ));
    let elsewhere = a_use(&format!("{member}-order-3"), &member, "OTHER", 1);
    assert_eq!(
        b.ledger.apply_use(&elsewhere, now()).await.unwrap(),
        UseOutcome::Insufficient { available: 0 }
    );
    let exact = a_use(&format!("{member}-order-4"), &member, "PT", 40);
    assert!(matches!(
        b.ledger.apply_use(&exact, now()).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    assert_eq!(b.ledger.balances(&member).await.unwrap(), vec![balance("PT", 0)]);
}

/// Ten uses of 30 race for a balance of 100: exactly three succeed, the rest
/// are refused, and the balance ends at 10 (never below zero). The uses run
/// concurrently on every backend; through the strict AWS layer the first
/// transaction on the balance is held until another meets it, so at least
/// one conflict is answered and the race is real.
pub async fn concurrent_uses_race_for_the_last_points(b: &Backend) {
    assert!(b.races_are_safe, "every backend of the suite races");
    let member = format!("r-{}", JobId::random());
    let credit = accrual(&format!("{member}-a"), &member, "PT", 100);
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[credit], now())
        .await
        .unwrap();
    let uses: Vec<Use> = (0..10)
        .map(|i| a_use(&format!("{member}-u{i}"), &member, "PT", 30))
        .collect();
    let conflicts_before = b.strict.as_ref().map(|s| s.stats().conflicts);
    if let Some(strict) = &b.strict {
        strict.hold_transactions(1);
    }
    let tasks: Vec<_> = uses
        .iter()
        .map(|u| {
            let (ledger, u) = (b.ledger.clone(), u.clone());
            tokio::spawn(async move { ledger.apply_use(&u, now()).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    if let (Some(strict), Some(before)) = (&b.strict, conflicts_before) {
        let stats = strict.stats();
        assert!(
            stats.overlaps >= 1 && stats.conflicts > before,
            "the uses overlapped on the balance item: {stats:?}"
        );
    }
    let applied = outcomes.iter().filter(|o| matches!(o, UseOutcome::Applied(_))).count();
    let refused: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            UseOutcome::Insufficient { available } => Some(*available),
            _ => None,
        })
        .collect();
    assert_eq!((applied, refused.len()), (3, 7), "{outcomes:?}");
    assert!(refused.iter().all(|available| *available < 30), "{refused:?}");
    assert_eq!(b.ledger.balances(&member).await.unwrap(), vec![balance("PT", 10)]);
}

/// An accrual of `member` with its lot's times, `days` from `t0`.
fn lot_accrual(
    id: &str,
    member: &str,
    amount: u64,
    t0: OffsetDateTime,
    from: Option<i64>,
    until: Option<i64>,
) -> Accrual {
    let mut a = accrual(id, member, "PT", amount);
    a.apply_at = from.map(|d| t0 + time::Duration::days(d));
    a.expires_at = until.map(|d| t0 + time::Duration::days(d));
    a
}

/// 100 plain points, 50 scheduled in 10 days, 30 expiring in 5 days and 20
/// in 40 days, credited to a fresh member at `t0`; redelivered once.
async fn credit_lots(b: &Backend, t0: OffsetDateTime) -> String {
    let member = format!("l-{}", JobId::random());
    let batch = [
        lot_accrual(&format!("{member}-plain"), &member, 100, t0, None, None),
        lot_accrual(&format!("{member}-later"), &member, 50, t0, Some(10), None),
        lot_accrual(&format!("{member}-soon"), &member, 30, t0, None, Some(5)),
        lot_accrual(&format!("{member}-late"), &member, 20, t0, None, Some(40)),
    ];
    let by = message(JobId::random(), 0);
    for _ in 0..2 {
        let outcome = b.ledger.apply_accruals(by, &batch, t0).await.unwrap();
        assert_eq!(outcome.applied, 4);
    }
    member
}

async fn view(b: &Backend, member: &str, at: OffsetDateTime) -> BalanceView {
    let sheets = b.ledger.balance_sheets(member).await.unwrap();
    assert_eq!(sheets.len(), 1, "{sheets:?}");
    sheets[0].view(at)
}

/// Scheduled points are pending until their time and available after it;
/// expiring points count until they expire and as expired after; nothing is
/// written when time passes.
pub async fn scheduled_and_expiring_points_follow_the_clock(b: &Backend) {
    let t0 = now();
    let day = |d: i64| t0 + time::Duration::days(d);
    let member = credit_lots(b, t0).await;
    assert_eq!(
        view(b, &member, t0).await,
        BalanceView {
            available: 150,
            pending: 50,
            expiring_soon: 30,
            expired: 0,
            lifetime_earned: 150,
            lifetime_used: 0,
        }
    );
    let later = view(b, &member, day(6)).await;
    assert_eq!((later.available, later.pending, later.expired), (120, 50, 30));
    let after = view(b, &member, day(11)).await;
    assert_eq!((after.available, after.pending, after.lifetime_earned), (170, 0, 200));
    let gone = view(b, &member, day(41)).await;
    assert_eq!((gone.available, gone.expired), (150, 50));
}

/// A use takes available points that expire soonest first, never pending or
/// expired ones, and is refused with what is available when they fall short.
pub async fn uses_take_the_soonest_expiring_points_first(b: &Backend) {
    let t0 = now();
    let day = |d: i64| t0 + time::Duration::days(d);
    let member = credit_lots(b, t0).await;
    let first = a_use(&format!("{member}-u1"), &member, "PT", 40);
    assert!(matches!(
        b.ledger.apply_use(&first, t0).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    // 30 from the lot expiring in 5 days, 10 from the one in 40 days.
    let v = view(b, &member, t0).await;
    assert_eq!((v.available, v.expiring_soon, v.lifetime_used), (110, 0, 40));
    assert_eq!(view(b, &member, day(41)).await.expired, 10);
    let too_much = a_use(&format!("{member}-u2"), &member, "PT", 111);
    assert_eq!(
        b.ledger.apply_use(&too_much, t0).await.unwrap(),
        UseOutcome::Insufficient { available: 110 }
    );
    // After 11 days the scheduled 50 are available too: 10 from the lot
    // expiring in 40 days, then the plain 100, then 10 of the scheduled 50.
    let second = a_use(&format!("{member}-u3"), &member, "PT", 120);
    assert!(matches!(
        b.ledger.apply_use(&second, day(11)).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let v = view(b, &member, day(11)).await;
    assert_eq!((v.available, v.pending, v.expired, v.lifetime_used), (40, 0, 0, 160));
    assert!(matches!(
        b.ledger.apply_use(&second, day(11)).await.unwrap(),
        UseOutcome::Replayed(_)
    ));
}

/// A reversal happens once (then replays), finds nothing for an unknown id,
/// refuses to take back points already spent, and gives a use's points back
/// to the lots it took them from.
pub async fn reversals_happen_once_and_never_overdraw(b: &Backend) {
    let t0 = now();
    let member = format!("v-{}", JobId::random());
    let plain = lot_accrual(&format!("{member}-plain"), &member, 100, t0, None, None);
    let expiring = lot_accrual(&format!("{member}-exp"), &member, 50, t0, None, Some(10));
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[plain.clone(), expiring.clone()], t0)
        .await
        .unwrap();
    // 50 from the expiring lot, then 30 of the plain 100.
    let spend = a_use(&format!("{member}-u1"), &member, "PT", 80);
    assert!(matches!(
        b.ledger.apply_use(&spend, t0).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let accrual = ReversalTarget::Accrual(plain.accrual_id.clone());
    assert_eq!(
        b.ledger.reverse(&accrual, t0).await.unwrap(),
        ReversalOutcome::AlreadySpent { remaining: 70 }
    );
    assert_eq!(view(b, &member, t0).await.available, 70);

    let the_use = ReversalTarget::Use(spend.use_id.clone());
    let first = match b.ledger.reverse(&the_use, t0).await.unwrap() {
        ReversalOutcome::Reversed(record) => record,
        other => panic!("expected Reversed, got {other:?}"),
    };
    assert_eq!((first.amount, first.member_id.as_str()), (80, member.as_str()));
    match b.ledger.reverse(&the_use, t0).await.unwrap() {
        ReversalOutcome::Replayed(again) => {
            assert!((again.reversed_at - first.reversed_at).abs() < time::Duration::milliseconds(1));
        }
        other => panic!("expected Replayed, got {other:?}"),
    }
    let v = view(b, &member, t0).await;
    assert_eq!((v.available, v.expiring_soon, v.lifetime_used), (150, 50, 0));

    assert!(matches!(
        b.ledger.reverse(&accrual, t0).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    assert!(matches!(
        b.ledger.reverse(&accrual, t0).await.unwrap(),
        ReversalOutcome::Replayed(_)
    ));
    let v = view(b, &member, t0).await;
    assert_eq!((v.available, v.lifetime_earned), (50, 50));
    let expiring_back = ReversalTarget::Accrual(expiring.accrual_id.clone());
    assert!(matches!(
        b.ledger.reverse(&expiring_back, t0).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    assert_eq!(view(b, &member, t0).await.available, 0);
    for unknown in [
        ReversalTarget::Accrual(format!("{member}-nope")),
        ReversalTarget::Use(format!("{member}-nope")),
    ] {
        assert_eq!(b.ledger.reverse(&unknown, t0).await.unwrap(), ReversalOutcome::NotFound);
    }
}

/// A client's accrual (through the API's own validation) of `amount` points
/// expiring at `expires_at`, to the second.
fn expiring_accrual(id: &str, member: &str, amount: u64, expires_at: OffsetDateTime) -> Accrual {
    let body = serde_json::json!({
        "accrual_id": id, "member_id": member, "point_type": "PT", "amount": amount,
        "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    accrual_from_json(0, &body, None).unwrap()
}

/// Purchases whose points expire 12 months (here: 30 to 90 days) after
/// them, to the second, make one lot per day, not one per purchase; a use
/// that would take more lots than one write may is refused with what one use
/// can take, changing nothing; uses within the bound apply once and reverse
/// exactly; lots kept to the second before (a mixed item) are used and
/// reversed like the others; and the history and expiry totals add up.
pub async fn lots_stay_bounded_and_every_use_one_bounded_write(b: &Backend) {
    let t0 = now();
    let day = time::Duration::days(1);
    // Noon of a day 30 days on: two purchases' expiries a day, seconds apart.
    let noon = OffsetDateTime::from_unix_timestamp(t0.unix_timestamp() - t0.unix_timestamp().rem_euclid(86_400))
        .unwrap()
        + time::Duration::days(30)
        + time::Duration::hours(12);
    let member = format!("b-{}", JobId::random());
    let days = MAX_USE_LOTS as i64 + 10;
    let accruals: Vec<Accrual> = (0..2 * days)
        .map(|i| {
            let expires = noon + time::Duration::days(i / 2) + time::Duration::seconds(i);
            expiring_accrual(&format!("{member}-p{i}"), &member, 10, expires)
        })
        .collect();
    // A lot kept to the second, as stored before lots were rounded: sooner
    // than all the others, so every use takes it first.
    let mut legacy = accrual(&format!("{member}-legacy"), &member, "PT", 5);
    legacy.expires_at = Some(noon - day + time::Duration::seconds(17));
    let by = message(JobId::random(), 0);
    for chunk in [&accruals[..], std::slice::from_ref(&legacy)] {
        let outcome = b.ledger.apply_accruals(by, chunk, t0).await.unwrap();
        assert_eq!(outcome.applied, chunk.len() as u64);
    }
    let sheets = b.ledger.balance_sheets(&member).await.unwrap();
    assert_eq!(
        sheets[0].lots.len(),
        days as usize + 1,
        "one lot per day, and the legacy one"
    );
    let total = 20 * days as u64 + 5;

    // All of it would take days + 1 lots; one use takes at most MAX_USE_LOTS:
    // the legacy 5 and 49 days of 20.
    let at_most = 5 + 20 * (MAX_USE_LOTS as u64 - 1);
    let all = a_use(&format!("{member}-all"), &member, "PT", total);
    assert_eq!(
        b.ledger.apply_use(&all, t0).await.unwrap(),
        UseOutcome::TooManyLots { at_most }
    );
    assert_eq!(view(b, &member, t0).await.available, total);
    let first = a_use(&format!("{member}-u1"), &member, "PT", at_most);
    assert!(matches!(
        b.ledger.apply_use(&first, t0).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    assert!(matches!(
        b.ledger.apply_use(&first, t0).await.unwrap(),
        UseOutcome::Replayed(_)
    ));
    let rest = a_use(&format!("{member}-u2"), &member, "PT", total - at_most);
    assert!(matches!(
        b.ledger.apply_use(&rest, t0).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let v = view(b, &member, t0).await;
    assert_eq!((v.available, v.lifetime_used), (0, total));
    assert!(b.ledger.balance_sheets(&member).await.unwrap()[0].lots.is_empty());

    // The legacy lot was spent: its reversal is refused; the first use's
    // reversal gives every lot back, the legacy one included, which can then
    // be reversed.
    let legacy_back = ReversalTarget::Accrual(legacy.accrual_id.clone());
    assert_eq!(
        b.ledger.reverse(&legacy_back, t0).await.unwrap(),
        ReversalOutcome::AlreadySpent { remaining: 0 }
    );
    let undo = ReversalTarget::Use(first.use_id.clone());
    assert!(matches!(
        b.ledger.reverse(&undo, t0).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    assert!(matches!(
        b.ledger.reverse(&legacy_back, t0).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    let v = view(b, &member, t0).await;
    assert_eq!(
        (v.available, v.lifetime_used, v.lifetime_earned),
        (at_most - 5, total - at_most, total - 5)
    );
    assert_eq!(
        b.ledger.balance_sheets(&member).await.unwrap()[0].lots.len(),
        MAX_USE_LOTS - 1
    );

    // Once all have expired, what was left is expired, and the history adds
    // up to what the member holds (nothing).
    let later = noon + time::Duration::days(days + 1);
    let v = view(b, &member, later).await;
    assert_eq!((v.available, v.expired), (0, at_most - 5));
    let history = whole_history(b, &member, None, 50, later).await;
    let sum: i64 = history.iter().map(|e| e.amount).sum();
    assert_eq!(sum, 0, "{history:?}");
    assert_eq!(
        history.iter().filter(|e| e.kind == EntryKind::Expiry).count(),
        MAX_USE_LOTS - 1
    );
}

/// The one balance sheet of `member`.
async fn sheet(b: &Backend, member: &str) -> BalanceSheet {
    let mut sheets = b.ledger.balance_sheets(member).await.unwrap();
    assert_eq!(sheets.len(), 1, "{sheets:?}");
    sheets.remove(0)
}

/// Expired lots leave the balance item: the first use applied after they
/// expired prunes them (at most MAX_PRUNE_LOTS per use) in its own write,
/// their points moving to the `expired` counter with one expiry history entry
/// each; expired points are never spent; a retried use prunes nothing again;
/// a lot recreated by a late credit is pruned again, with an entry of its
/// own; and uses racing each other and late credits prune each lot's points
/// exactly once.
pub async fn expired_lots_are_pruned_once_by_the_uses_that_meet_them(b: &Backend) {
    let t0 = now();
    let member = format!("x-{}", JobId::random());
    let count = MAX_PRUNE_LOTS as i64 + 5;
    // A lot of 10 expiring on each of days 1..=count, 100 plain points and 50
    // expiring in a year.
    let mut batch: Vec<Accrual> = (1..=count)
        .map(|d| lot_accrual(&format!("{member}-e{d}"), &member, 10, t0, None, Some(d)))
        .collect();
    batch.push(lot_accrual(&format!("{member}-plain"), &member, 100, t0, None, None));
    batch.push(lot_accrual(&format!("{member}-year"), &member, 50, t0, None, Some(365)));
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &batch, t0)
        .await
        .unwrap();
    let later = t0 + time::Duration::days(count + 1);
    let mut expired = 10 * count as u64;
    assert_eq!(sheet(b, &member).await.lots.len(), count as usize + 2);
    let v = view(b, &member, later).await;
    assert_eq!((v.available, v.expired), (150, expired));

    // Expired points are never spent; a refused use changes nothing.
    let too_much = a_use(&format!("{member}-u0"), &member, "PT", 151);
    assert_eq!(
        b.ledger.apply_use(&too_much, later).await.unwrap(),
        UseOutcome::Insufficient { available: 150 }
    );
    assert_eq!(sheet(b, &member).await.lots.len(), count as usize + 2);

    // The first use prunes the MAX_PRUNE_LOTS soonest; its retries nothing more.
    let first = a_use(&format!("{member}-u1"), &member, "PT", 5);
    assert!(matches!(
        b.ledger.apply_use(&first, later).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    for _ in 0..2 {
        assert!(matches!(
            b.ledger.apply_use(&first, later).await.unwrap(),
            UseOutcome::Replayed(_)
        ));
    }
    let pruned = sheet(b, &member).await;
    assert_eq!((pruned.lots.len(), pruned.expired), (5 + 2, 10 * MAX_PRUNE_LOTS as u64));
    let v = pruned.view(later);
    assert_eq!((v.available, v.expired), (145, expired));
    // The next use prunes the rest: the item holds its two live lots.
    let second = a_use(&format!("{member}-u2"), &member, "PT", 1);
    assert!(matches!(
        b.ledger.apply_use(&second, later).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let pruned = sheet(b, &member).await;
    assert_eq!((pruned.lots.len(), pruned.expired), (2, expired));
    let history = whole_history(b, &member, None, 7, later).await;
    let expiries: Vec<&HistoryEntry> = history.iter().filter(|e| e.kind == EntryKind::Expiry).collect();
    assert_eq!(expiries.len(), count as usize);
    assert_eq!(expiries.iter().map(|e| e.amount).sum::<i64>(), -(expired as i64));
    assert_eq!(
        expiries.last().map(|e| e.at.unix_timestamp()),
        Some((t0 + time::Duration::days(1)).unix_timestamp())
    );
    let sum: i64 = history.iter().map(|e| e.amount).sum();
    assert_eq!(sum, (v.available - 1 + v.pending) as i64, "{history:?}");

    // A late credit (a message applied after its lot expired) recreates the
    // first lot; the next use prunes it again, with an entry of its own.
    let late = lot_accrual(&format!("{member}-late"), &member, 10, t0, None, Some(1));
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &[late], later)
        .await
        .unwrap();
    expired += 10;
    assert_eq!(sheet(b, &member).await.lots.len(), 3);
    let third = a_use(&format!("{member}-u3"), &member, "PT", 1);
    assert!(matches!(
        b.ledger.apply_use(&third, later).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let pruned = sheet(b, &member).await;
    assert_eq!((pruned.lots.len(), pruned.expired), (2, expired));
    let first_day = whole_history(b, &member, None, 50, later)
        .await
        .into_iter()
        .filter(|e| {
            e.kind == EntryKind::Expiry && e.at.unix_timestamp() == (t0 + time::Duration::days(1)).unix_timestamp()
        })
        .collect::<Vec<_>>();
    assert_eq!(first_day.len(), 2, "{first_day:?}");
    assert_ne!(first_day[0].id, first_day[1].id);

    // Six more lots expired by late credits, then four uses racing each
    // other and two more late credits into lots being pruned.
    let late: Vec<Accrual> = (1..=6)
        .map(|d| lot_accrual(&format!("{member}-r{d}"), &member, 10, t0, None, Some(d)))
        .collect();
    b.ledger
        .apply_accruals(message(JobId::random(), 0), &late, later)
        .await
        .unwrap();
    expired += 60;
    let conflicts_before = b.strict.as_ref().map(|s| s.stats().conflicts);
    if let Some(strict) = &b.strict {
        strict.hold_transactions(1);
    }
    let uses: Vec<_> = (0..4)
        .map(|i| {
            let (ledger, u) = (b.ledger.clone(), a_use(&format!("{member}-race{i}"), &member, "PT", 1));
            tokio::spawn(async move { ledger.apply_use(&u, later).await.unwrap() })
        })
        .collect();
    let credits: Vec<_> = (1..=2)
        .map(|d| {
            let ledger = b.ledger.clone();
            let a = lot_accrual(&format!("{member}-rc{d}"), &member, 10, t0, None, Some(d));
            tokio::spawn(async move {
                ledger
                    .apply_accruals(message(JobId::random(), 0), &[a], later)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in uses {
        assert!(matches!(task.await.unwrap(), UseOutcome::Applied(_)));
    }
    for task in credits {
        assert_eq!(task.await.unwrap().applied, 1);
    }
    expired += 20;
    if let (Some(strict), Some(before)) = (&b.strict, conflicts_before) {
        let stats = strict.stats();
        assert!(
            stats.overlaps >= 1 && stats.conflicts > before,
            "the writes overlapped on the balance item: {stats:?}"
        );
    }
    // A credit that landed after the last prune is pruned by the next use.
    let last = a_use(&format!("{member}-u4"), &member, "PT", 1);
    assert!(matches!(
        b.ledger.apply_use(&last, later).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let pruned = sheet(b, &member).await;
    assert_eq!((pruned.lots.len(), pruned.expired), (2, expired));
    let v = pruned.view(later);
    assert_eq!((v.available, v.expired, v.lifetime_used), (150 - 12, expired, 12));
    let history = whole_history(b, &member, None, 9, later).await;
    let expiries: Vec<&HistoryEntry> = history.iter().filter(|e| e.kind == EntryKind::Expiry).collect();
    assert_eq!(expiries.iter().map(|e| e.amount).sum::<i64>(), -(expired as i64));
    let ids: HashSet<&str> = expiries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), expiries.len(), "{expiries:?}");
    let sum: i64 = history.iter().map(|e| e.amount).sum();
    assert_eq!(sum, (v.available + v.pending) as i64, "{history:?}");
    // The ledger, the expiries of pruned lots included, explains the
    // balance item value for value, `expired` too.
    let report = reconcile_member(b.ledger.as_ref(), &member, false, Duration::ZERO, later)
        .await
        .unwrap();
    assert_eq!(report.differences, [], "{report:?}");
}

/// Every page of a member's history, read `limit` entries at a time as of `at`.
async fn whole_history(
    b: &Backend,
    member: &str,
    point_type: Option<&str>,
    limit: usize,
    at: OffsetDateTime,
) -> Vec<HistoryEntry> {
    let mut query = HistoryQuery {
        point_type: point_type.map(str::to_owned),
        cursor: None,
        limit,
    };
    let mut all = Vec::new();
    for _ in 0..100 {
        let page = history_page(b.ledger.as_ref(), member, &query, at).await.unwrap();
        assert!(page.entries.len() <= limit);
        all.extend(page.entries);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return all,
        }
    }
    panic!("the history of {member} did not end");
}

/// The history lists every credit, use, reversal and expiry once, newest
/// first, across pages of any size, filtered by point type; its amounts add
/// up to what the member holds.
pub async fn history_lists_every_change_newest_first(b: &Backend) {
    let t0 = now();
    let second = |n: i64| t0 + time::Duration::seconds(n);
    let member = format!("h-{}", JobId::random());
    let plain = lot_accrual(&format!("{member}-a1"), &member, 100, t0, None, None);
    let expiring = lot_accrual(&format!("{member}-a2"), &member, 30, t0, None, Some(5));
    let other = accrual(&format!("{member}-a3"), &member, "OTHER", 7);
    let job = JobId::random();
    for _ in 0..2 {
        b.ledger
            .apply_accruals(message(job, 0), &[plain.clone(), expiring.clone(), other.clone()], t0)
            .await
            .unwrap();
    }
    let spend = a_use(&format!("{member}-u1"), &member, "PT", 40);
    assert!(matches!(
        b.ledger.apply_use(&spend, second(1)).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    assert!(matches!(
        b.ledger.apply_use(&spend, second(1)).await.unwrap(),
        UseOutcome::Replayed(_)
    ));
    let the_use = ReversalTarget::Use(spend.use_id.clone());
    let the_credit = ReversalTarget::Accrual(plain.accrual_id.clone());
    for _ in 0..2 {
        b.ledger.reverse(&the_use, second(2)).await.unwrap();
    }
    for _ in 0..2 {
        b.ledger.reverse(&the_credit, second(3)).await.unwrap();
    }
    let later = t0 + time::Duration::days(6);

    let expected = [
        (EntryKind::Expiry, -30, "PT"),
        (EntryKind::Reversal, -100, "PT"),
        (EntryKind::Reversal, 40, "PT"),
        (EntryKind::Use, -40, "PT"),
        (EntryKind::Accrual, 7, "OTHER"),
        (EntryKind::Accrual, 30, "PT"),
        (EntryKind::Accrual, 100, "PT"),
    ];
    for limit in [1, 2, 3, 50] {
        let all = whole_history(b, &member, None, limit, later).await;
        let seen: Vec<(EntryKind, i64, &str)> = all.iter().map(|e| (e.kind, e.amount, e.point_type.as_str())).collect();
        assert_eq!(seen, expected, "pages of {limit}: {all:#?}");
    }
    let all = whole_history(b, &member, None, 50, later).await;
    // Lots keep whole seconds.
    assert_eq!(
        all[0].at.unix_timestamp(),
        (t0 + time::Duration::days(5)).unix_timestamp()
    );
    assert_eq!(all[3].id, spend.use_id);
    assert_eq!(
        (all[1].reverses, all[1].id.as_str()),
        (Some(ReversalKind::Accrual), plain.accrual_id.as_str())
    );
    assert_eq!(all[2].reverses, Some(ReversalKind::Use));
    assert_eq!(all[6].job_id, Some(job));
    assert_eq!(all[6].reason.as_deref(), Some("contract"));
    assert!(all[5].expires_at.is_some());
    assert!(
        (all[6].at - t0).abs() < time::Duration::milliseconds(1),
        "{:?} vs {t0:?}",
        all[6].at
    );

    let held: i64 = all.iter().filter(|e| e.point_type == "PT").map(|e| e.amount).sum();
    let sheets = b.ledger.balance_sheets(&member).await.unwrap();
    let pt = sheets
        .iter()
        .find(|s| s.point_type == "PT")
        .expect("a PT balance")
        .view(later);
    assert_eq!(held, (pt.available + pt.pending) as i64);
    // Before the lot expired there is no expiry.
    let before = whole_history(b, &member, Some("PT"), 50, second(4)).await;
    assert_eq!(before.len(), 5);
    assert!(before.iter().all(|e| e.kind != EntryKind::Expiry));
    let others = whole_history(b, &member, Some("OTHER"), 2, later).await;
    assert_eq!(others.iter().map(|e| e.amount).collect::<Vec<_>>(), [7]);
    assert!(whole_history(b, &format!("{member}-nobody"), None, 10, later)
        .await
        .is_empty());
}

/// A ledger that fails every reversal after the first `left`: a cancel
/// interrupted part-way.
struct ReversalsFailAfter {
    inner: std::sync::Arc<dyn pointflow::ports::Ledger>,
    left: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl pointflow::ports::Debits for ReversalsFailAfter {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&pointflow::domain::audit::Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, pointflow::ports::StoreError> {
        self.inner.apply_use_audited(u, audit, now).await
    }

    async fn apply_message_use(
        &self,
        by: MessageRef,
        u: &Use,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, pointflow::ports::StoreError> {
        self.inner.apply_message_use(by, u, now).await
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&pointflow::domain::audit::Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, pointflow::ports::StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(pointflow::ports::StoreError::Throttled {
                operation: "TransactWriteItems",
            });
        }
        self.inner.reverse_audited(target, audit, now).await
    }
}

/// Cancelling a job reverses what it credited, once: not another job's
/// credit of the same id, not points already spent; a cancel interrupted
/// part-way finishes when run again, with exact counts; a running job is
/// refused.
pub async fn a_job_cancel_resumes_and_reverses_only_its_own_credits(b: &Backend) {
    use pointflow::domain::CancelCounts;
    use pointflow::services::cancel::{cancel_job, CancelError};

    let tag = JobId::random();
    let m1 = format!("c1-{tag}");
    let m2 = format!("c2-{tag}");
    let other = message(JobId::random(), 0);
    let shared = accrual(&format!("{tag}-shared"), &m1, "PT", 7);
    b.ledger
        .apply_accruals(other, std::slice::from_ref(&shared), now())
        .await
        .unwrap();

    let job = NewJob {
        total: 4,
        messages: 2,
        ..new_job(4, 2, "cancel")
    };
    b.jobs.create_job(&job).await.unwrap();
    let first = [
        accrual(&format!("{tag}-a1"), &m1, "PT", 100),
        accrual(&format!("{tag}-a2"), &m2, "PT", 50),
        shared.clone(),
    ];
    let second = [accrual(&format!("{tag}-a3"), &m1, "PT", 30)];
    for (seq, batch) in [(0u32, &first[..]), (1, &second[..])] {
        let by = message(job.job_id, seq);
        let outcome = b.ledger.apply_accruals(by, batch, now()).await.unwrap();
        let counts = MessageCounts {
            applied: outcome.applied,
            duplicate: outcome.duplicate,
            ..MessageCounts::default()
        };
        let ids: Vec<String> = batch.iter().map(|a| a.accrual_id.clone()).collect();
        if seq == 0 {
            // Not complete yet: the cancel is refused.
            let running = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job.job_id, None, b.parallelism()).await;
            assert!(matches!(running, Err(CancelError::Running { .. })), "{running:?}");
        }
        b.jobs.fold_message(job.job_id, seq, counts, &ids, now()).await.unwrap();
    }
    let spend = a_use(&format!("{tag}-spend"), &m2, "PT", 20);
    assert!(matches!(
        b.ledger.apply_use(&spend, now()).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    assert_eq!(b.ledger.balances(&m1).await.unwrap(), [balance("PT", 137)]);

    let flaky = ReversalsFailAfter {
        inner: b.ledger.clone(),
        left: std::sync::atomic::AtomicUsize::new(1),
    };
    let interrupted = cancel_job(&flaky, b.jobs.as_ref(), job.job_id, None, 1).await;
    assert!(matches!(interrupted, Err(CancelError::Store(_))), "{interrupted:?}");
    let halfway = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert!(
        halfway.cancel.as_ref().is_some_and(|c| c.completed_at.is_none()),
        "{halfway:?}"
    );

    for _ in 0..2 {
        let done = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job.job_id, None, b.parallelism())
            .await
            .unwrap();
        let cancel = done.cancel.expect("a cancel");
        assert_eq!(
            cancel.counts,
            CancelCounts {
                reversed: 2,
                spent: 1,
                skipped: 1
            }
        );
        assert_eq!(cancel.messages, 2);
        assert!(cancel.completed_at.is_some());
        // m1 keeps only the other job's credit of the shared id; m2 keeps
        // what was not spent of a2 (whose reversal was refused).
        assert_eq!(b.ledger.balances(&m1).await.unwrap(), [balance("PT", 7)]);
        assert_eq!(b.ledger.balances(&m2).await.unwrap(), [balance("PT", 30)]);
    }
    let ghost = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), JobId::random(), None, 1).await;
    assert!(matches!(ghost, Err(CancelError::NotFound(_))));
}

/// Once a job's cancel has begun, nothing of the job is ever credited: a
/// message that was in the DLQ when the cancel ran (counted failed, its
/// accruals `skipped` by the cancel) and is redriven afterwards credits
/// nothing, and the job's counts stay as the cancel left them.
pub async fn a_message_redriven_after_its_job_cancel_credits_nothing(b: &Backend) {
    use pointflow::domain::message::{Payload, QueueMessage};
    use pointflow::domain::CancelCounts;
    use pointflow::services::cancel::cancel_job;
    use pointflow::services::worker::{IncomingMessage, Worker};

    let tag = JobId::random();
    let member = format!("r-{tag}");
    let job = new_job(3, 2, "redrive-after-cancel");
    b.jobs.create_job(&job).await.unwrap();
    let first = [
        accrual(&format!("{tag}-a1"), &member, "PT", 100),
        accrual(&format!("{tag}-a2"), &member, "PT", 50),
    ];
    let outcome = b
        .ledger
        .apply_accruals(message(job.job_id, 0), &first, now())
        .await
        .unwrap();
    let applied = MessageCounts {
        applied: outcome.applied,
        ..MessageCounts::default()
    };
    let ids: Vec<String> = first.iter().map(|a| a.accrual_id.clone()).collect();
    b.jobs.fold_message(job.job_id, 0, applied, &ids, now()).await.unwrap();
    // Message 1 failed its last delivery and sits in the DLQ.
    let dead = accrual(&format!("{tag}-a3"), &member, "PT", 30);
    let failed = MessageCounts {
        failed: 1,
        ..MessageCounts::default()
    };
    let dead_ids = [dead.accrual_id.clone()];
    b.jobs
        .fold_message(job.job_id, 1, failed, &dead_ids, now())
        .await
        .unwrap();

    let cancelled = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job.job_id, None, b.parallelism())
        .await
        .unwrap();
    let expected = CancelCounts {
        reversed: 2,
        spent: 0,
        skipped: 1,
    };
    assert_eq!(cancelled.cancel.as_ref().map(|c| c.counts), Some(expected));

    // The operator redrives the DLQ; the message is delivered (twice).
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let body = QueueMessage::new(job.job_id, 1, Payload::Accruals(vec![dead])).encode();
    for receive_count in 1..=2 {
        let delivery = IncomingMessage {
            message_id: format!("redriven-{receive_count}"),
            body: body.clone(),
            receive_count,
        };
        worker.process_message(&delivery).await.unwrap();
    }
    assert_eq!(b.ledger.balances(&member).await.unwrap(), [balance("PT", 0)]);
    let after = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!((after.applied, after.duplicate, after.failed), (2, 0, 1));
    let cancel = after.cancel.expect("a cancel");
    assert_eq!(cancel.counts, expected);
    assert!(cancel.completed_at.is_some());
}

/// A bulk-use job's cancel gives back what each of its messages deducted
/// (counted `reversed`) and leaves alone what they did not (a use refused, or
/// one another deduction holds the id of: `skipped`); and once the cancel has
/// begun nothing of the job is ever deducted: a message that was in the DLQ
/// when the cancel ran and is redriven afterwards deducts nothing, and a
/// redelivery of a cancelled message deducts nothing again.
pub async fn a_use_message_redriven_after_its_job_cancel_deducts_nothing(b: &Backend) {
    use pointflow::domain::message::{Payload, QueueMessage};
    use pointflow::domain::CancelCounts;
    use pointflow::services::cancel::cancel_job;
    use pointflow::services::worker::{IncomingMessage, Worker};

    let tag = JobId::random();
    let member = format!("ru-{tag}");
    b.ledger
        .apply_accruals(
            message(JobId::random(), 0),
            &[accrual(&format!("{tag}-credit"), &member, "PT", 200)],
            now(),
        )
        .await
        .unwrap();
    // A use applied on its own, before the job, whose id the job repeats.
    let single = a_use(&format!("{tag}-u0"), &member, "PT", 10);
    assert!(matches!(
        b.ledger.apply_use(&single, now()).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let job = new_job(5, 2, "uses-redrive-after-cancel");
    b.jobs.create_job(&job).await.unwrap();
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let deliver = |body: String, receive_count: u32| {
        let worker = &worker;
        async move {
            let delivery = IncomingMessage {
                message_id: format!("m-{receive_count}"),
                body,
                receive_count,
            };
            worker.process_message(&delivery).await.unwrap()
        }
    };
    // Message 0: two uses apply, one is refused, one repeats the single use's id.
    let applied = vec![
        a_use(&format!("{tag}-u1"), &member, "PT", 50),
        a_use(&format!("{tag}-u2"), &member, "PT", 30),
        a_use(&format!("{tag}-u3"), &member, "PT", 1_000),
        a_use(&format!("{tag}-u0"), &member, "PT", 7),
    ];
    let first = QueueMessage::new(job.job_id, 0, Payload::Uses(applied))
        .queued(now())
        .encode();
    deliver(first.clone(), 1).await;
    assert_eq!(b.ledger.balances(&member).await.unwrap(), [balance("PT", 110)]);
    // Message 1 failed its last delivery and sits in the DLQ.
    let dead = vec![a_use(&format!("{tag}-u4"), &member, "PT", 20)];
    let failed = MessageCounts {
        failed: 1,
        ..MessageCounts::default()
    };
    let dead_ids = [dead[0].use_id.clone()];
    b.jobs
        .fold_message(job.job_id, 1, failed, &dead_ids, now())
        .await
        .unwrap();
    let settled = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!((settled.applied, settled.refused, settled.failed), (2, 2, 1));

    let cancelled = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job.job_id, None, b.parallelism())
        .await
        .unwrap();
    let after_cancel = b.ledger.balances(&member).await.unwrap();

    // The operator redrives the DLQ; the message is delivered (twice), and
    // message 0 is delivered once more: nothing is deducted.
    let body = QueueMessage::new(job.job_id, 1, Payload::Uses(dead))
        .queued(now())
        .encode();
    for receive_count in 1..=2 {
        deliver(body.clone(), receive_count).await;
    }
    deliver(first, 2).await;
    assert_eq!(
        b.ledger.balances(&member).await.unwrap(),
        after_cancel,
        "deliveries after the cancel deducted"
    );
    // What the job deducted is back; the single use's 10 stay deducted.
    let expected = CancelCounts {
        reversed: 2,
        spent: 0,
        skipped: 3,
    };
    assert_eq!(cancelled.cancel.as_ref().map(|c| c.counts), Some(expected));
    assert_eq!(after_cancel, [balance("PT", 190)]);
    let after = b.jobs.get_job(job.job_id).await.unwrap().unwrap();
    assert_eq!((after.applied, after.refused, after.failed), (2, 2, 1));
    let cancel = after.cancel.expect("a cancel");
    assert_eq!(cancel.counts, expected);
    assert!(cancel.completed_at.is_some());
}

/// `$make` is an async expression yielding `Option<Backend>` (`None` skips);
/// `$long` the same with a visibility timeout of at least 10 minutes, for the
/// cases that must tell "released" from "timed out".
#[macro_export]
macro_rules! contract_suite {
    ($make:expr, long_visibility: $long:expr) => {
        $crate::contract_suite!($make, long_visibility: $long, filter $crate::contract_case);
    };
    // `filter` names a macro called as `filter!(case, test fn)` for each
    // case: it passes the test on, or marks a case `#[ignore]` on this
    // backend by matching its name (see `contract_aws.rs`). New cases run.
    ($make:expr, long_visibility: $long:expr, filter $($filter:tt)+) => {
        $crate::contract_suite!(@cases $long, [$($filter)+]; queue_releases_deliveries_at_once);
        $crate::contract_suite!(@cases $make, [$($filter)+];
            ledger_credits_each_accrual_once,
            ledger_completes_a_partially_applied_message,
            ledger_sums_many_accruals_of_one_balance,
            ledger_tallies_who_credited_a_messages_ids,
            ledger_reports_balances_per_point_type,
            job_is_created_once,
            job_counts_fold_once_per_message,
            job_with_failed_message_completes_with_errors,
            redriven_message_moves_its_counts_from_failed,
            partly_failed_message_moves_only_its_failed_part,
            fold_for_unknown_job_records_nothing,
            file_job_grows_by_chunks_and_completes_after_the_last,
            unreadable_file_fails_its_job,
            queue_delivers_and_deletes,
            queue_redelivers_then_dead_letters,
            use_deducts_once_and_never_below_zero,
            concurrent_uses_race_for_the_last_points,
            scheduled_and_expiring_points_follow_the_clock,
            uses_take_the_soonest_expiring_points_first,
            reversals_happen_once_and_never_overdraw,
            history_lists_every_change_newest_first,
            a_job_cancel_resumes_and_reverses_only_its_own_credits,
            lots_stay_bounded_and_every_use_one_bounded_write,
            a_message_redriven_after_its_job_cancel_credits_nothing,
            a_use_message_redriven_after_its_job_cancel_deducts_nothing,
            expired_lots_are_pruned_once_by_the_uses_that_meet_them,
            reconcile_finds_a_clean_member_clean,
            reconcile_reports_then_repairs_a_tampered_balance,
            reconcile_repair_never_writes_over_a_stale_read,
            reconcile_recounts_a_job_from_its_messages,
            a_bulk_use_refused_once_stays_refused,
            racing_deliveries_decide_a_bulk_use_once,
            the_audit_trail_keeps_who_asked_for_each_change,
        );
    };
    (@cases $make:expr, $filter:tt; $(,)?) => {};
    (@cases $make:expr, $filter:tt; $case:ident $(, $rest:ident)* $(,)?) => {
        $crate::contract_suite!(@case $make, $filter, $case);
        $crate::contract_suite!(@cases $make, $filter; $($rest),*);
    };
    (@case $make:expr, [$($filter:tt)+], $case:ident) => {
        $($filter)+!($case, #[tokio::test] async fn $case() {
            if let Some(backend) = $make.await {
                $crate::contract::$case(&backend).await;
            }
        });
    };
}

/// The default filter of [`contract_suite!`]: every case runs.
#[macro_export]
macro_rules! contract_case {
    ($case:ident, $($test:tt)*) => {
        $($test)*
    };
}
