//! Driving the real Lambda handlers the way AWS would.

use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, Method};
use aws_lambda_events::sqs::SqsEvent;
use pointflow::ports::{ReceivedMessage, WorkQueue};
use pointflow::services::api::ApiService;
use pointflow::services::worker::Worker;
use serde_json::Value;

/// Path of a file in `events/`.
pub fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events").join(name)
}

/// Parses a sample event from `events/`.
pub fn load_event<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let text = std::fs::read_to_string(event_path(name)).unwrap_or_else(|e| panic!("read events/{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{name} is not a valid event: {e}"))
}

/// An API Gateway REST (v1) event, as API Gateway would send it.
pub fn api_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<String>) -> ApiGatewayProxyRequest {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            aws_lambda_events::http::HeaderName::try_from(*name).expect("header name"),
            HeaderValue::try_from(*value).expect("header value"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    ingest_api::proxy_event(method, path, map, body.map(String::into_bytes).unwrap_or_default())
}

/// A `POST /v1/jobs` event with a JSON body and an optional idempotency key.
pub fn post_job(body: &Value, key: Option<&str>) -> ApiGatewayProxyRequest {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    api_event("POST", "/v1/jobs", &headers, Some(body.to_string()))
}

/// Status and parsed JSON body of a handler response.
pub fn response_json(response: &ApiGatewayProxyResponse) -> (i64, Value) {
    let body = match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).expect("JSON body"),
        Some(Body::Binary(bytes)) => serde_json::from_slice(bytes).expect("JSON body"),
        _ => Value::Null,
    };
    (response.status_code, body)
}

/// Calls the ingest handler and returns status and body, after checking
/// that the answer is one `docs/openapi.yaml` documents for the route
/// (status, body schema, headers): every test that calls the API through
/// here also tests the document.
pub async fn call_api(service: &ApiService, event: ApiGatewayProxyRequest) -> (i64, Value) {
    let method = event.http_method.as_str().to_owned();
    let path = event.path.clone().unwrap_or_default();
    let response = ingest_api::handle(service, event).await;
    checked(&method, &path, &response)
}

/// Status and body of `response` to `method path`, once
/// [`openapi::assert_conforms`](crate::openapi::assert_conforms) passed it.
fn checked(method: &str, path: &str, response: &ApiGatewayProxyResponse) -> (i64, Value) {
    let (status, body) = response_json(response);
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let status_code = u16::try_from(status).expect("an HTTP status");
    crate::openapi::assert_conforms(method, path, status_code, &headers, &body);
    (status, body)
}

/// Calls the ingest handler as a deployed stack does (refusing a request
/// whose context lacks the identity `mode` requires) and returns status
/// and body, checked against `docs/openapi.yaml` like [`call_api`]'s.
pub async fn call_api_authenticated(
    service: &ApiService,
    mode: pointflow::domain::capabilities::AuthMode,
    event: ApiGatewayProxyRequest,
) -> (i64, Value) {
    let method = event.http_method.as_str().to_owned();
    let path = event.path.clone().unwrap_or_default();
    let response = ingest_api::handle_authenticated(service, mode, event).await;
    checked(&method, &path, &response)
}

/// An SQS event as Lambda's event source mapping builds it.
pub fn sqs_event(messages: &[ReceivedMessage]) -> SqsEvent {
    worker::to_sqs_event(messages)
}

/// What draining a queue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Messages handed to the worker (redeliveries included).
    pub deliveries: usize,
    /// Messages the worker reported failed.
    pub failures: usize,
}

/// Plays Lambda's event source mapping until the queue stays empty: receive
/// up to 10, invoke the worker handler, delete what succeeded.
pub async fn drain(queue: &dyn WorkQueue, worker: &Worker) -> Drained {
    let mut drained = Drained::default();
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let messages = queue
            .receive_messages(10, Duration::from_secs(1))
            .await
            .expect("receive");
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        let (_, failed) = pointflow_cli::poller::invoke_and_acknowledge(queue, worker, &messages)
            .await
            .expect("delete");
        drained.deliveries += messages.len();
        drained.failures += failed;
    }
    drained
}
