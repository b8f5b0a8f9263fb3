//! Uses on SQLite: deducting one in a transaction, and the refusals of bulk
//! uses (`use_refusals`), so that a use a message's delivery refused stays
//! refused on every later delivery.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::ledger::{insert_history, prune_lots, read_sheets, read_use, take_from_lot, INSERT_HISTORY};
use super::{rfc3339, to_i64, to_u64, unix_millis, Failure, SqliteStore};
use crate::domain::audit::Audit;
use crate::domain::history::HistoryEntry;
use crate::domain::lots::Lot;
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::MessageRef;
use crate::ports::StoreError;

impl SqliteStore {
    /// A use, on behalf of message `by` if given: recorded with it, and
    /// refused in the same transaction once the message's cancel has begun.
    pub(super) async fn use_points(
        &self,
        by: Option<MessageRef>,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        let (u, audit) = (u.clone(), audit.cloned());
        self.run("apply_use", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(by) = by {
                let cancel_begun = tx
                    .prepare_cached("SELECT 1 FROM cancel_begun WHERE job_id = ?1 AND seq = ?2")?
                    .query_row(params![by.job_id.to_string(), i64::from(by.seq)], |_| Ok(()))
                    .optional()?
                    .is_some();
                if cancel_begun {
                    return Ok(UseOutcome::Cancelled);
                }
            }
            if let Some(record) = read_use(&tx, &u.use_id)? {
                return Ok(if record.matches(&u) {
                    UseOutcome::Replayed(record)
                } else {
                    UseOutcome::IdReused(record)
                });
            }
            if let Some((record, refused_by)) = read_refusal(&tx, &u.use_id)? {
                return Ok(if by == Some(refused_by) && record.matches(&u) {
                    UseOutcome::RefusedBefore
                } else {
                    UseOutcome::IdReused(record)
                });
            }
            let sheet = read_sheets(&tx, &u.member_id, Some(&u.point_type))?.pop();
            let shortfall: UseOutcome = match sheet.map(|sheet| sheet.plan_use(u.amount, now)) {
                Some(Ok(plan)) => return apply_planned(tx, by, &u, audit.as_ref(), plan.takes, &plan.prunes, now),
                Some(Err(shortfall)) => shortfall.into(),
                None => UseOutcome::Insufficient { available: 0 },
            };
            // A bulk use's refusal is recorded in the transaction that found
            // no use under its id, so no later delivery applies it.
            if let Some(by) = by {
                record_refusal(&tx, by, &u, now)?;
                tx.commit()?;
            }
            Ok(shortfall)
        })
        .await
    }
}

/// Applies the use `u` as planned (`plan` from the lots, `prunes` the expired
/// lots to remove), in transaction `tx`, which it commits.
fn apply_planned(
    tx: rusqlite::Transaction<'_>,
    by: Option<MessageRef>,
    u: &Use,
    audit: Option<&Audit>,
    plan: Vec<Lot>,
    prunes: &[Lot],
    now: OffsetDateTime,
) -> Result<UseOutcome, Failure> {
    prune_lots(&tx, u, prunes)?;
    let amount = to_i64(u.amount, "amount")?;
    let mut consumed = serde_json::Map::new();
    for take in &plan {
        let taken = to_i64(take.amount, "amount")?;
        let name = if take.key.is_plain() {
            "balance".to_owned()
        } else {
            take.key.attribute()
        };
        let lot = (!take.key.is_plain()).then(|| name.clone());
        let taken_ok = take_from_lot(&tx, &u.member_id, &u.point_type, lot.as_deref(), taken)?;
        consumed.insert(name, take.amount.into());
        if !taken_ok {
            // Planned from what this transaction just read: cannot happen.
            return Err(Failure::Other("a lot changed under the use's own transaction".into()));
        }
    }
    // Spent lots go in the same transaction, so they do not pile up.
    tx.prepare_cached("DELETE FROM lots WHERE member_id = ?1 AND point_type = ?2 AND amount = 0")?
        .execute(params![u.member_id, u.point_type])?;
    tx.prepare_cached(
        "UPDATE balances SET used = used + ?3, updated_at = ?4 WHERE member_id = ?1 AND point_type = ?2",
    )?
    .execute(params![u.member_id, u.point_type, amount, unix_millis(now)])?;
    tx.prepare_cached(
        "INSERT INTO uses (use_id, member_id, point_type, amount, reason, applied_at, consumed, job_id, seq, audit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        u.use_id,
        u.member_id,
        u.point_type,
        amount,
        u.reason,
        rfc3339(now)?,
        serde_json::Value::Object(consumed).to_string(),
        by.map(|by| by.job_id.to_string()),
        by.map(|by| i64::from(by.seq)),
        audit.map(Audit::to_json)
    ])?;
    let record = UseRecord::of(u, now).with_audit(audit);
    insert_history(
        &mut tx.prepare_cached(INSERT_HISTORY)?,
        &u.member_id,
        &HistoryEntry::use_of(&record),
    )?;
    tx.commit()?;
    Ok(UseOutcome::Applied(record))
}

/// The refusal recorded for `use_id`, if any: what was asked, and by which
/// message.
fn read_refusal(conn: &Connection, use_id: &str) -> Result<Option<(UseRecord, MessageRef)>, Failure> {
    type Row = (String, String, i64, Option<String>, String, String, i64);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT member_id, point_type, amount, reason, refused_at, job_id, seq FROM use_refusals WHERE use_id = ?1",
        )?
        .query_row([use_id], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ))
        })
        .optional()?;
    let Some((member_id, point_type, amount, reason, refused_at, job_id, seq)) = row else {
        return Ok(None);
    };
    let key = || format!("use refusal {use_id}");
    let corrupt = |detail: String| Failure::Corrupt { key: key(), detail };
    let record = UseRecord {
        use_id: use_id.to_owned(),
        member_id,
        point_type,
        amount: to_u64(amount, key, "amount")?,
        reason,
        applied_at: OffsetDateTime::parse(&refused_at, &Rfc3339)
            .map_err(|_| corrupt(format!("refused_at is not an RFC 3339 time: {refused_at}")))?,
        audit: None,
    };
    let by = MessageRef {
        job_id: job_id
            .parse()
            .map(crate::domain::JobId)
            .map_err(|_| corrupt(format!("job_id is not a UUID: {job_id}")))?,
        seq: u32::try_from(seq).map_err(|_| corrupt(format!("seq is out of range: {seq}")))?,
    };
    Ok(Some((record, by)))
}

/// Records that message `by` refused `u`. Called in the use's transaction,
/// after it found no use and no refusal under the id, so it never stands
/// over an applied use.
fn record_refusal(conn: &Connection, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO use_refusals (use_id, member_id, point_type, amount, reason, refused_at, job_id, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        u.use_id,
        u.member_id,
        u.point_type,
        to_i64(u.amount, "amount")?,
        u.reason,
        rfc3339(now)?,
        by.job_id.to_string(),
        i64::from(by.seq)
    ])?;
    Ok(())
}
