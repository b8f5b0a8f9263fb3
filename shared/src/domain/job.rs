//! What a job is: its id, its counts and status, the messages and file
//! chunks that make it up, and a cancel's progress.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::audit::Audit;

/// Identifies one submission (API request or, later, file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh random id, for submissions without an `Idempotency-Key`.
    pub fn random() -> Self {
        JobId(Uuid::new_v4())
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// Which message of which job credits an accrual. The ledger remembers it, so
/// a redelivery of the same message is told from another message (of this or
/// another job) that repeats the accrual's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageRef {
    pub job_id: JobId,
    pub seq: u32,
}

/// A job as the ingest API or the file import creates it, before any accrual
/// is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub job_id: JobId,
    /// Hash of the accepted accruals (API) or of the file's identity (file):
    /// tells a retry from a different request that reuses the same key.
    pub request_hash: String,
    /// Distinct accruals accepted (after collapsing in-request duplicates).
    /// A file job starts at 0 and grows as its chunks are read.
    pub total: u64,
    /// Items collapsed because they repeated an earlier item exactly.
    pub deduplicated: u64,
    /// Queue messages the accruals were packed into.
    pub messages: u64,
    /// Where the accruals come from, for people: `s3://bucket/key`, or `None`
    /// for an API request.
    pub source: Option<String>,
    /// A file job whose file is still being read: it cannot complete before
    /// its last chunk is recorded, whatever its counts say.
    pub reading: bool,
    pub created_at: OffsetDateTime,
    /// Who asked for the job, from which request (`None`: not recorded, as
    /// by tools and jobs created before the audit trail).
    pub audit: Option<Audit>,
}

/// A job with its progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: JobId,
    pub request_hash: String,
    pub total: u64,
    pub deduplicated: u64,
    pub messages: u64,
    pub source: Option<String>,
    pub created_at: OffsetDateTime,
    /// Every message has been handed to the queue.
    pub enqueued: bool,
    /// The job's file is still being read (see [`NewJob::reading`]).
    pub reading: bool,
    /// Rows of the job's file that failed validation (listed in its error
    /// report); never queued.
    pub rejected: u64,
    /// Accruals credited by this job (including ones a redelivery found
    /// already credited by this same message).
    pub applied: u64,
    /// Accruals skipped because their id had already been credited (by
    /// another job, or by another message of this one).
    pub duplicate: u64,
    /// Accruals of messages that exhausted their deliveries (sent to the DLQ).
    pub failed: u64,
    /// Uses of a bulk-use job that were refused: the balance held too
    /// little, or the `use_id` was taken by a different deduction.
    pub refused: u64,
    /// Why the job's file could not be read (the job is then `failed`).
    pub error: Option<String>,
    pub completed_at: Option<OffsetDateTime>,
    /// The job's cancel, once asked for ([`crate::services::cancel`]).
    pub cancel: Option<CancelProgress>,
    /// Who asked for the job (see [`NewJob::audit`]).
    pub audit: Option<Audit>,
}

/// Where a job's cancel stands: counts over the messages done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelProgress {
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    pub counts: CancelCounts,
    /// Messages of the job whose accruals are done.
    pub messages: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// Who asked for the cancel, and why (the first request's: asking
    /// again resumes it and records nothing new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// What cancelling one message's accruals did, added to its job once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelCounts {
    /// Accruals the job credited, now reversed.
    pub reversed: u64,
    /// Accruals the job credited whose points were already spent (or
    /// partly): not reversed, nothing changed.
    pub spent: u64,
    /// Items the job never credited (another job had credited the id, or
    /// the message failed): nothing to reverse.
    pub skipped: u64,
}

/// A folded message's item ids, and whether its cancel is recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldedItems {
    pub items: Vec<String>,
    pub cancelled: bool,
}

impl Job {
    /// The job's settled counts, as one message's are kept.
    pub fn counts(&self) -> MessageCounts {
        MessageCounts {
            applied: self.applied,
            duplicate: self.duplicate,
            failed: self.failed,
            refused: self.refused,
        }
    }

    /// A just-created job.
    pub fn from_new(new: &NewJob) -> Self {
        Job {
            job_id: new.job_id,
            request_hash: new.request_hash.clone(),
            total: new.total,
            deduplicated: new.deduplicated,
            messages: new.messages,
            source: new.source.clone(),
            created_at: new.created_at,
            enqueued: false,
            reading: new.reading,
            rejected: 0,
            applied: 0,
            duplicate: 0,
            failed: 0,
            refused: 0,
            error: None,
            completed_at: None,
            cancel: None,
            audit: new.audit.clone(),
        }
    }

    /// Items whose fate is known.
    pub fn settled(&self) -> u64 {
        self.applied + self.duplicate + self.failed + self.refused
    }

    /// Where the job stands, derived from its counts so it can never disagree
    /// with them.
    pub fn status(&self) -> JobStatus {
        if self.error.is_some() {
            JobStatus::Failed
        } else if self.reading {
            JobStatus::Importing
        } else if self.settled() >= self.total {
            if self.failed > 0 || self.rejected > 0 || self.refused > 0 {
                JobStatus::CompletedWithErrors
            } else {
                JobStatus::Completed
            }
        } else if self.settled() > 0 {
            JobStatus::Running
        } else {
            JobStatus::Queued
        }
    }
}

/// How a chunk of a file job ends the reading, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkEnd {
    /// More of the file follows in a later chunk.
    More,
    /// The file has been read to its end.
    Last,
    /// The file cannot be read further (e.g. no usable header): the job is
    /// failed with this reason; what earlier chunks queued still applies.
    Failed { reason: String },
}

/// What reading one chunk of a file job queued and rejected, recorded on the
/// job once per `(job_id, index)` however often the chunk is re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkReport {
    /// 0-based chunk number within the file.
    pub index: u32,
    pub accepted: u64,
    pub deduplicated: u64,
    pub rejected: u64,
    pub messages: u64,
    pub end: ChunkEnd,
}

impl ChunkReport {
    /// Whether this chunk ends the reading (`Last` or `Failed`).
    pub fn is_final(&self) -> bool {
        !matches!(self.end, ChunkEnd::More)
    }

    /// The failure reason, if the chunk failed the job.
    pub fn failure(&self) -> Option<&str> {
        match &self.end {
            ChunkEnd::Failed { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Lifecycle of a job, as `GET /v1/jobs/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// A file job whose file is still being read.
    Importing,
    Queued,
    Running,
    Completed,
    /// Every item is settled, but some failed (DLQ), rows were rejected, or
    /// uses were refused.
    CompletedWithErrors,
    /// The job's file could not be read; see its `error`.
    Failed,
}

/// What happened to one message's accruals, folded into its job once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub applied: u64,
    pub duplicate: u64,
    pub failed: u64,
    /// Uses refused (insufficient balance, or a `use_id` taken by another
    /// deduction); always 0 for accruals.
    #[serde(default)]
    pub refused: u64,
}

impl MessageCounts {
    pub fn settled(&self) -> u64 {
        self.applied + self.duplicate + self.failed + self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(total: u64, applied: u64, duplicate: u64, failed: u64) -> Job {
        let mut j = Job::from_new(&NewJob {
            job_id: JobId::random(),
            request_hash: String::new(),
            total,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: OffsetDateTime::UNIX_EPOCH,
            audit: None,
        });
        j.applied = applied;
        j.duplicate = duplicate;
        j.failed = failed;
        j
    }

    #[test]
    fn status_follows_counts() {
        assert_eq!(job(10, 0, 0, 0).status(), JobStatus::Queued);
        assert_eq!(job(10, 3, 1, 0).status(), JobStatus::Running);
        assert_eq!(job(10, 9, 1, 0).status(), JobStatus::Completed);
        assert_eq!(job(10, 5, 0, 5).status(), JobStatus::CompletedWithErrors);
        let mut file = job(10, 10, 0, 0);
        file.reading = true;
        assert_eq!(file.status(), JobStatus::Importing, "more chunks may follow");
        file.reading = false;
        file.rejected = 1;
        assert_eq!(file.status(), JobStatus::CompletedWithErrors);
        file.error = Some("no header".into());
        assert_eq!(file.status(), JobStatus::Failed);
    }

    #[test]
    fn job_id_round_trips_through_text() {
        let id = JobId::random();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    }
}
