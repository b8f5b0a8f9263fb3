//! Bulk uses through jobs: `POST /v1/jobs` with `{"uses": [...]}` is
//! validated like single uses, queued, and applied by the worker exactly
//! once per `use_id`; refusals are counted on the job. On every backend
//! (moto at small scale).

use std::time::Duration;

use pointflow::domain::{Accrual, JobId, JobStatus, MessageRef};
use pointflow::ingest::{IngestService, IngestSettings};
use pointflow::worker::Worker;
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{call_api, drain, post_job};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// Credits 100 points to each of three fresh members; returns their ids.
async fn three_members_with_100(b: &Backend) -> Vec<String> {
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

fn use_item(id: &str, member: &str, amount: u64) -> Value {
    json!({"use_id": id, "member_id": member, "point_type": "PT", "amount": amount})
}

async fn available(b: &Backend, member: &str) -> u64 {
    b.ledger.balances(member).await.unwrap()[0].balance
}

async fn bulk_uses_apply_once_and_count_refusals(b: Backend) {
    let members = three_members_with_100(&b).await;
    let ingest = IngestService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        IngestSettings::default(),
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
        pointflow_tests::lambda::api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None),
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

#[tokio::test]
async fn bulk_uses_on_memory() {
    bulk_uses_apply_once_and_count_refusals(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn bulk_uses_on_sqlite() {
    bulk_uses_apply_once_and_count_refusals(backend::sqlite(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn bulk_uses_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        bulk_uses_apply_once_and_count_refusals(b).await;
    }
}

/// A bad item is named by index and field, and nothing is queued; a body
/// with both lists, or neither, is malformed.
#[tokio::test]
async fn bad_bulk_uses_are_named_and_queue_nothing() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let ingest = IngestService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        IngestSettings::default(),
    );
    let body = json!({"uses": [
        use_item("u1", "m", 10),
        json!({"use_id": "u2", "point_type": "PT", "amount": 10}),
        json!({"use_id": "u3", "member_id": "m", "point_type": "PT", "amount": -1}),
        use_item("u1", "m", 11),
    ]});
    let (status, reply) = call_api(&ingest, post_job(&body, None)).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid_uses")),
        "{reply}"
    );
    let named: Vec<(u64, &str)> = reply["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [(1, "member_id"), (2, "amount"), (3, "use_id")]);
    for body in [json!({"uses": [use_item("u1", "m", 1)], "accruals": []}), json!({})] {
        let (status, reply) = call_api(&ingest, post_job(&body, None)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("malformed_json")),
            "{reply}"
        );
    }
    let (status, reply) = call_api(&ingest, post_job(&json!({"uses": []}), None)).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("empty_submission")),
        "{reply}"
    );
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("uses list is empty"));
    assert_eq!(b.queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
}

/// A message of uses delivered twice, or failing mid-way and delivered
/// again, deducts each use once and counts the job once.
#[tokio::test]
async fn a_redelivered_message_of_uses_deducts_once() {
    use pointflow::message::AccrualMessage;
    use pointflow::packing::{pack_uses, PackingLimits};
    use pointflow::uses::Use;
    use pointflow::worker::IncomingMessage;

    let b = backend::sqlite(Duration::from_secs(30), 3);
    let members = three_members_with_100(&b).await;
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    let job_id = JobId::random();
    let uses: Vec<Use> = members
        .iter()
        .map(|m| Use {
            use_id: format!("{m}-order"),
            member_id: m.clone(),
            point_type: "PT".into(),
            amount: 25,
            reason: None,
        })
        .collect();
    let messages: Vec<AccrualMessage> = pack_uses(job_id, uses, PackingLimits::default());
    b.jobs
        .create_job(&pointflow::domain::NewJob {
            job_id,
            request_hash: "h".into(),
            total: 3,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let delivery = |receive_count| IncomingMessage {
        message_id: "m-1".into(),
        body: messages[0].encode(),
        receive_count,
    };
    // A use applied by hand first: the message's delivery replays it.
    b.ledger
        .apply_use(&messages[0].uses[0], OffsetDateTime::now_utc())
        .await
        .unwrap();
    for receive_count in 1..=2 {
        let report = worker.process_message(&delivery(receive_count)).await.unwrap();
        assert_eq!(report.counts.applied, 3);
        assert_eq!(report.folded, receive_count == 1);
    }
    let job = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.applied, job.refused, job.status()), (3, 0, JobStatus::Completed));
    for m in &members {
        assert_eq!(available(&b, m).await, 75);
    }
}
