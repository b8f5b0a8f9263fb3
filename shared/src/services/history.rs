//! Paging through a member's history: the stored entries merged with the
//! expiries that follow from the lots.

use time::OffsetDateTime;

use crate::domain::history::{expiry, HistoryCursor, HistoryEntry, HistoryQuery, MAX_PAGE};
use crate::ports::{LedgerReads, StoreError};

/// One page, newest first; `next_cursor` is set when older entries remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next_cursor: Option<HistoryCursor>,
}

/// Reads one page of a member's history as of `now`: the stored entries
/// merged with the expiries of lots expired by then.
pub async fn history_page<L: LedgerReads + ?Sized>(
    ledger: &L,
    member_id: &str,
    query: &HistoryQuery,
    now: OffsetDateTime,
) -> Result<HistoryPage, StoreError> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let before = query.cursor.as_ref().map(HistoryCursor::key);
    let point_type = query.point_type.as_deref();
    // One more than a page says whether another page follows.
    let mut entries = ledger.history_entries(member_id, point_type, before, limit + 1).await?;
    for sheet in ledger.balance_sheets(member_id).await? {
        if point_type.is_some_and(|wanted| wanted != sheet.point_type) {
            continue;
        }
        for lot in &sheet.lots {
            if let Some(entry) = expiry(&sheet.point_type, lot.key, lot.amount, now) {
                entries.push(entry);
            }
        }
    }
    let mut keyed: Vec<(String, HistoryEntry)> = entries
        .into_iter()
        .map(|entry| (entry.sort_key(), entry))
        .filter(|(key, _)| before.is_none_or(|before| key.as_str() < before))
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0));
    keyed.truncate(limit + 1);
    let more = keyed.len() > limit;
    keyed.truncate(limit);
    let entries: Vec<HistoryEntry> = keyed.into_iter().map(|(_, entry)| entry).collect();
    let next_cursor = if more {
        entries.last().map(HistoryCursor::after)
    } else {
        None
    };
    Ok(HistoryPage { entries, next_cursor })
}
