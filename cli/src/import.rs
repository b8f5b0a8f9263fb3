//! `pointflow local import FILE`: drop a CSV file into the (local or
//! emulated) bucket, let the import and worker pollers do their work, and
//! report the file's job as an operator would see it.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pointflow::domain::accrual_ids::campaign_of_object;
use pointflow::domain::text_encoding::{self, EncodingRecord, EncodingSource};
use pointflow::domain::{Job, JobStatus};
use pointflow::ports::objects::ObjectRef;
use pointflow::services::import::report::{job_key, report_key};
use time::OffsetDateTime;

use crate::backend::{LocalBackend, IMPORT_PREFIX};

/// How an import ended.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub object: ObjectRef,
    /// The campaign its rows without `accrual_id` belong to (id scheme v2).
    pub campaign: String,
    pub job: Job,
    /// From dropping the file to the job's completion.
    pub elapsed: Duration,
    /// The job existed before this drop (the same content was imported before).
    pub already_imported: bool,
    /// Where the error report is, if rows were rejected.
    pub report: Option<String>,
    /// The encoding the file was read in, and why (from the job's
    /// `reports/<key>.job.json`); `None` if the file failed before.
    pub encoding: Option<EncodingRecord>,
    /// The format it was read as (`csv`, `ndjson`, `xlsx`) and, for a
    /// workbook, the sheet read (from the same pointer).
    pub format: Option<String>,
    pub sheet: Option<String>,
}

impl ImportSummary {
    /// 0 if every row was credited (or found credited), 3 if some rows were
    /// rejected or accruals failed, 1 if the file could not be imported.
    pub fn exit_code(&self) -> u8 {
        match self.job.status() {
            JobStatus::Completed => 0,
            JobStatus::CompletedWithErrors => 3,
            _ => 1,
        }
    }
}

/// The key a file is dropped at: `imports/<file name>` unless given.
pub fn default_key(file: &Path) -> anyhow::Result<String> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name; pass --key", file.display()))?;
    Ok(format!("{IMPORT_PREFIX}{name}"))
}

/// Drops `file` at `key`, in `campaign` when given (else the key is its
/// campaign), declared in `encoding` when given (else detected), and waits
/// (at most `timeout`) until its job completes. An encoding label no
/// decoder knows is refused before anything is dropped.
#[allow(clippy::too_many_arguments)]
pub async fn run_import(
    backend: &LocalBackend,
    file: &Path,
    key: &str,
    campaign: Option<&str>,
    encoding: Option<&str>,
    progress: bool,
    timeout: Duration,
) -> anyhow::Result<ImportSummary> {
    run_import_sheet(backend, file, key, campaign, encoding, None, progress, timeout).await
}

/// [`run_import`], naming also the sheet of a workbook (`.xlsx`) to read
/// (default: its first visible worksheet).
#[allow(clippy::too_many_arguments)]
pub async fn run_import_sheet(
    backend: &LocalBackend,
    file: &Path,
    key: &str,
    campaign: Option<&str>,
    encoding: Option<&str>,
    sheet: Option<&str>,
    progress: bool,
    timeout: Duration,
) -> anyhow::Result<ImportSummary> {
    let import = backend
        .import
        .as_ref()
        .context("no import bucket: pass --bucket and --import-queue-url (or --create) with --backend aws")?;
    if let Some(label) = encoding {
        text_encoding::declared(label).with_context(|| format!("--encoding {label}"))?;
    }
    let started = Instant::now();
    let dropped_at = OffsetDateTime::now_utc();
    let object = import.drop_file_with(file, key, campaign, encoding, sheet).await?;
    let bar = ProgressBar::with_draw_target(
        None,
        if progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").unwrap_or(ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let job = loop {
        if let Some(job) = backend.jobs.get_job(object.job_id()).await? {
            bar.set_message(format!(
                "{}: {} queued · {} applied · {} duplicate · {} rejected",
                if job.reading { "reading" } else { "applying" },
                job.total,
                job.applied,
                job.duplicate,
                job.rejected
            ));
            if job.completed_at.is_some() {
                break job;
            }
        }
        if started.elapsed() > timeout {
            bar.abandon();
            bail!("the import of {key} did not finish within {timeout:?}; it goes on when the runner runs again");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let report = (job.rejected > 0).then(|| {
        let key = report_key(&import.report_prefix, &object.key, object.job_id());
        match &import.bucket_dir {
            Some(dir) => dir.join(key).display().to_string(),
            None => format!("s3://{}/{key}", object.bucket),
        }
    });
    let pointer = read_pointer(import, &object).await.unwrap_or_default();
    let text = |field: &str| pointer.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(ImportSummary {
        encoding: pointer
            .get("encoding")
            .and_then(|e| serde_json::from_value(e.clone()).ok()),
        format: text("format"),
        sheet: text("sheet"),
        // Jobs are created by this process's importer, on this clock.
        already_imported: job.created_at < dropped_at,
        campaign: campaign_of_object(&object.key, campaign),
        object,
        job,
        elapsed: started.elapsed(),
        report,
    })
}

/// The job's pointer (`reports/<key>.job.json`); `None` if it cannot be
/// read. It names the encoding once the first chunk is read (not for a file
/// that failed before, nor for a workbook, which names its sheet).
async fn read_pointer(import: &crate::backend::ImportSide, object: &ObjectRef) -> Option<serde_json::Value> {
    let key = job_key(&import.report_prefix, &object.key);
    let body = match (&import.bucket_dir, &import.s3) {
        (Some(dir), _) => std::fs::read(dir.join(&key)).ok()?,
        (None, Some(s3)) => {
            let output = s3.get_object().bucket(&object.bucket).key(&key).send().await.ok()?;
            output.body.collect().await.ok()?.into_bytes().to_vec()
        }
        (None, None) => return None,
    };
    serde_json::from_slice(&body).ok()
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = &self.job;
        writeln!(f, "file      {} ({} bytes)", self.object.url(), self.object.size)?;
        writeln!(f, "job       {} — {:?}", j.job_id, j.status())?;
        writeln!(f, "campaign  {}", self.campaign)?;
        if let Some(format) = &self.format {
            match &self.sheet {
                Some(sheet) => writeln!(f, "format    {format} (sheet {sheet:?})")?,
                None => writeln!(f, "format    {format}")?,
            }
        }
        if let Some(encoding) = &self.encoding {
            let why = match encoding.source {
                EncodingSource::Declared => "declared",
                EncodingSource::Bom => "byte-order mark",
                EncodingSource::Detected => "detected",
                EncodingSource::Default => "default: the first bytes are ASCII",
            };
            writeln!(f, "encoding  {} ({why})", encoding.name)?;
        }
        if self.already_imported {
            writeln!(
                f,
                "          this content was imported before: nothing was credited again"
            )?;
        }
        if let Some(error) = &j.error {
            writeln!(f, "error     {error}")?;
        }
        writeln!(
            f,
            "rows      {} queued, {} rejected, {} collapsed as exact repeats",
            j.total, j.rejected, j.deduplicated
        )?;
        writeln!(
            f,
            "accruals  {} applied, {} duplicate, {} failed, in {} messages",
            j.applied, j.duplicate, j.failed, j.messages
        )?;
        if let Some(report) = &self.report {
            writeln!(f, "report    {report}")?;
        }
        let secs = self.elapsed.as_secs_f64();
        if self.already_imported {
            write!(f, "time      {secs:.2} s")
        } else {
            let rate = if secs > 0.0 { j.total as f64 / secs } else { 0.0 };
            write!(f, "time      {secs:.2} s ({rate:.0} accruals/s, drop to completion)")
        }
    }
}
