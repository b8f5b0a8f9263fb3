//! What a port call that did not complete says: store and queue errors,
//! each keeping its backend's error whole as a source.

/// Any error from a backend's client library, kept whole as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A backend's failure as the adapter kept it: what kind of failure, the
/// service's error code, the HTTP status, the request id and, for a
/// cancelled transaction, its cancellation reason codes. Never the
/// service's message nor any item: a cancelled DynamoDB transaction
/// carries the old items (member ids, reasons) in its reasons, and an
/// error's `Debug` form would log them. Adapters keep this instead of the
/// SDK's error, so no log line, `Display` or `Debug` of a [`StoreError`]
/// can show more than the README's logging policy allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendFailure {
    /// `service`, `timeout`, `dispatch`, `response`, `construction` or
    /// `other`.
    pub category: &'static str,
    /// The service's error code (`TransactionCanceledException`…).
    pub code: Option<String>,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    /// A cancelled transaction's reason codes, one per action
    /// (`ConditionalCheckFailed`, `None`…).
    pub reasons: Vec<String>,
}

impl std::fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} error", self.category)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.reasons.is_empty() {
            write!(f, " reasons [{}]", self.reasons.join(", "))?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " request id {id}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BackendFailure {}

/// The form of an error a log line may carry: each error of its chain by
/// its `Display`, joined by `: `, except a [`StoreError::Corrupt`], whose
/// key (it names a member, a use…) and detail (it quotes values) are cut to
/// the key's kind. With [`BackendFailure`] in place of every SDK error,
/// that holds no member id, reason or item. Use it, never `{:?}`, to log
/// an error.
pub fn log_form(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        match current.downcast_ref::<StoreError>() {
            Some(StoreError::Corrupt { key, .. }) => {
                // `MEMBER#m-1/BALANCE#PT` → `MEMBER#…`; `job <id>` → `job …`.
                let kind = key.split(['#', ' ']).next().unwrap_or_default();
                parts.push(format!("stored item {kind}… is malformed"));
            }
            _ => parts.push(current.to_string()),
        }
        next = current.source();
    }
    parts.dedup();
    parts.join(": ")
}

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
