//! `pointflow submit FILE --via upload`: the whole file in one PUT to the
//! URL `POST /v1/uploads` answers, then (with `--wait`) its one job
//! followed to completion. The file is read twice from disk (once to hash
//! it, once to send it) and never held in memory.
//!
//! Resumable: the upload's `Idempotency-Key` derives from the campaign and
//! the file's SHA-256, so a rerun of the same submit gets the same upload
//! key and job. If that job exists the file landed before and is not sent
//! again; if it was sent but not yet imported, the second PUT lands on the
//! same key with the same bytes and the import of that key runs once. The
//! rows themselves get the ids `--via requests` would give them (from the
//! campaign, sent as the object's `campaign` metadata), so switching paths
//! credits nothing twice either.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pointflow::domain::uploads::UploadFormat;
use pointflow::services::api::{JobView, UploadAnswer};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::api::ApiClient;
use crate::client::input::Format;
use crate::client::submit::{SubmitError, SubmitReport};

/// `--via auto` uploads a file larger than this (one request's worth:
/// the API takes 6,000,000 bytes, `submit` sends at most 5,000,000 a request).
pub const AUTO_UPLOAD_BYTES: u64 = 5_000_000;

/// How `submit` sends a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Via {
    /// One upload when the file is larger than one request (5 MB) and the
    /// endpoint offers `POST /v1/uploads`; else requests.
    #[default]
    Auto,
    /// One upload (`POST /v1/uploads`, then one PUT of the whole file).
    Upload,
    /// `POST /v1/jobs` requests of at most `--chunk` accruals each.
    Requests,
}

/// The upload format of a submit format (JSON arrays are not a file the import reads).
pub fn upload_format(format: Format) -> Option<UploadFormat> {
    match format {
        Format::Csv => Some(UploadFormat::Csv),
        Format::Ndjson => Some(UploadFormat::Ndjson),
        Format::Xlsx => Some(UploadFormat::Xlsx),
        Format::Json => None,
    }
}

/// What to upload and how to follow it.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub path: PathBuf,
    pub format: UploadFormat,
    pub campaign: String,
    pub sheet: Option<String>,
    /// The file's text encoding, as the operator declared it (sent as the
    /// object's `encoding` metadata; default: detected by the import).
    pub encoding: Option<String>,
    pub wait: bool,
    pub poll_interval: Duration,
    pub wait_timeout: Duration,
}

/// What an upload did, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct UploadSummary {
    pub upload_id: String,
    pub job_id: String,
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// The job existed already: an earlier run sent this file, so it was not sent again.
    pub landed_before: bool,
}

/// The upload's `Idempotency-Key`: the same campaign and content, the same upload.
pub fn upload_key(campaign: &str, sha256: &[u8; 32]) -> String {
    let seed = Sha256::digest(format!("{campaign}\n{}", hex::encode(sha256)).as_bytes());
    format!("upload:{}", hex::encode(seed))
}

/// Size and SHA-256 of the file at `path`, read in 1 MiB buffers.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}

/// Uploads the file and, with `wait`, follows its job. `Ok(None)` when
/// `fall_back` and the endpoint does not offer uploads (404 or 403 on
/// `POST /v1/uploads`): the caller sends requests instead.
pub async fn submit_upload(
    client: &ApiClient,
    options: &UploadOptions,
    fall_back: bool,
) -> Result<Option<SubmitReport>, SubmitError> {
    let started = Instant::now();
    let path = options.path.clone();
    let (size, sha256) = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|e| SubmitError::Reader(e.to_string()))?
        .map_err(|e| SubmitError::Reader(format!("reading {}: {e}", options.path.display())))?;
    let mut body = json!({
        "format": options.format.name(),
        "size": size,
        "sha256": hex::encode(sha256),
        "campaign": options.campaign,
    });
    if let Some(sheet) = &options.sheet {
        body["sheet"] = json!(sheet);
    }
    if let Some(encoding) = &options.encoding {
        body["encoding"] = json!(encoding);
    }
    let upload = match client
        .create_upload(&upload_key(&options.campaign, &sha256), &body)
        .await
    {
        Ok(upload) => upload,
        Err(e) if fall_back && matches!(e.refused_status(), Some(403 | 404)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let job_id = upload.job_id.to_string();
    let landed_before = match client.job(&job_id).await {
        Ok(_) => true,
        Err(e) if e.refused_status() == Some(404) => false,
        Err(e) => return Err(e.into()),
    };
    if !landed_before {
        client.put_upload(&upload, &options.path).await?;
    }
    let submit_seconds = started.elapsed().as_secs_f64();
    let job = if options.wait {
        Some(follow(client, &upload, options).await?)
    } else {
        None
    };
    let summary = UploadSummary {
        upload_id: upload.upload_id.to_string(),
        job_id,
        key: upload.key.clone(),
        bytes: size,
        sha256: hex::encode(sha256),
        landed_before,
    };
    Ok(Some(report(
        summary,
        job,
        submit_seconds,
        started.elapsed().as_secs_f64(),
    )))
}

/// Polls the upload's job until it completes; a 404 means the file has
/// not reached the import yet.
async fn follow(client: &ApiClient, upload: &UploadAnswer, options: &UploadOptions) -> Result<JobView, SubmitError> {
    let started = Instant::now();
    let job_id = upload.job_id.to_string();
    loop {
        match client.job(&job_id).await {
            Ok(view) if view.completed_at.is_some() => return Ok(view),
            Ok(_) => {}
            Err(e) if e.refused_status() == Some(404) => {}
            Err(e) => return Err(SubmitError::Client(e)),
        }
        if started.elapsed() > options.wait_timeout {
            return Err(SubmitError::WaitTimeout(options.wait_timeout));
        }
        tokio::time::sleep(options.poll_interval).await;
    }
}

fn report(summary: UploadSummary, job: Option<JobView>, submit_seconds: f64, total_seconds: f64) -> SubmitReport {
    let waited = job.is_some();
    let count = |f: fn(&JobView) -> u64| job.as_ref().map_or(0, f);
    SubmitReport {
        input_bytes: summary.bytes,
        requests: 1,
        replayed: usize::from(summary.landed_before),
        accepted: count(|j| j.total),
        deduplicated: count(|j| j.deduplicated),
        rejected_lines: count(|j| j.rejected),
        errors: Vec::new(),
        chunks: Vec::new(),
        applied: count(|j| j.applied),
        duplicate: count(|j| j.duplicate),
        failed: count(|j| j.failed),
        jobs: job.into_iter().collect(),
        submit_seconds,
        total_seconds,
        waited,
        upload: Some(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_key_is_the_campaign_and_content() {
        let a = upload_key("spring", &[1; 32]);
        assert_eq!(a, upload_key("spring", &[1; 32]));
        assert_ne!(a, upload_key("autumn", &[1; 32]));
        assert_ne!(a, upload_key("spring", &[2; 32]));
        assert!(pointflow::domain::validation::check_idempotency_key(&a).is_ok());
    }

    #[test]
    fn json_arrays_are_not_uploaded() {
        assert_eq!(upload_format(Format::Json), None);
        assert_eq!(upload_format(Format::Csv), Some(UploadFormat::Csv));
    }
}
