//! A member's ledger history entries: every credit, use, reversal and
//! expiry, their sort keys, page cursors and query parameters (the paging
//! itself is [`crate::services::history`]).
//!
//! Stores keep one history entry per credited accrual, applied use and
//! reversal, written in the same atomic write as the change itself, under a
//! sort key `<time>#<kind>#<id>` per member (DynamoDB: the `history` GSI;
//! SQLite: the `history` table). An expired lot's expiry follows from the
//! lot ([`crate::domain::lots`]) and is merged in when a page is read, at the
//! time the lot expired, for what it still holds; once a use's write prunes
//! the lot, that write stores the expiry instead ([`pruned_expiry`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::lots::{LotKey, LotState};
use crate::domain::reversal::ReversalKind;
use crate::domain::validation::check_point_type;
use crate::domain::JobId;

/// Entries per page when the client does not say.
pub const DEFAULT_PAGE: usize = 50;
/// The most entries one page may ask for.
pub const MAX_PAGE: usize = 500;

/// Fixed-width UTC milliseconds, so that sort keys order as times do
/// (RFC 3339's variable fraction would not).
const KEY_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// What changed a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Accrual,
    Use,
    Reversal,
    Expiry,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Accrual => "accrual",
            EntryKind::Use => "use",
            EntryKind::Reversal => "reversal",
            EntryKind::Expiry => "expiry",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "accrual" => EntryKind::Accrual,
            "use" => EntryKind::Use,
            "reversal" => EntryKind::Reversal,
            "expiry" => EntryKind::Expiry,
            _ => return None,
        })
    }
}

/// One change to a member's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub kind: EntryKind,
    /// The idempotency id: the `accrual_id` or `use_id`; for a reversal, the
    /// id of what it reversed (see `reverses`); for an expiry, the lot.
    pub id: String,
    pub point_type: String,
    /// The signed change: positive for credits and reversed uses, negative
    /// for uses, expiries and reversed credits.
    pub amount: i64,
    /// When it was applied (an expiry: when the lot expired).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The job that credited an accrual.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// For a reversal: whether it reversed an accrual or a use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverses: Option<ReversalKind>,
    /// A scheduled accrual's points are pending until then.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub apply_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who asked for a use or a reversal, from which request, and why (an
    /// accrual's is its job's: see `job_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

impl HistoryEntry {
    /// The entry's place in its member's history: entries sort by time, then
    /// kind, then id, and the history reads them in reverse.
    pub fn sort_key(&self) -> String {
        sort_key(&key_time(self.at), self.kind, self.reverses, &self.id)
    }

    /// A credited accrual, and the job that credited it if known.
    pub fn accrual(accrual: &crate::domain::Accrual, job_id: Option<JobId>, at: OffsetDateTime) -> Self {
        HistoryEntry {
            kind: EntryKind::Accrual,
            id: accrual.accrual_id.clone(),
            point_type: accrual.point_type.clone(),
            amount: signed(accrual.amount),
            at,
            job_id,
            reverses: None,
            apply_at: accrual.apply_at,
            expires_at: accrual.expires_at,
            reason: accrual.reason.clone(),
            audit: None,
        }
    }

    /// An applied use.
    pub fn use_of(record: &crate::domain::uses::UseRecord) -> Self {
        HistoryEntry {
            kind: EntryKind::Use,
            id: record.use_id.clone(),
            point_type: record.point_type.clone(),
            amount: -signed(record.amount),
            at: record.applied_at,
            job_id: None,
            reverses: None,
            apply_at: None,
            expires_at: None,
            reason: record.reason.clone(),
            audit: record.audit.clone(),
        }
    }

    /// A reversal of an accrual (points go out) or of a use (points come back).
    pub fn reversal(record: &crate::domain::reversal::ReversalRecord) -> Self {
        let amount = signed(record.amount);
        HistoryEntry {
            kind: EntryKind::Reversal,
            id: record.id.clone(),
            point_type: record.point_type.clone(),
            amount: match record.kind {
                ReversalKind::Accrual => -amount,
                ReversalKind::Use => amount,
            },
            at: record.reversed_at,
            job_id: None,
            reverses: Some(record.kind),
            apply_at: None,
            expires_at: None,
            reason: None,
            audit: record.audit.clone(),
        }
    }
}

/// The time part of a sort key: UTC milliseconds, fixed width.
pub fn key_time(at: OffsetDateTime) -> String {
    // Formatting a valid date with numeric components cannot fail.
    at.to_offset(time::UtcOffset::UTC).format(KEY_TIME).unwrap_or_default()
}

/// A sort key's parts: its time (whole milliseconds), kind and the rest
/// (the id); `None` if `key` is not a sort key.
pub fn split_sort_key(key: &str) -> Option<(OffsetDateTime, EntryKind, &str)> {
    let mut parts = key.splitn(3, '#');
    let time = time::PrimitiveDateTime::parse(parts.next()?, KEY_TIME)
        .ok()?
        .assume_utc();
    let kind = EntryKind::parse(parts.next()?)?;
    Some((time, kind, parts.next()?))
}

/// A sort key from its parts ([`HistoryEntry::sort_key`]), for stores that
/// write it without building the entry.
pub fn sort_key(key_time: &str, kind: EntryKind, reverses: Option<ReversalKind>, id: &str) -> String {
    match reverses {
        Some(target) => format!("{key_time}#{}#{}:{id}", kind.as_str(), reversal_tag(target)),
        None => format!("{key_time}#{}#{id}", kind.as_str()),
    }
}

fn reversal_tag(kind: ReversalKind) -> &'static str {
    match kind {
        ReversalKind::Accrual => "accrual",
        ReversalKind::Use => "use",
    }
}

/// Amounts are validated to at most [`crate::domain::MAX_AMOUNT`], far
/// below `i64::MAX`; saturate rather than wrap should a stored one not be.
fn signed(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// Where a page ends: the sort key of its last entry, opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor(String);

impl HistoryCursor {
    pub fn after(entry: &HistoryEntry) -> Self {
        HistoryCursor(entry.sort_key())
    }

    /// The sort key entries of the next page are below.
    pub fn key(&self) -> &str {
        &self.0
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Reads a cursor a page gave; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let key = String::from_utf8(bytes).ok()?;
        split_sort_key(&key)?;
        Some(HistoryCursor(key))
    }
}

/// Which page of whose history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub point_type: Option<String>,
    pub cursor: Option<HistoryCursor>,
    pub limit: usize,
}

/// A query parameter of a history request that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {name} {reason}")]
pub struct QueryParameterError {
    pub name: String,
    pub reason: String,
}

impl HistoryQuery {
    /// Reads `point_type`, `cursor` and `limit` (1 to [`MAX_PAGE`], default
    /// [`DEFAULT_PAGE`]); any other parameter, or one given twice, is refused
    /// so that a misspelt filter does not silently return everything.
    pub fn from_parameters(parameters: &[(String, String)]) -> Result<Self, QueryParameterError> {
        let fail = |name: &str, reason: String| QueryParameterError {
            name: name.to_owned(),
            reason,
        };
        let mut query = HistoryQuery {
            point_type: None,
            cursor: None,
            limit: DEFAULT_PAGE,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in parameters {
            if seen.contains(&name.as_str()) {
                return Err(fail(name, "is given more than once".to_owned()));
            }
            seen.push(name);
            match name.as_str() {
                "point_type" => {
                    check_point_type(value).map_err(|reason| fail(name, reason))?;
                    query.point_type = Some(value.clone());
                }
                "cursor" => {
                    query.cursor = Some(HistoryCursor::decode(value).ok_or_else(|| {
                        fail(
                            name,
                            "is not a cursor this API returned (pass next_cursor as given)".to_owned(),
                        )
                    })?);
                }
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| fail(name, format!("must be a whole number from 1 to {MAX_PAGE}")))?;
                }
                _ => return Err(fail(name, "is unknown; use point_type, cursor or limit".to_owned())),
            }
        }
        Ok(query)
    }
}

/// The expiry of a lot that has expired by `now` still holding points.
pub fn expiry(point_type: &str, lot: LotKey, amount: u64, now: OffsetDateTime) -> Option<HistoryEntry> {
    if amount == 0 || lot.state_at(now) != LotState::Expired {
        return None;
    }
    expiry_entry(point_type, lot, amount, lot.attribute())
}

/// The stored expiry of expired lot `lot`, pruned holding `amount` points by
/// use `use_id`'s write ([`crate::domain::lots::UsePlan::prunes`]). Its id
/// is `<lot>@<use_id>`: a use's write commits once, so each pruning has an
/// entry of its own, even of a lot a reversal or late credit recreated and
/// a later use pruned again. `None` for a lot that never expires (never
/// pruned).
pub fn pruned_expiry(point_type: &str, lot: LotKey, amount: u64, use_id: &str) -> Option<HistoryEntry> {
    expiry_entry(point_type, lot, amount, format!("{}@{use_id}", lot.attribute()))
}

/// An expiry entry at the lot's expiry time.
fn expiry_entry(point_type: &str, lot: LotKey, amount: u64, id: String) -> Option<HistoryEntry> {
    let at = OffsetDateTime::from_unix_timestamp(lot.until?).ok()?;
    Some(HistoryEntry {
        kind: EntryKind::Expiry,
        id,
        point_type: point_type.to_owned(),
        amount: -signed(amount),
        at,
        job_id: None,
        reverses: None,
        apply_at: None,
        expires_at: Some(at),
        reason: None,
        audit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(kind: EntryKind, id: &str, at: OffsetDateTime) -> HistoryEntry {
        HistoryEntry {
            kind,
            id: id.to_owned(),
            point_type: "P".to_owned(),
            amount: 1,
            at,
            job_id: None,
            reverses: None,
            apply_at: None,
            expires_at: None,
            reason: None,
            audit: None,
        }
    }

    #[test]
    fn sort_keys_order_as_times_do_whatever_the_fraction() {
        let times = [
            datetime!(2026-01-01 00:00:05 UTC),
            datetime!(2026-01-01 00:00:05.1 UTC),
            datetime!(2026-01-01 00:00:05.12 UTC),
            datetime!(2026-01-01 02:00:06 +01:00),
            datetime!(2027-01-01 00:00:00 UTC),
        ];
        let keys: Vec<String> = times
            .iter()
            .map(|t| entry(EntryKind::Use, "u", *t).sort_key())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys[0], "2026-01-01T00:00:05.000Z#use#u");
    }

    #[test]
    fn sort_keys_split_into_their_parts() {
        let e = entry(EntryKind::Accrual, "a#1", datetime!(2026-03-04 05:06:07.089 UTC));
        let key = e.sort_key();
        let (at, kind, id) = split_sort_key(&key).unwrap();
        assert_eq!(
            (at, kind, id),
            (datetime!(2026-03-04 05:06:07.089 UTC), EntryKind::Accrual, "a#1")
        );
        assert_eq!(split_sort_key("2026-03-04T05:06:07.089Z#nope#x"), None);
        assert_eq!(split_sort_key("yesterday#use#x"), None);
    }

    #[test]
    fn a_reversal_key_names_what_it_reversed() {
        let mut e = entry(EntryKind::Reversal, "x", datetime!(2026-01-01 00:00:00 UTC));
        e.reverses = Some(ReversalKind::Use);
        assert_eq!(e.sort_key(), "2026-01-01T00:00:00.000Z#reversal#use:x");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let e = entry(EntryKind::Accrual, "a-1", datetime!(2026-03-04 05:06:07.089 UTC));
        let cursor = HistoryCursor::after(&e);
        let text = cursor.encode();
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(HistoryCursor::decode(&text), Some(cursor));
        for bad in [
            "",
            "!!",
            "bm90IGEga2V5",
            &URL_SAFE_NO_PAD.encode("2026-03-04T05:06:07.089Z#nope#x"),
        ] {
            assert_eq!(HistoryCursor::decode(bad), None, "{bad}");
        }
    }

    fn parameters(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn query_parameters_are_read_strictly() {
        let q = HistoryQuery::from_parameters(&[]).unwrap();
        assert_eq!((q.point_type, q.cursor, q.limit), (None, None, DEFAULT_PAGE));
        let cursor = HistoryCursor::after(&entry(EntryKind::Use, "u", datetime!(2026-01-01 00:00:00 UTC)));
        let encoded = cursor.encode();
        let q = HistoryQuery::from_parameters(&parameters(&[
            ("point_type", "MILES"),
            ("limit", "10"),
            ("cursor", &encoded),
        ]))
        .unwrap();
        assert_eq!(
            (q.point_type.as_deref(), q.cursor, q.limit),
            (Some("MILES"), Some(cursor), 10)
        );
        for (pairs, name) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "501")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("cursor", "garbage")], "cursor"),
            (vec![("point_type", "bad type")], "point_type"),
            (vec![("pointtype", "MILES")], "pointtype"),
            (vec![("limit", "1"), ("limit", "2")], "limit"),
        ] {
            let error = HistoryQuery::from_parameters(&parameters(&pairs)).unwrap_err();
            assert_eq!(error.name, name, "{pairs:?}: {error}");
        }
    }

    #[test]
    fn only_expired_lots_with_points_left_expire() {
        let now = datetime!(2026-06-01 00:00:00 UTC);
        let past = LotKey {
            from: 0,
            until: Some(datetime!(2026-05-01 00:00:00 UTC).unix_timestamp()),
        };
        let future = LotKey {
            from: 0,
            until: Some(datetime!(2026-07-01 00:00:00 UTC).unix_timestamp()),
        };
        let e = expiry("P", past, 30, now).expect("expired");
        assert_eq!(
            (e.kind, e.amount, e.at),
            (EntryKind::Expiry, -30, datetime!(2026-05-01 00:00:00 UTC))
        );
        assert_eq!(expiry("P", past, 0, now), None);
        assert_eq!(expiry("P", future, 30, now), None);
        assert_eq!(expiry("P", LotKey::PLAIN, 30, now), None);
    }
}
