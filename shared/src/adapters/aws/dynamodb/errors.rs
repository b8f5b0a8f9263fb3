//! Mapping SDK errors to [`StoreError`].

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::ports::StoreError;

/// A failure that trying again will not mend.
pub(super) fn backend<E>(operation: &'static str, error: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Backend {
        operation,
        source: Box::new(error),
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
