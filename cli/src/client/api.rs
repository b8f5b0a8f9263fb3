//! The HTTP client of Pointflow's API: the same calls against `pointflow
//! local serve` and a deployed stack (with its API key, and SigV4-signed
//! with a [`Signer`] when the stack authorizes with IAM), retrying what a
//! retry can fix: 429, 5xx, timeouts and lost connections.

use std::time::Duration;

use pointflow::adapters::retry::Backoff;
use pointflow::services::api::{Accepted, JobList, JobView};
use reqwest::StatusCode;
use serde_json::Value;

use super::signing::{Signer, SigningError};

/// Default endpoint: `pointflow local serve`.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:3000";

/// A call that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: no answer from {endpoint} after {attempts} attempts")]
    Unreachable {
        what: String,
        endpoint: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status} after {attempts} attempts: {body}")]
    GaveUp {
        what: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Refused { what: String, status: u16, body: Value },
    #[error("{what}: the answer is not what the API sends: {detail}")]
    Unexpected { what: String, detail: String },
    #[error("invalid endpoint or API key: {0}")]
    Config(String),
    #[error(transparent)]
    Signing(#[from] SigningError),
}

impl ClientError {
    /// The HTTP status of a refusal, if that is what this is.
    pub fn refused_status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What `POST /v1/jobs` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub accepted: Accepted,
    /// The job existed: an earlier run (or attempt) sent this chunk.
    pub replayed: bool,
}

/// The API over HTTP.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
    /// Signs every request (a stack with `AuthMode` iam); `None` sends them unsigned.
    signer: Option<Signer>,
    backoff: Backoff,
}

impl ApiClient {
    /// `endpoint` is the stage URL (`ApiUrl` output) or a local server's;
    /// `api_key` is sent as `x-api-key`.
    pub fn new(endpoint: &str, api_key: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(ApiClient {
            http,
            endpoint,
            api_key,
            signer: None,
            backoff: Backoff {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(10),
                max_attempts: 8,
            },
        })
    }

    /// Signs every request with `signer` (SigV4, service `execute-api`).
    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Whether requests are signed.
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Replaces the retry policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `build()` until it gets an answer that is not worth retrying.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = self.prepare(build()).await?;
            let result = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.bytes().await.map(|body| (status, headers, body.to_vec()))
                }
                Err(e) => Err(e),
            };
            let retryable = match &result {
                Ok((status, _, _)) => *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
                Err(_) => true,
            };
            if !retryable {
                return result.map_err(|source| ClientError::Unreachable {
                    what: what.to_owned(),
                    endpoint: self.endpoint.clone(),
                    attempts: attempt,
                    source,
                });
            }
            if attempt >= self.backoff.max_attempts {
                return Err(match result {
                    Ok((status, _, body)) => ClientError::GaveUp {
                        what: what.to_owned(),
                        status: status.as_u16(),
                        attempts: attempt,
                        body: String::from_utf8_lossy(&body).chars().take(500).collect(),
                    },
                    Err(source) => ClientError::Unreachable {
                        what: what.to_owned(),
                        endpoint: self.endpoint.clone(),
                        attempts: attempt,
                        source,
                    },
                });
            }
            self.backoff.sleep(attempt - 1).await;
        }
    }

    /// The request `builder` describes, with the API key and, when
    /// signing, the SigV4 headers (signed anew on each attempt: a signature
    /// is valid for five minutes from its `x-amz-date`).
    async fn prepare(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Request, ClientError> {
        let builder = match &self.api_key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        };
        let mut request = builder.build().map_err(|e| ClientError::Config(e.to_string()))?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut request).await?;
        }
        Ok(request)
    }

    /// Sends one request to `path_and_query` under the endpoint, with
    /// `headers`, the API key and (when signing) the SigV4 headers, once,
    /// and returns the answer as it came: the operator console's `/v1`
    /// proxy (the browser retries what it wants retried).
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let what = format!("{method} {path_and_query}");
        let request = self
            .prepare(self.http.request(method, &url).headers(headers).body(body))
            .await?;
        let unreachable = |source| ClientError::Unreachable {
            what: what.clone(),
            endpoint: self.endpoint.clone(),
            attempts: 1,
            source,
        };
        let response = self.http.execute(request).await.map_err(unreachable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok((status, headers, body.to_vec()))
    }

    /// Sends one chunk as `POST /v1/jobs` with its `Idempotency-Key`.
    pub async fn submit(&self, key: &str, body: &[u8]) -> Result<Submitted, ClientError> {
        let url = format!("{}/v1/jobs", self.endpoint);
        let what = format!("POST /v1/jobs ({key})");
        let (status, headers, bytes) = self
            .send(&what, || {
                self.http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(body.to_vec())
            })
            .await?;
        if status != StatusCode::ACCEPTED {
            return Err(refused(what, status, &bytes));
        }
        let accepted: Accepted = decode(&what, &bytes)?;
        let replayed = headers
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Submitted { accepted, replayed })
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, job_id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/v1/jobs/{job_id}", self.endpoint);
        let what = format!("GET /v1/jobs/{job_id}");
        let (status, _, bytes) = self.send(&what, || self.http.get(&url)).await?;
        if status != StatusCode::OK {
            return Err(refused(what, status, &bytes));
        }
        decode(&what, &bytes)
    }

    /// `GET /v1/jobs`: one page of the jobs, newest first, with the query
    /// parameters given (`status`, `source`, `created_after`, `limit`,
    /// `cursor`); pass the page's `next_cursor` as `cursor` for the next.
    pub async fn jobs(&self, query: &[(String, String)]) -> Result<JobList, ClientError> {
        let what = "GET /v1/jobs".to_owned();
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let url = format!("{}/v1/jobs?{query}", self.endpoint);
        let (status, _, bytes) = self.send(&what, || self.http.get(&url)).await?;
        if status != StatusCode::OK {
            return Err(refused(what, status, &bytes));
        }
        decode(&what, &bytes)
    }

    /// `POST /v1/jobs/{job_id}/cancel`: asks the workers to reverse what the
    /// job credited (safe to repeat: it resumes), with the reason given, if
    /// any, for the cancel's audit record. Returns the job as it stands.
    pub async fn cancel_job(&self, job_id: &str, reason: Option<&str>) -> Result<JobView, ClientError> {
        let url = format!("{}/v1/jobs/{job_id}/cancel", self.endpoint);
        let what = format!("POST /v1/jobs/{job_id}/cancel");
        let body = reason.map(|reason| serde_json::json!({ "reason": reason }).to_string());
        let (status, _, bytes) = self
            .send(&what, || match &body {
                Some(body) => self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone()),
                None => self.http.post(&url),
            })
            .await?;
        if status != StatusCode::OK && status != StatusCode::ACCEPTED {
            return Err(refused(what, status, &bytes));
        }
        decode(&what, &bytes)
    }

    /// `POST /v1/members/{member_id}/uses`: deducts points once per
    /// `use_id` (retried safely). Returns the recorded use and whether it
    /// was a replay of an earlier call; a refusal (409 insufficient balance
    /// or a reused id, 400 invalid) is [`ClientError::Refused`].
    pub async fn use_points(&self, member_id: &str, body: &Value) -> Result<(Value, bool), ClientError> {
        let url = format!("{}/v1/members/{member_id}/uses", self.endpoint);
        self.post_once_per_id(&url, &format!("POST /v1/members/{member_id}/uses"), body)
            .await
    }

    /// POSTs a JSON body whose id makes retries safe; `201` or `200`
    /// (replayed) is success.
    async fn post_once_per_id(&self, url: &str, what: &str, body: &Value) -> Result<(Value, bool), ClientError> {
        let what = what.to_owned();
        let payload = body.to_string();
        let (status, headers, bytes) = self
            .send(&what, || {
                self.http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(payload.clone())
            })
            .await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(refused(what, status, &bytes));
        }
        let replayed = headers.contains_key("idempotent-replayed");
        Ok((decode(&what, &bytes)?, replayed))
    }

    /// `POST /v1/reversals` (`{"accrual_id"}` or `{"use_id"}`): returns the
    /// reversal and whether it was a replay of an earlier one.
    pub async fn reverse(&self, body: &Value) -> Result<(Value, bool), ClientError> {
        self.post_once_per_id(&format!("{}/v1/reversals", self.endpoint), "POST /v1/reversals", body)
            .await
    }

    /// `GET /v1/members/{id}/ledger`: one page of the member's history,
    /// newest first; pass the page's `next_cursor` to get the next.
    pub async fn history(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
        let what = format!("GET /v1/members/{member_id}/ledger");
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(point_type) = point_type {
            query.push(("point_type", point_type.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let url = format!("{}/v1/members/{member_id}/ledger?{query}", self.endpoint);
        let (status, _, bytes) = self.send(&what, || self.http.get(&url)).await?;
        if status != StatusCode::OK {
            return Err(refused(what, status, &bytes));
        }
        decode(&what, &bytes)
    }

    /// `GET /v1/members/{member_id}/balances`.
    pub async fn balances(&self, member_id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/members/{member_id}/balances", self.endpoint);
        let what = format!("GET /v1/members/{member_id}/balances");
        let (status, _, bytes) = self.send(&what, || self.http.get(&url)).await?;
        if status != StatusCode::OK {
            return Err(refused(what, status, &bytes));
        }
        decode(&what, &bytes)
    }
}

fn refused(what: String, status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Refused {
        what,
        status: status.as_u16(),
        body: serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into())),
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Unexpected {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}
