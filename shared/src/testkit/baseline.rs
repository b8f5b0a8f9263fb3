//! The naive design Pointflow is measured against (the first implementation's
//! "hypothesis 2"): one queue message per accrual, sent one request at a
//! time, and per accrual a conditional put of its ledger entry followed by a
//! separate balance update. It sits behind the same ports as Pointflow, so
//! `pointflow bench e2e` runs both through the same API, worker and backend.
//!
//! Not for production: a crash between the put and the update loses the
//! credit (the entry exists, so a redelivery skips it), which is one of the
//! reasons Pointflow writes both in one transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{Accrual, MessageRef};
use crate::ports::Credits;
use crate::ports::{ApplyOutcome, Ledger, QueueError, ReceivedMessage, StoreError, WorkQueue};

/// A store's single-item writes, one request each.
#[async_trait]
pub trait SingleWrites: Send + Sync {
    /// Writes the accrual's ledger entry unless its id was credited before;
    /// returns whether it wrote.
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Adds the accrual's amount to its balance.
    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError>;
}

/// The baseline ledger: two requests per accrual, no transaction.
pub struct NaiveLedger<S> {
    store: Arc<S>,
}

impl<S> NaiveLedger<S> {
    pub fn new(store: Arc<S>) -> Self {
        NaiveLedger { store }
    }
}

#[async_trait]
impl<S: SingleWrites + Ledger + 'static> Credits for NaiveLedger<S> {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut outcome = ApplyOutcome::default();
        for accrual in accruals {
            outcome.requests += 1;
            if self.store.put_entry(by, accrual, now).await? {
                outcome.requests += 1;
                self.store.add_to_balance(accrual, now).await?;
                outcome.applied += 1;
            } else {
                // The naive design cannot tell its own earlier write from
                // another's: whatever exists counts as a duplicate.
                outcome.duplicate += 1;
            }
        }
        Ok(outcome)
    }
}

crate::forward_debits!([<S: SingleWrites + Ledger + 'static>] NaiveLedger<S>, self => self.store);

crate::forward_ledger_reads!([<S: SingleWrites + Ledger + 'static>] NaiveLedger<S>, self => self.store);

crate::forward_ledger_repairs!([<S: SingleWrites + Ledger + 'static>] NaiveLedger<S>, self => self.store);

/// A queue that sends every message in a request of its own (`SendMessage`
/// rather than `SendMessageBatch`); everything else as the queue it wraps.
pub struct Unbatched {
    inner: Arc<dyn WorkQueue>,
}

impl Unbatched {
    pub fn new(inner: Arc<dyn WorkQueue>) -> Self {
        Unbatched { inner }
    }
}

#[async_trait]
impl WorkQueue for Unbatched {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        for body in bodies {
            self.inner.send_messages(std::slice::from_ref(body)).await?;
        }
        Ok(())
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive_messages(max, wait).await
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.inner.delete_messages(receipt_handles).await
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.inner.release_messages(receipt_handles).await
    }

    fn requests(&self) -> u64 {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::metered::Metered;
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::JobId;
    use crate::ports::LedgerReads;

    fn accrual(id: &str, member: &str, amount: u64) -> Accrual {
        Accrual {
            accrual_id: id.into(),
            member_id: member.into(),
            point_type: "PT".into(),
            amount,
            reason: None,
            apply_at: None,
            expires_at: None,
        }
    }

    fn by(seq: u32) -> MessageRef {
        MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(1)),
            seq,
        }
    }

    #[tokio::test]
    async fn naive_ledger_credits_once_with_two_requests_per_new_accrual() {
        let store = Arc::new(Metered::new(SqliteStore::in_memory().unwrap()));
        let ledger = NaiveLedger::new(store.clone());
        let now = OffsetDateTime::now_utc();
        let batch = [accrual("a", "m1", 5), accrual("b", "m1", 7), accrual("c", "m2", 1)];
        let first = ledger.apply_accruals(by(0), &batch, now).await.unwrap();
        assert_eq!((first.applied, first.duplicate, first.requests), (3, 0, 6));
        let again = ledger.apply_accruals(by(0), &batch, now).await.unwrap();
        assert_eq!((again.applied, again.duplicate, again.requests), (0, 3, 3));
        assert_eq!(ledger.balances("m1").await.unwrap()[0].balance, 12);
        assert_eq!(store.inner().requests(), 9 + 1);
        // Three standard puts with their index entries and three small
        // updates, then three failed puts (no index entry).
        let cost = store.write_cost();
        assert_eq!((cost.ledger_requests, cost.ledger_units), (9, 3 * 2 + 3 + 3));
    }

    #[tokio::test]
    async fn unbatched_queue_sends_one_request_per_message() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = Arc::new(store.queue("q", Duration::from_secs(30), None));
        let unbatched = Unbatched::new(queue.clone());
        let bodies: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        unbatched.send_messages(&bodies).await.unwrap();
        assert_eq!(unbatched.requests(), 25);
        queue.send_messages(&bodies).await.unwrap();
        assert_eq!(queue.requests(), 25 + 3);
        let received = unbatched.receive_messages(10, Duration::ZERO).await.unwrap();
        assert_eq!(received.len(), 10);
    }
}
