//! The console's JSON endpoints (`/console/api/...`) and the `/v1`
//! forwarder of `pointflow console`. Each handler parses its request, calls
//! the service the CLI's commands call (`services::dlq`, the import bucket's
//! drop, the report's key) and maps the result; errors have the API's shape,
//! `{"error": {"code", "message"}}`.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pointflow::domain::accrual_ids::campaign_from_file_name;
use pointflow::domain::JobId;
use pointflow::ports::objects::{ObjectError, ObjectRef};
use pointflow::services::dlq::{self, QueueKind};
use pointflow::services::import::report::report_key;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{Console, QueuePair};

/// Messages `GET /console/api/dlq` reads at most (each is received and
/// made visible again at once; the count says when there are more).
pub const DLQ_LIST_MAX: usize = 500;

/// Lines of an error report `GET /console/api/jobs/{id}/report` returns at
/// most (the whole report stays in the bucket).
pub const REPORT_MAX_LINES: usize = 1000;

/// The largest file `POST /console/api/imports` takes (held in memory once
/// while it is written to the bucket). Bigger files go straight to the
/// bucket (`aws s3 cp`, `pointflow local import`).
pub const UPLOAD_MAX_BYTES: usize = 100 * 1024 * 1024;

/// Where the console drops files: under the import prefix (so the bucket's
/// notification starts the import), in a folder of their own (so the
/// operate policy may grant exactly it).
pub const DROP_PREFIX: &str = "imports/console/";

/// Longest file name a drop takes.
const MAX_NAME_CHARS: usize = 200;

/// Why a console endpoint did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The request is malformed: `code` names what (`invalid_queue`, …).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// What the request names does not exist, or this console has no such part.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// A browser asked for a change on behalf of another site.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// A queue, bucket, store or the upstream API failed.
    #[error("{message}")]
    Backend { message: String },
}

impl ConsoleError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ConsoleError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ConsoleError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// `what` failed with `error` (its sources joined, for the operator).
    pub(super) fn backend(what: &str, error: &dyn std::error::Error) -> Self {
        let mut message = format!("{what}: {error}");
        let mut source = error.source();
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        ConsoleError::Backend { message }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ConsoleError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ConsoleError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ConsoleError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ConsoleError::Backend { .. } => (StatusCode::BAD_GATEWAY, "backend_error"),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

/// The query's parameters, decoded; a parameter given twice is refused.
fn query(uri: &Uri, allowed: &[&str]) -> Result<Vec<(String, String)>, ConsoleError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            return Err(ConsoleError::bad(
                "invalid_query_parameter",
                format!("unknown query parameter {name:?} (this endpoint takes {allowed:?})"),
            ));
        }
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ConsoleError::bad(
                "invalid_query_parameter",
                format!("query parameter {name:?} is given twice"),
            ));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `?queue=accruals|imports` (default accruals) and that queue's pair.
fn queue_of(console: &Console, uri: &Uri) -> Result<(QueueKind, QueuePair), ConsoleError> {
    let pairs = query(uri, &["queue"])?;
    let kind = match param(&pairs, "queue") {
        None | Some("accruals") => QueueKind::Accruals,
        Some("imports") => QueueKind::Imports,
        Some(other) => {
            return Err(ConsoleError::bad(
                "invalid_queue",
                format!("queue must be accruals or imports, found {other:?}"),
            ))
        }
    };
    let parts = console.parts();
    let pair = match kind {
        QueueKind::Accruals => parts.accruals.clone(),
        QueueKind::Imports => parts.imports.clone(),
    };
    let pair = pair.ok_or_else(|| {
        ConsoleError::not_found(
            "not_configured",
            format!("this console has no {kind} queue and dead-letter queue"),
        )
    })?;
    Ok((kind, pair))
}

/// `GET /console/api/info`.
pub(super) async fn info(State(console): State<Console>) -> Json<super::Info> {
    Json(console.parts().info.clone())
}

/// Messages and accruals of one job in a DLQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct JobLetters {
    job_id: Option<String>,
    messages: usize,
    accruals: usize,
}

/// `GET /console/api/dlq?queue=…`: the messages (at most [`DLQ_LIST_MAX`],
/// left in the queue) and their count by job.
pub(super) async fn dlq_list(State(console): State<Console>, uri: Uri) -> Result<Response, ConsoleError> {
    let (kind, pair) = queue_of(&console, &uri)?;
    let letters = dlq::list(pair.dlq.as_ref(), kind, DLQ_LIST_MAX)
        .await
        .map_err(|e| ConsoleError::backend("reading the dead-letter queue", &e))?;
    let mut jobs: Vec<JobLetters> = Vec::new();
    for letter in &letters {
        let job_id = letter.job_id.map(|j| j.to_string());
        match jobs.iter_mut().find(|j| j.job_id == job_id) {
            Some(job) => {
                job.messages += 1;
                job.accruals += letter.accruals;
            }
            None => jobs.push(JobLetters {
                job_id,
                messages: 1,
                accruals: letter.accruals,
            }),
        }
    }
    let messages: Vec<_> = letters
        .iter()
        .map(|l| {
            json!({
                "message_id": l.message_id,
                "job_id": l.job_id.map(|j| j.to_string()),
                "seq": l.seq,
                "accruals": l.accruals,
                "receive_count": l.receive_count,
                // Neither the embedded queue nor the DLQ listing keeps it.
                "first_received_at": null,
                "problem": l.problem,
            })
        })
        .collect();
    Ok(Json(json!({
        "queue": kind.to_string(),
        "count": letters.len(),
        "truncated": letters.len() >= DLQ_LIST_MAX,
        "jobs": jobs,
        "messages": messages,
    }))
    .into_response())
}

/// `POST /console/api/dlq/redrive?queue=…`: every message back to its
/// queue, by the rules of `pointflow dlq redrive` (too old ones are refused
/// and stay).
pub(super) async fn dlq_redrive(State(console): State<Console>, uri: Uri) -> Result<Response, ConsoleError> {
    let (kind, pair) = queue_of(&console, &uri)?;
    let moved = dlq::redrive(
        pair.dlq.as_ref(),
        pair.queue.as_ref(),
        kind,
        usize::MAX,
        OffsetDateTime::now_utc(),
    )
    .await
    .map_err(|e| ConsoleError::backend("redriving the dead-letter queue", &e))?;
    Ok(Json(json!({
        "queue": kind.to_string(),
        "redriven": moved.messages,
        "accruals": moved.accruals,
        "import_tasks": moved.import_tasks,
        "undecodable": moved.undecodable,
        "by_job": moved.by_job,
        "refused": moved.refused,
    }))
    .into_response())
}

/// One line of an error report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    /// The file's line, as the operator's editor numbers it.
    pub line: u64,
    pub field: String,
    pub message: String,
    pub raw: String,
}

/// Reads at most `max` lines of a report (`line,column,reason,raw` with a
/// header row); whether more followed.
pub fn read_report(reader: impl Read, max: usize) -> Result<(Vec<ReportLine>, bool), csv::Error> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let mut lines = Vec::new();
    for record in csv.records() {
        let record = record?;
        if lines.len() == max {
            return Ok((lines, true));
        }
        let field = |i: usize| record.get(i).unwrap_or("").to_owned();
        lines.push(ReportLine {
            line: record.get(0).and_then(|l| l.trim().parse().ok()).unwrap_or(0),
            field: field(1),
            message: field(2),
            raw: field(3),
        });
    }
    Ok((lines, false))
}

/// `GET /console/api/jobs/{job_id}/report`: the file job's error report
/// (its first [`REPORT_MAX_LINES`] lines); `404 no_report` when it has none.
pub(super) async fn report(
    State(console): State<Console>,
    Path(job_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id: JobId = job_id
        .parse()
        .map_err(|_| ConsoleError::bad("invalid_job_id", format!("job id {job_id:?} is not a UUID")))?;
    let parts = console.parts();
    let source = parts
        .jobs
        .source(id)
        .await?
        .ok_or_else(|| ConsoleError::not_found("job_not_found", format!("no job {id}")))?;
    let no_report = || ConsoleError::not_found("no_report", format!("job {id} has no error report"));
    let (bucket, key) = source
        .as_deref()
        .and_then(|s| s.strip_prefix("s3://"))
        .and_then(|s| s.split_once('/'))
        .ok_or_else(no_report)?;
    let files = parts.files.as_ref().ok_or_else(no_report)?;
    let object = ObjectRef {
        bucket: bucket.to_owned(),
        key: report_key(&files.report_prefix, key, id),
        size: 0,
        etag: None,
        version_id: None,
    };
    let reader = match files.objects.open(&object, 0).await {
        Ok(reader) => reader,
        Err(ObjectError::Changed { .. }) => return Err(no_report()),
        Err(e) => return Err(ConsoleError::backend("reading the error report", &e)),
    };
    let (lines, truncated) = tokio::task::spawn_blocking(move || read_report(reader, REPORT_MAX_LINES))
        .await
        .map_err(|e| ConsoleError::backend("reading the error report", &e))?
        .map_err(|e| ConsoleError::backend("reading the error report", &e))?;
    Ok(Json(json!({
        "job_id": id.to_string(),
        "report": object.url(),
        "lines": lines,
        "truncated": truncated,
    }))
    .into_response())
}

/// Checks a dropped file's name: a plain file name (no folders), printable.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name the file: ?name=<file name>".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("the file name is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.starts_with('.') || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(format!(
            "file name {name:?} must be a plain name: no folders, no control characters, not starting with '.'"
        ));
    }
    Ok(())
}

/// `POST /console/api/imports?name=…&campaign=…` with the file as the body:
/// drops it at `imports/console/<uuid>-<name>`, where the import reads it
/// (and, on the embedded backend, queues its notification, as `pointflow
/// local import` does). Without `campaign`, the campaign is the file's name
/// up to its first dot, as `pointflow submit` names it: the same rows
/// uploaded again are credited once.
pub(super) async fn import(State(console): State<Console>, uri: Uri, body: Bytes) -> Result<Response, ConsoleError> {
    let pairs = query(&uri, &["name", "campaign"])?;
    let name = param(&pairs, "name").unwrap_or("");
    check_file_name(name).map_err(|m| ConsoleError::bad("invalid_name", m))?;
    if body.is_empty() {
        return Err(ConsoleError::bad("empty_file", format!("{name} is empty")));
    }
    let campaign = match param(&pairs, "campaign").map(str::trim).filter(|c| !c.is_empty()) {
        Some(campaign) => Some(campaign.to_owned()),
        None => campaign_from_file_name(name),
    };
    let files = console
        .parts()
        .files
        .as_ref()
        .ok_or_else(|| ConsoleError::not_found("not_configured", "this console has no import bucket"))?;
    let key = format!("{DROP_PREFIX}{}-{name}", uuid::Uuid::new_v4());
    let object = files
        .drop_bytes(body.to_vec(), &key, campaign.as_deref())
        .await
        .map_err(|e| ConsoleError::Backend {
            message: format!("dropping {name} at {key}: {e:#}"),
        })?;
    let answer = json!({
        "job_id": object.job_id().to_string(),
        "key": key,
        "source": object.url(),
        "campaign": campaign,
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Anything else under `/console/`.
pub(super) async fn not_found(uri: Uri) -> ConsoleError {
    ConsoleError::not_found("not_found", format!("no console page or endpoint at {}", uri.path()))
}

/// The request headers the upstream API reads; the rest (cookies, the
/// browser's own) stay here.
const FORWARDED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("idempotency-key"),
];

/// The answer headers the page reads.
const RETURNED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    HeaderName::from_static("idempotent-replayed"),
];

/// `/v1/...` of `pointflow console`: forwarded once to the stack's API with
/// the API key and the operator's signature.
pub(super) async fn forward(
    State(console): State<Console>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let client = console
        .parts()
        .upstream
        .as_ref()
        .ok_or_else(|| ConsoleError::not_found("not_configured", "this console has no upstream API"))?;
    let mut outgoing = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        if let Some(value) = headers.get(&name) {
            outgoing.insert(name, value.clone());
        }
    }
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let (status, answer_headers, answer) = client
        .forward(method, target, outgoing, body.to_vec())
        .await
        .map_err(|e| ConsoleError::backend("calling the API", &e))?;
    let mut response = (status, Body::from(answer)).into_response();
    for name in RETURNED_HEADERS {
        if let Some(value) = answer_headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_to_its_bound() {
        let report = "line,column,reason,raw\n3,amount,\"must be a whole number, found \"\"x\"\"\",\"m-1,P,x\"\n7,member_id,empty,\",P,5\"\n";
        let (lines, truncated) = read_report(report.as_bytes(), 10).unwrap();
        assert!(!truncated);
        assert_eq!(
            lines[0],
            ReportLine {
                line: 3,
                field: "amount".into(),
                message: "must be a whole number, found \"x\"".into(),
                raw: "m-1,P,x".into(),
            }
        );
        assert_eq!(lines[1].line, 7);
        let (lines, truncated) = read_report(report.as_bytes(), 1).unwrap();
        assert_eq!((lines.len(), truncated), (1, true));
        let (lines, truncated) = read_report(report.as_bytes(), 2).unwrap();
        assert_eq!((lines.len(), truncated), (2, false));
    }

    #[test]
    fn drops_go_under_the_import_prefix() {
        assert!(DROP_PREFIX.starts_with(crate::backend::IMPORT_PREFIX));
    }

    #[test]
    fn file_names_are_plain() {
        assert!(check_file_name("spring-2026.csv").is_ok());
        assert!(check_file_name("März Kampagne.xlsx").is_ok());
        for bad in ["", "../x.csv", "a/b.csv", "a\\b.csv", ".hidden", "a\nb.csv"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}
