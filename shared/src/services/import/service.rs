//! The importer: reads one chunk of a file per call, queues its accruals,
//! reports its bad rows, and hands the rest of the file on.
//!
//! A chunk ends at the first row boundary after `chunk_bytes`, so where each
//! chunk starts and which queue messages (job, seq) it produces depend only on
//! the file and the settings. Re-reading a chunk (a redelivery, a duplicate
//! event, a crash half-way) therefore queues the very same messages, which the
//! worker and ledger apply once, and its counts are recorded on the job once
//! per chunk. Order within a chunk: queue its accruals, write its report part,
//! queue the continuation, then record the chunk; a chunk found recorded is
//! skipped whole, since everything it does came before the recording.

use crate::ports::log_form;
use std::sync::Arc;

use time::OffsetDateTime;
use tracing::{info, info_span, warn, Instrument};

use crate::domain::accrual_ids::{self, campaign_of_object, ContentIds};
use crate::domain::limits::{CeilingError, JobTally};
use crate::domain::packing::pack_accruals;
use crate::domain::readers::csv::{CsvFileError, RowError};
use crate::domain::readers::FileRead;
use crate::domain::text_encoding::{self, FileEncoding};
use crate::domain::{ChunkEnd, ChunkReport, JobId, NewJob};
use crate::ports::objects::{ObjectError, ObjectRef, ObjectStore};
use crate::ports::{CreateJob, JobStore, QueueError, StoreError, WorkQueue};
use crate::services::import::blocking::{BlockingReads, Windows};
use crate::services::import::occurrences::{self, OccurrencesError};
use crate::services::import::parse::{parse_file, EncodingChoice, Format, Window};
use crate::services::import::report::{self, HEADER};
use crate::services::import::task::{ImportTask, Resume};

pub use super::settings::{
    file_format, is_workbook, line_format, ImportSettings, CAMPAIGN_METADATA, DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_WORKBOOK_BYTES, ENCODING_METADATA, MAX_DERIVED_CONTENTS, REPORT_PART_BYTES, SHEET_METADATA,
    WINDOW_MESSAGES,
};

/// What one call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Nothing to do: the file was imported before, or this chunk was read.
    Skipped { job_id: JobId, reason: &'static str },
    /// A chunk was read and the next one handed on.
    Continued { job_id: JobId, chunk: ChunkReport },
    /// The last chunk was read; `report` names the error report, if any.
    Finished {
        job_id: JobId,
        chunk: ChunkReport,
        report: Option<String>,
    },
    /// The file cannot be read (no usable header, or it changed): the job is
    /// failed with the reason in `chunk.end`.
    Failed {
        job_id: JobId,
        chunk: ChunkReport,
        report: Option<String>,
    },
}

impl ChunkOutcome {
    pub fn job_id(&self) -> JobId {
        match self {
            ChunkOutcome::Skipped { job_id, .. }
            | ChunkOutcome::Continued { job_id, .. }
            | ChunkOutcome::Finished { job_id, .. }
            | ChunkOutcome::Failed { job_id, .. } => *job_id,
        }
    }
}

/// A chunk that could not be read now; trying again later may succeed (the
/// queue redelivers the task, and re-reading is safe).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("recording the job failed")]
    Store(#[from] StoreError),
    #[error("queueing failed")]
    Queue(#[from] QueueError),
    #[error("reading or writing the bucket failed")]
    Object(#[source] ObjectError),
    #[error("reading the file failed")]
    Read(#[source] CsvFileError),
    #[error("the parsing thread stopped unexpectedly: {0}")]
    Parser(String),
    #[error("reading the occurrence counts of the earlier chunks failed")]
    Occurrences(#[source] OccurrencesError),
    /// The last chunk was read before chunk `chunk` was recorded (its
    /// task died after handing the next chunk on, and is redelivered):
    /// the job's reading may end only with every chunk's counts.
    #[error("chunk {chunk} of the file is not recorded yet; the last chunk waits for it")]
    EarlierChunkPending { chunk: u32 },
}

/// Reads files chunk by chunk into the accrual queue.
#[derive(Clone)]
pub struct Importer {
    objects: Arc<dyn ObjectStore>,
    jobs: Arc<dyn JobStore>,
    accruals: Arc<dyn WorkQueue>,
    tasks: Arc<dyn WorkQueue>,
    settings: ImportSettings,
    reads: BlockingReads,
}

/// A ceiling passed, as a file's job states it: an accrual is named by
/// its line, as a bad row is.
fn file_reason(e: &CeilingError) -> String {
    match e {
        CeilingError::AmountPerAccrual {
            index,
            field,
            value,
            limit,
        } => format!(
            "line {index}: {field} {value} is over the ceiling of {limit} points per accrual; nothing was queued"
        ),
        other => other.to_string(),
    }
}

/// What the counting pass found.
enum Counted {
    Within,
    Over(CeilingError),
}

/// Where a chunk starts.
struct Start {
    chunk: u32,
    offset: u64,
    line: u64,
    next_seq: u32,
    columns: Option<Vec<String>>,
    report_parts: Vec<u32>,
    /// The job's creation time: what its messages carry as `queued_at`.
    queued_at: OffsetDateTime,
    /// The campaign of id scheme v2; `None`: scheme v1 (a file whose import
    /// started before v2).
    campaign: Option<String>,
    /// How the chunk reads the file (for a CSV: how it learns the encoding).
    format: Format,
}

impl Importer {
    /// `accruals` is the queue the worker reads; `tasks` the import queue,
    /// which carries continuations.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        jobs: Arc<dyn JobStore>,
        accruals: Arc<dyn WorkQueue>,
        tasks: Arc<dyn WorkQueue>,
        settings: ImportSettings,
    ) -> Self {
        Importer {
            objects,
            jobs,
            accruals,
            tasks,
            settings,
            reads: BlockingReads::Thread,
        }
    }

    /// Runs the blocking reads as `reads` says ([`BlockingReads::Inline`]
    /// for a caller that polls without a runtime).
    pub fn with_blocking_reads(mut self, reads: BlockingReads) -> Self {
        self.reads = reads;
        self
    }

    /// Reads the chunk `task` names.
    pub async fn run(&self, task: &ImportTask) -> Result<ChunkOutcome, ImportError> {
        let object = &task.object;
        let job_id = object.job_id();
        let span = info_span!(
            "import_chunk",
            %job_id,
            bucket = %object.bucket,
            key = %object.key,
            chunk = task.resume.as_ref().map_or(0, |r| r.chunk),
        );
        async {
            let outcome = self.run_chunk(task, job_id).await;
            match &outcome {
                Ok(ChunkOutcome::Skipped { reason, .. }) => info!(reason, "chunk skipped"),
                Ok(ChunkOutcome::Continued { chunk, .. }) => {
                    info!(
                        accepted = chunk.accepted,
                        rejected = chunk.rejected,
                        messages = chunk.messages,
                        "chunk read"
                    )
                }
                Ok(ChunkOutcome::Finished { chunk, report, .. }) => info!(
                    accepted = chunk.accepted,
                    rejected = chunk.rejected,
                    messages = chunk.messages,
                    report = report.as_deref().unwrap_or(""),
                    "file read"
                ),
                Ok(ChunkOutcome::Failed { chunk, .. }) => {
                    warn!(reason = chunk.failure().unwrap_or(""), "file cannot be imported")
                }
                Err(e) => warn!(error = %log_form(e), "chunk failed; it will be retried"),
            }
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_chunk(&self, task: &ImportTask, job_id: JobId) -> Result<ChunkOutcome, ImportError> {
        let object = &task.object;
        let start = match &task.resume {
            None => {
                let new = NewJob {
                    job_id,
                    // Marks the job as one of scheme v2, so that its first
                    // chunk read again keeps the scheme it started with.
                    request_hash: format!("{}:{}", accrual_ids::SCHEME, object.identity_hash()),
                    total: 0,
                    deduplicated: 0,
                    messages: 0,
                    source: Some(object.url()),
                    reading: true,
                    created_at: OffsetDateTime::now_utc(),
                    audit: task.audit.clone(),
                };
                let job = match self.jobs.create_job(&new).await? {
                    CreateJob::Created(job) => job,
                    CreateJob::Existing(job) if !job.reading => {
                        return Ok(ChunkOutcome::Skipped {
                            job_id,
                            reason: "this object was imported before",
                        });
                    }
                    CreateJob::Existing(job) => job,
                };
                if self.jobs.chunk_recorded(job_id, 0).await? {
                    // Checked before the metadata is read: the object may
                    // have changed since, which must not fail a job under way.
                    return Ok(ChunkOutcome::Skipped {
                        job_id,
                        reason: "this chunk was read before",
                    });
                }
                let mut start = Start {
                    chunk: 0,
                    offset: 0,
                    line: 1,
                    next_seq: 0,
                    columns: None,
                    report_parts: Vec::new(),
                    queued_at: job.created_at,
                    campaign: None,
                    format: Format::Lines(line_format(&object.key), EncodingChoice::Sniff(None)),
                };
                // A job an older importer started (scheme v1) is finished
                // with v1 ids: v2 ids for rows it may have queued would
                // credit them again. Later chunks carry the scheme in their
                // continuation (`Resume::campaign`).
                if job.request_hash.starts_with(&format!("{}:", accrual_ids::SCHEME)) {
                    match self.objects.metadata(object, CAMPAIGN_METADATA).await {
                        Ok(campaign) => start.campaign = Some(campaign_of_object(&object.key, campaign.as_deref())),
                        Err(ObjectError::Changed { detail, .. }) => {
                            let reason = format!("the object changed or was deleted before being imported ({detail})");
                            return self.fail(object, job_id, &start, reason, None).await;
                        }
                        Err(e) => return Err(ImportError::Object(e)),
                    }
                }
                match self.objects.metadata(object, ENCODING_METADATA).await {
                    Ok(None) => {}
                    Ok(Some(label)) => match text_encoding::declared(&label) {
                        Ok(declared) => {
                            start.format =
                                Format::Lines(line_format(&object.key), EncodingChoice::Sniff(Some(declared)))
                        }
                        Err(e) => {
                            let reason = format!("the metadata {ENCODING_METADATA}: {e}");
                            return self.fail(object, job_id, &start, reason, None).await;
                        }
                    },
                    Err(ObjectError::Changed { detail, .. }) => {
                        let reason = format!("the object changed or was deleted before being imported ({detail})");
                        return self.fail(object, job_id, &start, reason, None).await;
                    }
                    Err(e) => return Err(ImportError::Object(e)),
                }
                #[cfg(feature = "xlsx")]
                if is_workbook(&object.key) {
                    if let Err(reason) = self.workbook_format(object, &mut start).await? {
                        self.write_pointer(object, job_id, start.campaign.as_deref(), None, Some(&reason))
                            .await?;
                        return self.fail(object, job_id, &start, reason, None).await;
                    }
                }
                self.write_pointer(object, job_id, start.campaign.as_deref(), None, None)
                    .await?;
                // The ceilings hold for the whole file, so the whole file
                // is counted before its first row is queued.
                match self.count_file(object, &start).await? {
                    Counted::Within => {}
                    Counted::Over(e) => {
                        let reason = file_reason(&e);
                        self.write_pointer(object, job_id, start.campaign.as_deref(), None, Some(&reason))
                            .await?;
                        return self.fail(object, job_id, &start, reason, None).await;
                    }
                }
                start
            }
            Some(r) => Start {
                chunk: r.chunk,
                offset: r.offset,
                line: r.line,
                next_seq: r.next_seq,
                columns: Some(r.columns.clone()),
                report_parts: r.report_parts.clone(),
                // The job's creation time, as the first chunk's messages
                // carry it; a job gone meanwhile has nothing to credit to.
                queued_at: self
                    .jobs
                    .get_job(job_id)
                    .await?
                    .map_or_else(OffsetDateTime::now_utc, |job| job.created_at),
                campaign: r.campaign.clone(),
                // A continuation from before encodings were read is of a
                // UTF-8 file; a name no decoder knows cannot come from the
                // first chunk, which chose it.
                format: Format::Lines(
                    line_format(&object.key),
                    EncodingChoice::Known(
                        r.encoding
                            .as_ref()
                            .and_then(|record| record.encoding())
                            .unwrap_or_else(FileEncoding::utf8),
                    ),
                ),
            },
        };
        if self.jobs.chunk_recorded(job_id, start.chunk).await? {
            return Ok(ChunkOutcome::Skipped {
                job_id,
                reason: "this chunk was read before",
            });
        }
        let reader = match self.objects.open(object, start.offset).await {
            Ok(reader) => reader,
            Err(ObjectError::Changed { detail, .. }) => {
                let reason = format!(
                    "the object changed or was deleted while being imported ({detail}); rows before line {} were queued",
                    start.line
                );
                return self.fail(object, job_id, &start, reason, None).await;
            }
            Err(e) => return Err(ImportError::Object(e)),
        };

        let prefix = &self.settings.report_prefix;
        let mut ids = match &start.campaign {
            Some(campaign) => {
                match occurrences::load(
                    &*self.objects,
                    self.reads,
                    &object.bucket,
                    prefix,
                    job_id,
                    start.chunk,
                    campaign,
                )
                .await
                {
                    Ok(ids) => Some(ids),
                    // A run of this chunk that began before another run of
                    // it recorded it finds the table that run then deleted:
                    // the chunk is done, and failing would overwrite its report.
                    Err(OccurrencesError::Missing { .. }) if self.jobs.chunk_recorded(job_id, start.chunk).await? => {
                        return Ok(ChunkOutcome::Skipped {
                            job_id,
                            reason: "this chunk was read before",
                        });
                    }
                    Err(e @ OccurrencesError::Missing { .. }) => {
                        let reason = format!("{e}; rows before line {} were queued", start.line);
                        return self.fail(object, job_id, &start, reason, None).await;
                    }
                    Err(e) => return Err(ImportError::Occurrences(e)),
                }
            }
            None => None,
        };

        // Parsing blocks (the reader streams from S3 or disk), so it runs on
        // a blocking thread and hands windows over a short channel: memory
        // holds a couple of windows, whatever the file's size (inline, for
        // a caller without a runtime, it holds the chunk's: `BlockingReads`).
        let mut windows = {
            let identity = object.identity();
            let settings = self.settings.clone();
            let columns = start.columns.clone();
            let (offset, line, size, format) = (start.offset, start.line, object.size, start.format.clone());
            Windows::start(self.reads, move |send| {
                let parsed = parse_file(
                    reader,
                    &format,
                    columns,
                    line,
                    offset,
                    size,
                    &identity,
                    ids.as_mut(),
                    &settings,
                    send,
                );
                (parsed, ids)
            })
        };
        let mut next_seq = start.next_seq;
        let mut accepted = 0u64;
        let mut messages = 0u64;
        while let Some(window) = windows.next().await {
            accepted += window.accruals.len() as u64;
            let mut packed = pack_accruals(job_id, window.accruals, self.settings.packing);
            for message in &mut packed {
                message.seq += next_seq;
                // Reading a chunk again queues the very same bodies.
                message.stamp(start.queued_at);
            }
            // A file of 2^32 messages would be 2 trillion accruals.
            next_seq += u32::try_from(packed.len()).unwrap_or(u32::MAX);
            messages += packed.len() as u64;
            let bodies: Vec<String> = packed.iter().map(|m| m.encode()).collect();
            drop(packed);
            // An error drops `windows`, which stops the parsing thread.
            self.accruals.send_messages(&bodies).await?;
        }
        let (parsed, ids) = windows.finish().await.map_err(ImportError::Parser)?;
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) if e.is_permanent() => {
                let mut lines = Vec::new();
                report::write_errors(
                    &mut lines,
                    &[RowError {
                        line: 1,
                        column: "(header)".to_owned(),
                        reason: e.to_string(),
                        raw: String::new(),
                    }],
                );
                return self.fail(object, job_id, &start, e.to_string(), Some(lines)).await;
            }
            Err(e) => return Err(ImportError::Read(e)),
        };

        if start.chunk == 0 {
            if let Some(encoding) = parsed.encoding {
                info!(encoding = encoding.name(), why = ?encoding.source, "file encoding chosen");
            }
            if let Some(sheet) = &parsed.sheet {
                info!(sheet, "workbook sheet read");
            }
            let read = FileRead {
                encoding: parsed.encoding,
                sheet: parsed.sheet.clone(),
            };
            self.write_pointer(object, job_id, start.campaign.as_deref(), Some(&read), None)
                .await?;
        }
        let chunk = ChunkReport {
            index: start.chunk,
            accepted,
            deduplicated: parsed.deduplicated,
            rejected: parsed.rejected,
            messages,
            end: if parsed.next.is_some() {
                ChunkEnd::More
            } else {
                ChunkEnd::Last
            },
        };
        if crate::flaws::active(crate::flaws::Flaw::ChunkRecordedEarly) {
            self.jobs
                .record_chunk(job_id, &chunk, OffsetDateTime::now_utc())
                .await?;
        }
        let mut parts = start.report_parts.clone();
        let report = match parsed.next {
            Some((offset, line)) => {
                if !parsed.report.is_empty() {
                    let key = report::part_key(prefix, job_id, start.chunk);
                    self.objects
                        .put(&object.bucket, &key, parsed.report)
                        .await
                        .map_err(ImportError::Object)?;
                    parts.push(start.chunk);
                }
                // The next chunk's ids need this one's counts, so they are
                // written before the continuation that reads them.
                if let Some(ids) = &ids {
                    occurrences::save(&*self.objects, &object.bucket, prefix, job_id, start.chunk + 1, ids)
                        .await
                        .map_err(ImportError::Object)?;
                }
                let next = ImportTask {
                    object: object.clone(),
                    audit: None,
                    resume: Some(Resume {
                        job_id,
                        chunk: start.chunk + 1,
                        offset,
                        line,
                        next_seq,
                        columns: parsed.columns,
                        report_parts: parts,
                        campaign: start.campaign.clone(),
                        started_at: Some(start.queued_at),
                        encoding: parsed.encoding.map(|e| e.record()),
                    }),
                };
                self.tasks.send_messages(&[next.encode()]).await?;
                None
            }
            None => {
                // Recording the last chunk ends the job's reading, so it
                // waits for every earlier chunk's counts: one that handed
                // this chunk on and died before recording itself is redelivered.
                for earlier in 0..start.chunk {
                    if !self.jobs.chunk_recorded(job_id, earlier).await? {
                        return Err(ImportError::EarlierChunkPending { chunk: earlier });
                    }
                }
                self.write_report(object, job_id, start.chunk, parts, parsed.report)
                    .await?
            }
        };
        self.jobs
            .record_chunk(job_id, &chunk, OffsetDateTime::now_utc())
            .await?;
        if start.campaign.is_some() && start.chunk > 0 {
            // Nothing needs this chunk's table again: a redelivery of the
            // chunk finds it recorded and skips it, and a reading that began
            // before the record finds the table gone, then the record.
            if let Err(e) = occurrences::remove(&*self.objects, &object.bucket, prefix, job_id, start.chunk).await {
                warn!(error = %log_form(&e), "the occurrence counts read are left for the lifecycle rule");
            }
        }
        Ok(match chunk.end {
            ChunkEnd::More => ChunkOutcome::Continued { job_id, chunk },
            _ => ChunkOutcome::Finished { job_id, chunk, report },
        })
    }

    /// The counting pass: reads the whole file once, as the chunks will
    /// (same parsing, same ids, same collapsing of repeats), tallying its
    /// accruals against the ceilings and queueing nothing. Memory stays
    /// that of one chunk; a file whose header or encoding cannot be read
    /// is left to the first chunk, which fails it with the usual reason.
    async fn count_file(&self, object: &ObjectRef, start: &Start) -> Result<Counted, ImportError> {
        let ceilings = self.settings.ceilings;
        let mut ids = start.campaign.as_deref().map(ContentIds::new);
        let (mut offset, mut line, mut columns, mut format) = (0u64, 1u64, None, start.format.clone());
        let mut tally = JobTally::default();
        loop {
            let reader = match self.objects.open(object, offset).await {
                Ok(reader) => reader,
                // The first chunk finds the change too and fails the job.
                Err(ObjectError::Changed { .. }) => return Ok(Counted::Within),
                Err(e) => return Err(ImportError::Object(e)),
            };
            let identity = object.identity();
            let settings = self.settings.clone();
            let size = object.size;
            let chunk_format = format.clone();
            let (parsed, back_ids, back_tally, over) = self
                .reads
                .run(move || {
                    let mut over = None;
                    let send = |window: Window| {
                        for (accrual, line) in window.accruals.iter().zip(&window.lines) {
                            // A line number past usize cannot occur on the
                            // platforms Lambda runs (64-bit).
                            let index = usize::try_from(*line).unwrap_or(usize::MAX);
                            if let Err(e) = tally.add(&ceilings, index, accrual.amount) {
                                over = Some(e);
                                return false;
                            }
                        }
                        true
                    };
                    let parsed = parse_file(
                        reader,
                        &chunk_format,
                        columns,
                        line,
                        offset,
                        size,
                        &identity,
                        ids.as_mut(),
                        &settings,
                        send,
                    );
                    (parsed, ids, tally, over)
                })
                .await
                .map_err(ImportError::Parser)?;
            if let Some(e) = over {
                return Ok(Counted::Over(e));
            }
            let parsed = match parsed {
                Ok(parsed) => parsed,
                Err(e) if e.is_permanent() => return Ok(Counted::Within),
                Err(e) => return Err(ImportError::Read(e)),
            };
            (ids, tally) = (back_ids, back_tally);
            match parsed.next {
                None => return Ok(Counted::Within),
                Some((next_offset, next_line)) => {
                    (offset, line) = (next_offset, next_line);
                    columns = Some(parsed.columns);
                    if let (Format::Lines(kind, _), Some(encoding)) = (&format, parsed.encoding) {
                        format = Format::Lines(*kind, EncodingChoice::Known(encoding));
                    }
                }
            }
        }
    }

    /// Makes `start` read the object as a workbook, with the sheet its
    /// metadata names; `Ok(Err(reason))`: the workbook fails as a whole (too
    /// large to read in one invocation, or it changed).
    #[cfg(feature = "xlsx")]
    async fn workbook_format(&self, object: &ObjectRef, start: &mut Start) -> Result<Result<(), String>, ImportError> {
        let limit = self.settings.max_workbook_bytes;
        if object.size > limit {
            return Ok(Err(format!(
                "the workbook is {} bytes, over the {limit} bytes one import reads (a workbook is read whole, \
                 not in chunks): split its rows over several workbooks, or save the sheet as CSV; nothing was queued",
                object.size
            )));
        }
        let sheet = match self.objects.metadata(object, SHEET_METADATA).await {
            Ok(sheet) => sheet,
            Err(ObjectError::Changed { detail, .. }) => {
                return Ok(Err(format!(
                    "the object changed or was deleted before being imported ({detail})"
                )))
            }
            Err(e) => return Err(ImportError::Object(e)),
        };
        start.format = Format::Xlsx { sheet };
        Ok(Ok(()))
    }

    /// Writes `reports/<key>.job.json`, which tells the operator which job
    /// to poll, next to where the report will be, and the file's format;
    /// once the first chunk has read it, with the file's encoding and why,
    /// or the sheet of a workbook.
    async fn write_pointer(
        &self,
        object: &ObjectRef,
        job_id: JobId,
        campaign: Option<&str>,
        read: Option<&FileRead>,
        error: Option<&str>,
    ) -> Result<(), ImportError> {
        let mut pointer = serde_json::json!({
            "job_id": job_id,
            "source": object.url(),
            "etag": object.etag,
            "campaign": campaign,
            "id_scheme": if campaign.is_some() { accrual_ids::SCHEME } else { "v1" },
            "format": file_format(&object.key).name(),
            "status_url": format!("/v1/jobs/{job_id}"),
            "report": report::report_key(&self.settings.report_prefix, &object.key, job_id),
        });
        if let Some(map) = pointer.as_object_mut() {
            if let Some(encoding) = read.and_then(|r| r.encoding) {
                map.insert("encoding".to_owned(), serde_json::json!(encoding.record()));
            }
            if let Some(sheet) = read.and_then(|r| r.sheet.as_deref()) {
                map.insert("sheet".to_owned(), serde_json::json!(sheet));
            }
            if let Some(error) = error {
                map.insert("error".to_owned(), serde_json::json!(error));
            }
        }
        let key = report::job_key(&self.settings.report_prefix, &object.key);
        self.objects
            .put(&object.bucket, &key, format!("{pointer}\n").into_bytes())
            .await
            .map_err(ImportError::Object)
    }

    /// Writes the whole report from the earlier chunks' parts and this
    /// chunk's lines; removes a stale one when the file had no bad row.
    async fn write_report(
        &self,
        object: &ObjectRef,
        job_id: JobId,
        chunk: u32,
        mut parts: Vec<u32>,
        own: Vec<u8>,
    ) -> Result<Option<String>, ImportError> {
        let prefix = &self.settings.report_prefix;
        let key = report::report_key(prefix, &object.key, job_id);
        let bucket = &object.bucket;
        let result = if parts.is_empty() {
            if own.is_empty() {
                self.objects.delete(bucket, &key).await.map(|()| None)
            } else {
                let mut body = HEADER.to_vec();
                body.extend_from_slice(&own);
                self.objects.put(bucket, &key, body).await.map(|()| Some(key))
            }
        } else {
            if !own.is_empty() {
                let part = report::part_key(prefix, job_id, chunk);
                self.objects
                    .put(bucket, &part, own)
                    .await
                    .map_err(ImportError::Object)?;
                parts.push(chunk);
            }
            let part_keys: Vec<String> = parts.iter().map(|c| report::part_key(prefix, job_id, *c)).collect();
            self.objects
                .concat(bucket, &key, HEADER.to_vec(), &part_keys)
                .await
                .map(|()| Some(key))
        };
        result.map_err(ImportError::Object)
    }

    /// Fails the job: writes what is known to the report and records a
    /// final chunk carrying the reason.
    async fn fail(
        &self,
        object: &ObjectRef,
        job_id: JobId,
        start: &Start,
        reason: String,
        report_lines: Option<Vec<u8>>,
    ) -> Result<ChunkOutcome, ImportError> {
        let rejected = u64::from(report_lines.is_some());
        let report = self
            .write_report(
                object,
                job_id,
                start.chunk,
                start.report_parts.clone(),
                report_lines.unwrap_or_default(),
            )
            .await?;
        let chunk = ChunkReport {
            index: start.chunk,
            accepted: 0,
            deduplicated: 0,
            rejected,
            messages: 0,
            end: ChunkEnd::Failed { reason },
        };
        self.jobs
            .record_chunk(job_id, &chunk, OffsetDateTime::now_utc())
            .await?;
        Ok(ChunkOutcome::Failed { job_id, chunk, report })
    }
}
