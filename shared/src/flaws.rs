//! Deliberate defects that the simulation switches on, one seed at a time,
//! to show that its checks catch them (docs/simulation.md, "The checks have
//! teeth"). Each is a branch in the production code path itself: the
//! worker, the ingest, the importer, the transaction token, the in-memory
//! store's rules.
//! A wrapper around a port would only show that the checks catch the
//! wrapper; a branch in the code shows they catch that code going wrong.
//!
//! Without feature `testkit` (every Lambda) [`active`] is the constant
//! `false` and the branches compile away; with it, a flaw is on only on the
//! thread that switched it on ([`switch_on`]), for as long as the guard
//! lives: a seed runs on one thread, so other seeds, and every other test,
//! run the code as it is.

/// A deliberate defect of the production code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// The store's credit lost its condition (in-memory store,
    /// `apply_accruals`): an accrual credited before, by any message, is
    /// credited again, so a redelivery or a duplicate credits twice.
    DoubleCredit,
    /// The worker counts an accrual its own message credited on an earlier
    /// delivery as a `duplicate` (`Worker::apply_accruals`), as if another
    /// job had credited it: a redelivered message, a replay, undercounts
    /// its job's `applied`.
    ReplayCountedDuplicate,
    /// The ingest records a new job as enqueued before sending its messages
    /// (`POST /v1/jobs`): a retry after a crash or a partial send answers
    /// `202` as a replay and never queues what is missing.
    EnqueuedBeforeSending,
    /// The transaction token names the message, not the transaction
    /// (`transaction_plan::request_token` leaves out its accruals): a
    /// message credited in several transactions sends one token with
    /// several contents, and DynamoDB refuses every one after the first
    /// with `IdempotentParameterMismatch` for 10 minutes.
    TokenPerMessage,
    /// The fold ignores its `(job, seq)` marker (in-memory store,
    /// `fold_message`): a redelivered message, a replay, is folded as new
    /// and its counts are added to its job again.
    FoldWithoutMarker,
    /// The importer records a chunk on its job before writing its report
    /// part and occurrence counts and handing the next chunk on
    /// (`Importer::run_chunk`): a chunk that fails or dies after the
    /// record is skipped as "read before" on its redelivery, so the rest
    /// of its file is never read, or its report never written.
    ChunkRecordedEarly,
}

#[cfg(feature = "testkit")]
mod switch {
    use std::cell::Cell;

    use super::Flaw;

    thread_local! {
        static ACTIVE: Cell<Option<Flaw>> = const { Cell::new(None) };
    }

    /// Whether `flaw` is switched on on this thread.
    pub fn active(flaw: Flaw) -> bool {
        ACTIVE.with(|a| a.get() == Some(flaw))
    }

    /// Switches `flaw` on for this thread until the guard is dropped
    /// (`None`: none on).
    pub fn switch_on(flaw: Option<Flaw>) -> FlawGuard {
        let before = ACTIVE.with(|a| a.replace(flaw));
        FlawGuard { before }
    }

    /// Switches the flaw back off (to what was on before) when dropped.
    #[must_use = "the flaw is on only while the guard lives"]
    pub struct FlawGuard {
        before: Option<Flaw>,
    }

    impl Drop for FlawGuard {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.before));
        }
    }
}

#[cfg(feature = "testkit")]
pub use switch::{active, switch_on, FlawGuard};

/// Whether `flaw` is switched on: never, without feature `testkit`.
#[cfg(not(feature = "testkit"))]
#[inline(always)]
pub fn active(_flaw: Flaw) -> bool {
    false
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;

    #[test]
    fn a_flaw_is_on_only_on_its_thread_while_its_guard_lives() {
        assert!(!active(Flaw::DoubleCredit));
        {
            let _on = switch_on(Some(Flaw::DoubleCredit));
            assert!(active(Flaw::DoubleCredit));
            assert!(!active(Flaw::FoldWithoutMarker));
            let elsewhere = std::thread::spawn(|| active(Flaw::DoubleCredit)).join().unwrap();
            assert!(!elsewhere);
        }
        assert!(!active(Flaw::DoubleCredit));
    }
}
