//! SigV4 signing of the API client's requests, for a stack whose `AuthMode`
//! is `iam`: the AWS SDK's own signer (`aws-sigv4`) over credentials from
//! the standard AWS credential chain, service `execute-api`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;

/// The service name API Gateway's `execute-api` signatures are scoped to.
pub const SERVICE: &str = "execute-api";

/// Credentials this close to their expiry are fetched again.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "no AWS credentials to sign requests with ({detail}); the client looks where the AWS CLI does: \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/config (SSO, credential_process, \
         assumed roles), web identity, a container or instance role"
    )]
    NoCredentials { detail: String },
    #[error(
        "no AWS region to sign for: endpoint {endpoint} does not name one \
         (https://<api-id>.execute-api.<region>.amazonaws.com/<stage>); set AWS_REGION or the profile's region"
    )]
    NoRegion { endpoint: String },
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

/// The region of an API Gateway endpoint, from its host
/// `<api-id>.execute-api.<region>.amazonaws.com[.cn]`; `None` for any other
/// host (a custom domain, a local server).
pub fn region_of_endpoint(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let mut labels = host.split('.');
    let (_api, service, region) = (labels.next()?, labels.next()?, labels.next()?);
    let rest: Vec<&str> = labels.collect();
    let aws = rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"];
    (service == SERVICE && aws && !region.is_empty()).then(|| region.to_owned())
}

/// When the client signs its requests (`--sign`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SignMode {
    /// Sign unless the endpoint is on loopback (`pointflow local serve`,
    /// which takes unsigned requests).
    #[default]
    Auto,
    /// Always sign (a loopback proxy in front of a deployed stack).
    Always,
    /// Never sign (a stack with `AuthMode` api-key).
    Never,
}

impl SignMode {
    /// Whether requests to `endpoint` are signed in this mode.
    pub fn signs(self, endpoint: &str) -> bool {
        match self {
            SignMode::Always => true,
            SignMode::Never => false,
            SignMode::Auto => !is_loopback_endpoint(endpoint),
        }
    }
}

/// Whether `endpoint`'s host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback_endpoint(endpoint: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Signs requests with SigV4 for one region.
#[derive(Clone)]
pub struct Signer {
    provider: SharedCredentialsProvider,
    region: String,
    /// The service signatures are scoped to ([`SERVICE`] unless set).
    service: &'static str,
    cached: Arc<Mutex<Option<Credentials>>>,
    /// Signing time, fixed for reproducible signatures (tests); else now.
    fixed_time: Option<SystemTime>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with these credentials for `region`.
    pub fn new(provider: SharedCredentialsProvider, region: impl Into<String>) -> Self {
        Signer {
            provider,
            region: region.into(),
            service: SERVICE,
            cached: Arc::new(Mutex::new(None)),
            fixed_time: None,
        }
    }

    /// The standard AWS credential chain, and the region of `endpoint`'s
    /// host, else the configured one (`AWS_REGION`, the profile). The
    /// credentials are looked up once here, so a missing one is reported
    /// before any request is sent.
    pub async fn from_environment(endpoint: &str) -> Result<Self, SigningError> {
        let from_endpoint = region_of_endpoint(endpoint);
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // A region the endpoint names is final: no need to look further
        // (the chain's last resort is the instance metadata service).
        if let Some(region) = &from_endpoint {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        let region = from_endpoint
            .or_else(|| config.region().map(|r| r.to_string()))
            .ok_or_else(|| SigningError::NoRegion {
                endpoint: endpoint.to_owned(),
            })?;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| SigningError::NoCredentials {
                detail: "no credentials provider is configured".into(),
            })?;
        let signer = Signer::new(provider, region);
        signer.credentials().await?;
        Ok(signer)
    }

    /// Signs at `time` instead of now: the same request then gets the same
    /// signature (tests, reproducing a signature).
    pub fn at_fixed_time(mut self, time: SystemTime) -> Self {
        self.fixed_time = Some(time);
        self
    }

    /// Signs for `service` instead of `execute-api` (`apigateway` for the
    /// API Gateway management API).
    pub fn for_service(mut self, service: &'static str) -> Self {
        self.service = service;
        self
    }

    /// The region signatures are scoped to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credentials, fetched again when they are about to expire.
    async fn credentials(&self) -> Result<Credentials, SigningError> {
        let mut cached = self.cached.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(credentials) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| SigningError::NoCredentials {
                detail: aws_sdk_error_text(&e),
            })?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// Adds the SigV4 headers (`authorization`, `x-amz-date`, and
    /// `x-amz-security-token` for temporary credentials) to `request`,
    /// signing its method, URL, headers and body.
    pub async fn sign(&self, request: &mut reqwest::Request) -> Result<(), SigningError> {
        let credentials = self.credentials().await?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(self.fixed_time.unwrap_or_else(SystemTime::now))
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into();
        let body = match request.body() {
            None => &[][..],
            Some(body) => body
                .as_bytes()
                .ok_or_else(|| SigningError::Sign("a streamed body cannot be signed".into()))?,
        };
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                value
                    .to_str()
                    .map(|v| (name.as_str(), v))
                    .map_err(|_| SigningError::Sign(format!("header {name} is not visible ASCII")))
            })
            .collect::<Result<_, _>>()?;
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SigningError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into_parts();
        let (headers, _query) = instructions.into_parts();
        for header in headers {
            let mut value = HeaderValue::from_str(header.value()).map_err(|e| SigningError::Sign(e.to_string()))?;
            value.set_sensitive(header.sensitive());
            request
                .headers_mut()
                .insert(HeaderName::from_static(header.name()), value);
        }
        Ok(())
    }
}

/// An SDK error with its sources, for a message a person can act on.
fn aws_sdk_error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::api::ApiClient;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use serde_json::json;
    use std::sync::Mutex as StdMutex;

    /// A request as it arrived at the listener.
    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A loopback HTTP listener that records every request and answers
    /// `{}` (201 to a POST, 200 otherwise). Returns its URL.
    async fn recording_listener() -> (String, Arc<StdMutex<Vec<Recorded>>>) {
        let seen: Arc<StdMutex<Vec<Recorded>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(Recorded {
                    method: method.to_string(),
                    target: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect(),
                    body: body.to_vec(),
                });
                let status = if method == Method::POST {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (status, axum::Json(json!({})))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    /// 2026-12-07T04:00:00Z.
    fn signing_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_616_000)
    }

    fn credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        )
    }

    fn signer(credentials: Credentials) -> Signer {
        Signer::new(SharedCredentialsProvider::new(credentials), "eu-west-1").at_fixed_time(signing_time())
    }

    /// The `authorization` value aws-sigv4 computes for the request as it
    /// was received: its method, host and target, the headers it says it
    /// signed, its body.
    fn recompute(recorded: &Recorded, credentials: Credentials) -> String {
        let authorization = recorded.header("authorization").unwrap();
        let signed: Vec<&str> = authorization
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .split(';')
            .collect();
        // The signer adds these two itself, from the time and the credentials.
        let headers = recorded
            .headers
            .iter()
            .filter(|(k, _)| signed.contains(&k.as_str()) && k != "x-amz-date" && k != "x-amz-security-token")
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let url = format!("http://{}{}", recorded.header("host").unwrap(), recorded.target);
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name(SERVICE)
            .time(signing_time())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable =
            SignableRequest::new(&recorded.method, url, headers, SignableBody::Bytes(&recorded.body)).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let authorization = instructions
            .headers()
            .find(|(k, _)| *k == "authorization")
            .map(|(_, v)| v.to_owned());
        authorization.unwrap()
    }

    /// SigV4 as its specification writes it, independent of aws-sigv4
    /// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>):
    /// the signature a verifier such as API Gateway computes for the request
    /// as received, for `signed` headers, at `amz_date`.
    fn signature_by_the_spec(recorded: &Recorded, signed: &[&str], secret: &str, amz_date: &str) -> String {
        use sha2::{Digest, Sha256};
        fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut block = [0u8; 64];
            if key.len() > 64 {
                block[..32].copy_from_slice(&Sha256::digest(key));
            } else {
                block[..key.len()].copy_from_slice(key);
            }
            let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
            let inner = Sha256::new().chain_update(pad(0x36)).chain_update(data).finalize();
            Sha256::new()
                .chain_update(pad(0x5c))
                .chain_update(inner)
                .finalize()
                .to_vec()
        }
        // RFC 3986 unreserved characters stay, every other byte is %XX.
        fn encode(text: &str) -> String {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        }
        let (path, query) = recorded.target.split_once('?').unwrap_or((&recorded.target, ""));
        // Services other than S3 encode each path segment (as sent) again.
        let canonical_uri = path.split('/').map(encode).collect::<Vec<_>>().join("/");
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (encode(&k), encode(&v)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_headers: String = signed
            .iter()
            .map(|name| format!("{name}:{}\n", recorded.header(name).unwrap().trim()))
            .collect();
        let canonical_request = format!(
            "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
            recorded.method,
            signed.join(";"),
            hex::encode(Sha256::digest(&recorded.body))
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/eu-west-1/execute-api/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        for part in ["eu-west-1", "execute-api", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        hex::encode(hmac(&key, string_to_sign.as_bytes()))
    }

    #[tokio::test]
    async fn a_signed_request_carries_a_sigv4_authorization_that_verifies() {
        let (url, seen) = recording_listener().await;
        let client = ApiClient::new(&url, Some("k-123".into()), Duration::from_secs(5))
            .unwrap()
            .with_signer(signer(credentials(None)));
        client
            .use_points("m-1", &json!({"use_id": "u-1", "point_type": "P", "amount": 5}))
            .await
            .unwrap();
        client.history("m 1", Some("P"), Some(10), Some("c/1=")).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let scope = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/eu-west-1/execute-api/aws4_request, ";
        for (recorded, signed_headers) in seen
            .iter()
            .zip(["content-type;host;x-amz-date;x-api-key", "host;x-amz-date;x-api-key"])
        {
            let authorization = recorded.header("authorization").unwrap();
            assert!(authorization.starts_with(scope), "{authorization}");
            assert!(
                authorization.contains(&format!("SignedHeaders={signed_headers}, Signature=")),
                "{authorization}"
            );
            assert_eq!(recorded.header("x-amz-date"), Some("20261207T040000Z"));
            assert_eq!(recorded.header("x-api-key"), Some("k-123"));
            assert_eq!(recorded.header("x-amz-security-token"), None);
            // What arrived is what was signed: the crate, given the
            // received request, computes the same signature ...
            assert_eq!(recompute(recorded, credentials(None)), authorization, "{recorded:?}");
            // ... and another secret would not.
            let other = Credentials::new("AKIDEXAMPLE", "another-secret", None, None, "test");
            assert_ne!(recompute(recorded, other), authorization);
            // And the specification's own steps, written out here, agree.
            let signed: Vec<&str> = signed_headers.split(';').collect();
            let expected = signature_by_the_spec(
                recorded,
                &signed,
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20261207T040000Z",
            );
            assert!(
                authorization.ends_with(&format!("Signature={expected}")),
                "{authorization} vs {expected}"
            );
        }
        assert_eq!(
            seen[1].target,
            "/v1/members/m%201/ledger?point_type=P&limit=10&cursor=c%2F1%3D"
        );
    }

    #[tokio::test]
    async fn temporary_credentials_sign_their_session_token_and_signatures_are_stable() {
        let (url, seen) = recording_listener().await;
        let client = ApiClient::new(&url, None, Duration::from_secs(5))
            .unwrap()
            .with_signer(signer(credentials(Some("session-token-1"))));
        client.balances("m-1").await.unwrap();
        client.balances("m-1").await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let authorization = seen[0].header("authorization").unwrap();
        assert!(
            authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token, "),
            "{authorization}"
        );
        assert_eq!(seen[0].header("x-amz-security-token"), Some("session-token-1"));
        assert_eq!(seen[0].header("x-api-key"), None);
        // Same credentials, time and request: the same signature.
        assert_eq!(seen[1].header("authorization"), Some(authorization));
        assert_eq!(recompute(&seen[0], credentials(Some("session-token-1"))), authorization);
    }

    #[tokio::test]
    async fn without_a_signer_requests_go_unsigned_with_their_key() {
        let (url, seen) = recording_listener().await;
        let client = ApiClient::new(&url, Some("k-123".into()), Duration::from_secs(5)).unwrap();
        client.balances("m-1").await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].header("authorization"), None);
        assert_eq!(seen[0].header("x-amz-date"), None);
        assert_eq!(seen[0].header("x-api-key"), Some("k-123"));
    }

    #[test]
    fn auto_signs_everything_but_loopback() {
        let deployed = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod";
        for local in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://127.1.2.3:8080/",
            "http://[::1]:3000",
        ] {
            assert!(!SignMode::Auto.signs(local), "{local}");
            assert!(SignMode::Always.signs(local), "{local}");
        }
        for remote in [deployed, "https://api.example.com/prod", "http://10.0.0.1:3000"] {
            assert!(SignMode::Auto.signs(remote), "{remote}");
            assert!(!SignMode::Never.signs(remote), "{remote}");
        }
    }

    #[test]
    fn the_region_comes_from_an_execute_api_host() {
        let region = |e: &str| region_of_endpoint(e);
        assert_eq!(
            region("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"),
            Some("eu-west-1".into())
        );
        assert_eq!(
            region("https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/prod/"),
            Some("cn-north-1".into())
        );
        assert_eq!(region("https://api.example.com/prod"), None);
        assert_eq!(region("http://127.0.0.1:3000"), None);
        assert_eq!(region("https://a.execute-api.eu-west-1.example.com/prod"), None);
        assert_eq!(region("not a url"), None);
    }
}
