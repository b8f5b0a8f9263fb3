//! The ledger port: credits accruals, deducts uses, reverses either, and
//! reads balances and history.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::history::HistoryEntry;
use crate::domain::lots::BalanceSheet;
use crate::domain::reconcile::MemberLedger;
use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome};
use crate::domain::{Accrual, Balance, MessageRef};
use crate::ports::StoreError;

/// What applying a set of accruals did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Accruals now credited by this message: newly, or found already
    /// credited by this same message (a redelivery or a retried transaction).
    pub applied: u64,
    /// Of `applied`, those found already credited by this message.
    pub replayed: u64,
    /// Accruals skipped because another message (of another job, or another
    /// message of this job repeating the id) had credited their id.
    pub duplicate: u64,
    /// Accruals not credited because the message's cancel had begun
    /// ([`crate::ports::JobStore::begin_message_cancel`]).
    pub cancelled: u64,
    /// Store requests made (for requests-per-accrual accounting).
    pub requests: u64,
}

/// Who credited a message's accrual ids, as the ledger knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditTally {
    /// Credited by the message asked about.
    pub by_message: u64,
    /// Credited by another message (of this job or another).
    pub by_other: u64,
    /// Not credited at all.
    pub not_credited: u64,
}

/// Crediting: accruals, exactly once per `accrual_id`.
#[async_trait]
pub trait Credits: Send + Sync {
    /// Credits each accrual whose id has never been credited, on behalf of
    /// message `by`, and says which were new. Per accrual, the ledger entry and
    /// the balance change happen together or not at all; safe to call again
    /// with the same accruals (nothing is credited twice).
    ///
    /// Nothing is credited on behalf of a message whose cancel has begun
    /// ([`crate::ports::JobStore::begin_message_cancel`] on the same store):
    /// the check is part of each atomic write, so a credit either happened
    /// before the cancel began (and the cancel sees it) or not at all. Those
    /// accruals are counted [`ApplyOutcome::cancelled`].
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError>;

    /// Who credited each of `accrual_ids`: message `by`, another message,
    /// or nobody; read consistently. For counting a message that failed
    /// part-way on its last delivery (DynamoDB credits a message in several
    /// transactions, so some of its accruals can be credited and the rest
    /// not). `None` if this ledger cannot tell: the message is then counted
    /// entirely failed.
    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        let _ = (by, accrual_ids);
        Ok(None)
    }
}

/// Debiting: uses, and reversals of credits or uses, each exactly once.
#[async_trait]
pub trait Debits: Send + Sync {
    /// Deducts a use from its balance unless its `use_id` was applied before,
    /// recording `audit` (who asked, from which request) with it,
    /// taking the points available at `now` that expire soonest
    /// ([`BalanceSheet::plan_use`]). Recording the use and deducting happen
    /// together or not at all, and only while every lot it takes from holds
    /// what it takes — checked by the store in that same atomic write, so
    /// concurrent uses never overdraw a balance. The same write prunes the
    /// plan's expired lots ([`crate::domain::lots::UsePlan::prunes`]): each
    /// removed only if it holds what the plan read, its points added to the
    /// balance's `expired`, one stored expiry history entry each
    /// ([`crate::domain::history::pruned_expiry`]).
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError>;

    /// [`Debits::apply_use_audited`] recording no caller (tools and tests).
    async fn apply_use(&self, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        self.apply_use_audited(u, None, now).await
    }

    /// [`Debits::apply_use`] on behalf of message `by` of a bulk-use job:
    /// the use records `by`, so that the job's cancel gives it back
    /// ([`ReversalTarget::UseBy`]), and nothing is deducted once the
    /// message's cancel has begun
    /// ([`crate::ports::JobStore::begin_message_cancel`] on the same store):
    /// the check is part of the use's atomic write, so a use either happened
    /// before the cancel began (and the cancel sees it) or not at all
    /// ([`UseOutcome::Cancelled`]). Once the cancel has begun the answer is
    /// `Cancelled` even for a use applied before (the cancel gives that one
    /// back); until then a use applied before (a redelivery) replays as
    /// with `apply_use`.
    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError>;

    /// Reverses one credited accrual or applied use, once (a second call is
    /// a replay). An accrual's points leave the lot they went to, only while
    /// it still holds them all (else [`ReversalOutcome::AlreadySpent`]); a
    /// use's points go back to the lots it took them from. The entry's mark
    /// and the balance change are one atomic write. A target naming a
    /// message ([`ReversalTarget::CreditBy`], [`ReversalTarget::UseBy`]) is
    /// reversed only if that message applied it, else
    /// [`ReversalOutcome::NotFound`].
    /// The reversal keeps `audit` (who asked, from which request, why); a
    /// replay answers with the first reversal's record, its audit included.
    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError>;

    /// [`Debits::reverse_audited`] recording no caller (a job cancel's
    /// reversals, whose job records the cancel's caller; tools and tests).
    async fn reverse(&self, target: &ReversalTarget, now: OffsetDateTime) -> Result<ReversalOutcome, StoreError> {
        self.reverse_audited(target, None, now).await
    }
}

/// Reading balances and history.
#[async_trait]
pub trait LedgerReads: Send + Sync {
    /// A member's balances as stored, by point type (sorted): their lots and
    /// lifetime counters; empty for an unknown member.
    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError>;

    /// A member's available balances now, by point type (sorted); empty for
    /// an unknown member.
    async fn balances(&self, member_id: &str) -> Result<Vec<Balance>, StoreError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .balance_sheets(member_id)
            .await?
            .into_iter()
            .map(|sheet| Balance {
                balance: sheet.available(now),
                point_type: sheet.point_type,
            })
            .collect())
    }

    /// A member's stored history, newest first ([`HistoryEntry::sort_key`]
    /// descending): credits, uses and reversals (expiries follow from the
    /// lots, see [`crate::services::history::history_page`]), of `point_type` if
    /// given, with a sort key below `before` if given, at most `limit`.
    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Every credit and use of a member as the ledger records it: each
    /// credited accrual with its amount, lot and whether it was reversed;
    /// each applied use with what it took from each lot and whether it was
    /// reversed. What [`crate::services::reconcile`] recomputes balances
    /// from. Reads everything the member ever did: an operator's tool, not
    /// a request path.
    async fn member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError>;
}

/// Rewriting a balance item: reconcile's repair, never a request path.
#[async_trait]
pub trait LedgerRepairs: Send + Sync {
    /// Replaces the member's balance item of `sheet.point_type` with
    /// `sheet` (its lots, lots absent from it removed, `earned`, `used` and `expired`),
    /// only if the item still holds `read` (`None`: there is no item), as
    /// one conditional write. Returns whether it wrote; `false` means the
    /// item changed since it was read (a concurrent credit or use: every
    /// such write changes `earned` or `used`), and the caller reads again.
    async fn replace_balance_sheet(
        &self,
        member_id: &str,
        read: Option<&BalanceSheet>,
        sheet: &BalanceSheet,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

/// The whole ledger: credits accruals exactly once, deducts uses, reverses
/// either, and keeps balances and history. A service that needs only one
/// capability takes that trait; a store implements all of them.
pub trait Ledger: Credits + Debits + LedgerReads + LedgerRepairs {}

impl<T: Credits + Debits + LedgerReads + LedgerRepairs + ?Sized> Ledger for T {}
