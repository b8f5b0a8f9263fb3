//! Job accounting on DynamoDB when the job item is hot: conflicts and
//! throttling on the job's own writes, injected over the wire by the fault
//! proxy of [`crate::aws_faults`] (moto never answers with them), are
//! retried; a fold that committed is never reported failed for its
//! completion stamp; a resettle cancelled by a conflict is not taken for
//! done; a cancel whose completion stamp failed is stamped when asked again.

use std::sync::Arc;
use std::time::Duration;

use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
use pointflow::adapters::retry::Backoff;
use pointflow::domain::{Accrual, JobId, JobStatus, MessageCounts, MessageRef, NewJob};
use pointflow::ports::{Credits, JobStore};
use pointflow::services::cancel::cancel_job;
use pointflow_tests::backend;
use time::OffsetDateTime;

use crate::aws_faults::{dynamo_through, FaultProxy, Refusal};

/// `UpdateItem` on an item a transaction holds.
const UPDATE_CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}"#;

/// A two-action transaction cancelled because its second item (the job)
/// was held by another transaction.
const JOB_ITEM_CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#;

const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;

const UPDATE_ITEM: &str = "DynamoDB_20120810.UpdateItem";
const TRANSACT_WRITE_ITEMS: &str = "DynamoDB_20120810.TransactWriteItems";

/// A store straight on the emulator, one on the same table through a
/// proxy refusing `refusals`, and the proxy.
struct Stores {
    direct: DynamoStore,
    proxied: Arc<DynamoStore>,
    proxy: FaultProxy,
}

async fn stores(refusals: &[Refusal]) -> Option<Stores> {
    let sdk = backend::emulator_config().await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = backend::unique_name("pointflow");
    create_table(&dynamo, &table).await.expect("create table");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = FaultProxy::start_with(&endpoint, &[], refusals);
    // Production's SDK retries with a short SDK backoff, so the test takes
    // seconds; the store's own backoff is shortened the same way.
    let store = DynamoStore::new(dynamo_through(&sdk, &proxy), &table).with_backoff(Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(10),
        max_attempts: 8,
    });
    Some(Stores {
        direct: DynamoStore::new(dynamo, &table),
        proxied: Arc::new(store),
        proxy,
    })
}

async fn job(jobs: &dyn JobStore, total: u64) -> JobId {
    let job_id = JobId::random();
    jobs.create_job(&NewJob {
        job_id,
        request_hash: String::new(),
        total,
        deduplicated: 0,
        messages: 1,
        source: None,
        reading: false,
        created_at: OffsetDateTime::now_utc(),
        audit: None,
    })
    .await
    .unwrap();
    job_id
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acc-{i}")).collect()
}

fn applied(n: u64) -> MessageCounts {
    MessageCounts {
        applied: n,
        ..MessageCounts::default()
    }
}

#[tokio::test]
async fn a_conflicting_completion_stamp_is_retried() {
    let refusal = Refusal {
        target: UPDATE_ITEM,
        needle: "SET completed_at = :now",
        times: 2,
        error: UPDATE_CONFLICT,
    };
    let Some(s) = stores(&[refusal]).await else {
        return;
    };
    let job_id = job(&s.direct, 4).await;
    let folded = s
        .proxied
        .fold_message(job_id, 0, applied(4), &ids(4), OffsetDateTime::now_utc())
        .await;
    assert!(matches!(folded, Ok(true)), "{folded:?}");
    assert_eq!(s.proxy.matched(refusal.needle), 3, "two conflicts, then the stamp");
    let done = s.direct.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::Completed);
    assert!(done.completed_at.is_some());
}

#[tokio::test]
async fn a_fold_is_not_reported_failed_when_its_completion_stamp_keeps_conflicting() {
    let refusal = Refusal {
        target: UPDATE_ITEM,
        needle: "SET completed_at = :now",
        times: u64::MAX,
        error: UPDATE_CONFLICT,
    };
    let Some(s) = stores(&[refusal]).await else {
        return;
    };
    let job_id = job(&s.direct, 4).await;
    let folded = s
        .proxied
        .fold_message(job_id, 0, applied(4), &ids(4), OffsetDateTime::now_utc())
        .await;
    assert!(matches!(folded, Ok(true)), "the fold committed: {folded:?}");
    let done = s.direct.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((done.applied, done.status()), (4, JobStatus::Completed));
    assert!(
        done.completed_at.is_some(),
        "the read derives the completion the stamp could not write"
    );
}

#[tokio::test]
async fn a_resettle_cancelled_by_a_conflict_is_retried_not_taken_for_done() {
    let refusal = Refusal {
        target: TRANSACT_WRITE_ITEMS,
        needle: "failed = :before",
        times: 1,
        error: JOB_ITEM_CONFLICT,
    };
    let Some(s) = stores(&[refusal]).await else {
        return;
    };
    let job_id = job(&s.direct, 4).await;
    let now = OffsetDateTime::now_utc();
    // The last delivery failed: counted failed. Then a redrive applied it.
    let failed = MessageCounts {
        failed: 4,
        ..MessageCounts::default()
    };
    s.direct.fold_message(job_id, 0, failed, &ids(4), now).await.unwrap();
    let resettled = s.proxied.fold_message(job_id, 0, applied(4), &ids(4), now).await;
    assert!(matches!(resettled, Ok(true)), "{resettled:?}");
    assert_eq!(s.proxy.matched(refusal.needle), 2, "the conflict, then the resettle");
    let job = s.direct.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.applied, job.failed, job.status()), (4, 0, JobStatus::Completed));
}

#[tokio::test]
async fn a_cancel_whose_completion_stamp_failed_is_stamped_when_asked_again() {
    // Every attempt of the first stamp is throttled, the SDK's 3 within
    // each of the store's 8: the cancel fails after recording its message.
    let refusal = Refusal {
        target: UPDATE_ITEM,
        needle: "SET cancel_completed_at = :now",
        times: 3 * 8,
        error: THROTTLED,
    };
    let Some(s) = stores(&[refusal]).await else {
        return;
    };
    let job_id = job(&s.direct, 2).await;
    let now = OffsetDateTime::now_utc();
    let accruals: Vec<Accrual> = ids(2)
        .into_iter()
        .map(|accrual_id| Accrual {
            accrual_id: format!("{job_id}-{accrual_id}"),
            member_id: format!("m-{job_id}"),
            point_type: "P".into(),
            amount: 5,
            reason: None,
            apply_at: None,
            expires_at: None,
        })
        .collect();
    let by = MessageRef { job_id, seq: 0 };
    s.direct.apply_accruals(by, &accruals, now).await.unwrap();
    let items: Vec<String> = accruals.iter().map(|a| a.accrual_id.clone()).collect();
    s.direct.fold_message(job_id, 0, applied(2), &items, now).await.unwrap();

    let first = cancel_job(s.proxied.as_ref(), s.proxied.as_ref(), job_id, None, 1).await;
    assert!(first.is_err(), "the stamp was throttled: {first:?}");
    let stamped = s.direct.get_job(job_id).await.unwrap().unwrap();
    let cancel = stamped.cancel.expect("cancel recorded");
    assert_eq!((cancel.messages, cancel.counts.reversed), (1, 2));
    assert!(cancel.completed_at.is_none());

    let again = cancel_job(s.proxied.as_ref(), s.proxied.as_ref(), job_id, None, 1)
        .await
        .unwrap();
    let cancel = again.cancel.expect("cancel recorded");
    assert_eq!(
        (cancel.messages, cancel.counts.reversed),
        (1, 2),
        "nothing counted twice"
    );
    assert!(cancel.completed_at.is_some(), "asking again stamps the cancel complete");
}
