//! The endpoints' handlers: one method of [`ApiService`] each.

use std::collections::BTreeMap;

use serde_json::json;
use time::OffsetDateTime;
use tracing::info;

use super::body::{parse_cancel, parse_reversal, parse_submission, parse_use, Prepared};
use super::views::{rfc3339, Accepted, JobView};
use super::{ApiError, ApiRequest, ApiResponse, ApiService};
use crate::domain::history::{HistoryCursor, HistoryQuery};
use crate::domain::lots::{BalanceView, MAX_USE_LOTS};
use crate::domain::packing::{pack_accruals, pack_uses};
use crate::domain::reversal::{ReversalKind, ReversalOutcome};
use crate::domain::submission::job_id_for_key;
use crate::domain::uses::UseOutcome;
use crate::domain::validation::{check_idempotency_key, check_member_id};
use crate::domain::{Job, JobId, NewJob};
use crate::ports::{CreateJob, StoreError};
use crate::services::cancel::{request_cancel, CancelError};
use crate::services::history::history_page;

impl ApiService {
    /// `POST /v1/members/{member_id}/uses`: deducts at once (a use is one
    /// conditional write, not a queued job), exactly once per `use_id`.
    pub(super) async fn apply_use(&self, member_id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let u = parse_use(member_id, &request.body)?;
        let audit = request.audit(None);
        match self
            .debits
            .apply_use_audited(&u, Some(&audit), OffsetDateTime::now_utc())
            .await?
        {
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
            UseOutcome::TooManyLots { at_most } => Err(ApiError::TooManyLots {
                member_id: u.member_id,
                point_type: u.point_type,
                requested: u.amount,
                at_most,
                max_lots: MAX_USE_LOTS,
            }),
            UseOutcome::IdReused(record) => Err(ApiError::UseIdReused {
                use_id: record.use_id,
                member_id: record.member_id,
                point_type: record.point_type,
                amount: record.amount,
            }),
            // Only a use on behalf of a job's message can meet its cancel
            // or replay its message's refusal (a single use whose id a job
            // refused is `IdReused`); a store answering so here is broken.
            UseOutcome::Cancelled | UseOutcome::RefusedBefore => Err(ApiError::Internal(StoreError::Backend {
                operation: "apply_use",
                source: "a use made through the API was answered as a bulk use (cancelled, or refused before)".into(),
            })),
        }
    }

    /// `POST /v1/reversals`: cancels one accrual or use at once, exactly once.
    pub(super) async fn reverse(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let (target, reason) = parse_reversal(&request.body)?;
        let audit = request.audit(reason.as_deref());
        match self
            .debits
            .reverse_audited(&target, Some(&audit), OffsetDateTime::now_utc())
            .await?
        {
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

    pub(super) async fn submit(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.check_json_body(request)?;
        let key = request.header("idempotency-key");
        if let Some(key) = key {
            check_idempotency_key(key).map_err(|reason| ApiError::InvalidIdempotencyKey { reason })?;
        }
        let job_id = key.map_or_else(JobId::random, job_id_for_key);
        let (messages, request_hash, deduplicated) =
            match parse_submission(&request.body, key, self.settings.max_items)? {
                Prepared::Accruals(prepared) => {
                    // Before the job is recorded or anything queued.
                    self.settings.ceilings.check(
                        prepared
                            .indices
                            .iter()
                            .zip(&prepared.accruals)
                            .map(|(index, accrual)| (*index, accrual.amount)),
                    )?;
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
            audit: Some(request.audit(None)),
        };
        let job = match self.jobs.create_job(&new_job).await? {
            CreateJob::Created(job) => {
                // The simulation's deliberate defect: enqueued before sending.
                if crate::flaws::active(crate::flaws::Flaw::EnqueuedBeforeSending) {
                    self.jobs.mark_enqueued(job_id).await?;
                }
                job
            }
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
        // The job's recorded creation time, not this attempt's: a retry that
        // queues the messages again queues the very same bodies.
        let bodies: Vec<String> = messages
            .into_iter()
            .map(|m| m.queued(job.created_at).encode())
            .collect();
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
    /// the job credited (202); asking again resumes it; 200 once done. The
    /// body is optional: `{"reason"?}`.
    pub(super) async fn cancel_job(&self, raw_id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "job",
            id: raw_id.to_owned(),
        };
        let reason = if request.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            self.check_json_body(request)?;
            parse_cancel(&request.body)?
        };
        let job_id: JobId = raw_id.parse().map_err(|_| not_found())?;
        let audit = request.audit(reason.as_deref());
        let job = request_cancel(self.jobs.as_ref(), self.queue.as_ref(), job_id, Some(&audit))
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

    pub(super) async fn get_job(&self, raw_id: &str) -> Result<ApiResponse, ApiError> {
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
    pub(super) async fn get_history(&self, member_id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        check_member_id(member_id).map_err(|reason| ApiError::InvalidPathParameter {
            what: "member_id",
            reason,
        })?;
        let query = HistoryQuery::from_parameters(&request.query)?;
        let now = OffsetDateTime::now_utc();
        let page = history_page(self.reads.as_ref(), member_id, &query, now).await?;
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

    pub(super) async fn get_balances(&self, member_id: &str) -> Result<ApiResponse, ApiError> {
        check_member_id(member_id).map_err(|reason| ApiError::InvalidPathParameter {
            what: "member_id",
            reason,
        })?;
        let sheets = self.reads.balance_sheets(member_id).await?;
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
