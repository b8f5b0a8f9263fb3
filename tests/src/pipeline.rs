//! End-to-end cases through the real API and worker that every backend
//! must pass: the local binary runs them on the in-memory and embedded
//! backends, the emulator binary on the AWS adapters over moto.

use pointflow::domain::packing::PackingLimits;
use pointflow::domain::{Accrual, CancelCounts, JobId, JobStatus, MessageRef};
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::cancel::cancel_job;
use pointflow::services::worker::Worker;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::backend::Backend;
use crate::lambda::{call_api, drain, post_job};

// Bulk uses (`tests/local/bulk_uses.rs`, `tests/emulator/bulk_uses.rs`).

/// Credits 100 points to each of three fresh members; returns their ids.
pub async fn three_members_with_100(b: &Backend) -> Vec<String> {
    let tag = JobId::random();
    let members: Vec<String> = (0..3).map(|i| format!("bu{i}-{tag}")).collect();
    let credits: Vec<Accrual> = members
        .iter()
        .map(|m| Accrual {
            accrual_id: format!("{m}-credit"),
            member_id: m.clone(),
            point_type: "PT".into(),
            amount: 100,
            reason: None,
            apply_at: None,
            expires_at: None,
        })
        .collect();
    let by = MessageRef { job_id: tag, seq: 0 };
    b.ledger
        .apply_accruals(by, &credits, OffsetDateTime::now_utc())
        .await
        .unwrap();
    members
}

/// A bulk-use item of point type `PT`.
pub fn use_item(id: &str, member: &str, amount: u64) -> Value {
    json!({"use_id": id, "member_id": member, "point_type": "PT", "amount": amount})
}

/// `member`'s balance of its one point type.
pub async fn available(b: &Backend, member: &str) -> u64 {
    b.ledger.balances(member).await.unwrap()[0].balance
}

/// Bulk uses through a job are applied once per `use_id`, refusals counted
/// on the job; the same request again, or the same uses in a new job,
/// deduct nothing twice.
pub async fn bulk_uses_apply_once_and_count_refusals(b: Backend) {
    let members = three_members_with_100(&b).await;
    let ingest = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let [m0, m1, m2] = [&members[0], &members[1], &members[2]];
    let uses = json!({"uses": [
        use_item(&format!("{m0}-u1"), m0, 60),
        // Competes with u1 for m0's points, in submission order: refused.
        use_item(&format!("{m0}-u2"), m0, 60),
        use_item(&format!("{m1}-u1"), m1, 100),
        // An exact repeat collapses before queueing.
        use_item(&format!("{m1}-u1"), m1, 100),
        use_item(&format!("{m2}-u1"), m2, 30),
    ]});
    let key = format!("bulk-{}", JobId::random());
    let (status, accepted) = call_api(&ingest, post_job(&uses, Some(&key))).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        (accepted["accepted"].as_u64(), accepted["deduplicated"].as_u64()),
        (Some(4), Some(1))
    );
    let job_id: JobId = accepted["job_id"].as_str().unwrap().parse().unwrap();
    drain(b.queue.as_ref(), &worker).await;

    let job = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.applied, job.refused, job.duplicate, job.failed),
        (3, 1, 0, 0),
        "{job:?}"
    );
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
    assert_eq!(
        [
            available(&b, m0).await,
            available(&b, m1).await,
            available(&b, m2).await
        ],
        [40, 0, 70]
    );
    let (status, view) = call_api(
        &ingest,
        crate::lambda::api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None),
    )
    .await;
    assert_eq!((status, view["refused"].as_u64()), (200, Some(1)), "{view}");

    // The same request again is a replay; the same uses in a new job are
    // applied already (their use_ids), so nothing is deducted twice.
    let (status, _) = call_api(&ingest, post_job(&uses, Some(&key))).await;
    assert_eq!(status, 202);
    let (status, again) = call_api(&ingest, post_job(&uses, None)).await;
    assert_eq!(status, 202, "{again}");
    drain(b.queue.as_ref(), &worker).await;
    let second: JobId = again["job_id"].as_str().unwrap().parse().unwrap();
    let second = b.jobs.get_job(second).await.unwrap().unwrap();
    assert_eq!((second.applied, second.refused), (3, 1), "{second:?}");
    assert_eq!(
        [
            available(&b, m0).await,
            available(&b, m1).await,
            available(&b, m2).await
        ],
        [40, 0, 70]
    );
}

// Job cancels (`tests/local/job_cancel.rs`, `tests/emulator/job_cancel.rs`).

/// A campaign applied by the worker over several messages is reversed by
/// `cancel_job`; the accrual an earlier job applied stays credited.
pub async fn a_campaign_is_cancelled_through_the_pipeline(b: Backend) {
    let settings = ApiSettings {
        // Several messages, so that the cancel walks more than one.
        packing: PackingLimits {
            max_accruals: 4,
            ..PackingLimits::default()
        },
        ..ApiSettings::default()
    };
    let ingest = ApiService::new(b.jobs.clone(), b.ledger.clone(), b.queue.clone(), settings);
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

    let done = cancel_job(b.ledger.as_ref(), b.jobs.as_ref(), job_id, None, b.parallelism())
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
        crate::lambda::api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(view["cancel"]["counts"]["reversed"], 9, "{view}");
    assert!(view["cancel"]["completed_at"].is_string(), "{view}");
}

/// `POST /v1/jobs/{id}/cancel`: refused while the job runs (409), then
/// queued (202) and carried out by the worker from the queue; asking again
/// once done is a 200 that changes nothing.
pub async fn the_api_queues_a_cancel_for_the_workers(b: Backend) {
    let ingest = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let tag = JobId::random();
    let items: Vec<_> = (0..5)
        .map(|i| json!({"accrual_id": format!("{tag}-{i}"), "member_id": format!("n{i}-{tag}"), "point_type": "PT", "amount": 3}))
        .collect();
    let (_, accepted) = call_api(&ingest, post_job(&json!({"accruals": items}), None)).await;
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let cancel = || crate::lambda::api_event("POST", &format!("/v1/jobs/{job_id}/cancel"), &[], None);
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
        crate::lambda::api_event("POST", &format!("/v1/jobs/{}/cancel", JobId::random()), &[], None),
    )
    .await;
    assert_eq!(status, 404);
}
