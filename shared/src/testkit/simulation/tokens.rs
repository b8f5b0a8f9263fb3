//! DynamoDB's transactions as the simulated store does not know them: a
//! message's credit split into several `TransactWriteItems`, and the
//! `ClientRequestToken` each one carries, on the virtual clock.
//!
//! [`TokenLedger`] sits above the fault-injecting store. It splits a
//! message's accruals as the DynamoDB adapter does
//! ([`crate::domain::transaction_plan::plan_transactions_within`], scaled
//! down so that a few accruals already span several transactions) and
//! sends each transaction as one store call, through the fault gates (so
//! the worker may die, or the next transaction fail, after the earlier ones
//! committed), with the token the adapter would send
//! ([`crate::domain::transaction_plan::request_token`]). As DynamoDB does
//! (TransactWriteItems API Reference, `ClientRequestToken`): a resend of a
//! committed transaction's token within 10 minutes is answered as the first
//! send was, without effect; with other content it is refused with
//! `IdempotentParameterMismatch`; after 10 minutes the token is new.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::transaction_plan::{plan_transactions_within, request_token};
use crate::domain::{Accrual, MessageRef};
use crate::ports::{ApplyOutcome, CreditTally, Credits, Ledger, StoreError};

use super::exec::Sim;
use super::queue::short;
use super::FaultKind;

/// How long a token binds its transaction: 10 minutes after it completed
/// (TransactWriteItems API Reference, `ClientRequestToken`).
pub(crate) const TOKEN_WINDOW_MS: u64 = 10 * 60 * 1_000;

/// What one seed draws for its transactions and its queue, from a generator
/// of its own (so the campaign and the scheduler's draws stay as they were).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenSettings {
    /// Actions a transaction holds at most, 3 to 8 (DynamoDB's 100 scaled
    /// down to messages of 1 to 6 accruals).
    pub max_actions: usize,
    /// In a third of the seeds, a visibility timeout longer than the token
    /// window (11 to 20 minutes; AWS advises six times the function's
    /// timeout, itself up to 15 minutes), so that a redelivery lands
    /// outside it; otherwise the scenario's.
    pub visibility_ms: Option<u64>,
}

impl TokenSettings {
    pub(crate) fn generate(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x70ce_0000_0000_0003);
        let max_actions = rng.usize(3..=8);
        let visibility_ms = (rng.u8(..3) == 0).then(|| rng.u64(11 * 60_000..=20 * 60_000));
        TokenSettings {
            max_actions,
            visibility_ms,
        }
    }
}

/// A committed transaction's token: what it carried and what it answered.
struct Bound {
    content: (String, Vec<Accrual>),
    answer: ApplyOutcome,
    at_ms: u64,
}

/// The error DynamoDB answers a token resent with other content.
#[derive(Debug, thiserror::Error)]
#[error("IdempotentParameterMismatchException: ClientRequestToken {0} was used with different parameters")]
pub(crate) struct IdempotentParameterMismatch(String);

/// A [`Ledger`] crediting a message in DynamoDB's transactions, each with
/// its `ClientRequestToken`.
pub(crate) struct TokenLedger {
    inner: Arc<dyn Ledger>,
    sim: Sim,
    max_actions: usize,
    tokens: Mutex<BTreeMap<String, Bound>>,
}

impl TokenLedger {
    pub(crate) fn new(inner: Arc<dyn Ledger>, sim: Sim, max_actions: usize) -> Self {
        TokenLedger {
            inner,
            sim,
            max_actions,
            tokens: Mutex::new(BTreeMap::new()),
        }
    }

    fn tokens(&self) -> MutexGuard<'_, BTreeMap<String, Bound>> {
        // Single-threaded: a poisoned lock means a panic already failed the run.
        self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one transaction with its token.
    async fn transaction(
        &self,
        by: MessageRef,
        chunk: &[&Accrual],
        now: OffsetDateTime,
        now_text: &str,
    ) -> Result<ApplyOutcome, StoreError> {
        let token = request_token(by, chunk, now_text);
        // Everything the adapter builds the transaction's items from.
        // (The token binds the message; the content its time and accruals.)
        let owned: Vec<Accrual> = chunk.iter().map(|a| (*a).clone()).collect();
        let content = (now_text.to_owned(), owned);
        // The token hashes the message's wall-clock `queued_at`: the trace
        // names the transaction by its message and first accrual instead,
        // so that a seed replays event by event.
        let first = chunk.first().map_or("", |a| a.accrual_id.as_str());
        let named = || format!("of {}#{} from {first}", short(by.job_id), by.seq);
        {
            let mut tokens = self.tokens();
            let mut core = self.sim.lock();
            let now_ms = core.now_ms;
            match tokens.get(&token) {
                Some(bound) if now_ms < bound.at_ms + TOKEN_WINDOW_MS => {
                    let since = now_ms - bound.at_ms;
                    if bound.content == content {
                        core.count(FaultKind::TokenReplay);
                        core.note(|| {
                            format!(
                                "  transaction {}: resent {since} ms after it committed, answered again",
                                named()
                            )
                        });
                        return Ok(bound.answer);
                    }
                    core.note(|| {
                        format!(
                            "  transaction {}: resent {since} ms after it committed with other content, refused",
                            named()
                        )
                    });
                    return Err(StoreError::Backend {
                        operation: "TransactWriteItems",
                        source: Box::new(IdempotentParameterMismatch(token)),
                    });
                }
                Some(bound) => {
                    core.count(FaultKind::TokenExpired);
                    let since = now_ms - bound.at_ms;
                    core.note(|| {
                        format!(
                            "  transaction {}: resent {since} ms after it committed, a new request",
                            named()
                        )
                    });
                    tokens.remove(&token);
                }
                None => {}
            }
        }
        // Through the fault-injecting store: it may fail without effect, or
        // the worker die once it committed.
        let outcome = self.inner.apply_accruals(by, &content.1, now).await?;
        // Only a transaction that committed at its first send binds its
        // token. One that found an accrual credited was cancelled (the
        // adapter resends the rest under another token, not modelled here),
        // and a cancelled transaction binds nothing.
        let len = chunk.len() as u64;
        if outcome.applied == len && outcome.replayed == 0 && outcome.duplicate == 0 && outcome.cancelled == 0 {
            let answer = ApplyOutcome {
                applied: len,
                requests: 1,
                ..ApplyOutcome::default()
            };
            let at_ms = self.sim.lock().now_ms;
            self.tokens().insert(token, Bound { content, answer, at_ms });
        }
        Ok(outcome)
    }
}

/// Counts a crash that dropped a credit after some of its transactions
/// committed (the crash itself is counted as a `worker-crash`).
struct CreditUnderWay {
    sim: Sim,
    committed: usize,
    done: bool,
}

impl Drop for CreditUnderWay {
    fn drop(&mut self) {
        if !self.done && self.committed > 0 {
            let mut core = self.sim.lock();
            core.count(FaultKind::CrashBetweenTransactions);
            let k = self.committed;
            core.note(|| format!("  the worker died after {k} transactions of a credit committed"));
        }
    }
}

#[async_trait]
impl Credits for TokenLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let now_text = crate::services::api::rfc3339(now);
        let chunks = plan_transactions_within(accruals, self.max_actions);
        let mut total = ApplyOutcome::default();
        let mut under_way = CreditUnderWay {
            sim: self.sim.clone(),
            committed: 0,
            done: false,
        };
        for (i, chunk) in chunks.iter().enumerate() {
            if total.cancelled > 0 {
                // The cancel has begun: the rest would be refused alike.
                total.cancelled += chunk.len() as u64;
                continue;
            }
            let outcome = match self.transaction(by, chunk, now, &now_text).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    under_way.done = true;
                    if i > 0 {
                        let mut core = self.sim.lock();
                        core.count(FaultKind::PartialApply);
                        let n = chunks.len();
                        core.note(|| format!("  apply_accruals: {i} of {n} transactions committed, then one failed"));
                    }
                    return Err(error);
                }
            };
            under_way.committed += 1;
            total.applied += outcome.applied;
            total.replayed += outcome.replayed;
            total.duplicate += outcome.duplicate;
            total.cancelled += outcome.cancelled;
            total.requests += outcome.requests;
        }
        under_way.done = true;
        Ok(total)
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        self.inner.tally_credits(by, accrual_ids).await
    }
}

crate::forward_debits!(TokenLedger, self => self.inner);

crate::forward_ledger_reads!(TokenLedger, self => self.inner);

crate::forward_ledger_repairs!(TokenLedger, self => self.inner);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::JobId;
    use crate::testkit::simulation::exec::Core;
    use crate::testkit::simulation::FaultRates;

    fn accrual(id: &str, amount: u64) -> Accrual {
        Accrual {
            accrual_id: id.into(),
            member_id: "m1".into(),
            point_type: "P".into(),
            amount,
            reason: None,
            apply_at: None,
            expires_at: None,
        }
    }

    fn ledger() -> (TokenLedger, Sim) {
        let rates = FaultRates {
            store_error: 0.0,
            crash: 0.0,
            expire: 0.0,
            duplicate_delivery: 0.0,
            lost_delete: 0.0,
        };
        let sim = Sim::new(Core::new(0, rates, false));
        // Three actions: one accrual a transaction.
        (TokenLedger::new(Arc::new(MemoryStore::new()), sim.clone(), 3), sim)
    }

    fn apply(ledger: &TokenLedger, by: MessageRef, accruals: &[Accrual]) -> Result<ApplyOutcome, StoreError> {
        let at = time::macros::datetime!(2026-11-29 17:00:00 UTC);
        futures::executor::block_on(ledger.apply_accruals(by, accruals, at))
    }

    #[test]
    fn a_resend_within_ten_minutes_is_answered_again_and_after_them_is_new() {
        let (ledger, sim) = ledger();
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        let accruals = [accrual("a1", 5), accrual("a2", 7)];
        let first = apply(&ledger, by, &accruals).unwrap();
        assert_eq!((first.applied, first.replayed, first.requests), (2, 0, 2));

        sim.lock().now_ms += TOKEN_WINDOW_MS - 1;
        let again = apply(&ledger, by, &accruals).unwrap();
        assert_eq!(
            (again.applied, again.replayed),
            (2, 0),
            "DynamoDB answers as the first time: committed, nothing found credited"
        );
        assert_eq!(sim.lock().faults.get(FaultKind::TokenReplay), 2);

        sim.lock().now_ms += 1;
        let later = apply(&ledger, by, &accruals).unwrap();
        assert_eq!(
            (later.applied, later.replayed),
            (2, 2),
            "a new request: the conditions find both credited by this message"
        );
        assert_eq!(sim.lock().faults.get(FaultKind::TokenExpired), 2);
    }

    #[test]
    fn a_token_resent_with_other_content_is_refused() {
        let (ledger, _sim) = ledger();
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        apply(&ledger, by, &[accrual("a1", 5)]).unwrap();
        // The token binds the ids, not the amount: the same token, another content.
        let refused = apply(&ledger, by, &[accrual("a1", 6)]);
        assert!(
            matches!(&refused, Err(StoreError::Backend { source, .. }) if source.to_string().contains("IdempotentParameterMismatch")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_cancelled_transaction_binds_no_token() {
        let (ledger, sim) = ledger();
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        let other = MessageRef { seq: 1, ..by };
        // Credited by another message first: DynamoDB cancels this one.
        apply(&ledger, other, &[accrual("a1", 5)]).unwrap();
        let dup = apply(&ledger, by, &[accrual("a1", 5)]).unwrap();
        assert_eq!(dup.duplicate, 1);
        let again = apply(&ledger, by, &[accrual("a1", 5)]).unwrap();
        assert_eq!(again.duplicate, 1, "decided by the store's condition again");
        assert_eq!(sim.lock().faults.get(FaultKind::TokenReplay), 0);
    }
}
