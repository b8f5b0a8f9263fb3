//! Every key of the table, built in one place: the items' `pk`/`sk` (the
//! table in the module's docs) and the history index's `hist_pk`/`hist_sk`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::items::s;
use super::Item;
use crate::domain::history::{self, EntryKind};
use crate::domain::reversal::ReversalKind;
use crate::domain::JobId;

/// The `pk` prefix of ledger entries (accruals).
pub(super) const ACCRUAL_PREFIX: &str = "ACCRUAL#";
/// The `pk` prefix of use entries.
pub(super) const USE_PREFIX: &str = "USE#";
/// The `pk` prefix of reversal entries.
pub(super) const REVERSAL_PREFIX: &str = "REVERSAL#";
/// The `pk` prefix of the expiry entries of pruned lots.
pub(super) const EXPIRY_PREFIX: &str = "EXPIRY#";
/// The `sk` prefix of a member's balance items.
pub(super) const BALANCE_PREFIX: &str = "BALANCE#";

/// A key of `pk` and `sk`.
fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// The partition of a member: its balances' `pk`, its history's `hist_pk`.
pub(super) fn member_pk(member_id: &str) -> String {
    format!("MEMBER#{member_id}")
}

/// The key of a member's balance of one point type.
pub(super) fn balance_key(member_id: &str, point_type: &str) -> Item {
    key(member_pk(member_id), format!("{BALANCE_PREFIX}{point_type}"))
}

/// The key of a job.
pub(super) fn job_key(job_id: JobId) -> Item {
    key(format!("JOB#{job_id}"), "JOB")
}

/// The `pk` and `sk` of message `seq`'s marker (its counts, item ids, cancel).
pub(super) fn message_marker(job_id: JobId, seq: u32) -> (String, &'static str) {
    (format!("MSG#{job_id}#{seq}"), "MSG")
}

/// The key of message `seq`'s marker.
pub(super) fn message_marker_key(job_id: JobId, seq: u32) -> Item {
    let (pk, sk) = message_marker(job_id, seq);
    key(pk, sk)
}

/// The key of message `seq`'s cancel item: written when the job's cancel
/// begins on the message; every credit of the message checks its absence.
pub(super) fn cancel_begun_key(job_id: JobId, seq: u32) -> Item {
    key(format!("CANCEL#{job_id}#{seq}"), "CANCEL")
}

/// The `pk` and `sk` of an import chunk's marker.
pub(super) fn chunk_marker(job_id: JobId, index: u32) -> (String, &'static str) {
    (format!("CHUNK#{job_id}#{index}"), "CHUNK")
}

/// The key of an import chunk's marker.
pub(super) fn chunk_marker_key(job_id: JobId, index: u32) -> Item {
    let (pk, sk) = chunk_marker(job_id, index);
    key(pk, sk)
}

/// The `pk` and `sk` of an accrual's ledger entry.
pub(super) fn accrual_entry(accrual_id: &str) -> (String, &'static str) {
    (format!("{ACCRUAL_PREFIX}{accrual_id}"), "ACCRUAL")
}

/// The `pk` and `sk` of a use's entry.
pub(super) fn use_entry(use_id: &str) -> (String, &'static str) {
    (format!("{USE_PREFIX}{use_id}"), "USE")
}

/// The `pk` and `sk` of the expiry entry of lot `lot` pruned by use
/// `use_id`'s transaction: a use commits once, so the key is its own.
pub(super) fn expiry_entry(use_id: &str, lot: &str) -> (String, &'static str) {
    (format!("{EXPIRY_PREFIX}{use_id}#{lot}"), "EXPIRY")
}

/// The key of the entry a reversal of `kind` targets.
pub(super) fn entry_key(kind: ReversalKind, id: &str) -> Item {
    let (pk, sk) = match kind {
        ReversalKind::Accrual => accrual_entry(id),
        ReversalKind::Use => use_entry(id),
    };
    key(pk, sk)
}

/// The tag of a reversal's kind in its key (and, lower-cased, its `reverses`).
pub(super) fn reversal_tag(kind: ReversalKind) -> &'static str {
    match kind {
        ReversalKind::Accrual => "ACCRUAL",
        ReversalKind::Use => "USE",
    }
}

/// The `pk` and `sk` of the reversal entry of `id`.
pub(super) fn reversal_entry(kind: ReversalKind, id: &str) -> (String, &'static str) {
    (format!("{REVERSAL_PREFIX}{}#{id}", reversal_tag(kind)), "REVERSAL")
}

/// The history index keys of a member's entry (`key_time`: [`history::key_time`]).
pub(super) fn history_keys(
    member_id: &str,
    key_time: &str,
    kind: EntryKind,
    reverses: Option<ReversalKind>,
    id: &str,
) -> [(String, AttributeValue); 2] {
    [
        ("hist_pk".to_owned(), s(member_pk(member_id))),
        ("hist_sk".to_owned(), s(history::sort_key(key_time, kind, reverses, id))),
    ]
}
