//! Translation between API Gateway (REST, payload v1) events and the ingest
//! service. No business rule lives here.

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::collections::HashMap;

use aws_lambda_events::query_map::QueryMap;
use base64::Engine;
use pointflow::domain::audit::{Caller, GatewayIdentity};
use pointflow::domain::capabilities::{check_caller, AuthMode, CallerContext};
use pointflow::services::api::ApiService;
use pointflow::services::api::{ApiError, ApiRequest, ApiResponse};
use tracing::warn;

/// Reads an API Gateway event into the API's request type. A body that is
/// flagged base64 but isn't comes back as the response to send.
pub fn to_api_request(event: ApiGatewayProxyRequest) -> Result<ApiRequest, ApiResponse> {
    let headers = event
        .headers
        .iter()
        // A value that is not visible ASCII is kept (lossily), not dropped:
        // a garbled `Idempotency-Key` is refused, never taken as absent.
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match event.body {
        None => Vec::new(),
        Some(text) if event.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| {
                ApiResponse::json(
                    400,
                    serde_json::json!({"error": {"code": "malformed_body", "message": "body is flagged base64 but is not valid base64"}}),
                )
            })?,
        Some(text) => text.into_bytes(),
    };
    // The multi-value map keeps a parameter given twice (the single-value
    // map keeps only the last), so the API can refuse it.
    let parameters = if event.multi_value_query_string_parameters.is_empty() {
        &event.query_string_parameters
    } else {
        &event.multi_value_query_string_parameters
    };
    let query = parameters
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    // Who asked: what API Gateway authenticated, as its request context
    // says (a client cannot set these fields through headers or body).
    let identity = &event.request_context.identity;
    let caller = Caller::from_gateway(&GatewayIdentity {
        user_arn: identity.user_arn.clone(),
        caller: identity.caller.clone(),
        account_id: identity.account_id.clone(),
        api_key_id: identity.api_key_id.clone(),
        source_ip: identity.source_ip.clone(),
    });
    Ok(ApiRequest {
        method: event.http_method.as_str().to_owned(),
        path: event.path.unwrap_or_default(),
        query,
        headers,
        body,
        caller: Some(caller),
        request_id: event.request_context.request_id.clone(),
    })
}

/// The proxy event API Gateway (REST, payload v1) sends for a request: for
/// runners and tests that play API Gateway's part. `target` is the path and
/// an optional `?query`, whose parameters arrive decoded, as API Gateway
/// sends them. A body that is not UTF-8 is base64-encoded, as API Gateway
/// does for binary media.
pub fn proxy_event(method: Method, target: &str, headers: HeaderMap, body: Vec<u8>) -> ApiGatewayProxyRequest {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut event = ApiGatewayProxyRequest::default();
    event.http_method = method;
    event.path = Some(path.to_owned());
    event.resource = Some(path.to_owned());
    let mut parameters: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        parameters
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    if !parameters.is_empty() {
        event.query_string_parameters = QueryMap::from(parameters.clone());
        event.multi_value_query_string_parameters = QueryMap::from(parameters);
    }
    event.multi_value_headers = headers.clone();
    event.headers = headers;
    if !body.is_empty() {
        match String::from_utf8(body) {
            Ok(text) => event.body = Some(text),
            Err(e) => {
                event.body = Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                event.is_base64_encoded = true;
            }
        }
    }
    event
}

/// Writes the API's response as an API Gateway response (JSON body).
pub fn to_gateway_response(response: ApiResponse) -> ApiGatewayProxyResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    let mut out = ApiGatewayProxyResponse::default();
    out.status_code = i64::from(response.status);
    out.headers = headers;
    out.body = Some(Body::Text(response.body.to_string()));
    out
}

/// What API Gateway authenticated for this request (its
/// `requestContext.identity`).
pub fn caller_context(event: &ApiGatewayProxyRequest) -> CallerContext<'_> {
    let identity = &event.request_context.identity;
    CallerContext {
        user_arn: identity.user_arn.as_deref(),
        caller: identity.caller.as_deref(),
        api_key_id: identity.api_key_id.as_deref(),
    }
}

/// Answers one API Gateway event of a deployed stack: a request whose
/// context lacks the identity `mode` requires (a route API Gateway let
/// through without authenticating it) is refused `403` before any handler
/// runs.
pub async fn handle_authenticated(
    service: &ApiService,
    mode: AuthMode,
    event: ApiGatewayProxyRequest,
) -> ApiGatewayProxyResponse {
    if let Err(refused) = check_caller(mode, &caller_context(&event)) {
        warn!(
            code = refused.code(),
            mode = mode.name(),
            method = event.http_method.as_str(),
            resource = event.resource.as_deref().unwrap_or(""),
            "request without the caller identity the auth mode requires"
        );
        return to_gateway_response(ApiError::from(refused).to_response());
    }
    handle(service, event).await
}

/// Answers one API Gateway event without looking at who sent it: for the
/// local server (loopback only) and tests; a deployed stack uses
/// [`handle_authenticated`].
pub async fn handle(service: &ApiService, event: ApiGatewayProxyRequest) -> ApiGatewayProxyResponse {
    let response = match to_api_request(event) {
        Ok(request) => service.handle(&request).await,
        Err(response) => response,
    };
    to_gateway_response(response)
}
