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
    cancel_mark_bytes, fold_units, indexed_write_units, job_item_bytes, job_list_entry_units, ledger_transaction_units,
    reversal_entry_bytes, reversal_mark_bytes, use_entry_bytes, write_units, WriteCost, WriteKind, WriteMeter,
    MARKER_AND_UPDATE_UNITS, SMALL_WRITE_UNITS,
};
use crate::domain::job_list::JobRange;
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
        // As DynamoDB: one transaction of a put (its audit included) and a
        // balance update.
        self.meter.charge_ledger(
            1,
            indexed_write_units(use_entry_bytes(u, None, audit), WriteKind::Transactional)
                + write_units(0, WriteKind::Transactional),
        );
        self.inner.apply_use_audited(u, audit, now).await
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        // As `apply_use`, plus the check that the message's cancel has not
        // begun: one more action, a small transactional write.
        self.meter.charge_ledger(
            1,
            indexed_write_units(use_entry_bytes(u, Some(by), None), WriteKind::Transactional)
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
        // and writing the reversal's own history entry. The entry's own
        // bytes are the store's (the DynamoDB adapter reads and sizes it):
        // here it is charged by what the mark adds to it, its audit
        // included.
        self.meter.charge_ledger(
            1,
            write_units(reversal_mark_bytes(now, audit), WriteKind::Transactional)
                + write_units(0, WriteKind::Transactional),
        );
        let outcome = self.inner.reverse_audited(target, audit, now).await?;
        // The reversal's entry (and its history index entry), sized once the
        // store has said whose points and how many: written only when the
        // reversal happens now, as on DynamoDB, where the transaction is
        // sent only for an entry not yet reversed. Charged as small
        // otherwise (a transaction cancelled by its conditions still costs).
        let entry = match &outcome {
            ReversalOutcome::Reversed(record) => reversal_entry_bytes(record),
            _ => 0,
        };
        self.meter
            .charge_ledger(0, indexed_write_units(entry, WriteKind::Transactional));
        Ok(outcome)
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
        // As DynamoDB: a put of the item by its size (its audit included),
        // and, when it succeeds, its `job_list` index entry.
        self.meter
            .charge_jobs(1, write_units(job_item_bytes(job), WriteKind::Standard));
        let created = self.inner.create_job(job).await?;
        if matches!(created, CreateJob::Created(_)) {
            self.meter.charge_jobs(0, job_list_entry_units(job));
        }
        Ok(created)
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
        // As DynamoDB: one update of the job item, charged here by what the
        // cancel adds to it (its audit included); the job's own bytes are
        // the store's (the DynamoDB adapter counts the item it gets back).
        self.meter
            .charge_jobs(1, write_units(cancel_mark_bytes(now, audit), WriteKind::Standard));
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

    async fn list_jobs(&self, range: &JobRange, limit: usize, now: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        // A read: no write units.
        self.inner.list_jobs(range, limit, now).await
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

    fn job(audit: Option<Audit>) -> NewJob {
        NewJob {
            job_id: JobId(uuid::Uuid::from_u128(42)),
            request_hash: "h".into(),
            total: 1,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap(),
            audit,
        }
    }

    /// A job's creation is charged its item by its size and, when it is
    /// created, its `job_list` index entry; asking again (the job exists)
    /// costs the put but writes no index entry; later job writes leave the
    /// index alone.
    #[tokio::test]
    async fn a_job_create_is_charged_its_job_list_entry_and_its_updates_are_not() {
        let store = Metered::new(MemoryStore::new());
        let job = job(Some(crate::domain::audit::iam_sample(200)));
        store.create_job(&job).await.unwrap();
        let created = store.write_cost();
        assert_eq!((created.job_requests, created.job_units), (1, 1 + 1));
        store.create_job(&job).await.unwrap();
        let again = store.write_cost() - created;
        assert_eq!((again.job_requests, again.job_units), (1, 1));

        // Counts-only updates: the enqueued flag, a fold and its completion
        // check, each a small write and no index entry.
        let before = store.write_cost();
        store.mark_enqueued(job.job_id).await.unwrap();
        let items = ["a".to_owned()];
        let now = OffsetDateTime::now_utc();
        store
            .fold_message(job.job_id, 0, MessageCounts::default(), &items, now)
            .await
            .unwrap();
        let updated = store.write_cost() - before;
        assert_eq!(
            (updated.job_requests, updated.job_units),
            (1 + 2, SMALL_WRITE_UNITS + fold_units(2) + SMALL_WRITE_UNITS)
        );
    }

    /// A single use is charged its entry with its audit: a 200-character
    /// ARN takes an 800-byte entry past 1 KiB, and the entry and its history
    /// index entry cost 2 more units each in their transaction.
    #[tokio::test]
    async fn a_use_is_charged_its_audit() {
        let store = Metered::new(MemoryStore::new());
        let now = OffsetDateTime::now_utc();
        let credit = Accrual {
            accrual_id: "a".into(),
            member_id: "m".into(),
            point_type: "PT".into(),
            amount: 100,
            reason: None,
            apply_at: None,
            expires_at: None,
        };
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(1)),
            seq: 0,
        };
        store.apply_accruals(by, &[credit], now).await.unwrap();
        let mut u = Use {
            use_id: "u-1".into(),
            member_id: "m".into(),
            point_type: "PT".into(),
            amount: 1,
            reason: None,
        };
        u.reason = Some("r".repeat(800 - use_entry_bytes(&u, None, None) - "reason".len()));
        let mut charged = Vec::new();
        for (use_id, arn) in [("u-1", 60), ("u-2", 200)] {
            u.use_id = use_id.into();
            let audit = crate::domain::audit::iam_sample(arn);
            let before = store.write_cost();
            store.apply_use_audited(&u, Some(&audit), now).await.unwrap();
            charged.push((store.write_cost() - before).ledger_units);
        }
        // The entry (2), its index entry (2), the balance (2).
        assert_eq!(charged, [6, 6 + 4]);
    }

    /// A reversal is charged its own history entry with the reversal's
    /// audit, and its mark by what it adds to the entry.
    #[tokio::test]
    async fn a_reversal_is_charged_its_audit() {
        let store = Metered::new(MemoryStore::new());
        let now = OffsetDateTime::now_utc();
        let by = MessageRef {
            job_id: JobId(uuid::Uuid::from_u128(1)),
            seq: 0,
        };
        let credits: Vec<Accrual> = (0..2)
            .map(|i| Accrual {
                accrual_id: format!("a{i}"),
                member_id: "m".into(),
                point_type: "PT".into(),
                amount: 100,
                reason: None,
                apply_at: None,
                expires_at: None,
            })
            .collect();
        store.apply_accruals(by, &credits, now).await.unwrap();
        let mut charged = Vec::new();
        for (i, arn) in [60, crate::domain::audit::MAX_FIELD_CHARS].into_iter().enumerate() {
            let audit = crate::domain::audit::iam_sample(arn);
            let before = store.write_cost();
            let target = ReversalTarget::Accrual(format!("a{i}"));
            let outcome = store.reverse_audited(&target, Some(&audit), now).await.unwrap();
            let ReversalOutcome::Reversed(record) = outcome else {
                panic!("{outcome:?}");
            };
            let units = (store.write_cost() - before).ledger_units;
            assert_eq!(
                units,
                write_units(reversal_mark_bytes(now, Some(&audit)), WriteKind::Transactional)
                    + 2
                    + indexed_write_units(reversal_entry_bytes(&record), WriteKind::Transactional)
            );
            charged.push(units);
        }
        // A short ARN: the mark (2), the balance (2), the entry and its
        // index entry (4). The longest: its audit is over 2 KiB in the mark
        // and in both entries.
        assert_eq!(charged, [8, 6 + 2 + 12]);
    }
}
