//! Write-unit charging around any store: [`Metered`] delegates every port
//! call to the store it wraps and charges a [`WriteMeter`] with what the same
//! writes cost on DynamoDB ([`crate::domain::capacity`]).
//!
//! Why a wrapper: a store other than DynamoDB (the embedded SQLite store)
//! has no write units of its own, yet benchmarks and the capacity planner
//! compare backends by them. Charging from a call's arguments, in one place,
//! keeps the store free of accounting and charges every store alike.
//!
//! The charges mirror what the DynamoDB adapter sends for the same call: the
//! transactions it splits a batch into, the items each writes, and the
//! follow-up writes (a completion check, a stamp). They are made before the
//! call runs, so a call that fails still costs, as a failed request does on
//! DynamoDB. The one charge that depends on the outcome (the naive
//! baseline's put writes an index entry only when its condition holds) reads
//! it from the call's result.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::capacity::{
    fold_units, indexed_write_units, ledger_transaction_units, use_entry_bytes, write_units, WriteCost, WriteKind,
    WriteMeter, MARKER_AND_UPDATE_UNITS, SMALL_WRITE_UNITS,
};
use crate::domain::lots::BalanceSheet;
use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
use crate::domain::transaction_plan::{plan_transactions, sum_by_balance};
use crate::domain::uses::{Use, UseOutcome};
use crate::domain::{Accrual, CancelCounts, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob};
use crate::ports::{
    ApplyOutcome, CreateJob, CreditTally, Credits, Debits, JobStore, LedgerReads, LedgerRepairs, StoreError,
};

/// A store whose writes are charged to a [`WriteMeter`] as DynamoDB would
/// bill them. Reads pass through uncharged.
///
/// Cheap to clone when the store is: clones share the store's state and
/// the meter.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    meter: WriteMeter,
}

impl<S> Metered<S> {
    /// `inner` with a fresh meter.
    pub fn new(inner: S) -> Self {
        Metered {
            inner,
            meter: WriteMeter::new(),
        }
    }

    /// The wrapped store (for its own inspection methods; calls made on it
    /// directly are not charged).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The meter this wrapper charges.
    pub fn meter(&self) -> &WriteMeter {
        &self.meter
    }

    /// The write requests and units charged so far, by what they were for.
    pub fn write_cost(&self) -> WriteCost {
        self.meter.cost()
    }
}

#[async_trait]
impl<S: Credits> Credits for Metered<S> {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        // One transaction per chunk DynamoDB's action limit splits the batch
        // into: each entry's conditional put, each balance's update.
        let transactions = plan_transactions(accruals);
        self.meter.charge_ledger(
            transactions.len() as u64,
            transactions
                .iter()
                .map(|chunk| ledger_transaction_units(by, chunk, sum_by_balance(chunk).len()))
                .sum(),
        );
        self.inner.apply_accruals(by, accruals, now).await
    }

    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        self.inner.tally_credits(by, accrual_ids).await
    }
}

#[async_trait]
impl<S: Debits> Debits for Metered<S> {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        // As DynamoDB: one transaction of a put and a balance update.
        self.meter.charge_ledger(
            1,
            indexed_write_units(use_entry_bytes(u, None), WriteKind::Transactional)
                + write_units(0, WriteKind::Transactional),
        );
        self.inner.apply_use_audited(u, audit, now).await
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        // As `apply_use`, plus the check that the message's cancel has not
        // begun: one more action, a small transactional write.
        self.meter.charge_ledger(
            1,
            indexed_write_units(use_entry_bytes(u, Some(by)), WriteKind::Transactional)
                + 2 * write_units(0, WriteKind::Transactional),
        );
        self.inner.apply_message_use(by, u, now).await
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        // As DynamoDB: one transaction updating the entry and the balance,
        // and writing the reversal's own history entry.
        self.meter.charge_ledger(
            1,
            2 * write_units(0, WriteKind::Transactional) + indexed_write_units(0, WriteKind::Transactional),
        );
        self.inner.reverse_audited(target, audit, now).await
    }
}

crate::forward_ledger_reads!([<S: LedgerReads>] Metered<S>, self => self.inner);

#[async_trait]
impl<S: LedgerRepairs> LedgerRepairs for Metered<S> {
    async fn replace_balance_sheet(
        &self,
        member_id: &str,
        read: Option<&BalanceSheet>,
        sheet: &BalanceSheet,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // As DynamoDB: one conditional UpdateItem of the balance item.
        self.meter.charge_ledger(1, SMALL_WRITE_UNITS);
        self.inner.replace_balance_sheet(member_id, read, sheet, now).await
    }
}

#[async_trait]
impl<S: JobStore> JobStore for Metered<S> {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        self.meter.charge_jobs(1, SMALL_WRITE_UNITS);
        self.inner.create_job(job).await
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.meter.charge_jobs(1, SMALL_WRITE_UNITS);
        self.inner.mark_enqueued(job_id).await
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get_job(job_id).await
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // The marker-and-job transaction, then the completion check. The
        // marker keeps the item ids one per line, plus one separator.
        let items_bytes = items.join("\n").len();
        self.meter
            .charge_jobs(2, fold_units(items_bytes + 1) + SMALL_WRITE_UNITS);
        self.inner.fold_message(job_id, seq, counts, items, now).await
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        // The marker-and-job transaction, then (last chunk) the completion check.
        let last = u64::from(chunk.is_final());
        self.meter
            .charge_jobs(1 + last, MARKER_AND_UPDATE_UNITS + last * SMALL_WRITE_UNITS);
        self.inner.record_chunk(job_id, chunk, now).await
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.inner.chunk_recorded(job_id, index).await
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        self.meter.charge_jobs(1, SMALL_WRITE_UNITS);
        self.inner.begin_cancel(job_id, audit, now).await
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        // As DynamoDB: the message's small cancel item, then a read.
        self.meter.charge_jobs(1, SMALL_WRITE_UNITS);
        self.inner.begin_message_cancel(job_id, seq, now).await
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // As DynamoDB: the marker-and-job transaction, then the completion stamp.
        self.meter.charge_jobs(2, MARKER_AND_UPDATE_UNITS + SMALL_WRITE_UNITS);
        self.inner.record_cancelled(job_id, seq, counts, now).await
    }
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.inner.folded_counts(job_id).await
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // As DynamoDB: one conditional UpdateItem of the job.
        self.meter.charge_jobs(1, SMALL_WRITE_UNITS);
        self.inner.replace_job_counts(job_id, read, counts, now).await
    }
}

/// The naive baseline's writes: a standard conditional put per entry (its
/// history index entry only when the condition holds) and a small update.
#[cfg(feature = "testkit")]
#[async_trait]
impl<S: crate::testkit::baseline::SingleWrites> crate::testkit::baseline::SingleWrites for Metered<S> {
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError> {
        let units = write_units(
            crate::domain::capacity::ledger_entry_bytes(accrual, by),
            WriteKind::Standard,
        );
        self.meter.charge_ledger(1, units);
        let inserted = self.inner.put_entry(by, accrual, now).await?;
        if inserted {
            // As on DynamoDB: a failed condition writes no index entry.
            self.meter.charge_ledger(0, units);
        }
        Ok(inserted)
    }

    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError> {
        self.meter.charge_ledger(1, SMALL_WRITE_UNITS);
        self.inner.add_to_balance(accrual, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;

    #[tokio::test]
    async fn writes_are_charged_by_the_model_and_reads_are_free() {
        let store = Metered::new(MemoryStore::new());
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(1)),
            seq: 0,
        };
        let a = Accrual {
            accrual_id: "a".into(),
            member_id: "m".into(),
            point_type: "PT".into(),
            amount: 5,
            reason: None,
            apply_at: None,
            expires_at: None,
        };
        let now = OffsetDateTime::now_utc();
        store.apply_accruals(by, std::slice::from_ref(&a), now).await.unwrap();
        let credited = store.write_cost();
        assert_eq!(
            (credited.ledger_requests, credited.ledger_units),
            (1, ledger_transaction_units(by, &[&a], 1))
        );
        store.balance_sheets("m").await.unwrap();
        store.history_entries("m", None, None, 10).await.unwrap();
        store.get_job(by.job_id).await.unwrap();
        assert_eq!(store.write_cost(), credited);
        let items = ["a".to_owned(), "b".to_owned()];
        store
            .fold_message(by.job_id, 0, MessageCounts::default(), &items, now)
            .await
            .unwrap();
        let folded = store.write_cost() - credited;
        // The marker keeps "a\nb" and a separator.
        assert_eq!(
            (folded.job_requests, folded.job_units),
            (2, fold_units(4) + SMALL_WRITE_UNITS)
        );
    }
}
