//! The JSON bodies the API answers with.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::{CancelProgress, Job, JobId, JobStatus};

/// What `POST /v1/jobs` answers with 202.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub job_id: JobId,
    pub accepted: u64,
    pub deduplicated: u64,
    pub messages: u64,
    pub status_url: String,
}

/// What `GET /v1/jobs/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: JobId,
    pub status: JobStatus,
    pub total: u64,
    pub applied: u64,
    pub duplicate: u64,
    pub failed: u64,
    /// Uses of a bulk-use job refused (insufficient balance, `use_id` taken).
    pub refused: u64,
    /// Rows of a file that failed validation (see its error report).
    pub rejected: u64,
    pub deduplicated: u64,
    pub messages: u64,
    /// `s3://bucket/key` of a file job; absent for API requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why a file job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// The job's cancel, once asked for (`pointflow cancel`), with who
    /// asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelProgress>,
    /// Who created the job, from which request (absent on jobs recorded
    /// before the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        JobView {
            job_id: job.job_id,
            status: job.status(),
            total: job.total,
            applied: job.applied,
            duplicate: job.duplicate,
            failed: job.failed,
            refused: job.refused,
            rejected: job.rejected,
            deduplicated: job.deduplicated,
            messages: job.messages,
            source: job.source.clone(),
            error: job.error.clone(),
            created_at: rfc3339(job.created_at),
            completed_at: job.completed_at.map(rfc3339),
            cancel: job.cancel.clone(),
            audit: job.audit.clone(),
        }
    }
}

/// Formats a timestamp as RFC 3339 (`2026-11-25T21:39:32.123Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
