//! `POST /v1/uploads`: plan an upload ([`crate::domain::uploads`]), sign its
//! PUT with the stack's signer, and answer where and how to send the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tracing::info;
use uuid::Uuid;

use super::{ApiError, ApiRequest, ApiResponse, ApiService};
use crate::domain::strict_json;
use crate::domain::uploads::{plan_upload, upload_from_json, DEFAULT_UPLOAD_EXPIRY, S3_MAX_PUT_BYTES};
use crate::domain::validation::check_idempotency_key;
use crate::domain::JobId;
use crate::ports::uploads::PutToSign;
use crate::ports::StoreError;

/// An upload body is one small object.
const UPLOAD_BODY_BUDGET_BYTES: usize = 4096;

/// Where uploads go and what they may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSettings {
    /// The import bucket.
    pub bucket: String,
    /// How long a signed PUT is accepted (`UploadExpirySeconds`).
    pub expiry: Duration,
    /// The largest declared size (`MaxUploadBytes`).
    pub max_bytes: u64,
}

impl UploadSettings {
    /// The defaults (15 minutes, 5 GiB) for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        UploadSettings {
            bucket: bucket.into(),
            expiry: DEFAULT_UPLOAD_EXPIRY,
            max_bytes: S3_MAX_PUT_BYTES,
        }
    }
}

/// The answer of `POST /v1/uploads` (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UploadAnswer {
    pub upload_id: Uuid,
    /// The job the file becomes once it lands; `GET /v1/jobs/{job_id}`
    /// answers 404 until then.
    pub job_id: JobId,
    /// Where the file lands in the import bucket.
    pub key: String,
    /// Always `PUT`.
    pub method: String,
    pub url: String,
    /// Every header the PUT must carry, as given.
    pub headers: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The largest size this stack accepts.
    pub max_bytes: u64,
    pub status_url: String,
}

impl ApiService {
    /// `POST /v1/uploads`: where to PUT one file, and the job it becomes.
    pub(super) async fn create_upload(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let Some((signer, settings)) = &self.uploads else {
            return Err(ApiError::NotFoundRoute {
                method: request.method.to_ascii_uppercase(),
                path: request.path.clone(),
            });
        };
        self.check_json_body(request)?;
        let key = request.header("idempotency-key");
        if let Some(key) = key {
            check_idempotency_key(key).map_err(|reason| ApiError::InvalidIdempotencyKey { reason })?;
        }
        let body = strict_json::from_slice_within(&request.body, UPLOAD_BODY_BUDGET_BYTES)
            .map_err(|e| ApiError::MalformedJson { detail: e.to_string() })?;
        let upload =
            upload_from_json(&body, settings.max_bytes).map_err(|errors| ApiError::InvalidUpload { errors })?;
        let now = OffsetDateTime::now_utc();
        let plan = plan_upload(&settings.bucket, &upload, key, Uuid::new_v4(), now, settings.expiry);
        let signed = signer
            .presign_put(&PutToSign {
                bucket: settings.bucket.clone(),
                key: plan.key.clone(),
                size: plan.size,
                sha256: plan.sha256,
                metadata: plan.metadata.clone(),
                now,
                expires_in: settings.expiry,
            })
            .await
            .map_err(|source| {
                ApiError::Internal(StoreError::Backend {
                    operation: "presign_put",
                    source,
                })
            })?;
        info!(upload_id = %plan.upload_id, job_id = %plan.job_id, size = plan.size, "upload signed");
        let answer = UploadAnswer {
            upload_id: plan.upload_id,
            status_url: format!("/v1/jobs/{}", plan.job_id),
            job_id: plan.job_id,
            key: plan.key,
            method: "PUT".to_owned(),
            url: signed.url,
            headers: signed.headers,
            expires_at: plan.expires_at,
            max_bytes: settings.max_bytes,
        };
        Ok(ApiResponse::json(201, answer))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use serde_json::{json, Value};

    use super::*;
    use crate::backend::{memory, QueuePolicy};
    use crate::domain::uploads::upload_job_id;
    use crate::ports::uploads::{SignedPut, UploadSigner};
    use crate::ports::BoxError;
    use crate::services::api::ApiSettings;

    /// Signs nothing; keeps what it was asked to sign.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<PutToSign>>);

    #[async_trait]
    impl UploadSigner for Recorder {
        async fn presign_put(&self, put: &PutToSign) -> Result<SignedPut, BoxError> {
            self.0.lock().unwrap().push(put.clone());
            Ok(SignedPut {
                url: format!("https://signed.example/{}", put.key),
                headers: BTreeMap::from([("content-length".to_owned(), put.size.to_string())]),
            })
        }
    }

    fn service(signer: Option<Arc<Recorder>>) -> ApiService {
        let ports = memory::ports(QueuePolicy {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 3,
        });
        let service = ApiService::new(ports.jobs, ports.ledger, ports.queue, ApiSettings::default());
        match signer {
            Some(signer) => service.with_uploads(
                signer,
                UploadSettings {
                    max_bytes: 1000,
                    ..UploadSettings::new("imports-b")
                },
            ),
            None => service,
        }
    }

    fn request(body: &str, key: Option<&str>) -> ApiRequest {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(key) = key {
            headers.push(("idempotency-key".to_owned(), key.to_owned()));
        }
        ApiRequest {
            method: "POST".into(),
            path: "/v1/uploads".into(),
            query: Vec::new(),
            headers,
            body: body.as_bytes().to_vec(),
            caller: None,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn an_upload_is_signed_for_its_key_size_metadata_and_expiry() {
        let signer = Arc::new(Recorder::default());
        let api = service(Some(signer.clone()));
        let body = r#"{"format": "ndjson", "size": 1000, "campaign": "spring"}"#;
        let answer = api.handle(&request(body, Some("k-1"))).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let key = answer.body["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("imports/uploads/") && key.ends_with(".ndjson"), "{key}");
        assert_eq!(answer.body["job_id"], json!(upload_job_id("imports-b", &key)));
        assert_eq!(answer.body["url"], format!("https://signed.example/{key}"));
        assert_eq!(answer.body["headers"]["content-length"], "1000");
        assert_eq!(answer.body["method"], "PUT");
        assert_eq!(answer.body["max_bytes"], 1000);
        let signed = signer.0.lock().unwrap().pop().unwrap();
        assert_eq!(
            (signed.bucket.as_str(), signed.key.as_str(), signed.size),
            ("imports-b", key.as_str(), 1000)
        );
        assert_eq!(signed.metadata["campaign"], "spring");
        assert_eq!(signed.expires_in, Duration::from_secs(900));
        let expires_at = OffsetDateTime::parse(
            answer.body["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(expires_at, signed.now + signed.expires_in);
        // The same request and key: the same upload.
        let again = api.handle(&request(body, Some("k-1"))).await;
        assert_eq!(again.body["key"], key.as_str());
    }

    #[tokio::test]
    async fn refusals_name_what_is_wrong() {
        let api = service(Some(Arc::default()));
        let code = |answer: &ApiResponse| answer.body["error"]["code"].clone();
        let answer = api.handle(&request(r#"{"format": "csv", "size": 1001}"#, None)).await;
        assert_eq!((answer.status, code(&answer)), (400, json!("invalid_upload")));
        assert_eq!(answer.body["error"]["errors"][0]["field"], "size");
        let answer = api
            .handle(&request(r#"{"format": "csv", "size": 1}"#, Some("a b")))
            .await;
        assert_eq!((answer.status, code(&answer)), (400, json!("invalid_idempotency_key")));
        let answer = api
            .handle(&request(r#"{"format": "csv", "format": "xlsx", "size": 1}"#, None))
            .await;
        assert_eq!((answer.status, code(&answer)), (400, json!("malformed_json")));
        let mut not_json = request("{}", None);
        not_json.headers[0].1 = "text/csv".into();
        assert_eq!(api.handle(&not_json).await.status, 415);
        let mut get = request("", None);
        get.method = "GET".into();
        assert_eq!(api.handle(&get).await.status, 405);
        // Without a signer the route does not exist.
        let answer = service(None)
            .handle(&request(r#"{"format": "csv", "size": 1}"#, None))
            .await;
        assert_eq!((answer.status, code(&answer)), (404, Value::from("no_such_route")));
    }
}
