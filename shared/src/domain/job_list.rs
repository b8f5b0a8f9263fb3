//! Listing jobs: the order jobs are listed in (newest first), the key that
//! order follows, page cursors and the query parameters of
//! `GET /v1/jobs` (the paging itself is [`crate::services::job_list`]).
//!
//! Jobs are listed by their **listing key**, `<created_at>#<job_id>`, the
//! creation time in UTC to the millisecond, fixed width (as a history sort
//! key's time, [`crate::domain::history::key_time`]), read in reverse: newest
//! first, ties by job id, also descending. Stores keep the key ordered
//! (SQLite: an index; DynamoDB: the `job_list` index), so a page reads only
//! what it lists. Status is derived from a job's counts, which change with
//! every fold, so no store indexes it: the status filter is applied to the
//! jobs read, and a page reads at most [`MAX_JOBS_EXAMINED`] jobs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::history::{key_time, QueryParameterError};
use crate::domain::{Job, JobId, JobStatus};

/// Jobs per page when the client does not say.
pub const DEFAULT_JOB_PAGE: usize = 50;
/// The most jobs one page may ask for.
pub const MAX_JOB_PAGE: usize = 500;
/// The most jobs one page reads from the store, matching or not: what bounds
/// the work of a request whose filters match few jobs. Such a page may be
/// short, or empty, and still carry a `next_cursor` (where the reading
/// stopped). At least [`MAX_JOB_PAGE`] + 1, so a page without filters is
/// always full when more jobs follow.
pub const MAX_JOBS_EXAMINED: usize = 1_000;
/// The longest `source` prefix a query may give (S3 keys are at most 1,024
/// bytes, plus `s3://`, the bucket and a slash).
const MAX_SOURCE_FILTER: usize = 1_100;

/// A job's place in the listing: `<created_at to the millisecond, UTC>#<job_id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobListKey(String);

impl JobListKey {
    /// The key of a job created at `created_at`.
    pub fn of(created_at: OffsetDateTime, job_id: JobId) -> Self {
        JobListKey(format!("{}#{job_id}", key_time(created_at)))
    }

    /// The key of a stored job.
    pub fn of_job(job: &Job) -> Self {
        Self::of(job.created_at, job.job_id)
    }

    /// Reads a key as written; `None` if `text` is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let (time, id) = text.split_once('#')?;
        parse_key_time(time)?;
        let job_id: JobId = id.parse().ok()?;
        // Only the canonical spelling: it is what stores compare.
        (job_id.to_string() == id).then(|| JobListKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The creation time the key holds (to the millisecond).
    pub fn created_at(&self) -> OffsetDateTime {
        // Keys are built or parsed only from valid times.
        self.0
            .split_once('#')
            .and_then(|(time, _)| parse_key_time(time))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

fn parse_key_time(text: &str) -> Option<OffsetDateTime> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    (key_time(parsed) == text).then_some(parsed)
}

/// Which jobs a store lists: those whose key is below `before` (the last
/// key a previous read returned) and that were created after
/// `created_after` (compared to the millisecond, as keys are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRange {
    pub before: Option<JobListKey>,
    pub created_after: Option<OffsetDateTime>,
}

impl JobRange {
    /// The lowest key a listed job may have, exclusive: above every key of
    /// a job created in `created_after`'s millisecond (job ids hold only hex
    /// digits and `-`, all below `~`), below every later one.
    pub fn after_bound(&self) -> Option<String> {
        self.created_after.map(|t| format!("{}#~", key_time(t)))
    }

    /// Whether a job with this key is in the range.
    pub fn contains(&self, key: &JobListKey) -> bool {
        self.before.as_ref().is_none_or(|before| key < before)
            && self.after_bound().is_none_or(|bound| key.as_str() > bound.as_str())
    }
}

/// Where a page ends: the listing key of the last job it read, opaque to
/// clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor(JobListKey);

impl JobCursor {
    pub fn at(key: JobListKey) -> Self {
        JobCursor(key)
    }

    /// The key the jobs of the next page are below.
    pub fn key(&self) -> &JobListKey {
        &self.0
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_str().as_bytes())
    }

    /// Reads a cursor a page gave; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        JobListKey::parse(&String::from_utf8(bytes).ok()?).map(JobCursor)
    }
}

/// The `source` filter: jobs of `POST /v1/jobs`, dropped files, or files
/// whose `s3://` source starts with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFilter {
    Api,
    File,
    Prefix(String),
}

impl SourceFilter {
    pub fn matches(&self, source: Option<&str>) -> bool {
        match self {
            SourceFilter::Api => source.is_none(),
            SourceFilter::File => source.is_some(),
            SourceFilter::Prefix(prefix) => source.is_some_and(|s| s.starts_with(prefix.as_str())),
        }
    }
}

/// Every job status, by the name the API uses.
const STATUSES: [(&str, JobStatus); 6] = [
    ("importing", JobStatus::Importing),
    ("queued", JobStatus::Queued),
    ("running", JobStatus::Running),
    ("completed", JobStatus::Completed),
    ("completed_with_errors", JobStatus::CompletedWithErrors),
    ("failed", JobStatus::Failed),
];

/// A job status's name, as the API writes it.
pub fn status_name(status: JobStatus) -> &'static str {
    STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or("unknown", |(name, _)| name)
}

/// Which page of which jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub source: Option<SourceFilter>,
    pub created_after: Option<OffsetDateTime>,
    pub cursor: Option<JobCursor>,
    pub limit: usize,
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            status: None,
            source: None,
            created_after: None,
            cursor: None,
            limit: DEFAULT_JOB_PAGE,
        }
    }
}

impl JobQuery {
    /// Reads `status`, `source`, `created_after`, `cursor` and `limit` (1 to
    /// [`MAX_JOB_PAGE`], default [`DEFAULT_JOB_PAGE`]); any other parameter,
    /// or one given twice, is refused, as the history's are, so that a
    /// misspelt filter does not silently list everything.
    pub fn from_parameters(parameters: &[(String, String)]) -> Result<Self, QueryParameterError> {
        let fail = |name: &str, reason: String| QueryParameterError {
            name: name.to_owned(),
            reason,
        };
        let mut query = JobQuery::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in parameters {
            if seen.contains(&name.as_str()) {
                return Err(fail(name, "is given more than once".to_owned()));
            }
            seen.push(name);
            match name.as_str() {
                "status" => {
                    let status = STATUSES.iter().find(|(n, _)| n == value).map(|(_, s)| *s);
                    query.status = Some(status.ok_or_else(|| {
                        let names: Vec<&str> = STATUSES.iter().map(|(n, _)| *n).collect();
                        fail(name, format!("must be one of {}", names.join(", ")))
                    })?);
                }
                "source" => query.source = Some(parse_source(value).map_err(|reason| fail(name, reason))?),
                "created_after" => {
                    query.created_after = Some(OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                        fail(
                            name,
                            "must be an RFC 3339 time, such as 2026-12-01T00:00:00Z".to_owned(),
                        )
                    })?);
                }
                "cursor" => {
                    query.cursor = Some(JobCursor::decode(value).ok_or_else(|| {
                        fail(
                            name,
                            "is not a cursor this API returned (pass next_cursor as given)".to_owned(),
                        )
                    })?);
                }
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_JOB_PAGE).contains(n))
                        .ok_or_else(|| fail(name, format!("must be a whole number from 1 to {MAX_JOB_PAGE}")))?;
                }
                _ => {
                    return Err(fail(
                        name,
                        "is unknown; use status, source, created_after, cursor or limit".to_owned(),
                    ))
                }
            }
        }
        Ok(query)
    }

    /// Whether a job passes the status and source filters (the range,
    /// `created_after` and `cursor`, is the store's).
    pub fn matches(&self, job: &Job) -> bool {
        self.status.is_none_or(|status| job.status() == status)
            && self
                .source
                .as_ref()
                .is_none_or(|source| source.matches(job.source.as_deref()))
    }

    /// The stored range this query reads.
    pub fn range(&self) -> JobRange {
        JobRange {
            before: self.cursor.as_ref().map(|c| c.key().clone()),
            created_after: self.created_after,
        }
    }
}

fn parse_source(value: &str) -> Result<SourceFilter, String> {
    match value {
        "api" => Ok(SourceFilter::Api),
        "file" => Ok(SourceFilter::File),
        prefix if prefix.starts_with("s3://") => {
            if prefix.len() > MAX_SOURCE_FILTER || prefix.chars().any(char::is_control) {
                Err(format!(
                    "must be at most {MAX_SOURCE_FILTER} bytes without control characters"
                ))
            } else {
                Ok(SourceFilter::Prefix(prefix.to_owned()))
            }
        }
        _ => Err("must be api, file, or a prefix starting with s3://".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewJob;
    use time::macros::datetime;
    use uuid::Uuid;

    fn id(n: u128) -> JobId {
        JobId(Uuid::from_u128(n))
    }

    fn parameters(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn keys_order_by_time_then_job_id() {
        let early = JobListKey::of(datetime!(2026-12-01 00:00:05.1 UTC), id(9));
        let late_small_id = JobListKey::of(datetime!(2026-12-01 01:00:05.12 +01:00), id(1));
        let late_big_id = JobListKey::of(datetime!(2026-12-01 00:00:05.12 UTC), id(2));
        let later = JobListKey::of(datetime!(2027-01-01 00:00:00 UTC), id(0));
        let mut keys = vec![later.clone(), early.clone(), late_big_id.clone(), late_small_id.clone()];
        keys.sort();
        assert_eq!(keys, [early, late_small_id.clone(), late_big_id, later]);
        assert_eq!(
            late_small_id.as_str(),
            "2026-12-01T00:00:05.120Z#00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(late_small_id.created_at(), datetime!(2026-12-01 00:00:05.12 UTC));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = JobCursor::at(JobListKey::of(datetime!(2026-12-01 00:00:05.123456 UTC), id(7)));
        let text = cursor.encode();
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(JobCursor::decode(&text), Some(cursor));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("2026-12-01T00:00:05.123Z#not-a-uuid"),
            &URL_SAFE_NO_PAD.encode("2026-12-01T00:00:05Z#00000000-0000-0000-0000-000000000001"),
            &URL_SAFE_NO_PAD.encode("2026-12-01T00:00:05.123Z#00000000000000000000000000000001"),
        ] {
            assert_eq!(JobCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_range_bounds_keys_on_both_sides_to_the_millisecond() {
        let t = datetime!(2026-12-01 00:00:05.123 UTC);
        let range = JobRange {
            before: Some(JobListKey::of(t + time::Duration::seconds(10), id(5))),
            created_after: Some(t + time::Duration::nanoseconds(400_000)),
        };
        assert!(!range.contains(&JobListKey::of(t, id(u128::MAX))), "same millisecond");
        assert!(range.contains(&JobListKey::of(t + time::Duration::milliseconds(1), id(0))));
        assert!(range.contains(&JobListKey::of(t + time::Duration::seconds(10), id(4))));
        assert!(!range.contains(&JobListKey::of(t + time::Duration::seconds(10), id(5))));
        assert!(JobRange::default().contains(&JobListKey::of(t, id(0))));
    }

    #[test]
    fn query_parameters_are_read_strictly() {
        let q = JobQuery::from_parameters(&[]).unwrap();
        assert_eq!(q, JobQuery::default());
        let cursor = JobCursor::at(JobListKey::of(datetime!(2026-12-01 00:00:00 UTC), id(3)));
        let q = JobQuery::from_parameters(&parameters(&[
            ("status", "completed_with_errors"),
            ("source", "s3://bucket/imports/2026-12"),
            ("created_after", "2026-12-01T09:00:00+09:00"),
            ("limit", "10"),
            ("cursor", &cursor.encode()),
        ]))
        .unwrap();
        assert_eq!(
            q,
            JobQuery {
                status: Some(JobStatus::CompletedWithErrors),
                source: Some(SourceFilter::Prefix("s3://bucket/imports/2026-12".into())),
                created_after: Some(datetime!(2026-12-01 00:00:00 UTC)),
                cursor: Some(cursor),
                limit: 10,
            }
        );
        for (pairs, name) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "501")], "limit"),
            (vec![("status", "done")], "status"),
            (vec![("source", "ftp://x")], "source"),
            (vec![("source", "s3://b/\n")], "source"),
            (vec![("created_after", "yesterday")], "created_after"),
            (vec![("cursor", "garbage")], "cursor"),
            (vec![("state", "queued")], "state"),
            (vec![("status", "queued"), ("status", "running")], "status"),
        ] {
            let error = JobQuery::from_parameters(&parameters(&pairs)).unwrap_err();
            assert_eq!(error.name, name, "{pairs:?}: {error}");
        }
        for (name, status) in STATUSES {
            assert_eq!(serde_json::to_value(status).unwrap(), name, "the API's own spelling");
            assert_eq!(status_name(status), name);
        }
    }

    #[test]
    fn filters_match_status_and_source() {
        let mut job = Job::from_new(&NewJob {
            job_id: id(1),
            request_hash: String::new(),
            total: 2,
            deduplicated: 0,
            messages: 1,
            source: Some("s3://b/imports/a.csv".into()),
            reading: false,
            created_at: OffsetDateTime::UNIX_EPOCH,
            audit: None,
        });
        let query = |status, source| JobQuery {
            status,
            source,
            ..JobQuery::default()
        };
        assert!(query(Some(JobStatus::Queued), Some(SourceFilter::File)).matches(&job));
        assert!(query(None, Some(SourceFilter::Prefix("s3://b/imports/".into()))).matches(&job));
        assert!(!query(None, Some(SourceFilter::Prefix("s3://b/other/".into()))).matches(&job));
        assert!(!query(None, Some(SourceFilter::Api)).matches(&job));
        job.applied = 2;
        assert!(!query(Some(JobStatus::Queued), None).matches(&job));
        assert!(query(Some(JobStatus::Completed), None).matches(&job));
        job.source = None;
        assert!(query(None, Some(SourceFilter::Api)).matches(&job));
    }
}
