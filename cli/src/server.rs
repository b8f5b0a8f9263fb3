//! `pointflow local serve`: HTTP on loopback, each request turned into the API
//! Gateway proxy event the deployed `ingest-api` receives and answered by the
//! same handler code, like `sam local start-api`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::http::{HeaderMap, Method};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use pointflow::domain::audit::Audit;
use pointflow::services::api::ApiService;
use serde_json::json;
use tokio::net::TcpListener;

use crate::exposure::{check_host, Exposure, HostRefused};
use crate::inflight::{BodyBudget, DEFAULT_BODY_BYTES_IN_FLIGHT};
use crate::uploads::UploadReceiver;

/// API Gateway's own payload limit (REST: 10 MB); the handler enforces the
/// smaller Lambda limit itself and answers 413.
const GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

/// Serves the API on `listener` until `shutdown` resolves, answering only
/// the `Host` headers `exposure` allows; with `console`, the operator
/// console's routes beside it ([`crate::console::routes`]); with `uploads`,
/// also the PUTs of `POST /v1/uploads` ([`crate::uploads`]).
pub async fn serve(
    listener: TcpListener,
    service: ApiService,
    exposure: Exposure,
    console: Option<Router>,
    uploads: Option<UploadReceiver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upload_routes = match uploads {
        // The body streams to disk, so no size limit applies to it.
        Some(receiver) => Router::new()
            .route("/local-uploads/{*key}", put(crate::uploads::receive))
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::new(receiver)),
        None => Router::new(),
    };
    // Only the API's handler, which reads whole bodies, waits for room (an
    // upload streams to disk and is not charged).
    let budget = BodyBudget::new(DEFAULT_BODY_BYTES_IN_FLIGHT);
    let api = Router::new()
        .merge(upload_routes)
        .fallback(handle.layer(middleware::from_fn_with_state(budget, admit_body)))
        .with_state(service);
    let app = match console {
        Some(console) => console.merge(api),
        None => api,
    };
    serve_router(listener, app, exposure, shutdown).await
}

/// Serves `app` on `listener` behind the `Host` guard and API Gateway's
/// body limit, until `shutdown` resolves.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    exposure: Exposure,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let app = app
        .layer(middleware::from_fn(crate::console::refuse_cross_site))
        .layer(DefaultBodyLimit::max(GATEWAY_MAX_BODY))
        .layer(middleware::from_fn_with_state((port, exposure), guard_host));
    // The peer's address reaches the handler, for the audit record.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Holds a request until its body fits beside the bodies being handled
/// ([`BodyBudget`]), and keeps its room until it is answered. A body of
/// unknown length is charged the most it may be.
async fn admit_body(State(budget): State<BodyBudget>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let len = match declared {
        Some(len) => len.min(GATEWAY_MAX_BODY),
        None if request.method() == Method::GET || request.method() == Method::HEAD => 0,
        None => GATEWAY_MAX_BODY,
    };
    let _room = budget.admit(len).await;
    next.run(request).await
}

/// Refuses, before the handler sees it, a request whose `Host` is not this
/// loopback server: 421 Misdirected Request, with the API's JSON error shape.
async fn guard_host(State((port, exposure)): State<(u16, Exposure)>, request: Request, next: Next) -> Response {
    // HTTP/1.1 puts the authority in `Host`; an absolute-form target carries
    // it in the URI instead, and then it is the one to check.
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => match request.headers().get(header::HOST) {
            Some(value) => match value.to_str() {
                Ok(text) => Some(text.to_owned()),
                Err(_) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            },
            None => None,
        },
    };
    match check_host(host.as_deref(), port, exposure) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            let code = match refused {
                HostRefused::Missing => "host_missing",
                HostRefused::Foreign { .. } => "host_not_allowed",
            };
            let body = json!({ "error": { "code": code, "message": refused.to_string() } });
            (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
        }
    }
}

async fn handle(
    State(service): State<ApiService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    // Moved, not copied, when the body arrived in one buffer (a 50,000-item
    // request is ~4.5 MB).
    let event = ingest_api::proxy_event(method, target, headers, Vec::from(body));
    // What API Gateway's request context says on AWS, the local server
    // says itself: the caller is `local`, from the peer's address, under a
    // request id of its own.
    let answer = match ingest_api::to_api_request(event) {
        Ok(mut request) => {
            let audit = Audit::local(Some(peer.to_string()));
            request.caller = Some(audit.caller);
            request.request_id = audit.request_id;
            service.handle(&request).await
        }
        Err(refused) => refused,
    };
    let response = ingest_api::to_gateway_response(answer);
    let status = u16::try_from(response.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match response.body {
        Some(LambdaBody::Text(text)) => Body::from(text),
        Some(LambdaBody::Binary(bytes)) => Body::from(bytes),
        _ => Body::empty(),
    };
    let mut out = (status, body).into_response();
    out.headers_mut().extend(response.headers);
    out
}
