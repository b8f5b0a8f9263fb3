//! The bucket port: read an object from an offset, write and delete small
//! ones, and assemble a report from parts in bounded memory.

use std::io::Read;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::submission::job_id_for_file;
use crate::domain::uploads::{is_upload_key, upload_job_id};
use crate::domain::JobId;
use crate::ports::BoxError;

/// One version of one object, as its creation event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    /// The key, decoded (events carry it URL-encoded).
    pub key: String,
    /// Size in bytes when created.
    pub size: u64,
    /// The ETag (without quotes): an MD5 of the content for single-part
    /// uploads, so the same content uploaded again has the same ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The version, on a versioned bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl ObjectRef {
    /// What identifies one upload: bucket, key and ETag (or version when
    /// there is no ETag). Seeds the job id, so the same event delivered
    /// twice, or the same bytes dropped again at the same key, names the
    /// same job. (It seeded the ids of rows without `accrual_id` too, in id
    /// scheme v1; scheme v2 derives them from the campaign and the row,
    /// [`crate::domain::accrual_ids`].)
    pub fn identity(&self) -> String {
        let tag = self.etag.as_deref().or(self.version_id.as_deref()).unwrap_or("");
        format!("s3://{}/{}#{}", self.bucket, self.key, tag)
    }

    /// `s3://bucket/key`, for people.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The file's job. An upload's (a key under `imports/uploads/`) is the
    /// one `POST /v1/uploads` announced before the file existed, from its
    /// bucket and key alone ([`crate::domain::uploads::upload_job_id`]).
    pub fn job_id(&self) -> JobId {
        if is_upload_key(&self.key) {
            upload_job_id(&self.bucket, &self.key)
        } else {
            job_id_for_file(&self.identity())
        }
    }

    /// Stored as the job's `request_hash`.
    pub fn identity_hash(&self) -> String {
        hex::encode(Sha256::digest(self.identity().as_bytes()))
    }
}

/// An object operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object is gone or is no longer the version the event named: the
    /// import cannot go on (a new object gets its own event and job).
    #[error("s3://{bucket}/{key} changed or was deleted since its event: {detail}")]
    Changed {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("{operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

/// A blocking reader of an object's bytes.
pub type ObjectReader = Box<dyn Read + Send>;

/// Where files are dropped and reports written: S3, or a local folder.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Reads `object` from byte `offset` to its end, streaming. The reader
    /// blocks: read it on a blocking thread.
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError>;

    /// The user metadata `name` of `object` (on S3 `x-amz-meta-<name>`), of
    /// the version its event named; `None` when unset. `Changed` when that
    /// version is gone, as for [`ObjectStore::open`]. A store without user
    /// metadata keeps this default: never set.
    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        let _ = (object, name);
        Ok(None)
    }

    /// Writes a small object whole.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError>;

    /// Deletes an object; deleting a missing one is not an error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError>;

    /// Writes `key` as `head` followed by the objects `parts`, in order,
    /// holding at most a few MiB in memory at a time.
    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError>;
}
