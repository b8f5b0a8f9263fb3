//! The HTTP API's request/response shapes and its errors, independent of
//! API Gateway's event types (the function crate and the local runner map
//! their own request types onto these).

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::audit::{Audit, Caller};
use crate::domain::capabilities::CallerRefused;
use crate::domain::limits::CeilingError;
use crate::domain::submission::{ItemKind, SubmissionError};
use crate::domain::validation::FieldError;
use crate::domain::JobId;
use crate::ports::StoreError;

/// An HTTP request as the API sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// Path without the stage, e.g. `/v1/jobs`.
    pub path: String,
    /// Query string parameters, decoded.
    pub query: Vec<(String, String)>,
    /// Header names in any case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Who is asking, as the front door identified them (API Gateway's
    /// request context, the local server); `None`: nobody said.
    pub caller: Option<Caller>,
    /// The request's id (`requestContext.requestId`, or the local server's).
    pub request_id: Option<String>,
}

impl ApiRequest {
    /// The first value of query parameter `name`.
    pub fn query_parameter(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The audit record of a change this request makes, with the reason
    /// given.
    pub fn audit(&self, reason: Option<&str>) -> Audit {
        Audit::new(
            self.caller.clone().unwrap_or_else(Caller::unknown),
            self.request_id.as_deref(),
        )
        .with_reason(reason)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response: status, extra headers and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl ApiResponse {
    pub fn json(status: u16, body: impl Serialize) -> Self {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Everything the API can refuse, each with the status and words a client can
/// act on. Internal errors are logged, never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    NotFoundRoute { method: String, path: String },
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed { method: String, allowed: &'static str },
    #[error("Content-Type must be application/json, got {found:?}")]
    UnsupportedMediaType { found: Option<String> },
    #[error("request body is {bytes} bytes; at most {max} are accepted, split the campaign into several requests")]
    PayloadTooLarge { bytes: usize, max: usize },
    #[error("request body is not valid JSON of the form {{\"accruals\": [...]}} or {{\"uses\": [...]}}: {detail}")]
    MalformedJson { detail: String },
    #[error("Idempotency-Key header {reason}")]
    InvalidIdempotencyKey { reason: String },
    #[error(transparent)]
    Submission(SubmissionError),
    #[error(transparent)]
    Ceiling(#[from] CeilingError),
    #[error(
        "Idempotency-Key was already used for job {job_id} with a different request; use a new key for a new request"
    )]
    KeyReused { job_id: JobId },
    #[error("job {job_id} was recorded but not fully queued; retry the same request with the same Idempotency-Key to finish it")]
    EnqueueFailed {
        job_id: JobId,
        with_key: bool,
        #[source]
        source: crate::ports::QueueError,
    },
    #[error("the use is not valid: {}", describe_field_errors(errors))]
    InvalidUse { errors: Vec<FieldError> },
    #[error("member {member_id} has {available} {point_type} points available; the use needs {requested}")]
    InsufficientBalance {
        member_id: String,
        point_type: String,
        requested: u64,
        available: u64,
    },
    #[error("member {member_id}'s {point_type} points are spread over more lots than one use may take ({max_lots}); a use of at most {at_most} of the {requested} points applies now, the rest in another use")]
    TooManyLots {
        member_id: String,
        point_type: String,
        requested: u64,
        at_most: u64,
        max_lots: usize,
    },
    #[error("use_id {use_id} was already used for a different deduction ({amount} {point_type} points of member {member_id}); use a new use_id for a new use")]
    UseIdReused {
        use_id: String,
        member_id: String,
        point_type: String,
        amount: u64,
    },
    #[error("the reversal is not valid: {}", describe_field_errors(errors))]
    InvalidReversal { errors: Vec<FieldError> },
    #[error("the cancel's body is not valid: {}", describe_field_errors(errors))]
    InvalidCancel { errors: Vec<FieldError> },
    #[error("the upload is not valid: {}", describe_field_errors(errors))]
    InvalidUpload { errors: Vec<FieldError> },
    #[error("accrual {id}'s points were already spent (its lot holds {remaining} of them); nothing was reversed")]
    AlreadySpent { id: String, remaining: u64 },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("job {job_id} is still running ({settled} of {total} settled); cancel it once it has completed")]
    JobRunning { job_id: JobId, settled: u64, total: u64 },
    #[error("the cancel of job {job_id} was recorded but not fully queued; ask again to finish it")]
    CancelNotQueued {
        job_id: JobId,
        #[source]
        source: crate::ports::QueueError,
    },
    #[error("invalid {what}: {reason}")]
    InvalidPathParameter { what: &'static str, reason: String },
    #[error(transparent)]
    InvalidQueryParameter(#[from] crate::domain::history::QueryParameterError),
    /// API Gateway passed no identity of the kind the stack's `AuthMode`
    /// requires: a route left without authorization (defence in depth).
    #[error(transparent)]
    Unauthenticated(#[from] CallerRefused),
    #[error("the service is busy; retry shortly")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

fn describe_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{} {}", e.field, e.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

impl ApiError {
    /// The HTTP status of this error: the one place errors meet status codes.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFoundRoute { .. } | ApiError::NotFound { .. } => 404,
            ApiError::Unauthenticated(_) => 403,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Submission(SubmissionError::TooMany { .. }) => 413,
            ApiError::Ceiling(_) => 422,
            ApiError::MalformedJson { .. }
            | ApiError::InvalidIdempotencyKey { .. }
            | ApiError::InvalidPathParameter { .. }
            | ApiError::InvalidQueryParameter(_)
            | ApiError::Submission(_) => 400,
            ApiError::InvalidUse { .. }
            | ApiError::InvalidReversal { .. }
            | ApiError::InvalidCancel { .. }
            | ApiError::InvalidUpload { .. } => 400,
            ApiError::AlreadySpent { .. } | ApiError::JobRunning { .. } => 409,
            ApiError::CancelNotQueued { .. } => 503,
            ApiError::KeyReused { .. }
            | ApiError::InsufficientBalance { .. }
            | ApiError::TooManyLots { .. }
            | ApiError::UseIdReused { .. } => 409,
            ApiError::EnqueueFailed { .. } | ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFoundRoute { .. } => "no_such_route",
            ApiError::Unauthenticated(refused) => refused.code(),
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            ApiError::Submission(SubmissionError::Empty(_)) => "empty_submission",
            ApiError::Submission(SubmissionError::TooMany { kind, .. }) => match kind {
                ItemKind::Accruals => "too_many_accruals",
                ItemKind::Uses => "too_many_uses",
            },
            ApiError::Submission(SubmissionError::Invalid { kind, .. }) => match kind {
                ItemKind::Accruals => "invalid_accruals",
                ItemKind::Uses => "invalid_uses",
            },
            ApiError::Ceiling(e) => e.code(),
            ApiError::KeyReused { .. } => "idempotency_key_reused",
            ApiError::InvalidUse { .. } => "invalid_use",
            ApiError::InsufficientBalance { .. } => "insufficient_balance",
            ApiError::TooManyLots { .. } => "too_many_lots",
            ApiError::UseIdReused { .. } => "use_id_reused",
            ApiError::InvalidReversal { .. } => "invalid_reversal",
            ApiError::InvalidCancel { .. } => "invalid_cancel",
            ApiError::InvalidUpload { .. } => "invalid_upload",
            ApiError::AlreadySpent { .. } => "already_spent",
            ApiError::EnqueueFailed { .. } => "enqueue_incomplete",
            ApiError::NotFound { .. } => "not_found",
            ApiError::JobRunning { .. } => "job_running",
            ApiError::CancelNotQueued { .. } => "cancel_not_queued",
            ApiError::InvalidPathParameter { .. } => "invalid_path_parameter",
            ApiError::InvalidQueryParameter(_) => "invalid_query_parameter",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The response a client sees.
    pub fn to_response(&self) -> ApiResponse {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        match self {
            ApiError::Submission(SubmissionError::Invalid {
                errors, total_errors, ..
            }) => {
                error["errors"] = json!(errors as &Vec<FieldError>);
                error["total_errors"] = json!(total_errors);
            }
            ApiError::KeyReused { job_id } => error["job_id"] = json!(job_id),
            ApiError::Ceiling(e) => {
                error["limit"] = json!(e.limit());
                error["value"] = json!(e.value());
                if let CeilingError::AmountPerAccrual { index, field, .. } = e {
                    error["index"] = json!(index);
                    error["field"] = json!(field);
                }
            }
            ApiError::InvalidUse { errors }
            | ApiError::InvalidReversal { errors }
            | ApiError::InvalidCancel { errors }
            | ApiError::InvalidUpload { errors } => error["errors"] = json!(errors),
            ApiError::AlreadySpent { remaining, .. } => error["remaining"] = json!(remaining),
            ApiError::InsufficientBalance {
                requested, available, ..
            } => {
                error["requested"] = json!(requested);
                error["available"] = json!(available);
            }
            ApiError::TooManyLots { requested, at_most, .. } => {
                error["requested"] = json!(requested);
                error["at_most"] = json!(at_most);
            }
            ApiError::EnqueueFailed { job_id, with_key, .. } => {
                error["job_id"] = json!(job_id);
                if !with_key {
                    error["message"] = json!(format!(
                        "job {job_id} was recorded but not fully queued; resubmit the same accruals \
                         (their accrual_ids keep them from being credited twice)"
                    ));
                }
            }
            _ => {}
        }
        let response = ApiResponse::json(self.status(), json!({ "error": error }));
        match self {
            ApiError::EnqueueFailed { .. } | ApiError::Unavailable(_) => response.with_header("Retry-After", "1"),
            ApiError::MethodNotAllowed { allowed, .. } => response.with_header("Allow", *allowed),
            _ => response,
        }
    }
}
