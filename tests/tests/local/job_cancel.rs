//! Cancelling a job end to end: accruals submitted through the API and
//! applied by the worker (whose folds record each message's ids) are
//! reversed by `cancel_job`, on every backend (moto at small scale).

use std::time::Duration;

use pointflow::cancel::cancel_job;
use pointflow::domain::{CancelCounts, JobId};
use pointflow::ingest::{IngestService, IngestSettings};
use pointflow::packing::PackingLimits;
use pointflow::worker::Worker;
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{call_api, drain, post_job};
use serde_json::json;

async fn a_campaign_is_cancelled_through_the_pipeline(b: Backend) {
    let settings = IngestSettings {
        // Several messages, so that the cancel walks more than one.
        packing: PackingLimits {
            max_accruals: 4,
            ..PackingLimits::default()
        },
        ..IngestSettings::default()
    };
    let ingest = IngestService::new(b.jobs.clone(), b.ledger.clone(), b.queue.clone(), settings);
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let tag = JobId::random();
    let item = |i: usize| json!({"accrual_id": format!("{tag}-{i}"), "member_id": format!("m{i}-{tag}"), "point_type": "PT", "amount": 10});
    // An earlier job credits item 0; the campaign repeats it (a duplicate).
    let (status, _) = call_api(&ingest, post_job(&json!({"accruals": [item(0)]}), None)).await;
    assert_eq!(status, 202);
    let campaign: Vec<_> = (0..10).map(item).collect();
    let (status, accepted) = call_api(&ingest, post_job(&json!({"accruals": campaign}), None)).await;
    assert_eq!(status, 202, "{accepted}");
    drain(b.queue.as_ref(), &worker).await;
    let job_id: JobId = accepted["job_id"].as_str().unwrap().parse().unwrap();
    let job = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.applied, job.duplicate, job.messages), (9, 1, 3));

    let done = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job_id, b.parallelism())
        .await
        .unwrap();
    let cancel = done.cancel.clone().unwrap();
    assert_eq!(
        cancel.counts,
        CancelCounts {
            reversed: 9,
            spent: 0,
            skipped: 1
        }
    );
    assert_eq!(cancel.messages, 3);
    assert_eq!(b.ledger.balances(&format!("m0-{tag}")).await.unwrap()[0].balance, 10);
    for i in 1..10 {
        assert_eq!(b.ledger.balances(&format!("m{i}-{tag}")).await.unwrap()[0].balance, 0);
    }
    // The job's status shows the cancel.
    let (status, view) = call_api(
        &ingest,
        pointflow_tests::lambda::api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(view["cancel"]["counts"]["reversed"], 9, "{view}");
    assert!(view["cancel"]["completed_at"].is_string(), "{view}");
}

#[tokio::test]
async fn cancel_on_memory() {
    a_campaign_is_cancelled_through_the_pipeline(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn cancel_on_sqlite() {
    a_campaign_is_cancelled_through_the_pipeline(backend::sqlite(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        a_campaign_is_cancelled_through_the_pipeline(b).await;
    }
}

/// `POST /v1/jobs/{id}/cancel`: refused while the job runs (409), then
/// queued (202) and carried out by the worker from the queue; asking again
/// once done is a 200 that changes nothing.
async fn the_api_queues_a_cancel_for_the_workers(b: Backend) {
    let ingest = IngestService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        IngestSettings::default(),
    );
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let tag = JobId::random();
    let items: Vec<_> = (0..5)
        .map(|i| json!({"accrual_id": format!("{tag}-{i}"), "member_id": format!("n{i}-{tag}"), "point_type": "PT", "amount": 3}))
        .collect();
    let (_, accepted) = call_api(&ingest, post_job(&json!({"accruals": items}), None)).await;
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let cancel = || pointflow_tests::lambda::api_event("POST", &format!("/v1/jobs/{job_id}/cancel"), &[], None);
    let (status, reply) = call_api(&ingest, cancel()).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("job_running")),
        "{reply}"
    );
    drain(b.queue.as_ref(), &worker).await;

    let (status, view) = call_api(&ingest, cancel()).await;
    assert_eq!(status, 202, "{view}");
    assert!(view["cancel"]["requested_at"].is_string(), "{view}");
    drain(b.queue.as_ref(), &worker).await;
    let (status, view) = call_api(&ingest, cancel()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["cancel"]["counts"]["reversed"], 5, "{view}");
    for i in 0..5 {
        assert_eq!(b.ledger.balances(&format!("n{i}-{tag}")).await.unwrap()[0].balance, 0);
    }
    let (status, _) = call_api(
        &ingest,
        pointflow_tests::lambda::api_event("POST", &format!("/v1/jobs/{}/cancel", JobId::random()), &[], None),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn api_cancel_on_memory() {
    the_api_queues_a_cancel_for_the_workers(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn api_cancel_on_sqlite() {
    the_api_queues_a_cancel_for_the_workers(backend::sqlite(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn api_cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        the_api_queues_a_cancel_for_the_workers(b).await;
    }
}
