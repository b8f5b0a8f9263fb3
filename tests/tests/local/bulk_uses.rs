//! Bulk uses through jobs: `POST /v1/jobs` with `{"uses": [...]}` is
//! validated like single uses, queued, and applied by the worker exactly
//! once per `use_id`; refusals are counted on the job. On the local
//! backends (moto's case: `tests/emulator/bulk_uses.rs`).

use std::time::Duration;

use pointflow::domain::{JobId, JobStatus};
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::worker::Worker;
use pointflow_tests::backend;
use pointflow_tests::lambda::{call_api, post_job};
use pointflow_tests::pipeline::{available, bulk_uses_apply_once_and_count_refusals, three_members_with_100, use_item};
use serde_json::json;
use time::OffsetDateTime;

#[tokio::test]
async fn bulk_uses_on_memory() {
    bulk_uses_apply_once_and_count_refusals(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn bulk_uses_on_sqlite() {
    bulk_uses_apply_once_and_count_refusals(backend::sqlite(Duration::from_millis(300), 3)).await;
}

/// A bad item is named by index and field, and nothing is queued; a body
/// with both lists, or neither, is malformed.
#[tokio::test]
async fn bad_bulk_uses_are_named_and_queue_nothing() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let ingest = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
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
    use pointflow::domain::message::QueueMessage;
    use pointflow::domain::packing::{pack_uses, PackingLimits};
    use pointflow::domain::uses::Use;
    use pointflow::services::worker::IncomingMessage;

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
    let messages: Vec<QueueMessage> = pack_uses(job_id, uses, PackingLimits::default());
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
            audit: None,
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
        .apply_use(&messages[0].uses()[0], OffsetDateTime::now_utc())
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
