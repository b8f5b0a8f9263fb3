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
