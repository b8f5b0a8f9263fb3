//! A loopback HTTP proxy that checks every answer of a real API server
//! (`pointflow local serve`'s runner) against `docs/openapi.yaml` on its
//! way to the client, for tests that talk HTTP through the CLI's client
//! rather than through [`call_api`](crate::lambda::call_api).
//!
//! A violation cannot fail the test from inside the server task, so the
//! proxy records it and passes the answer on unchanged; dropping the proxy
//! fails the test if any was recorded (unless it is already failing).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::openapi::contract;

#[derive(Clone)]
struct Forwarding {
    upstream: String,
    client: reqwest::Client,
    answers: Arc<AtomicUsize>,
    violations: Arc<Mutex<Vec<String>>>,
}

/// The proxy; its [`base_url`](CheckingProxy::base_url) stands in for the
/// server's.
pub struct CheckingProxy {
    base_url: String,
    answers: Arc<AtomicUsize>,
    violations: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl CheckingProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let base_url = format!("http://{}", listener.local_addr().expect("the proxy's address"));
        let forwarding = Forwarding {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            answers: Arc::default(),
            violations: Arc::default(),
        };
        let (answers, violations) = (forwarding.answers.clone(), forwarding.violations.clone());
        let app = Router::new().fallback(forward).with_state(forwarding);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the proxy serves");
        });
        CheckingProxy {
            base_url,
            answers,
            violations,
            task,
        }
    }

    /// Where clients should send their requests.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Answers checked so far.
    pub fn answers(&self) -> usize {
        self.answers.load(Ordering::SeqCst)
    }

    /// Every answer that broke the document so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("violations lock").clone()
    }
}

impl Drop for CheckingProxy {
    fn drop(&mut self) {
        self.task.abort();
        let violations = self.violations();
        if !std::thread::panicking() {
            assert!(
                violations.is_empty(),
                "answers that break docs/openapi.yaml:\n{}",
                violations.join("\n")
            );
        }
    }
}

/// Forwards one request and checks the answer.
async fn forward(
    State(forwarding): State<Forwarding>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = forwarding
        .client
        .request(method.clone(), format!("{}{target}", forwarding.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    };
    let pairs: Vec<(String, String)> = answer_headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let problems = match serde_json::from_slice::<Value>(&bytes) {
        Ok(json) => contract()
            .check(method.as_str(), uri.path(), status.as_u16(), &pairs, &json)
            .err()
            .unwrap_or_default(),
        Err(e) => vec![format!("the body is not JSON: {e}")],
    };
    forwarding.answers.fetch_add(1, Ordering::SeqCst);
    if !problems.is_empty() {
        forwarding.violations.lock().expect("violations lock").push(format!(
            "{method} {target} -> {status}: {} (body {})",
            problems.join("; "),
            String::from_utf8_lossy(&bytes)
        ));
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
