//! Forwarding a port to an inner value: one macro per trait, each
//! implementing every method of that trait by calling the same method on an
//! inner field. For wrappers (metering, fault injection, test doubles) that
//! change some ports and pass others through unchanged: a new port method
//! is then added here once, not to every wrapper. A wrapper that changes a
//! method of a trait writes that trait's impl by hand.
//!
//! Each macro takes the wrapper type, optionally preceded by its generic
//! parameters in brackets, and the inner value as an expression of `self`:
//!
//! ```ignore
//! forward_ledger_reads!(TokenLedger, self => self.inner);
//! forward_ledger_repairs!([<S: LedgerRepairs>] Metered<S>, self => self.inner);
//! ```

// Re-exported so that the macros expand in crates that name neither.
#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
#[doc(hidden)]
pub use time::OffsetDateTime as __OffsetDateTime;

/// Implements [`crate::ports::LedgerReads`] for a wrapper by forwarding
/// every method, `balances` included, to an inner ledger. See
/// [`crate::ports::forward`].
#[macro_export]
macro_rules! forward_ledger_reads {
    ([$($generics:tt)*] $ty:ty, $self:ident => $inner:expr) => {
        #[$crate::ports::forward::__async_trait]
        impl $($generics)* $crate::ports::LedgerReads for $ty {
            async fn balance_sheets(
                &$self,
                member_id: &str,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::domain::lots::BalanceSheet>, $crate::ports::StoreError> {
                $inner.balance_sheets(member_id).await
            }

            async fn balances(
                &$self,
                member_id: &str,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::domain::Balance>, $crate::ports::StoreError> {
                $inner.balances(member_id).await
            }

            async fn history_entries(
                &$self,
                member_id: &str,
                point_type: ::std::option::Option<&str>,
                before: ::std::option::Option<&str>,
                limit: usize,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::domain::history::HistoryEntry>, $crate::ports::StoreError>
            {
                $inner.history_entries(member_id, point_type, before, limit).await
            }

            async fn member_ledger(
                &$self,
                member_id: &str,
            ) -> ::std::result::Result<$crate::domain::reconcile::MemberLedger, $crate::ports::StoreError> {
                $inner.member_ledger(member_id).await
            }
        }
    };
    ($ty:ty, $self:ident => $inner:expr) => {
        $crate::forward_ledger_reads!([] $ty, $self => $inner);
    };
}

/// Implements [`crate::ports::LedgerRepairs`] for a wrapper by forwarding
/// every method to an inner ledger. See [`crate::ports::forward`].
#[macro_export]
macro_rules! forward_ledger_repairs {
    ([$($generics:tt)*] $ty:ty, $self:ident => $inner:expr) => {
        #[$crate::ports::forward::__async_trait]
        impl $($generics)* $crate::ports::LedgerRepairs for $ty {
            async fn replace_balance_sheet(
                &$self,
                member_id: &str,
                read: ::std::option::Option<&$crate::domain::lots::BalanceSheet>,
                sheet: &$crate::domain::lots::BalanceSheet,
                now: $crate::ports::forward::__OffsetDateTime,
            ) -> ::std::result::Result<bool, $crate::ports::StoreError> {
                $inner.replace_balance_sheet(member_id, read, sheet, now).await
            }
        }
    };
    ($ty:ty, $self:ident => $inner:expr) => {
        $crate::forward_ledger_repairs!([] $ty, $self => $inner);
    };
}

/// Implements [`crate::ports::Debits`] for a wrapper by forwarding every
/// method to an inner ledger. See [`crate::ports::forward`].
#[macro_export]
macro_rules! forward_debits {
    ([$($generics:tt)*] $ty:ty, $self:ident => $inner:expr) => {
        #[$crate::ports::forward::__async_trait]
        impl $($generics)* $crate::ports::Debits for $ty {
            async fn apply_use_audited(
                &$self,
                u: &$crate::domain::uses::Use,
                audit: ::std::option::Option<&$crate::domain::audit::Audit>,
                now: $crate::ports::forward::__OffsetDateTime,
            ) -> ::std::result::Result<$crate::domain::uses::UseOutcome, $crate::ports::StoreError> {
                $inner.apply_use_audited(u, audit, now).await
            }

            async fn apply_message_use(
                &$self,
                by: $crate::domain::MessageRef,
                u: &$crate::domain::uses::Use,
                now: $crate::ports::forward::__OffsetDateTime,
            ) -> ::std::result::Result<$crate::domain::uses::UseOutcome, $crate::ports::StoreError> {
                $inner.apply_message_use(by, u, now).await
            }

            async fn reverse_audited(
                &$self,
                target: &$crate::domain::reversal::ReversalTarget,
                audit: ::std::option::Option<&$crate::domain::audit::Audit>,
                now: $crate::ports::forward::__OffsetDateTime,
            ) -> ::std::result::Result<$crate::domain::reversal::ReversalOutcome, $crate::ports::StoreError> {
                $inner.reverse_audited(target, audit, now).await
            }
        }
    };
    ($ty:ty, $self:ident => $inner:expr) => {
        $crate::forward_debits!([] $ty, $self => $inner);
    };
}
