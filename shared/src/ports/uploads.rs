//! The upload port: sign a PUT of one object so that a client without
//! credentials to the bucket can send exactly that object, once, soon.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::ports::BoxError;

/// The PUT to sign: what the receiving store must hold the request to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutToSign {
    pub bucket: String,
    pub key: String,
    /// The exact `Content-Length` the PUT must carry.
    pub size: u64,
    /// When declared, the content's SHA-256 the store checks
    /// (`x-amz-checksum-sha256`).
    pub sha256: Option<[u8; 32]>,
    /// User metadata the PUT must set (`x-amz-meta-<name>`).
    pub metadata: BTreeMap<String, String>,
    /// The signature's start.
    pub now: OffsetDateTime,
    /// How long after `now` the PUT is accepted.
    pub expires_in: Duration,
}

/// A signed PUT: send `headers` (every one, unchanged) and the body to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPut {
    pub url: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
}

/// Signs PUTs into the import bucket: S3 pre-signing on AWS, the local
/// server's own signature on the embedded backend.
#[async_trait]
pub trait UploadSigner: Send + Sync {
    /// Signs `put`. Fails only when the signer cannot sign (no credentials).
    async fn presign_put(&self, put: &PutToSign) -> Result<SignedPut, BoxError>;
}
