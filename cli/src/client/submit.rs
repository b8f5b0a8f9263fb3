//! `pointflow submit FILE`: stream a campaign file to the API in
//! request-sized chunks with bounded parallelism, then (with `--wait`) follow
//! its jobs until every accrual is settled.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pointflow::domain::text_encoding::FileEncoding;
use pointflow::domain::JobStatus;
use pointflow::services::api::JobView;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::api::{ApiClient, ClientError};
use crate::client::input::{
    read_chunks_of_sheet, Chunk, ChunkLimits, Chunker, Counting, Format, InputError, LineError, ReadAs,
};

/// Line errors kept for the report (all are counted).
pub const MAX_LISTED_ERRORS: usize = 1000;

/// How to submit.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub format: Format,
    /// The sheet of a workbook to read (default: its first visible one).
    pub sheet: Option<String>,
    /// The text encoding of a CSV or NDJSON file (default: detected; a
    /// byte-order mark wins over it).
    pub encoding: Option<FileEncoding>,
    pub limits: ChunkLimits,
    /// Names the submission; part of every `Idempotency-Key`.
    pub campaign: String,
    /// Requests in flight at most.
    pub parallel: usize,
    /// Follow the jobs until every accrual is settled.
    pub wait: bool,
    pub poll_interval: Duration,
    /// Give up waiting after this long.
    pub wait_timeout: Duration,
    pub progress: bool,
}

/// One chunk's fate.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkResult {
    pub index: u32,
    pub key: String,
    pub items: usize,
    pub first_line: u64,
    pub last_line: u64,
    pub job_id: Option<String>,
    pub replayed: bool,
    pub deduplicated: u64,
    /// Why the API refused it, or the request failed for good.
    pub error: Option<String>,
    /// The request never got a final answer (network, 5xx, throttling after
    /// every retry): running the same command again sends it.
    pub unfinished: bool,
}

/// What a submission did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub input_bytes: u64,
    pub requests: usize,
    pub replayed: usize,
    pub accepted: u64,
    pub deduplicated: u64,
    /// Input lines that are not valid accruals (never sent).
    pub rejected_lines: u64,
    /// The first [`MAX_LISTED_ERRORS`] problems (a line may have several).
    pub errors: Vec<LineError>,
    pub chunks: Vec<ChunkResult>,
    /// Final state of every job (with `--wait`).
    pub jobs: Vec<JobView>,
    pub applied: u64,
    pub duplicate: u64,
    pub failed: u64,
    pub submit_seconds: f64,
    pub total_seconds: f64,
    pub waited: bool,
    /// The upload, when the file was sent in one (`--via upload`); its
    /// rejected rows are in the job's error report, not listed here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<crate::client::upload::UploadSummary>,
}

impl SubmitReport {
    /// 0: every line sent and (with `--wait`) credited or found credited;
    /// 3: lines rejected, chunks refused or accruals failed; 1: requests
    /// left unfinished (run the same command again).
    pub fn exit_code(&self) -> u8 {
        if self.chunks.iter().any(|c| c.unfinished) {
            return 1;
        }
        let refused = self.chunks.iter().any(|c| c.error.is_some());
        let bad_jobs = self.jobs.iter().any(|j| !matches!(j.status, JobStatus::Completed));
        if self.rejected_lines > 0 || refused || self.failed > 0 || bad_jobs {
            3
        } else {
            0
        }
    }
}

/// Why a submission stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("waiting for the jobs timed out after {0:?}; they go on, check them with `pointflow wait`")]
    WaitTimeout(Duration),
    #[error("the reading thread stopped unexpectedly: {0}")]
    Reader(String),
}

/// Submits `input` (of `size` bytes, if known) and, with `wait`, follows its jobs.
pub async fn submit(
    client: &ApiClient,
    input: Box<dyn Read + Send>,
    size: Option<u64>,
    options: &SubmitOptions,
) -> Result<SubmitReport, SubmitError> {
    let started = Instant::now();
    let counting = Counting::new(input);
    let bytes_read: Arc<AtomicU64> = counting.read.clone();
    // (listed errors, lines with errors, last such line)
    let errors: Arc<Mutex<(Vec<LineError>, u64, u64)>> = Arc::default();

    // Reading and validating block; they run on their own thread and hand
    // chunks over a short channel, so memory holds a few chunks at most.
    let (sender, receiver) = mpsc::channel::<Chunk>(options.parallel.max(1));
    let reader = {
        let (format, limits, campaign) = (options.format, options.limits, options.campaign.clone());
        let sheet = options.sheet.clone();
        let encoding = options.encoding;
        let (errors, bytes_read) = (errors.clone(), bytes_read.clone());
        tokio::task::spawn_blocking(move || {
            let mut chunker = Chunker::new(limits, &campaign);
            let read = || bytes_read.load(Ordering::Relaxed);
            let last = read_chunks_of_sheet(
                counting,
                format,
                ReadAs {
                    sheet: sheet.as_deref(),
                    encoding,
                },
                &mut chunker,
                read,
                |chunk| sender.blocking_send(chunk).is_ok(),
                |error| {
                    let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
                    // A line's errors come together: count the line once.
                    if errors.2 != error.line {
                        errors.1 += 1;
                        errors.2 = error.line;
                    }
                    if errors.0.len() < MAX_LISTED_ERRORS {
                        errors.0.push(error);
                    }
                },
            )?;
            if let Some(last) = last {
                let _ = sender.blocking_send(last);
            }
            Ok::<(), InputError>(())
        })
    };

    let bar = progress_bar(options.progress, size);
    let sent = AtomicU64::new(0);
    let chunks = stream::unfold(receiver, |mut r| async move { r.recv().await.map(|c| (c, r)) });
    let results: Vec<ChunkResult> = chunks
        .map(|chunk| {
            let (bar, sent, bytes_read) = (&bar, &sent, &bytes_read);
            async move {
                let result = send_chunk(client, &chunk).await;
                let total = sent.fetch_add(chunk.items as u64, Ordering::Relaxed) + chunk.items as u64;
                bar.set_position(bytes_read.load(Ordering::Relaxed));
                bar.set_message(format!("{total} accruals sent"));
                result
            }
        })
        .buffer_unordered(options.parallel.max(1))
        .collect()
        .await;
    match reader.await {
        Ok(result) => result?,
        Err(e) => return Err(SubmitError::Reader(e.to_string())),
    }
    bar.finish_and_clear();
    let submit_seconds = started.elapsed().as_secs_f64();

    let mut results = results;
    results.sort_by_key(|r| r.index);
    let (listed, rejected_lines) = {
        let errors = errors.lock().unwrap_or_else(|p| p.into_inner());
        (errors.0.clone(), errors.1)
    };
    let mut report = SubmitReport {
        input_bytes: bytes_read.load(Ordering::Relaxed),
        requests: results.len(),
        replayed: results.iter().filter(|r| r.replayed).count(),
        accepted: 0,
        deduplicated: results.iter().map(|r| r.deduplicated).sum(),
        rejected_lines,
        errors: listed,
        chunks: results,
        jobs: Vec::new(),
        applied: 0,
        duplicate: 0,
        failed: 0,
        submit_seconds,
        total_seconds: submit_seconds,
        waited: false,
        upload: None,
    };
    report.accepted = report
        .chunks
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.items as u64 - c.deduplicated)
        .sum();
    if options.wait && !report.chunks.iter().any(|c| c.unfinished) {
        let ids: Vec<String> = report.chunks.iter().filter_map(|c| c.job_id.clone()).collect();
        report.jobs = wait_for_jobs(client, &ids, options).await?;
        report.applied = report.jobs.iter().map(|j| j.applied).sum();
        report.duplicate = report.jobs.iter().map(|j| j.duplicate).sum();
        report.failed = report.jobs.iter().map(|j| j.failed).sum();
        report.waited = true;
        report.total_seconds = started.elapsed().as_secs_f64();
    }
    Ok(report)
}

async fn send_chunk(client: &ApiClient, chunk: &Chunk) -> ChunkResult {
    let mut result = ChunkResult {
        index: chunk.index,
        key: chunk.key.clone(),
        items: chunk.items,
        first_line: chunk.lines.first().copied().unwrap_or(0),
        last_line: chunk.lines.last().copied().unwrap_or(0),
        job_id: None,
        replayed: false,
        deduplicated: 0,
        error: None,
        unfinished: false,
    };
    match client.submit(&chunk.key, &chunk.body).await {
        Ok(submitted) => {
            result.job_id = Some(submitted.accepted.job_id.to_string());
            result.replayed = submitted.replayed;
            result.deduplicated = submitted.accepted.deduplicated;
        }
        Err(e) => {
            result.unfinished = matches!(e, ClientError::Unreachable { .. } | ClientError::GaveUp { .. });
            // Item errors name positions in the request: map them to lines.
            let mut text = e.to_string();
            if let ClientError::Refused { body, .. } = &e {
                if let Some(items) = body.get("errors").and_then(|v| v.as_array()) {
                    let lines: Vec<String> = items
                        .iter()
                        .filter_map(|item| {
                            let index = item.get("index")?.as_u64()? as usize;
                            let line = chunk.lines.get(index)?;
                            Some(format!(
                                "line {line}: {}: {}",
                                item.get("field")?.as_str()?,
                                item.get("reason")?.as_str()?
                            ))
                        })
                        .collect();
                    if !lines.is_empty() {
                        text = lines.join("; ");
                    }
                }
            }
            result.error = Some(text);
        }
    }
    result
}

/// Polls `job_ids` until every one is complete (at most four requests at a
/// time, so a deployed API's rate limit is respected).
pub async fn wait_for_jobs(
    client: &ApiClient,
    job_ids: &[String],
    options: &SubmitOptions,
) -> Result<Vec<JobView>, SubmitError> {
    let started = Instant::now();
    let mut views: BTreeMap<String, JobView> = BTreeMap::new();
    let bar = progress_bar(options.progress, None);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} settled {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let pending: Vec<&String> = job_ids
            .iter()
            .filter(|id| views.get(*id).is_none_or(|v| v.completed_at.is_none()))
            .collect();
        if pending.is_empty() {
            break;
        }
        let fetched: Vec<Result<JobView, ClientError>> = stream::iter(pending)
            .map(|id| client.job(id))
            .buffer_unordered(4)
            .collect()
            .await;
        for view in fetched {
            let view = view?;
            views.insert(view.job_id.to_string(), view);
        }
        let total: u64 = views.values().map(|v| v.total).sum();
        let settled: u64 = views.values().map(|v| v.applied + v.duplicate + v.failed).sum();
        bar.set_length(total);
        bar.set_position(settled);
        let done = views.values().filter(|v| v.completed_at.is_some()).count();
        bar.set_message(format!("{done}/{} jobs complete", job_ids.len()));
        if views.len() == job_ids.len() && views.values().all(|v| v.completed_at.is_some()) {
            break;
        }
        if started.elapsed() > options.wait_timeout {
            bar.abandon();
            return Err(SubmitError::WaitTimeout(options.wait_timeout));
        }
        tokio::time::sleep(options.poll_interval).await;
    }
    bar.finish_and_clear();
    Ok(job_ids.iter().filter_map(|id| views.get(id).cloned()).collect())
}

fn progress_bar(visible: bool, length: Option<u64>) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(length, target);
    let style = match length {
        Some(_) => {
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {bytes}/{total_bytes} read, {msg}")
        }
        None => ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}"),
    };
    bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl fmt::Display for SubmitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(upload) = &self.upload {
            writeln!(
                f,
                "upload       {} ({} bytes) → job {}",
                upload.key, upload.bytes, upload.job_id
            )?;
            if upload.landed_before {
                writeln!(f, "             sent by an earlier run: not sent again")?;
            }
            if !self.waited {
                return write!(
                    f,
                    "time         {:.2} s to send; follow it with `pointflow wait {}`",
                    self.submit_seconds, upload.job_id
                );
            }
            if let Some(job) = self.jobs.first() {
                if let Some(error) = &job.error {
                    writeln!(f, "error        {error}")?;
                }
            }
        }
        writeln!(
            f,
            "requests     {} ({} replayed from an earlier run)",
            self.requests, self.replayed
        )?;
        writeln!(
            f,
            "accepted     {} accruals ({} collapsed as exact repeats)",
            self.accepted, self.deduplicated
        )?;
        writeln!(f, "rejected     {} lines", self.rejected_lines)?;
        let unfinished = self.chunks.iter().filter(|c| c.unfinished).count();
        let refused = self.chunks.iter().filter(|c| c.error.is_some()).count() - unfinished;
        if refused > 0 {
            writeln!(f, "refused      {refused} requests (lines listed above)")?;
        }
        if unfinished > 0 {
            writeln!(
                f,
                "unfinished   {unfinished} requests got no answer after retries: run the same command again"
            )?;
        }
        if self.waited {
            writeln!(
                f,
                "applied      {}   duplicate {}   failed {}",
                self.applied, self.duplicate, self.failed
            )?;
            let complete = self.jobs.iter().filter(|j| j.status == JobStatus::Completed).count();
            writeln!(
                f,
                "jobs         {} ({complete} completed without errors)",
                self.jobs.len()
            )?;
        }
        let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        write!(
            f,
            "time         {:.2} s to send ({:.0} accruals/s)",
            self.submit_seconds,
            rate(self.accepted, self.submit_seconds)
        )?;
        if self.waited {
            write!(
                f,
                ", {:.2} s until settled ({:.0} accruals/s)",
                self.total_seconds,
                rate(self.accepted, self.total_seconds)
            )?;
        }
        Ok(())
    }
}
