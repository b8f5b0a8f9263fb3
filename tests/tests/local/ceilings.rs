//! The ceilings on a job of accruals (amount per accrual, points per job,
//! accruals per job): refused with 422 before the job is recorded or
//! anything queued.

use std::time::Duration;

use pointflow::domain::limits::Ceilings;
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{call_api, post_job};
use serde_json::{json, Value};

const SMALL: Ceilings = Ceilings {
    max_amount_per_accrual: 100,
    max_points_per_job: 250,
    max_accruals_per_job: 3,
};

fn service() -> (Backend, ApiService) {
    let b = backend::memory(Duration::from_secs(30), 3);
    let settings = ApiSettings {
        ceilings: SMALL,
        ..ApiSettings::default()
    };
    let s = ApiService::new(b.jobs.clone(), b.ledger.clone(), b.queue.clone(), settings);
    (b, s)
}

fn accruals(amounts: &[u64]) -> Value {
    let items: Vec<Value> = amounts
        .iter()
        .enumerate()
        .map(
            |(i, amount)| json!({"accrual_id": format!("a{i}"), "member_id": "m", "point_type": "P", "amount": amount}),
        )
        .collect();
    json!({ "accruals": items })
}

async fn nothing_queued(b: &Backend) {
    assert_eq!(b.queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
}

#[tokio::test]
async fn an_accrual_over_its_ceiling_is_a_422_naming_item_and_field() {
    let (b, s) = service();
    // Item 1 repeats item 0 exactly and is collapsed: the index named is
    // still the offending item's position in the request.
    let mut body = accruals(&[1, 1, 101]);
    body["accruals"][1] = body["accruals"][0].clone();
    let (status, reply) = call_api(&s, post_job(&body, Some("k-amount"))).await;
    assert_eq!(status, 422, "{reply}");
    let error = &reply["error"];
    assert_eq!(error["code"], "amount_over_ceiling");
    assert_eq!(
        (error["index"].as_u64(), error["field"].as_str()),
        (Some(2), Some("amount"))
    );
    assert_eq!(
        (error["limit"].as_u64(), error["value"].as_u64()),
        (Some(100), Some(101))
    );
    assert!(error["message"].as_str().unwrap().contains("item 2"), "{reply}");
    nothing_queued(&b).await;
    // No job was recorded under the key: the corrected request is a new job,
    // not a reuse of the key for a different request.
    let (status, reply) = call_api(&s, post_job(&accruals(&[1, 1, 100]), Some("k-amount"))).await;
    assert_eq!(status, 202, "{reply}");
}

#[tokio::test]
async fn a_job_over_its_points_is_a_422_with_its_total() {
    let (b, s) = service();
    let (status, reply) = call_api(&s, post_job(&accruals(&[100, 100, 51]), None)).await;
    assert_eq!(status, 422, "{reply}");
    let error = &reply["error"];
    assert_eq!(error["code"], "job_points_over_ceiling");
    assert_eq!(
        (error["limit"].as_u64(), error["value"].as_u64()),
        (Some(250), Some(251))
    );
    assert!(error.get("index").is_none(), "{reply}");
    nothing_queued(&b).await;
    let (status, _) = call_api(&s, post_job(&accruals(&[100, 100, 50]), None)).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn a_job_over_its_accruals_is_a_422_with_its_count() {
    let (b, s) = service();
    let (status, reply) = call_api(&s, post_job(&accruals(&[1, 1, 1, 1]), None)).await;
    assert_eq!(status, 422, "{reply}");
    let error = &reply["error"];
    assert_eq!(error["code"], "job_accruals_over_ceiling");
    assert_eq!((error["limit"].as_u64(), error["value"].as_u64()), (Some(3), Some(4)));
    nothing_queued(&b).await;
}

#[tokio::test]
async fn uses_are_not_held_to_the_accrual_ceilings() {
    let (_, s) = service();
    let body = json!({"uses": [{"use_id": "u", "member_id": "m", "point_type": "P", "amount": 1000}]});
    let (status, reply) = call_api(&s, post_job(&body, None)).await;
    assert_eq!(status, 202, "{reply}");
}
