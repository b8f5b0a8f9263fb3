//! The ingest handler refuses, on every route, a request whose API Gateway
//! context lacks the identity the stack's `AuthMode` requires (a route left
//! without authorization), and answers one that carries it. Lambda-shaped
//! events, in-memory backend.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use pointflow::domain::capabilities::{AuthMode, ROUTES};
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{api_event, call_api_authenticated, post_job};
use serde_json::json;

fn service() -> (Backend, ApiService) {
    let b = backend::memory(Duration::from_secs(30), 3);
    let s = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    (b, s)
}

/// Each route's template with its parameters filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "p-1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// An event for every route of the capability table, with a JSON body.
fn every_route() -> Vec<ApiGatewayProxyRequest> {
    ROUTES
        .iter()
        .map(|route| {
            api_event(
                route.method,
                &concrete(route.path),
                &[("content-type", "application/json")],
                (route.method == "POST").then(|| "{}".to_owned()),
            )
        })
        .collect()
}

/// As API Gateway passes a SigV4-signed request IAM allowed.
fn signed(mut event: ApiGatewayProxyRequest) -> ApiGatewayProxyRequest {
    let identity = &mut event.request_context.identity;
    identity.user_arn = Some("arn:aws:iam::123456789012:user/crm-backend".into());
    identity.caller = Some("AIDAEXAMPLEEXAMPLE".into());
    identity.account_id = Some("123456789012".into());
    event
}

/// As API Gateway passes a request with a valid API key.
fn keyed(mut event: ApiGatewayProxyRequest) -> ApiGatewayProxyRequest {
    event.request_context.identity.api_key_id = Some("k1a2b3c4d5".into());
    event
}

fn accruals() -> serde_json::Value {
    json!({"accruals": [{"accrual_id": "a-1", "member_id": "m-1", "point_type": "P", "amount": 5}]})
}

async fn nothing_queued(b: &Backend) {
    assert_eq!(b.queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
}

#[tokio::test]
async fn iam_mode_refuses_every_route_without_an_iam_identity() {
    let (b, s) = service();
    for event in every_route() {
        let what = format!("{} {}", event.http_method, event.path.clone().unwrap_or_default());
        for unsigned in [event.clone(), keyed(event)] {
            let (status, body) = call_api_authenticated(&s, AuthMode::Iam, unsigned).await;
            assert_eq!(status, 403, "{what}: {body}");
            assert_eq!(body["error"]["code"], "missing_iam_identity", "{what}");
            assert!(body["error"]["message"].as_str().unwrap().contains("SigV4"), "{body}");
        }
    }
    // A valid submission without identity queues nothing.
    let (status, _) = call_api_authenticated(&s, AuthMode::Iam, post_job(&accruals(), Some("k-1"))).await;
    assert_eq!(status, 403);
    nothing_queued(&b).await;
}

#[tokio::test]
async fn api_key_mode_refuses_every_route_without_an_api_key_id() {
    let (b, s) = service();
    for event in every_route() {
        let what = format!("{} {}", event.http_method, event.path.clone().unwrap_or_default());
        for unkeyed in [event.clone(), signed(event)] {
            let (status, body) = call_api_authenticated(&s, AuthMode::ApiKey, unkeyed).await;
            assert_eq!(status, 403, "{what}: {body}");
            assert_eq!(body["error"]["code"], "missing_api_key_id", "{what}");
        }
    }
    nothing_queued(&b).await;
}

#[tokio::test]
async fn a_request_with_the_identity_reaches_the_handler() {
    let (b, s) = service();
    // Every route answers something of its own (a 4xx for the empty
    // bodies and unknown ids here), never the 403 of a missing identity.
    for (mode, with_identity) in [
        (
            AuthMode::Iam,
            signed as fn(ApiGatewayProxyRequest) -> ApiGatewayProxyRequest,
        ),
        (AuthMode::ApiKey, keyed),
    ] {
        for event in every_route() {
            let what = format!("{} {}", event.http_method, event.path.clone().unwrap_or_default());
            let (status, body) = call_api_authenticated(&s, mode, with_identity(event)).await;
            assert_ne!(status, 403, "{mode:?} {what}: {body}");
        }
    }
    let (status, body) = call_api_authenticated(&s, AuthMode::Iam, signed(post_job(&accruals(), Some("k-1")))).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = call_api_authenticated(&s, AuthMode::ApiKey, keyed(post_job(&accruals(), Some("k-2")))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(b.queue.receive_messages(10, Duration::ZERO).await.unwrap().len(), 2);
}
