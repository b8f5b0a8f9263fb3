//! `PUT /local-uploads/<key>`: the embedded bucket's end of `POST
//! /v1/uploads`. The local server checks the URL it signed
//! ([`LocalUploads::verify`]: signature, expiry, headers), streams the body
//! to a file beside the object's (never holding it: memory stays at one
//! buffer whatever the size), checks its exact length and declared SHA-256,
//! moves it into place with its metadata and queues its event, as S3's
//! notification would; the runner's import pollers then import it like
//! `pointflow local import`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use pointflow::adapters::local_dir::DirObjects;
use pointflow::adapters::local_uploads::{LocalPut, LocalUploads, CHECKSUM_HEADER, METADATA_HEADER_PREFIX};
use pointflow::domain::uploads::check_length;
use pointflow::ports::objects::ObjectRef;
use pointflow::services::import::task::object_created_notification;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use crate::backend::ImportSide;

/// What the local server needs to receive uploads into the embedded bucket.
#[derive(Clone)]
pub struct UploadReceiver {
    pub signer: LocalUploads,
    pub import: ImportSide,
}

fn refuse(status: u16, code: &str, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

/// Receives one signed PUT.
pub async fn receive(
    State(receiver): State<Arc<UploadReceiver>>,
    UrlPath(key): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let content_length = match header("content-length").map(str::parse::<u64>) {
        None => None,
        Some(Ok(length)) => Some(length),
        Some(Err(_)) => return refuse(400, "bad_content_length", "Content-Length is not a number"),
    };
    let metadata: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix(METADATA_HEADER_PREFIX)?;
            Some((name.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let put = LocalPut {
        key,
        query: uri.query().unwrap_or("").to_owned(),
        content_length,
        checksum: header(CHECKSUM_HEADER).map(str::to_owned),
        metadata,
    };
    let verified = match receiver.signer.verify(&put, OffsetDateTime::now_utc()) {
        Ok(verified) => verified,
        Err(refused) => return refuse(refused.status(), refused.code(), refused.to_string()),
    };
    let import = &receiver.import;
    let Some(dir) = &import.bucket_dir else {
        return refuse(500, "internal_error", "the embedded backend has no bucket folder");
    };
    let objects = DirObjects::new(dir.parent().unwrap_or(Path::new("")));
    let target = match objects.path(&import.bucket, &verified.key) {
        Ok(target) => target,
        Err(e) => return refuse(400, "bad_key", e.to_string()),
    };
    let partial = target.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
    let received = write_streaming(body, &partial, verified.size).await;
    let (size, digest) = match received {
        Ok(received) => received,
        Err(refused) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return refused;
        }
    };
    if let Err(reason) = check_length(verified.size, size) {
        let _ = tokio::fs::remove_file(&partial).await;
        return refuse(400, "length_mismatch", reason);
    }
    if verified.sha256.is_some_and(|declared| declared != digest) {
        let _ = tokio::fs::remove_file(&partial).await;
        return refuse(
            400,
            "bad_digest",
            "the body's SHA-256 is not the x-amz-checksum-sha256 the upload was signed for",
        );
    }
    if let Err(e) = tokio::fs::rename(&partial, &target).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return refuse(500, "internal_error", format!("storing the upload: {e}"));
    }
    if let Err(e) = objects.set_metadata(&import.bucket, &verified.key, &verified.metadata) {
        return refuse(500, "internal_error", format!("storing the upload's metadata: {e}"));
    }
    // The ETag the embedded bucket gives every object (`pointflow local import`'s too).
    let etag = hex::encode(&digest[..16]);
    let object = ObjectRef {
        bucket: import.bucket.clone(),
        key: verified.key.clone(),
        size,
        etag: Some(etag.clone()),
        version_id: None,
    };
    if let Err(e) = import
        .queue
        .send_messages(&[object_created_notification(&object)])
        .await
    {
        return refuse(503, "unavailable", format!("queueing the upload's import: {e}"));
    }
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = format!("\"{etag}\"").parse() {
        response.headers_mut().insert("etag", value);
    }
    response
}

/// Streams `body` into `path`, refusing it as soon as it passes `limit`
/// bytes; returns its length and SHA-256.
async fn write_streaming(body: Body, path: &Path, limit: u64) -> Result<(u64, [u8; 32]), Response> {
    let io_error = |e: std::io::Error| refuse(500, "internal_error", format!("writing the upload: {e}"));
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_error)?;
    }
    let file = tokio::fs::File::create(path).await.map_err(io_error)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| refuse(400, "body_interrupted", format!("the body broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(refuse(
                400,
                "length_mismatch",
                format!("the body is longer than the {limit} bytes the upload was signed for"),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    file.flush().await.map_err(io_error)?;
    file.into_inner().sync_all().await.map_err(io_error)?;
    Ok((size, hasher.finalize().into()))
}
