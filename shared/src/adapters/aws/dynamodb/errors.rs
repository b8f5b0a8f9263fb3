//! Mapping SDK errors to [`StoreError`].

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

pub(crate) use crate::adapters::aws::redact::Redact;
use crate::ports::StoreError;

/// A failure that trying again will not mend, kept in its redacted form
/// ([`BackendFailure`]): the SDK's error, whose `Debug` holds the items a
/// cancelled transaction returned, goes no further than this.
pub(super) fn backend<E: Redact>(operation: &'static str, error: E) -> StoreError {
    StoreError::Backend {
        operation,
        source: Box::new(error.redacted()),
    }
}

/// Network failures and 5xx answers: worth retrying after a pause (DynamoDB
/// documents 500 InternalServerError as retryable).
pub(super) fn is_transport<E>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => e.raw().status().is_server_error(),
        _ => false,
    }
}

/// Throttling answers, and transport failures.
pub(super) fn is_throttling<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        error.as_service_error().and_then(|e| e.code()),
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded")
    ) || is_transport(error)
}

/// Maps an SDK error of a single-item call: throttling and transport errors
/// are transient, the rest is a backend failure.
pub(super) fn single_call_error<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_throttling(&error) {
        StoreError::Throttled { operation }
    } else {
        backend(operation, error)
    }
}
