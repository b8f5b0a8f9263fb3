//! The one `TransactWriteItems` helper: every transactional write of the
//! adapter goes through [`Transaction::send`].
//!
//! It sends a request (with its `ClientRequestToken`, if any), counts the
//! request and its write units, decodes a cancellation's
//! `CancellationReasons` into a typed per-action [`Reason`], retries
//! throttling, transport failures and in-progress transactions with jittered
//! backoff, and maps what is left to [`StoreError`]. What a cancellation
//! means (a replay, a duplicate, an overdraft guard) is the caller's to say;
//! [`Transaction::retry`] then backs off on a conflict or throttling among
//! the reasons.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::errors::{backend, is_throttling, is_transport, Redact};
use super::items::item_bytes;
use super::{DynamoStore, Item, MAX_TRANSACTION_ACTIONS};
use crate::adapters::aws::redact::cancellation_codes;
use crate::domain::capacity::{write_units, WriteKind};
use crate::ports::StoreError;

/// The operation named in errors, also by the builders of its actions.
pub(super) const OPERATION: &str = "TransactWriteItems";

/// Which part of the write meter a transaction is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meter {
    /// Crediting, using and reversing points.
    Ledger,
    /// Job tracking: markers and job counts.
    Jobs,
}

/// One transaction as sent: its actions and what it costs.
#[derive(Debug, Clone)]
pub(super) struct Request {
    actions: Vec<TransactWriteItem>,
    token: Option<String>,
    /// Write units charged for every attempt, committed or not.
    units: u64,
    /// Write units of history index entries, charged once it commits.
    indexed: u64,
}

impl Request {
    /// A request of `actions` (at most [`MAX_TRANSACTION_ACTIONS`]), costed
    /// by [`transaction_units`] and [`index_units`] of its puts.
    pub(super) fn new(actions: Vec<TransactWriteItem>) -> Self {
        debug_assert!(actions.len() <= MAX_TRANSACTION_ACTIONS, "{}", actions.len());
        let units = transaction_units(&actions);
        let indexed = index_units(
            actions.iter().filter_map(|action| action.put()).map(|put| put.item()),
            WriteKind::Transactional,
        );
        Request {
            actions,
            token: None,
            units,
            indexed,
        }
    }

    /// Sends the request with this `ClientRequestToken`: AWS treats a resend
    /// with the same token within 10 minutes as the same transaction.
    pub(super) fn token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// Charges `units` per attempt instead of the default sizing (when an
    /// update's item is known to be larger than a small one).
    pub(super) fn units(mut self, units: u64) -> Self {
        self.units = units;
        self
    }
}

/// What a sent transaction came to.
#[derive(Debug)]
pub(super) enum Sent {
    /// Every action was written.
    Committed,
    /// Nothing was written; why, per action.
    Cancelled(Cancellation),
}

/// Why DynamoDB cancelled one action of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    /// The action was fine (`None`, or no code).
    Passed,
    /// Its condition failed (`ConditionalCheckFailed`).
    ConditionFailed,
    /// Another transaction held the item (`TransactionConflict`).
    Conflict,
    /// Capacity ran short (`ThrottlingError`,
    /// `ProvisionedThroughputExceeded`, `RequestLimitExceeded`).
    Throttled,
    /// Anything else (a validation error, an item too large…).
    Other,
}

impl Code {
    /// The code of a `CancellationReason` (DynamoDB API Reference,
    /// TransactWriteItems, "CancellationReasons").
    pub(super) fn of(code: Option<&str>) -> Code {
        match code {
            None | Some("None") => Code::Passed,
            Some("ConditionalCheckFailed") => Code::ConditionFailed,
            Some("TransactionConflict") => Code::Conflict,
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded") => Code::Throttled,
            Some(_) => Code::Other,
        }
    }
}

/// One action's part in a cancellation.
#[derive(Debug, Clone)]
pub(super) struct Reason {
    /// Why it was cancelled.
    pub(super) code: Code,
    /// The item as it was, when the action asked for `ALL_OLD` and its
    /// condition failed.
    pub(super) old: Option<Item>,
}

/// A cancelled transaction: its reasons, one per action in order.
#[derive(Debug)]
pub(super) struct Cancellation {
    /// One per action, in the order sent.
    pub(super) reasons: Vec<Reason>,
    /// Boxed: the SDK's error is large, and most sends commit.
    error: Box<SdkError<TransactWriteItemsError, HttpResponse>>,
}

impl Cancellation {
    /// Whether action `index`'s condition failed.
    pub(super) fn condition_failed(&self, index: usize) -> bool {
        self.reasons.get(index).map(|r| r.code) == Some(Code::ConditionFailed)
    }

    /// Action `index`'s item as it was (`ALL_OLD`), if returned.
    pub(super) fn old(&self, index: usize) -> Option<&Item> {
        self.reasons.get(index).and_then(|r| r.old.as_ref())
    }

    /// The cancellation as a failure nobody can mend by retrying.
    pub(super) fn into_error(self) -> StoreError {
        let mut failure = self.error.redacted();
        failure.reasons = cancellation_codes(&self.error);
        StoreError::Backend {
            operation: OPERATION,
            source: Box::new(failure),
        }
    }
}

/// Why a write may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    Conflict,
    Throttled,
}

/// The retryable cause among a cancelled transaction's reasons (a conflict
/// before throttling); `None` if a reason is neither, nor a pass (a failed
/// condition counts as a pass: the caller handles it).
pub(super) fn retry_of_reasons(codes: impl IntoIterator<Item = Code>) -> Option<Retry> {
    let mut retry = None;
    for code in codes {
        match code {
            Code::Passed | Code::ConditionFailed => {}
            Code::Conflict => retry = Some(Retry::Conflict),
            Code::Throttled => retry = retry.or(Some(Retry::Throttled)),
            Code::Other => return None,
        }
    }
    retry
}

/// Whether a failed `TransactWriteItems` call, other than a cancellation,
/// may succeed when tried again (transactions are safe to resend).
fn retry_of_error(error: &SdkError<TransactWriteItemsError, HttpResponse>) -> Option<Retry> {
    match error.as_service_error() {
        Some(
            TransactWriteItemsError::TransactionInProgressException(_)
            | TransactWriteItemsError::InternalServerError(_),
        ) => Some(Retry::Conflict),
        Some(
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_),
        ) => Some(Retry::Throttled),
        _ if is_throttling(error) || is_transport(error) => Some(Retry::Throttled),
        _ => None,
    }
}

/// A put of `item` only if no item has its key, returning the existing item
/// (`ALL_OLD`) when there is one.
pub(super) fn put_new(table: &str, item: Item) -> Result<Put, StoreError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(|e| backend(OPERATION, e))
}

/// Write units of a transaction: puts by their item's size, updates as small
/// items (balances and jobs stay far below 1 KiB).
pub(super) fn transaction_units(items: &[TransactWriteItem]) -> u64 {
    items
        .iter()
        .map(|action| {
            let bytes = action.put().map_or(0, |put| item_bytes(put.item()));
            write_units(bytes, WriteKind::Transactional)
        })
        .sum()
}

/// Write units of the history index entries a write of these items made:
/// charged only when the write succeeded, as a failed condition writes no
/// index ([`crate::domain::capacity::indexed_write_units`] for the rate).
pub(super) fn index_units<'a>(items: impl IntoIterator<Item = &'a Item>, kind: WriteKind) -> u64 {
    items
        .into_iter()
        .filter(|item| item.contains_key("hist_pk"))
        .map(|item| write_units(item_bytes(item), kind))
        .sum()
}

/// The attempts of one transactional write (one or more requests), with
/// their shared backoff budget.
#[derive(Debug)]
pub(super) struct Transaction<'s> {
    store: &'s DynamoStore,
    meter: Meter,
    /// Failed attempts so far that were followed by a backoff.
    attempt: u32,
    /// Requests sent so far.
    sent: u64,
}

impl DynamoStore {
    /// A transactional write charged to `meter`, retried by the store's
    /// [`Backoff`](crate::adapters::retry::Backoff).
    pub(super) fn transaction(&self, meter: Meter) -> Transaction<'_> {
        Transaction {
            store: self,
            meter,
            attempt: 0,
            sent: 0,
        }
    }
}

impl Transaction<'_> {
    /// Requests sent so far, retries included.
    pub(super) fn requests(&self) -> u64 {
        self.sent
    }

    /// Charges `requests` write requests costing `units` to the meter.
    fn charge(&self, requests: u64, units: u64) {
        match self.meter {
            Meter::Ledger => self.store.write_units.charge_ledger(requests, units),
            Meter::Jobs => self.store.write_units.charge_jobs(requests, units),
        }
    }

    /// Sends `request` until it commits or is cancelled, backing off and
    /// resending on throttling, transport failures and in-progress
    /// transactions. Every attempt is counted with its write units.
    pub(super) async fn send(&mut self, request: &Request) -> Result<Sent, StoreError> {
        loop {
            self.store.count();
            self.sent += 1;
            self.charge(1, request.units);
            let sent = self
                .store
                .client
                .transact_write_items()
                .set_transact_items(Some(request.actions.clone()))
                .set_client_request_token(request.token.clone())
                .send()
                .await;
            let error = match sent {
                Ok(_) => {
                    self.charge(0, request.indexed);
                    return Ok(Sent::Committed);
                }
                Err(e) => e,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) = error.as_service_error() {
                let reasons = cancel
                    .cancellation_reasons()
                    .iter()
                    .map(|r| Reason {
                        code: Code::of(r.code()),
                        old: r.item().cloned(),
                    })
                    .collect();
                return Ok(Sent::Cancelled(Cancellation {
                    reasons,
                    error: Box::new(error),
                }));
            }
            match retry_of_error(&error) {
                Some(retry) => self.back_off(retry).await?,
                None => return Err(backend(OPERATION, error)),
            }
        }
    }

    /// Backs off on the conflict or throttling among a cancellation's
    /// reasons, or gives up with it.
    pub(super) async fn retry(&mut self, cancellation: Cancellation) -> Result<(), StoreError> {
        match retry_of_reasons(cancellation.reasons.iter().map(|r| r.code)) {
            Some(retry) => self.back_off(retry).await,
            None => Err(cancellation.into_error()),
        }
    }

    /// Counts a failed attempt: sleeps before the next, or gives up after
    /// the last.
    pub(super) async fn back_off(&mut self, retry: Retry) -> Result<(), StoreError> {
        self.attempt += 1;
        let backoff = self.store.backoff;
        if self.attempt >= backoff.max_attempts {
            let operation = OPERATION;
            return Err(match retry {
                Retry::Conflict => StoreError::Conflict { operation },
                Retry::Throttled => StoreError::Throttled { operation },
            });
        }
        backoff.sleep(self.attempt - 1).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellations_retry_on_conflict_or_throttling_only() {
        let codes = |c: &[Option<&'static str>]| retry_of_reasons(c.iter().map(|c| Code::of(*c)));
        assert_eq!(
            codes(&[Some("None"), Some("TransactionConflict")]),
            Some(Retry::Conflict)
        );
        assert_eq!(
            codes(&[Some("ThrottlingError"), Some("TransactionConflict")]),
            Some(Retry::Conflict)
        );
        assert_eq!(
            codes(&[None, Some("ProvisionedThroughputExceeded")]),
            Some(Retry::Throttled)
        );
        assert_eq!(codes(&[Some("ConditionalCheckFailed"), Some("None")]), None);
        assert_eq!(codes(&[Some("ValidationError"), Some("TransactionConflict")]), None);
    }

    /// A cancelled transaction as DynamoDB answers one whose first put
    /// found an entry: `ALL_OLD` returns that entry, member id and reason
    /// included.
    fn cancelled_transaction() -> SdkError<TransactWriteItemsError, HttpResponse> {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};

        let old: Item = [
            ("pk", "USE#order-77"),
            ("member_id", "m-secret-42"),
            ("reason", "refund for Jane Doe"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
        .collect();
        let message = "Transaction cancelled, please refer cancellation reasons for specific reasons \
                       [ConditionalCheckFailed, None]";
        let cancel = TransactionCanceledException::builder()
            .message(message)
            .cancellation_reasons(
                CancellationReason::builder()
                    .code("ConditionalCheckFailed")
                    .message("The conditional request failed")
                    .set_item(Some(old))
                    .build(),
            )
            .cancellation_reasons(CancellationReason::builder().code("None").build())
            .meta(
                ErrorMetadata::builder()
                    .code("TransactionCanceledException")
                    .message(message)
                    .custom("aws_request_id", "REQ-0123")
                    .build(),
            )
            .build();
        // The S3 crate re-exports the body type the SDKs share.
        let body = aws_sdk_s3::primitives::ByteStream::from_static(b"").into_inner();
        let raw = HttpResponse::new(400u16.try_into().expect("a status"), body);
        SdkError::service_error(TransactWriteItemsError::TransactionCanceledException(cancel), raw)
    }

    /// What a log line may carry of a cancelled transaction: its error
    /// code, reason codes and request id; never the old items' member ids
    /// or reasons, in its logged form nor in its `Debug` form (the SDK's
    /// own `Debug`, which the old logging printed, holds them).
    #[test]
    fn a_cancelled_transaction_is_logged_without_its_items() {
        let error = Cancellation {
            reasons: vec![],
            error: Box::new(cancelled_transaction()),
        }
        .into_error();
        let logged = crate::ports::log_form(&error);
        let debug = format!("{error:?}");
        for form in [&logged, &debug] {
            assert!(!form.contains("m-secret-42") && !form.contains("Jane"), "{form}");
        }
        for wanted in [
            "TransactWriteItems failed",
            "TransactionCanceledException",
            "HTTP 400",
            "REQ-0123",
        ] {
            assert!(logged.contains(wanted), "{wanted} in {logged}");
        }
        assert!(logged.contains("reasons [ConditionalCheckFailed, None]"), "{logged}");
        // The SDK's error itself holds them: that is what must not be logged.
        let raw = cancelled_transaction();
        assert!(format!("{raw:?}").contains("m-secret-42"));
    }
}
