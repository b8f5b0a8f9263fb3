//! What the AWS adapters keep of an SDK error: [`BackendFailure`], its
//! category, error code, HTTP status and request id, never the service's
//! message nor the items a cancelled transaction returns.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::RequestId;

use crate::ports::BackendFailure;

/// An error the adapters can keep in its redacted form.
pub(crate) trait Redact {
    /// What may be kept and logged of it.
    fn redacted(&self) -> BackendFailure;
}

impl<E: ProvideErrorMetadata> Redact for SdkError<E, HttpResponse> {
    fn redacted(&self) -> BackendFailure {
        let category = match self {
            SdkError::ServiceError(_) => "service",
            SdkError::TimeoutError(_) => "timeout",
            SdkError::DispatchFailure(_) => "dispatch",
            SdkError::ResponseError(_) => "response",
            SdkError::ConstructionFailure(_) => "construction",
            _ => "other",
        };
        BackendFailure {
            category,
            code: self.code().map(str::to_owned),
            http_status: match self {
                SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
                _ => None,
            },
            request_id: self.meta().request_id().map(str::to_owned),
            reasons: Vec::new(),
        }
    }
}

/// A request the SDK could not build (a missing required field): names
/// the field, holds no value.
impl Redact for BuildError {
    fn redacted(&self) -> BackendFailure {
        BackendFailure {
            category: "construction",
            code: Some(self.to_string()),
            ..BackendFailure::default()
        }
    }
}

/// A cancelled transaction's reason codes, one per action, without the
/// items `ALL_OLD` returned with them.
pub(crate) fn cancellation_codes(error: &SdkError<TransactWriteItemsError, HttpResponse>) -> Vec<String> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => cancel
            .cancellation_reasons()
            .iter()
            .map(|reason| reason.code().unwrap_or("None").to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// A body stream that broke mid-read: a transport failure, whose message
/// describes the connection, not the content.
impl Redact for aws_sdk_s3::primitives::ByteStreamError {
    fn redacted(&self) -> BackendFailure {
        BackendFailure {
            category: "dispatch",
            code: Some(self.to_string()),
            ..BackendFailure::default()
        }
    }
}
