//! The operator console: one web page (`/console/`, plain HTML, JavaScript
//! and CSS compiled into the binary) and the few JSON endpoints it needs
//! beside the HTTP API (`/console/api/...`: the dead-letter queues, a file
//! job's error report, dropping a file for import).
//!
//! The same page and endpoints are served by `pointflow local serve` over
//! its own backend, and by `pointflow console` on the operator's machine
//! against a deployed stack, where `/v1/...` is forwarded to the stack's API
//! signed with the operator's credentials. Either way the server listens on
//! loopback and checks `Host` ([`crate::exposure`]); the browser never holds
//! a credential.

mod api;
mod api_key;
mod assets;
mod stack;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use pointflow::domain::JobId;
use pointflow::ports::{JobStore, WorkQueue};
use serde::Serialize;

use crate::backend::{ImportSide, LocalBackend};
use crate::client::api::ApiClient;
use crate::settings::{StackSettings, IMPORT_DLQ_NAME};

pub use api::{ConsoleError, DLQ_LIST_MAX, DROP_PREFIX, REPORT_MAX_LINES, UPLOAD_MAX_BYTES};
pub use api_key::{fetch_api_key, ApiKeyError};
pub use assets::CONTENT_SECURITY_POLICY;
pub use stack::{serve_console, StackResources};

/// What `GET /console/api/info` answers: where the console's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// `embedded` (SQLite) or `aws`.
    pub backend: &'static str,
    /// The deployed stack's name, for `pointflow console --stack`.
    pub stack: Option<String>,
    /// The API the page's `/v1` calls reach: `local`, or the upstream URL.
    pub api: String,
    /// This binary's version.
    pub version: &'static str,
}

/// A queue and its dead-letter queue: what a redrive reads and sends to.
#[derive(Clone)]
pub struct QueuePair {
    pub queue: Arc<dyn WorkQueue>,
    pub dlq: Arc<dyn WorkQueue>,
}

/// Where the report endpoint finds a job's source file.
#[derive(Clone)]
pub enum JobLookup {
    /// The job store itself (the local server's backend).
    Store(Arc<dyn JobStore>),
    /// The API (`GET /v1/jobs/{job_id}`), for a deployed stack.
    Api(ApiClient),
}

impl JobLookup {
    /// The job's `source` (`s3://bucket/key` for a file job), `Ok(None)`
    /// when there is no such job.
    async fn source(&self, job_id: JobId) -> Result<Option<Option<String>>, ConsoleError> {
        match self {
            JobLookup::Store(jobs) => jobs
                .get_job(job_id)
                .await
                .map(|job| job.map(|job| job.source))
                .map_err(|e| ConsoleError::backend("reading the job", &e)),
            JobLookup::Api(client) => match client.job(&job_id.to_string()).await {
                Ok(view) => Ok(Some(view.source)),
                Err(e) if e.refused_status() == Some(404) => Ok(None),
                Err(e) => Err(ConsoleError::backend("reading the job through the API", &e)),
            },
        }
    }
}

/// Everything the console's endpoints work on (cheap to clone).
#[derive(Clone)]
pub struct Console {
    inner: Arc<Parts>,
}

/// The console's parts, as a backend provides them; a part a backend lacks
/// makes its endpoint answer `404 not_configured`.
pub struct Parts {
    pub info: Info,
    /// The accrual queue and its DLQ.
    pub accruals: Option<QueuePair>,
    /// The import queue and its DLQ.
    pub imports: Option<QueuePair>,
    /// The import bucket: where files are dropped and reports read.
    pub files: Option<ImportSide>,
    pub jobs: JobLookup,
    /// The API `/v1/...` is forwarded to (`pointflow console`); `None`
    /// when the server answers the API itself.
    pub upstream: Option<ApiClient>,
}

impl Console {
    /// A console over these parts.
    pub fn new(parts: Parts) -> Self {
        Console { inner: Arc::new(parts) }
    }

    /// The console of `pointflow local serve`: its own backend's queues,
    /// bucket and job store.
    pub fn local(backend: &LocalBackend, settings: &StackSettings) -> Self {
        let imports = match (&backend.embedded, &backend.import) {
            // The embedded import DLQ is a queue of the same database, by name.
            (Some(store), Some(import)) => Some(QueuePair {
                queue: import.queue.clone(),
                dlq: Arc::new(store.queue(IMPORT_DLQ_NAME, settings.import_visibility_timeout, None)),
            }),
            _ => None,
        };
        Console::new(Parts {
            info: Info {
                backend: if backend.embedded.is_some() { "embedded" } else { "aws" },
                stack: None,
                api: "local".to_owned(),
                version: env!("CARGO_PKG_VERSION"),
            },
            accruals: Some(QueuePair {
                queue: backend.queue.clone(),
                dlq: backend.dlq.clone(),
            }),
            imports,
            files: backend.import.clone(),
            jobs: JobLookup::Store(backend.jobs.clone()),
            upstream: None,
        })
    }

    fn parts(&self) -> &Parts {
        &self.inner
    }
}

/// The console's routes: the page's files and `/console/api/...`, plus
/// `/` redirecting to the page. Anything else falls through to the router
/// these are merged into (the API, or the upstream proxy).
pub fn routes(console: Console) -> Router {
    let mut router = Router::new()
        .route("/", get(assets::to_console))
        .route("/console", get(assets::to_console))
        .route("/console/", get(assets::index))
        .route("/console/app.js", get(assets::script))
        .route("/console/app.css", get(assets::style))
        .route("/console/api/info", get(api::info))
        .route("/console/api/dlq", get(api::dlq_list))
        .route("/console/api/dlq/redrive", post(api::dlq_redrive))
        .route("/console/api/jobs/{job_id}/report", get(api::report))
        .route(
            "/console/api/imports",
            // A file is bigger than an API request: its own limit.
            post(api::import).layer(DefaultBodyLimit::max(UPLOAD_MAX_BYTES)),
        )
        .route("/console/{*rest}", any(api::not_found));
    if console.parts().upstream.is_some() {
        router = router.route("/v1/{*rest}", any(api::forward));
    }
    router
        .route_layer(middleware::from_fn(same_origin_changes_only))
        .with_state(console)
}

/// Why a request was refused as cross-site: any call of the console's
/// endpoints or of `/v1` (even a read makes the console act: a DLQ look
/// receives messages, a forwarded read is signed), and any change. The
/// page's own files may be opened from a link on another site.
fn cross_site(method: &Method, path: &str, headers: &axum::http::HeaderMap) -> Option<String> {
    let call = path.starts_with("/console/api/") || path.starts_with("/v1/");
    if !call && matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    // Browsers say where a request comes from; a client that is not a
    // browser (curl, the CLI) sends neither header and is not refused.
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some(format!(
                "Sec-Fetch-Site is {}",
                String::from_utf8_lossy(site.as_bytes())
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes()).unwrap_or_default();
        let own = [b"http://".as_slice(), host].concat();
        if !origin.as_bytes().eq_ignore_ascii_case(&own) {
            return Some(format!("Origin is {}", String::from_utf8_lossy(origin.as_bytes())));
        }
    }
    None
}

/// Refuses a call (a redrive, a drop, a DLQ look, any `/v1` call) or a
/// change when a browser says it comes from another site: the
/// `Host` guard stops DNS rebinding, not a page elsewhere posting to
/// `127.0.0.1` (cross-site request forgery). The console's own page is
/// same-origin.
async fn same_origin_changes_only(request: Request, next: Next) -> Response {
    match cross_site(request.method(), request.uri().path(), request.headers()) {
        None => next.run(request).await,
        Some(why) => ConsoleError::Forbidden {
            code: "cross_site_request",
            message: format!(
                "refused: a page of another site asked for {} {} ({why}); use the console's own page",
                request.method(),
                request.uri().path()
            ),
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn calls_and_changes_from_another_site_are_refused_the_page_and_non_browsers_are_not() {
        let own = [("host", "127.0.0.1:3001"), ("origin", "http://127.0.0.1:3001")];
        let api = "/console/api/dlq/redrive";
        assert_eq!(cross_site(&Method::POST, api, &headers(&own)), None);
        assert_eq!(
            cross_site(&Method::POST, api, &headers(&[("host", "127.0.0.1:3001")])),
            None
        );
        let same = [("host", "localhost:3001"), ("sec-fetch-site", "same-origin")];
        assert_eq!(cross_site(&Method::POST, api, &headers(&same)), None);
        assert_eq!(cross_site(&Method::GET, "/v1/jobs", &headers(&same)), None);
        for foreign in [
            headers(&[("host", "127.0.0.1:3001"), ("origin", "https://evil.example")]),
            headers(&[("host", "127.0.0.1:3001"), ("origin", "http://127.0.0.1:3002")]),
            headers(&[("host", "127.0.0.1:3001"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:3001"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:3001"), ("sec-fetch-site", "same-site")]),
        ] {
            for path in [api, "/console/api/imports", "/v1/jobs/x/cancel", "/console/"] {
                assert!(
                    cross_site(&Method::POST, path, &foreign).is_some(),
                    "{path} {foreign:?}"
                );
            }
            for path in ["/console/api/dlq", "/v1/jobs"] {
                assert!(cross_site(&Method::GET, path, &foreign).is_some(), "{path} {foreign:?}");
            }
            for path in ["/console/", "/console/app.js", "/"] {
                assert_eq!(
                    cross_site(&Method::GET, path, &foreign),
                    None,
                    "the page opened from a link"
                );
            }
        }
    }
}
