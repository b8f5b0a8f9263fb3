//! Cancelling a job end to end over the emulator (small scale): the cases
//! every backend must pass (`pointflow_tests::pipeline`), on the AWS
//! adapters. The local backends' cases: `tests/local/job_cancel.rs`.

use std::time::Duration;

use pointflow::domain::{CancelCounts, JobId, MessageCounts, NewJob};
use pointflow_tests::backend;
use pointflow_tests::pipeline::{
    a_campaign_is_cancelled_through_the_pipeline, the_api_queues_a_cancel_for_the_workers,
};

#[tokio::test]
async fn cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        a_campaign_is_cancelled_through_the_pipeline(b).await;
    }
}

#[tokio::test]
async fn api_cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        the_api_queues_a_cancel_for_the_workers(b).await;
    }
}

/// The cancel's completion stamp is a plain update of the job item, which
/// other messages' cancel records and redriven folds write in
/// transactions: AWS refuses it with `TransactionConflictException` while
/// one holds the item. The cancel retries it instead of failing, and the
/// job's cancel is stamped complete.
#[tokio::test]
async fn a_cancel_stamp_meeting_a_transaction_is_retried() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let strict = b
        .strict
        .as_ref()
        .expect("the AWS backend talks through the strict layer");
    let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid time");
    let job = NewJob {
        job_id: JobId::random(),
        request_hash: "stamp".into(),
        total: 1,
        deduplicated: 1,
        messages: 1,
        source: None,
        reading: false,
        created_at: now,
        audit: None,
    };
    b.jobs.create_job(&job).await.unwrap();
    b.jobs.mark_enqueued(job.job_id).await.unwrap();
    let counts = MessageCounts {
        applied: 1,
        ..MessageCounts::default()
    };
    assert!(b
        .jobs
        .fold_message(job.job_id, 0, counts, &["a-1".to_owned()], now)
        .await
        .unwrap());
    assert!(b.jobs.begin_cancel(job.job_id, None, now).await.unwrap().is_some());
    assert!(b.jobs.begin_message_cancel(job.job_id, 0, now).await.unwrap().is_some());

    let conflicts = strict.stats().conflicts;
    strict.conflict_single_writes(&format!("JOB#{}", job.job_id), 1);
    let recorded = b
        .jobs
        .record_cancelled(
            job.job_id,
            0,
            CancelCounts {
                reversed: 1,
                ..CancelCounts::default()
            },
            now,
        )
        .await
        .unwrap();
    assert!(recorded);
    assert_eq!(strict.stats().conflicts, conflicts + 1, "the stamp met the conflict");
    let cancel = b.jobs.get_job(job.job_id).await.unwrap().unwrap().cancel.unwrap();
    assert_eq!((cancel.messages, cancel.counts.reversed), (1, 1));
    assert!(cancel.completed_at.is_some(), "{cancel:?}");
}
