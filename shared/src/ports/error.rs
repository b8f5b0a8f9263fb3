//! What a port call that did not complete says: store and queue errors,
//! each keeping its backend's error whole as a source.

/// Any error from a backend's client library, kept whole as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store throttled {operation} and retries were exhausted")]
    Throttled { operation: &'static str },
    #[error("{operation} kept conflicting with concurrent transactions and retries were exhausted")]
    Conflict { operation: &'static str },
    #[error("{operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("stored item {key} is malformed: {detail}")]
    Corrupt { key: String, detail: String },
}

impl StoreError {
    /// Whether trying again later may succeed (a queue redelivery will).
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Corrupt { .. })
    }
}

/// A queue operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{unsent} of {total} messages could not be queued after retries")]
    Unsent {
        unsent: usize,
        total: usize,
        #[source]
        source: Option<BoxError>,
    },
    #[error("the queue refused a message: {reason}")]
    Rejected { reason: String },
    #[error("{operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}
