//! [`ObjectStore`] over Amazon S3: ranged, streaming reads pinned to the
//! version (or ETag) the event named, and reports assembled by multipart
//! upload in bounded memory.

use async_trait::async_trait;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio_util::io::SyncIoBridge;

use crate::adapters::aws::redact::Redact;
use crate::ports::objects::{ObjectError, ObjectReader, ObjectRef, ObjectStore};

/// Multipart parts are buffered to this size (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Objects in S3.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: Client,
}

impl S3Objects {
    pub fn new(client: Client) -> Self {
        S3Objects { client }
    }
}

/// A failure, kept in its redacted form ([`crate::ports::BackendFailure`]).
fn backend<E: Redact>(operation: &'static str, error: E) -> ObjectError {
    ObjectError::Backend {
        operation,
        source: Box::new(error.redacted()),
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .range(format!("bytes={offset}-"));
        // Read exactly what the event announced: the version if the bucket
        // is versioned, else whatever still has the announced ETag.
        request = match (&object.version_id, &object.etag) {
            (Some(version), _) => request.version_id(version),
            (None, Some(etag)) => request.if_match(format!("\"{etag}\"")),
            (None, None) => request,
        };
        match request.send().await {
            Ok(output) => Ok(Box::new(SyncIoBridge::new(output.body.into_async_read()))),
            Err(error) => {
                let status = error.raw_response().map(|r| r.status().as_u16());
                let changed = |detail: &str| ObjectError::Changed {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    detail: detail.to_owned(),
                };
                match (error.as_service_error(), status) {
                    (Some(GetObjectError::NoSuchKey(_)), _) | (_, Some(404)) => Err(changed("not found")),
                    (_, Some(412)) => Err(changed("its ETag no longer matches")),
                    // Nothing from `offset` on: an empty rest of the file.
                    (_, Some(416)) => Ok(Box::new(std::io::empty())),
                    _ => Err(backend("GetObject", error)),
                }
            }
        }
    }

    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        let mut request = self.client.head_object().bucket(&object.bucket).key(&object.key);
        request = match (&object.version_id, &object.etag) {
            (Some(version), _) => request.version_id(version),
            (None, Some(etag)) => request.if_match(format!("\"{etag}\"")),
            (None, None) => request,
        };
        match request.send().await {
            Ok(output) => Ok(output.metadata().and_then(|m| m.get(name)).cloned()),
            Err(error) => {
                let changed = |detail: &str| ObjectError::Changed {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    detail: detail.to_owned(),
                };
                match error.raw_response().map(|r| r.status().as_u16()) {
                    Some(404) => Err(changed("not found")),
                    Some(412) => Err(changed("its ETag no longer matches")),
                    _ => Err(backend("HeadObject", error)),
                }
            }
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv; charset=utf-8")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| backend("PutObject", e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| backend("DeleteObject", e))?;
        Ok(())
    }

    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError> {
        let mut buffer = head;
        let mut upload: Option<Multipart> = None;
        for part in parts {
            let output = self
                .client
                .get_object()
                .bucket(bucket)
                .key(part)
                .send()
                .await
                .map_err(|e| backend("GetObject", e))?;
            let mut body = output.body;
            while let Some(bytes) = body.try_next().await.map_err(|e| backend("GetObject", e))? {
                buffer.extend_from_slice(&bytes);
                if buffer.len() >= PART_BYTES {
                    let multipart = match upload.as_mut() {
                        Some(m) => m,
                        None => upload.insert(Multipart::start(&self.client, bucket, key).await?),
                    };
                    let result = multipart.upload(&self.client, std::mem::take(&mut buffer)).await;
                    if let Err(e) = result {
                        multipart.abort(&self.client).await;
                        return Err(e);
                    }
                }
            }
        }
        match upload {
            None => self.put(bucket, key, buffer).await,
            Some(mut multipart) => {
                let result = async {
                    if !buffer.is_empty() {
                        multipart.upload(&self.client, buffer).await?;
                    }
                    multipart.complete(&self.client).await
                }
                .await;
                if result.is_err() {
                    multipart.abort(&self.client).await;
                }
                result
            }
        }
    }
}

/// A multipart upload in progress.
struct Multipart {
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl Multipart {
    async fn start(client: &Client, bucket: &str, key: &str) -> Result<Self, ObjectError> {
        let output = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv; charset=utf-8")
            .send()
            .await
            .map_err(|e| backend("CreateMultipartUpload", e))?;
        let upload_id = output.upload_id().unwrap_or_default().to_owned();
        Ok(Multipart {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
        })
    }

    async fn upload(&mut self, client: &Client, bytes: Vec<u8>) -> Result<(), ObjectError> {
        // At most 10,000 parts; reports are far smaller than 80 GB.
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let output = client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| backend("UploadPart", e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(&mut self, client: &Client) -> Result<(), ObjectError> {
        client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| backend("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Best effort: an upload left behind is removed by the bucket's
    /// lifecycle rule for incomplete uploads.
    async fn abort(&self, client: &Client) {
        let _ = client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}
