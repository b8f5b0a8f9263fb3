//! The ingest API: validate, collapse, pack, record the job, queue. It never
//! applies accruals itself; the worker does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::api::{ApiError, ApiRequest, ApiResponse};
use crate::cancel::{request_cancel, CancelError};
use crate::domain::{CancelProgress, Job, JobId, JobStatus, NewJob};
use crate::history::{history_page, HistoryCursor, HistoryQuery};
use crate::lots::BalanceView;
use crate::packing::{pack_accruals, pack_uses, PackingLimits};
use crate::ports::{AccrualQueue, CreateJob, JobStore, Ledger};
use crate::reversal::{reversal_from_json, ReversalKind, ReversalOutcome, ReversalTarget};
use crate::strict_json::{self, Budget, StrictSeed};
use crate::submission::{
    job_id_for_key, prepare_submission, prepare_uses, ItemKind, PreparedSubmission, PreparedUses, SubmissionError,
};
use crate::uses::{use_from_json, Use, UseOutcome};
use crate::validation::{check_idempotency_key, check_member_id};

/// Largest request body: a Lambda behind API Gateway receives at most 6 MB
/// (synchronous invoke payload), headers and envelope included.
pub const MAX_BODY_BYTES: usize = 6_000_000;
/// Default item limit. A typical item is about 100–120 bytes of JSON, so
/// 50,000 items is what 6 MB holds with some margin.
pub const DEFAULT_MAX_ITEMS: usize = 50_000;

/// Tunables of the ingest API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestSettings {
    pub max_items: usize,
    pub max_body_bytes: usize,
    pub packing: PackingLimits,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_items: DEFAULT_MAX_ITEMS,
            max_body_bytes: MAX_BODY_BYTES,
            packing: PackingLimits::default(),
        }
    }
}

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
    /// The job's cancel, once asked for (`pointflow cancel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelProgress>,
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
        }
    }
}

/// Formats a timestamp as RFC 3339 (`2026-11-25T21:39:32.123Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Estimated memory one submitted item may take once parsed: a valid item
/// (an object of at most 7 scalar fields) takes under 1 KiB, so only items
/// hiding arrays or objects inside reach it.
pub const ITEM_BUDGET_BYTES: usize = 1024;
/// The same for a use or reversal body, a single small object.
const SINGLE_BODY_BUDGET_BYTES: usize = 4 * ITEM_BUDGET_BYTES;

/// The body of `POST /v1/jobs`: `{"accruals": [...]}` or, for a bulk-use
/// job, `{"uses": [...]}`, each item read strictly (a repeated key is
/// malformed, not last-wins) within a budget, and the items beyond
/// `max_items` counted but not kept, so that neither a flood of items nor
/// items full of nested JSON can exhaust the function's memory before the
/// limits are checked.
struct SubmitBody {
    kind: ItemKind,
    items: Vec<Value>,
    /// Items in the body, also those not kept.
    count: usize,
}

/// The two lists a submission may hold, one of them.
const SUBMIT_FIELDS: &[&str] = &["accruals", "uses"];

struct SubmitSeed<'b> {
    max_items: usize,
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for SubmitSeed<'_> {
    type Value = SubmitBody;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SubmitBody, D::Error> {
        deserializer.deserialize_struct("SubmitBody", SUBMIT_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for SubmitSeed<'_> {
    type Value = SubmitBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"an object {"accruals": [...]} or {"uses": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SubmitBody, A::Error> {
        let mut body: Option<SubmitBody> = None;
        while let Some(key) = map.next_key::<String>()? {
            let kind = match key.as_str() {
                "accruals" => ItemKind::Accruals,
                "uses" => ItemKind::Uses,
                _ => return Err(de::Error::unknown_field(&key, SUBMIT_FIELDS)),
            };
            if body.is_some() {
                return Err(de::Error::custom(
                    r#"the body must hold exactly one of "accruals" and "uses""#,
                ));
            }
            body = Some(map.next_value_seed(ItemsSeed {
                kind,
                max_items: self.max_items,
                budget: self.budget,
            })?);
        }
        body.ok_or_else(|| de::Error::custom(r#"the body must hold exactly one of "accruals" and "uses""#))
    }
}

struct ItemsSeed<'b> {
    kind: ItemKind,
    max_items: usize,
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = SubmitBody;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SubmitBody, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = SubmitBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list of {}", self.kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SubmitBody, A::Error> {
        let mut items = Vec::new();
        let mut count = 0usize;
        while count < self.max_items {
            match seq.next_element_seed(StrictSeed(Some(self.budget)))? {
                Some(item) => {
                    self.budget.charge(strict_json::VALUE_COST)?;
                    items.push(item);
                    count += 1;
                }
                None => {
                    return Ok(SubmitBody {
                        kind: self.kind,
                        items,
                        count,
                    })
                }
            }
        }
        // At the limit: any further item makes the answer 413 with the
        // count, so the rest is only counted (still checked to be
        // well-formed JSON) and nothing kept.
        let mut more = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more += 1;
        }
        if more > 0 {
            items = Vec::new();
        }
        Ok(SubmitBody {
            kind: self.kind,
            items,
            count: count + more,
        })
    }
}

/// The ingest API over its ports.
#[derive(Clone)]
pub struct IngestService {
    jobs: Arc<dyn JobStore>,
    ledger: Arc<dyn Ledger>,
    queue: Arc<dyn AccrualQueue>,
    settings: IngestSettings,
}

impl IngestService {
    pub fn new(
        jobs: Arc<dyn JobStore>,
        ledger: Arc<dyn Ledger>,
        queue: Arc<dyn AccrualQueue>,
        settings: IngestSettings,
    ) -> Self {
        IngestService {
            jobs,
            ledger,
            queue,
            settings,
        }
    }

    /// Routes one request and answers it; every failure becomes a response.
    pub async fn handle(&self, request: &ApiRequest) -> ApiResponse {
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                if status >= 500 {
                    warn!(status, error = %error, source = ?std::error::Error::source(&error), "request failed");
                } else {
                    info!(status, code = error.code(), "request refused");
                }
                error.to_response()
            }
        }
    }

    async fn route(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method.to_ascii_uppercase();
        let allow = |allowed: &'static str| -> Result<(), ApiError> {
            if method == allowed {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allowed,
                })
            }
        };
        match segments.as_slice() {
            ["v1", "jobs"] => {
                allow("POST")?;
                self.submit(request).await
            }
            ["v1", "jobs", job_id] => {
                allow("GET")?;
                self.get_job(job_id).await
            }
            ["v1", "jobs", job_id, "cancel"] => {
                allow("POST")?;
                self.cancel_job(job_id).await
            }
            ["v1", "members", member_id, "balances"] => {
                allow("GET")?;
                self.get_balances(member_id).await
            }
            ["v1", "members", member_id, "ledger"] => {
                allow("GET")?;
                self.get_history(member_id, request).await
            }
            ["v1", "members", member_id, "uses"] => {
                allow("POST")?;
                self.apply_use(member_id, request).await
            }
            ["v1", "reversals"] => {
                allow("POST")?;
                self.reverse(request).await
            }
            _ => Err(ApiError::NotFoundRoute {
                method,
                path: request.path.clone(),
            }),
        }
    }

    /// Refuses a body that is not JSON or is too large.
    fn check_json_body(&self, request: &ApiRequest) -> Result<(), ApiError> {
        let content_type = request.header("content-type");
        let is_json = content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                found: content_type.map(str::to_owned),
            });
        }
        if request.body.len() > self.settings.max_body_bytes {
            return Err(ApiError::PayloadTooLarge {
                bytes: request.body.len(),
                max: self.settings.max_body_bytes,
            });
        }
        Ok(())
    }

    /// `POST /v1/members/{member_id}/uses`: deducts at once (a use is one
    /// conditional write, not a queued job), exactly once per `use_id`.
    async fn apply_use(&self, member_id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let u = parse_use(member_id, &request.body)?;
        match self.ledger.apply_use(&u, OffsetDateTime::now_utc()).await? {
            UseOutcome::Applied(record) => {
                info!(use_id = %record.use_id, amount = record.amount, "use applied");
                Ok(ApiResponse::json(201, record))
            }
            UseOutcome::Replayed(record) => {
                Ok(ApiResponse::json(200, record).with_header("Idempotent-Replayed", "true"))
            }
            UseOutcome::Insufficient { available } => Err(ApiError::InsufficientBalance {
                member_id: u.member_id,
                point_type: u.point_type,
                requested: u.amount,
                available,
            }),
            UseOutcome::IdReused(record) => Err(ApiError::UseIdReused {
                use_id: record.use_id,
                member_id: record.member_id,
                point_type: record.point_type,
                amount: record.amount,
            }),
        }
    }

    /// `POST /v1/reversals`: cancels one accrual or use at once, exactly once.
    async fn reverse(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let target = parse_reversal(&request.body)?;
        match self.ledger.reverse(&target, OffsetDateTime::now_utc()).await? {
            ReversalOutcome::Reversed(record) => {
                info!(kind = ?record.kind, id = %record.id, amount = record.amount, "reversed");
                Ok(ApiResponse::json(201, record))
            }
            ReversalOutcome::Replayed(record) => {
                Ok(ApiResponse::json(200, record).with_header("Idempotent-Replayed", "true"))
            }
            ReversalOutcome::NotFound => Err(ApiError::NotFound {
                what: match target.kind() {
                    ReversalKind::Accrual => "accrual",
                    ReversalKind::Use => "use",
                },
                id: target.id().to_owned(),
            }),
            ReversalOutcome::AlreadySpent { remaining } => Err(ApiError::AlreadySpent {
                id: target.id().to_owned(),
                remaining,
            }),
        }
    }

    async fn submit(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let key = request.header("idempotency-key");
        if let Some(key) = key {
            check_idempotency_key(key).map_err(|reason| ApiError::InvalidIdempotencyKey { reason })?;
        }
        let job_id = key.map_or_else(JobId::random, job_id_for_key);
        let (messages, request_hash, deduplicated) =
            match parse_submission(&request.body, key, self.settings.max_items)? {
                Prepared::Accruals(prepared) => {
                    let messages = pack_accruals(job_id, prepared.accruals, self.settings.packing);
                    (messages, prepared.request_hash, prepared.deduplicated)
                }
                Prepared::Uses(prepared) => {
                    let messages = pack_uses(job_id, prepared.uses, self.settings.packing);
                    (messages, prepared.request_hash, prepared.deduplicated)
                }
            };
        let accepted: u64 = messages.iter().map(|m| m.items() as u64).sum();
        let new_job = NewJob {
            job_id,
            request_hash,
            total: accepted,
            deduplicated,
            messages: messages.len() as u64,
            source: None,
            reading: false,
            created_at: OffsetDateTime::now_utc(),
        };
        let job = match self.jobs.create_job(&new_job).await? {
            CreateJob::Created(job) => job,
            CreateJob::Existing(job) if job.request_hash != new_job.request_hash => {
                return Err(ApiError::KeyReused { job_id });
            }
            CreateJob::Existing(job) if job.enqueued => {
                info!(%job_id, "idempotent replay of a queued job");
                return Ok(accepted_response(&job).with_header("Idempotent-Replayed", "true"));
            }
            // Recorded by an earlier attempt that failed to queue everything:
            // queue again. Messages keep their (job, seq), so the worker folds
            // each into the job once even if it now arrives twice.
            CreateJob::Existing(job) => job,
        };
        let bodies: Vec<String> = messages.iter().map(|m| m.encode()).collect();
        drop(messages);
        self.queue
            .send_messages(&bodies)
            .await
            .map_err(|source| ApiError::EnqueueFailed {
                job_id,
                with_key: key.is_some(),
                source,
            })?;
        self.jobs.mark_enqueued(job_id).await?;
        info!(%job_id, accepted, messages = bodies.len(), deduplicated = job.deduplicated, "job queued");
        Ok(accepted_response(&job))
    }

    /// `POST /v1/jobs/{job_id}/cancel`: queues the reversal of every accrual
    /// the job credited (202); asking again resumes it; 200 once done.
    async fn cancel_job(&self, raw_id: &str) -> Result<ApiResponse, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "job",
            id: raw_id.to_owned(),
        };
        let job_id: JobId = raw_id.parse().map_err(|_| not_found())?;
        let job = request_cancel(self.jobs.as_ref(), self.queue.as_ref(), job_id)
            .await
            .map_err(|error| match error {
                CancelError::NotFound(_) | CancelError::Forgotten { .. } => not_found(),
                CancelError::Running { settled, total, .. } => ApiError::JobRunning { job_id, settled, total },
                CancelError::Store(e) => e.into(),
                CancelError::Queue(source) => ApiError::CancelNotQueued { job_id, source },
            })?;
        let done = job.cancel.as_ref().is_some_and(|c| c.completed_at.is_some());
        Ok(ApiResponse::json(if done { 200 } else { 202 }, JobView::from(&job))
            .with_header("Location", format!("/v1/jobs/{job_id}")))
    }

    async fn get_job(&self, raw_id: &str) -> Result<ApiResponse, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "job",
            id: raw_id.to_owned(),
        };
        let job_id: JobId = raw_id.parse().map_err(|_| not_found())?;
        let job = self.jobs.get_job(job_id).await?.ok_or_else(not_found)?;
        Ok(ApiResponse::json(200, JobView::from(&job)))
    }

    /// `GET /v1/members/{member_id}/ledger`: one page of the member's
    /// history, newest first (an unknown member has an empty history).
    async fn get_history(&self, member_id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        check_member_id(member_id).map_err(|reason| ApiError::InvalidPathParameter {
            what: "member_id",
            reason,
        })?;
        let query = HistoryQuery::from_parameters(&request.query)?;
        let now = OffsetDateTime::now_utc();
        let page = history_page(self.ledger.as_ref(), member_id, &query, now).await?;
        Ok(ApiResponse::json(
            200,
            json!({
                "member_id": member_id,
                "entries": page.entries,
                "next_cursor": page.next_cursor.as_ref().map(HistoryCursor::encode),
                "as_of": rfc3339(now),
            }),
        ))
    }

    async fn get_balances(&self, member_id: &str) -> Result<ApiResponse, ApiError> {
        check_member_id(member_id).map_err(|reason| ApiError::InvalidPathParameter {
            what: "member_id",
            reason,
        })?;
        let sheets = self.ledger.balance_sheets(member_id).await?;
        if sheets.is_empty() {
            return Err(ApiError::NotFound {
                what: "member",
                id: member_id.to_owned(),
            });
        }
        let now = OffsetDateTime::now_utc();
        let views: BTreeMap<String, BalanceView> = sheets.iter().map(|s| (s.point_type.clone(), s.view(now))).collect();
        let available: BTreeMap<&str, u64> = views.iter().map(|(pt, v)| (pt.as_str(), v.available)).collect();
        Ok(ApiResponse::json(
            200,
            json!({ "member_id": member_id, "balances": available, "details": views, "as_of": rfc3339(now) }),
        ))
    }
}

/// A use or reversal body, read strictly within a small budget; malformed
/// JSON names its line and column.
fn parse_single(body: &[u8]) -> Result<Value, ApiError> {
    strict_json::from_slice_within(body, SINGLE_BODY_BUDGET_BYTES)
        .map_err(|e| ApiError::MalformedJson { detail: e.to_string() })
}

/// Reads and validates the body of `POST /v1/jobs` (content type, size and
/// `Idempotency-Key` already checked): the accruals to queue, or why the
/// request is refused. Public so the fuzz targets and tests run this very
/// path (see [`crate::fuzzing`]).
pub fn parse_submission(body: &[u8], idempotency_key: Option<&str>, max_items: usize) -> Result<Prepared, ApiError> {
    let budget = Budget::new(
        max_items
            .saturating_mul(ITEM_BUDGET_BYTES)
            .saturating_add(ITEM_BUDGET_BYTES),
    );
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let malformed = |e: serde_json::Error| ApiError::MalformedJson { detail: e.to_string() };
    let body = SubmitSeed {
        max_items,
        budget: &budget,
    }
    .deserialize(&mut deserializer)
    .map_err(malformed)?;
    deserializer.end().map_err(malformed)?;
    if body.count > max_items {
        return Err(ApiError::Submission(SubmissionError::TooMany {
            kind: body.kind,
            count: body.count,
            max: max_items,
        }));
    }
    match body.kind {
        ItemKind::Accruals => prepare_submission(&body.items, idempotency_key, max_items).map(Prepared::Accruals),
        ItemKind::Uses => prepare_uses(&body.items, max_items).map(Prepared::Uses),
    }
    .map_err(ApiError::Submission)
}

/// A submission ready to be packed: accruals, or a bulk-use job's uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Accruals(PreparedSubmission),
    Uses(PreparedUses),
}

/// Reads and validates the body of `POST /v1/members/{member_id}/uses`.
pub fn parse_use(member_id: &str, body: &[u8]) -> Result<Use, ApiError> {
    let body = parse_single(body)?;
    use_from_json(member_id, &body).map_err(|errors| ApiError::InvalidUse { errors })
}

/// Reads and validates the body of `POST /v1/reversals`.
pub fn parse_reversal(body: &[u8]) -> Result<ReversalTarget, ApiError> {
    let body = parse_single(body)?;
    reversal_from_json(&body).map_err(|errors| ApiError::InvalidReversal { errors })
}

fn accepted_response(job: &Job) -> ApiResponse {
    let status_url = format!("/v1/jobs/{}", job.job_id);
    ApiResponse::json(
        202,
        Accepted {
            job_id: job.job_id,
            accepted: job.total,
            deduplicated: job.deduplicated,
            messages: job.messages,
            status_url: status_url.clone(),
        },
    )
    .with_header("Location", status_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, item: &str) -> Vec<u8> {
        format!("{{\"accruals\": [{}]}}", vec![item; n].join(",")).into_bytes()
    }

    const ITEM: &str = r#"{"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 1}"#;

    #[test]
    fn items_over_the_limit_are_counted_not_kept() {
        let err = parse_submission(&items(7, ITEM), None, 5).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Submission(SubmissionError::TooMany {
                    kind: ItemKind::Accruals,
                    count: 7,
                    max: 5
                })
            ),
            "{err:?}"
        );
        // Still well-formed JSON after the limit, or malformed.
        let mut body = items(7, ITEM);
        body.truncate(body.len() - 3);
        assert!(matches!(
            parse_submission(&body, None, 5),
            Err(ApiError::MalformedJson { .. })
        ));
        let Prepared::Accruals(prepared) = parse_submission(&items(5, ITEM), None, 5).unwrap() else {
            panic!("expected accruals")
        };
        assert_eq!((prepared.accruals.len(), prepared.deduplicated), (1, 4));
    }

    #[test]
    fn items_full_of_nested_json_are_refused_before_they_exhaust_memory() {
        // One item hiding 10,000 objects: 6 MB of these took 0.5 GB.
        let nested = format!(r#"{{"x": [{}]}}"#, vec![r#"{"a":0}"#; 10_000].join(","));
        let ApiError::MalformedJson { detail } = parse_submission(&items(1, &nested), None, 100).unwrap_err() else {
            panic!("expected malformed_json")
        };
        assert!(detail.contains("more values than this request can take"), "{detail}");
        let ApiError::MalformedJson { .. } = parse_use("m", nested.as_bytes()).unwrap_err() else {
            panic!("expected malformed_json")
        };
        // The body's shape is checked as before.
        for (body, expected) in [
            (&br#"{"accruals": [], "x": 1}"#[..], "unknown field `x`"),
            (br#"{"accruals": [], "accruals": []}"#, "exactly one of"),
            (br#"{"accruals": [], "uses": []}"#, "exactly one of"),
            (br#"{}"#, "exactly one of"),
            (br#"{"uses": 5}"#, "expected a list of uses"),
            (br#"{"accruals": 5}"#, "expected a list of accruals"),
            (br#"[[]]"#, "expected an object"),
        ] {
            let ApiError::MalformedJson { detail } = parse_submission(body, None, 10).unwrap_err() else {
                panic!("expected malformed_json for {}", String::from_utf8_lossy(body))
            };
            assert!(detail.contains(expected), "{detail}");
        }
    }
}
