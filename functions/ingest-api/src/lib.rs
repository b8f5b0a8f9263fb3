//! Translation between API Gateway (REST, payload v1) events and the ingest
//! service. No business rule lives here.

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use pointflow::api::{ApiRequest, ApiResponse};
use pointflow::ingest::IngestService;

/// Reads an API Gateway event into the API's request type. A body that is
/// flagged base64 but isn't comes back as the response to send.
pub fn to_api_request(event: ApiGatewayProxyRequest) -> Result<ApiRequest, ApiResponse> {
    let headers = event
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
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
    Ok(ApiRequest {
        method: event.http_method.as_str().to_owned(),
        path: event.path.unwrap_or_default(),
        headers,
        body,
    })
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

/// Answers one API Gateway event.
pub async fn handle(service: &IngestService, event: ApiGatewayProxyRequest) -> ApiGatewayProxyResponse {
    let response = match to_api_request(event) {
        Ok(request) => service.handle(&request).await,
        Err(response) => response,
    };
    to_gateway_response(response)
}
