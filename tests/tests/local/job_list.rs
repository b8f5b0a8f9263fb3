//! `GET /v1/jobs` at the HTTP level: API Gateway events through the ingest
//! handler and the router (in-memory backend), the way the Lambda serves it.

use std::time::Duration;

use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::worker::Worker;
use pointflow_tests::backend;
use pointflow_tests::lambda::{api_event, call_api, drain, post_job, response_json};
use serde_json::{json, Value};

fn get(target: &str) -> aws_lambda_events::apigw::ApiGatewayProxyRequest {
    api_event("GET", target, &[], None)
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Three jobs submitted one after another, the first applied: the listing
/// pages newest first with the cursor in the query string, filters by
/// status and source, shows each job as `GET /v1/jobs/{id}` does, refuses
/// a repeated parameter naming it, and answers another method with 405.
#[tokio::test]
async fn jobs_are_listed_through_the_handler_and_the_router() {
    let b = backend::memory(Duration::from_secs(30), 3);
    let api = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    let mut submitted = Vec::new();
    for n in 0..3 {
        let body =
            json!({"accruals": [{"accrual_id": format!("jl-{n}"), "member_id": "m", "point_type": "P", "amount": 5}]});
        let (status, accepted) = call_api(&api, post_job(&body, None)).await;
        assert_eq!(status, 202, "{accepted}");
        submitted.push(accepted["job_id"].as_str().unwrap().to_owned());
        if n == 0 {
            let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
            drain(b.queue.as_ref(), &worker).await;
        }
        // Creation times a millisecond apart at least: the order is theirs.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();

    let (status, first) = call_api(&api, get("/v1/jobs?limit=2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), newest_first[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = call_api(&api, get(&format!("/v1/jobs?limit=2&cursor={cursor}"))).await;
    assert_eq!(ids(&second), newest_first[2..]);
    assert!(second.get("next_cursor").is_none(), "{second}");

    let (_, one) = call_api(&api, get(&format!("/v1/jobs/{}", submitted[0]))).await;
    let (_, completed) = call_api(&api, get("/v1/jobs?status=completed&source=api")).await;
    assert_eq!(completed["jobs"], json!([one]), "the same view as GET /v1/jobs/{{id}}");
    let (_, queued) = call_api(&api, get("/v1/jobs?status=queued")).await;
    assert_eq!(ids(&queued), newest_first[..2]);
    let (_, files) = call_api(&api, get("/v1/jobs?source=file")).await;
    assert_eq!(files, json!({"jobs": []}));

    let (status, refused) = call_api(&api, get("/v1/jobs?status=queued&status=running")).await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "invalid_query_parameter");
    assert_eq!(
        refused["error"]["message"],
        "query parameter status is given more than once"
    );

    let response = ingest_api::handle(&api, api_event("DELETE", "/v1/jobs", &[], None)).await;
    assert_eq!(response_json(&response).0, 405);
    assert_eq!(
        response.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
}
