//! [`UploadSigner`] over S3 pre-signing: a SigV4 query-string signature with
//! the function's own credentials, valid for the upload's expiry, that
//! binds the `Content-Length`, the metadata headers and, when declared,
//! `x-amz-checksum-sha256` (S3 refuses a PUT whose signed headers differ,
//! and a body whose SHA-256 differs from the declared one).

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::Client;
use base64::Engine;

use crate::ports::uploads::{PutToSign, SignedPut, UploadSigner};
use crate::ports::BoxError;

/// Signs PUTs into S3 with the client's credentials.
#[derive(Debug, Clone)]
pub struct S3Presigner {
    client: Client,
}

impl S3Presigner {
    pub fn new(client: Client) -> Self {
        S3Presigner { client }
    }
}

#[async_trait]
impl UploadSigner for S3Presigner {
    async fn presign_put(&self, put: &PutToSign) -> Result<SignedPut, BoxError> {
        let size = i64::try_from(put.size).map_err(|_| format!("size {} is out of range", put.size))?;
        let config = PresigningConfig::builder()
            .start_time(SystemTime::from(put.now))
            .expires_in(put.expires_in)
            .build()?;
        let request = self
            .client
            .put_object()
            .bucket(&put.bucket)
            .key(&put.key)
            .content_length(size)
            .set_metadata((!put.metadata.is_empty()).then(|| put.metadata.clone().into_iter().collect()))
            .set_checksum_sha256(
                put.sha256
                    .map(|digest| base64::engine::general_purpose::STANDARD.encode(digest)),
            )
            .presigned(config)
            .await?;
        let mut headers: std::collections::BTreeMap<String, String> = request
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        // The signature binds the length when the header was signed; the
        // client must send it either way.
        headers.insert("content-length".to_owned(), put.size.to_string());
        Ok(SignedPut {
            url: request.uri().to_owned(),
            headers,
        })
    }
}
