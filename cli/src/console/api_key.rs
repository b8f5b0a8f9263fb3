//! The stack's API key value, for `pointflow console --stack NAME` when no
//! key is given: API Gateway's GetApiKey (`GET /apikeys/{id}`,
//! authorized as `apigateway:GET` on the key), signed with the operator's
//! credentials by the client's own SigV4 signer for service `apigateway`.
//! One call does not justify the API Gateway SDK.

use std::time::Duration;

use crate::client::signing::{Signer, SigningError};

/// The service name the API Gateway management API's signatures are scoped to.
const SERVICE: &str = "apigateway";

/// The key's value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key id {0:?} is not an API Gateway key id (letters and digits)")]
    BadId(String),
    #[error("no AWS region configured (AWS_REGION or the profile's region)")]
    NoRegion,
    #[error("no AWS credentials configured")]
    NoCredentials,
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error("reading API key {id}: {detail}")]
    Read { id: String, detail: String },
}

/// Where the management API is: `AWS_ENDPOINT_URL_API_GATEWAY`, else the
/// SDK's endpoint override (`AWS_ENDPOINT_URL`, an emulator), else the
/// region's public endpoint.
fn management_endpoint(sdk: &aws_config::SdkConfig, region: &str) -> String {
    if let Some(url) = std::env::var("AWS_ENDPOINT_URL_API_GATEWAY")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return url.trim_end_matches('/').to_owned();
    }
    if let Some(url) = sdk.endpoint_url() {
        return url.trim_end_matches('/').to_owned();
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://apigateway.{region}.{suffix}")
}

/// The value of API key `id`, read with `sdk`'s region and credentials.
pub async fn fetch_api_key(sdk: &aws_config::SdkConfig, id: &str) -> Result<String, ApiKeyError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiKeyError::BadId(id.to_owned()));
    }
    let region = sdk.region().ok_or(ApiKeyError::NoRegion)?.to_string();
    let provider = sdk.credentials_provider().ok_or(ApiKeyError::NoCredentials)?;
    let endpoint = management_endpoint(sdk, &region);
    let signer = Signer::new(provider, region).for_service(SERVICE);
    let read = |detail: String| ApiKeyError::Read {
        id: id.to_owned(),
        detail,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| read(e.to_string()))?;
    let mut request = http
        .get(format!("{endpoint}/apikeys/{id}?includeValue=true"))
        .header("accept", "application/json")
        .build()
        .map_err(|e| read(e.to_string()))?;
    signer.sign(&mut request).await?;
    let response = http.execute(request).await.map_err(|e| read(e.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| read(e.to_string()))?;
    if !status.is_success() {
        return Err(read(format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    let key: serde_json::Value = serde_json::from_str(&body).map_err(|e| read(e.to_string()))?;
    key.get("value")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| read("the answer has no value (is apigateway:GET on the key allowed?)".into()))
}
