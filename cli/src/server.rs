//! `pointflow local serve`: HTTP on loopback, each request turned into the API
//! Gateway proxy event the deployed `ingest-api` receives and answered by the
//! same handler code, like `sam local start-api`.

use std::future::Future;

use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::http::{HeaderMap, Method};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pointflow::services::api::ApiService;
use tokio::net::TcpListener;

/// API Gateway's own payload limit (REST: 10 MB); the handler enforces the
/// smaller Lambda limit itself and answers 413.
const GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    service: ApiService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(GATEWAY_MAX_BODY))
        .with_state(service);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn handle(
    State(service): State<ApiService>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let event = ingest_api::proxy_event(method, target, headers, body.to_vec());
    let response = ingest_api::handle(&service, event).await;
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
