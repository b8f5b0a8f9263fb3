//! `ClientRequestToken` as DynamoDB honours it for `TransactWriteItems`:
//! within 10 minutes of the first request's completion, an identical
//! request with the same token is answered as the first was without being
//! applied again, and a different request with the same token is refused
//! with `IdempotentParameterMismatchException`; while the first is still
//! running, a second gets `TransactionInProgressException`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a token binds its request: 10 minutes (TransactWriteItems API
/// Reference, `ClientRequestToken`).
pub const TOKEN_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The time the token window is measured in; a test moves it by hand.
pub trait Clock: Send + Sync {
    /// The present.
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    start: Instant,
    offset: std::sync::Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at an arbitrary instant.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            start: Instant::now(),
            offset: std::sync::Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What to do with a request that carries a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new request: send it, then [`TokenTable::complete`] it.
    Forward,
    /// The same request completed within the window: answer this again.
    Replay(Vec<u8>),
    /// The same token with other content within the window.
    Mismatch,
    /// The same token while its first request is still running.
    InProgress,
}

#[derive(Debug)]
enum State {
    Running {
        digest: [u8; 32],
    },
    Done {
        digest: [u8; 32],
        answer: Vec<u8>,
        at: Instant,
    },
}

/// Tokens seen, with their request's digest and answer.
pub struct TokenTable {
    clock: Arc<dyn Clock>,
    tokens: HashMap<String, State>,
}

impl TokenTable {
    /// An empty table on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        TokenTable {
            clock,
            tokens: HashMap::new(),
        }
    }

    /// Decides a request with `token` whose canonical digest is `digest`.
    pub fn begin(&mut self, token: &str, digest: [u8; 32]) -> Decision {
        let now = self.clock.now();
        match self.tokens.get(token) {
            Some(State::Running { digest: first }) => {
                if *first == digest {
                    Decision::InProgress
                } else {
                    Decision::Mismatch
                }
            }
            Some(State::Done {
                digest: first,
                answer,
                at,
            }) if now.duration_since(*at) < TOKEN_WINDOW => {
                if *first == digest {
                    Decision::Replay(answer.clone())
                } else {
                    Decision::Mismatch
                }
            }
            // Unknown, or past its window: a new request.
            _ => {
                self.tokens.insert(token.to_owned(), State::Running { digest });
                Decision::Forward
            }
        }
    }

    /// Records the answer of a forwarded request. Only a committed
    /// transaction binds its token; after a failure the token is free.
    pub fn complete(&mut self, token: &str, committed: bool, answer: Vec<u8>) {
        let Some(State::Running { digest }) = self.tokens.remove(token) else {
            return;
        };
        if committed {
            let at = self.clock.now();
            self.tokens.insert(token.to_owned(), State::Done { digest, answer, at });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_binds_its_request_for_ten_minutes_after_completion() {
        let clock = ManualClock::new();
        let mut table = TokenTable::new(clock.clone());
        let (first, other) = ([1; 32], [2; 32]);
        assert_eq!(table.begin("t", first), Decision::Forward);
        assert_eq!(table.begin("t", first), Decision::InProgress);
        assert_eq!(table.begin("t", other), Decision::Mismatch);
        table.complete("t", true, b"ok".to_vec());
        clock.advance(TOKEN_WINDOW - Duration::from_secs(1));
        assert_eq!(table.begin("t", first), Decision::Replay(b"ok".to_vec()));
        assert_eq!(table.begin("t", other), Decision::Mismatch);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            table.begin("t", other),
            Decision::Forward,
            "a new request after the window"
        );
    }

    #[test]
    fn a_failed_request_leaves_its_token_free() {
        let mut table = TokenTable::new(ManualClock::new());
        assert_eq!(table.begin("t", [1; 32]), Decision::Forward);
        table.complete("t", false, b"cancelled".to_vec());
        assert_eq!(table.begin("t", [2; 32]), Decision::Forward);
    }
}
