//! The ledger ports on SQLite: credits ([`Credits`]), uses and reversals
//! ([`Debits`]), balances and history ([`LedgerReads`]).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{from_unix_millis, rfc3339, to_i64, to_u64, unix_millis, Failure, SqliteStore};
use crate::domain::audit::Audit;
use crate::domain::history::{pruned_expiry, split_sort_key, EntryKind, HistoryEntry};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reconcile::{CreditEntry, ExpiryEntry, MemberLedger, UseEntry};
use crate::domain::reversal::{ReversalKind, ReversalOutcome, ReversalRecord, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::{Accrual, JobId, MessageRef};
use crate::ports::{ApplyOutcome, CreditTally, Credits, Debits, LedgerReads, LedgerRepairs, StoreError};

#[async_trait]
impl Credits for SqliteStore {
    async fn tally_credits(&self, by: MessageRef, accrual_ids: &[String]) -> Result<Option<CreditTally>, StoreError> {
        let accrual_ids = accrual_ids.to_vec();
        self.run("tally_credits", move |conn| {
            let job = by.job_id.to_string();
            let seq = i64::from(by.seq);
            let mut owner = conn.prepare_cached("SELECT job_id, seq FROM ledger WHERE accrual_id = ?1")?;
            let mut tally = CreditTally::default();
            for id in &accrual_ids {
                let found: Option<(String, i64)> =
                    owner.query_row([id], |row| Ok((row.get(0)?, row.get(1)?))).optional()?;
                match found {
                    Some((j, s)) if j == job && s == seq => tally.by_message += 1,
                    Some(_) => tally.by_other += 1,
                    None => tally.not_credited += 1,
                }
            }
            Ok(Some(tally))
        })
        .await
    }

    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        // The blocking closure must own its data.
        let accruals = accruals.to_vec();
        self.run("apply_accruals", move |conn| {
            let job = by.job_id.to_string();
            let seq = i64::from(by.seq);
            let now = unix_millis(now);
            let mut outcome = ApplyOutcome {
                requests: 1,
                ..ApplyOutcome::default()
            };
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cancel_begun = tx
                .prepare_cached("SELECT 1 FROM cancel_begun WHERE job_id = ?1 AND seq = ?2")?
                .query_row(params![job, seq], |_| Ok(()))
                .optional()?
                .is_some();
            if cancel_begun {
                outcome.cancelled = accruals.len() as u64;
                return Ok(outcome);
            }
            {
                let mut insert = tx.prepare_cached(INSERT_LEDGER_ENTRY)?;
                let mut credit = tx.prepare_cached(CREDIT_BALANCE)?;
                let mut credit_lot = tx.prepare_cached(CREDIT_LOT)?;
                let mut owner = tx.prepare_cached("SELECT job_id, seq FROM ledger WHERE accrual_id = ?1")?;
                for a in &accruals {
                    let amount = to_i64(a.amount, "amount")?;
                    let inserted = insert.execute(params![
                        a.accrual_id,
                        job,
                        seq,
                        a.member_id,
                        a.point_type,
                        amount,
                        a.reason,
                        now,
                        lot_column(a)
                    ])?;
                    if inserted == 1 {
                        let lot = a.lot();
                        let plain = if lot.is_plain() { amount } else { 0 };
                        credit.execute(params![a.member_id, a.point_type, plain, amount, now])?;
                        if !lot.is_plain() {
                            credit_lot.execute(params![a.member_id, a.point_type, lot.attribute(), amount])?;
                        }
                        outcome.applied += 1;
                    } else {
                        let stored: (String, i64) =
                            owner.query_row([&a.accrual_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
                        // Our own earlier write (a redelivery, or this same
                        // call repeating an id) counts as applied.
                        if stored.0 == job && stored.1 == seq {
                            outcome.applied += 1;
                            outcome.replayed += 1;
                        } else {
                            outcome.duplicate += 1;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }
}

#[async_trait]
impl Debits for SqliteStore {
    async fn apply_use_audited(
        &self,
        u: &Use,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<UseOutcome, StoreError> {
        self.use_points(None, u, audit, now).await
    }

    async fn apply_message_use(&self, by: MessageRef, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        self.use_points(Some(by), u, None, now).await
    }

    async fn reverse_audited(
        &self,
        target: &ReversalTarget,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<ReversalOutcome, StoreError> {
        let (target, audit) = (target.clone(), audit.cloned());
        self.run("reverse", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let kind = target.kind();
            let sql = match kind {
                ReversalKind::Accrual => {
                    "SELECT member_id, point_type, amount, lot, reversed_at, job_id, seq, reversal_audit
                     FROM ledger WHERE accrual_id = ?1"
                }
                ReversalKind::Use => {
                    "SELECT member_id, point_type, amount, consumed, reversed_at, job_id, seq, reversal_audit
                     FROM uses WHERE use_id = ?1"
                }
            };
            let id = target.id().to_owned();
            type Row = (
                String,
                String,
                i64,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<i64>,
                Option<String>,
            );
            let row: Option<Row> = tx
                .prepare_cached(sql)?
                .query_row([&id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                })
                .optional()?;
            let Some((member_id, point_type, amount, lot_or_consumed, reversed_at, job, seq, reversed_by)) = row else {
                return Ok(ReversalOutcome::NotFound);
            };
            if let Some(by) = target.by() {
                if job.as_deref() != Some(by.job_id.to_string().as_str()) || seq != Some(i64::from(by.seq)) {
                    return Ok(ReversalOutcome::NotFound);
                }
            }
            let key = || format!("{kind:?} {id}");
            let record = |at: OffsetDateTime, audit: Option<Audit>| -> Result<ReversalRecord, Failure> {
                Ok(ReversalRecord {
                    kind,
                    id: id.clone(),
                    member_id: member_id.clone(),
                    point_type: point_type.clone(),
                    amount: to_u64(amount, key, "amount")?,
                    reversed_at: at,
                    audit,
                })
            };
            if let Some(at) = reversed_at {
                let at = OffsetDateTime::parse(&at, &Rfc3339).map_err(|_| Failure::Corrupt {
                    key: key(),
                    detail: format!("reversed_at is not an RFC 3339 time: {at}"),
                })?;
                let first = reversed_by
                    .map(|text| Audit::from_json(&text).map_err(|detail| Failure::Corrupt { key: key(), detail }))
                    .transpose()?;
                return Ok(ReversalOutcome::Replayed(record(at, first)?));
            }
            let audit_json = audit.as_ref().map(Audit::to_json);
            match kind {
                ReversalKind::Accrual => {
                    let lot = lot_or_consumed.as_deref();
                    if !take_from_lot(&tx, &member_id, &point_type, lot, amount)? {
                        let remaining = lot_amount(&tx, &member_id, &point_type, lot)?;
                        return Ok(ReversalOutcome::AlreadySpent { remaining });
                    }
                    tx.prepare_cached(
                        "UPDATE balances SET earned = earned - ?3 WHERE member_id = ?1 AND point_type = ?2",
                    )?
                    .execute(params![member_id, point_type, amount])?;
                    tx.prepare_cached("UPDATE ledger SET reversed_at = ?2, reversal_audit = ?3 WHERE accrual_id = ?1")?
                        .execute(params![id, rfc3339(now)?, audit_json])?;
                }
                ReversalKind::Use => {
                    let consumed: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(lot_or_consumed.as_deref().unwrap_or("{}")).map_err(|e| {
                            Failure::Corrupt {
                                key: key(),
                                detail: format!("consumed is not a JSON object: {e}"),
                            }
                        })?;
                    for (lot, given) in consumed {
                        let given = given.as_i64().ok_or_else(|| Failure::Corrupt {
                            key: key(),
                            detail: format!("consumed[{lot}] is not a count"),
                        })?;
                        if lot == "balance" {
                            tx.prepare_cached(
                                "UPDATE balances SET balance = balance + ?3 WHERE member_id = ?1 AND point_type = ?2",
                            )?
                            .execute(params![member_id, point_type, given])?;
                        } else {
                            tx.prepare_cached(CREDIT_LOT)?
                                .execute(params![member_id, point_type, lot, given])?;
                        }
                    }
                    tx.prepare_cached("UPDATE balances SET used = used - ?3 WHERE member_id = ?1 AND point_type = ?2")?
                        .execute(params![member_id, point_type, amount])?;
                    tx.prepare_cached("UPDATE uses SET reversed_at = ?2, reversal_audit = ?3 WHERE use_id = ?1")?
                        .execute(params![id, rfc3339(now)?, audit_json])?;
                }
            }
            let reversed = record(now, audit)?;
            insert_history(
                &mut tx.prepare_cached(INSERT_HISTORY)?,
                &member_id,
                &HistoryEntry::reversal(&reversed),
            )?;
            tx.commit()?;
            Ok(ReversalOutcome::Reversed(reversed))
        })
        .await
    }
}

#[async_trait]
impl LedgerReads for SqliteStore {
    async fn balance_sheets(&self, member_id: &str) -> Result<Vec<BalanceSheet>, StoreError> {
        let member_id = member_id.to_owned();
        self.run("balance_sheets", move |conn| read_sheets(conn, &member_id, None))
            .await
    }

    async fn history_entries(
        &self,
        member_id: &str,
        point_type: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (member_id, point_type) = (member_id.to_owned(), point_type.map(str::to_owned));
        // Above every sort key (they start with a year's digits).
        let before = before.unwrap_or("~").to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("history_entries", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT sort_key, entry FROM history
                 WHERE member_id = ?1 AND sort_key < ?2 AND (?3 IS NULL OR point_type = ?3)
                 ORDER BY sort_key DESC LIMIT ?4",
            )?;
            let rows = statement.query_map(params![member_id, before, point_type, limit], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (key, json) = row?;
                let entry: HistoryEntry = serde_json::from_str(&json).map_err(|e| Failure::Corrupt {
                    key: format!("history {member_id} {key}"),
                    detail: format!("entry is not a history entry: {e}"),
                })?;
                entries.push((key, entry));
            }
            for entry in credits_before(conn, &member_id, point_type.as_deref(), &before, limit)? {
                entries.push((entry.sort_key(), entry));
            }
            entries.sort_by(|a, b| b.0.cmp(&a.0));
            entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(entries.into_iter().map(|(_, entry)| entry).collect())
        })
        .await
    }

    async fn member_ledger(&self, member_id: &str) -> Result<MemberLedger, StoreError> {
        let member_id = member_id.to_owned();
        self.run("member_ledger", move |conn| {
            // One transaction, so credits and uses are read as of one moment.
            let tx = conn.transaction()?;
            let ledger = read_member_ledger(&tx, &member_id)?;
            tx.commit()?;
            Ok(ledger)
        })
        .await
    }
}

#[async_trait]
impl LedgerRepairs for SqliteStore {
    async fn replace_balance_sheet(
        &self,
        member_id: &str,
        read: Option<&BalanceSheet>,
        sheet: &BalanceSheet,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (member_id, read, sheet) = (member_id.to_owned(), read.cloned(), sheet.clone());
        self.run("replace_balance_sheet", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let pt = sheet.point_type.as_str();
            if read_sheets(&tx, &member_id, Some(pt))?.pop() != read {
                return Ok(false);
            }
            let plain = sheet
                .lots
                .iter()
                .find(|lot| lot.key.is_plain())
                .map_or(0, |lot| lot.amount);
            tx.prepare_cached(
                "INSERT INTO balances (member_id, point_type, balance, earned, used, expired, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (member_id, point_type) DO UPDATE SET
                     balance = excluded.balance, earned = excluded.earned, used = excluded.used,
                     expired = excluded.expired, updated_at = excluded.updated_at",
            )?
            .execute(params![
                member_id,
                pt,
                to_i64(plain, "balance")?,
                to_i64(sheet.earned, "earned")?,
                to_i64(sheet.used, "used")?,
                to_i64(sheet.expired, "expired")?,
                unix_millis(now)
            ])?;
            tx.prepare_cached("DELETE FROM lots WHERE member_id = ?1 AND point_type = ?2")?
                .execute(params![member_id, pt])?;
            for lot in sheet.lots.iter().filter(|lot| !lot.key.is_plain()) {
                tx.prepare_cached(CREDIT_LOT)?.execute(params![
                    member_id,
                    pt,
                    lot.key.attribute(),
                    to_i64(lot.amount, "amount")?
                ])?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

/// Every credit and use of a member, as [`LedgerReads::member_ledger`] returns them.
fn read_member_ledger(conn: &Connection, member_id: &str) -> Result<MemberLedger, Failure> {
    let mut ledger = MemberLedger::default();
    let mut statement = conn.prepare_cached(
        "SELECT accrual_id, point_type, amount, lot, reversed_at IS NOT NULL FROM ledger WHERE member_id = ?1",
    )?;
    let mut rows = statement.query([member_id])?;
    while let Some(row) = rows.next()? {
        let accrual_id: String = row.get(0)?;
        let key = || format!("accrual {accrual_id}");
        let lot: Option<String> = row.get(3)?;
        let lot = match lot {
            None => LotKey::PLAIN,
            Some(name) => LotKey::from_attribute(&name).ok_or_else(|| Failure::Corrupt {
                key: key(),
                detail: format!("lot {name:?} is not a lot name"),
            })?,
        };
        ledger.credits.push(CreditEntry {
            point_type: row.get(1)?,
            amount: to_u64(row.get(2)?, key, "amount")?,
            lot,
            reversed: row.get(4)?,
            accrual_id,
        });
    }
    // No index on a use's member: an operator's full read, not a request path.
    let mut statement = conn.prepare_cached(
        "SELECT use_id, point_type, amount, consumed, reversed_at IS NOT NULL FROM uses WHERE member_id = ?1",
    )?;
    let mut rows = statement.query([member_id])?;
    while let Some(row) = rows.next()? {
        let use_id: String = row.get(0)?;
        let key = || format!("use {use_id}");
        let consumed: String = row.get(3)?;
        let consumed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&consumed).map_err(|e| Failure::Corrupt {
                key: key(),
                detail: format!("consumed is not a JSON object: {e}"),
            })?;
        let mut lots = Vec::new();
        for (name, amount) in consumed {
            let lot_key = if name == "balance" {
                LotKey::PLAIN
            } else {
                LotKey::from_attribute(&name).ok_or_else(|| Failure::Corrupt {
                    key: key(),
                    detail: format!("consumed lot {name:?} is not a lot name"),
                })?
            };
            let amount = amount.as_u64().ok_or_else(|| Failure::Corrupt {
                key: key(),
                detail: format!("consumed[{name}] is not a count"),
            })?;
            lots.push(Lot { key: lot_key, amount });
        }
        ledger.uses.push(UseEntry {
            point_type: row.get(1)?,
            amount: to_u64(row.get(2)?, key, "amount")?,
            consumed: lots,
            reversed: row.get(4)?,
            use_id,
        });
    }
    // Pruned expiries are history rows only; their sort key names the kind.
    let mut statement =
        conn.prepare_cached("SELECT sort_key, entry FROM history WHERE member_id = ?1 AND sort_key LIKE '%#expiry#%'")?;
    let mut rows = statement.query([member_id])?;
    while let Some(row) = rows.next()? {
        let sort_key: String = row.get(0)?;
        let json: String = row.get(1)?;
        let entry: HistoryEntry = serde_json::from_str(&json).map_err(|e| Failure::Corrupt {
            key: format!("history {sort_key}"),
            detail: format!("not a history entry: {e}"),
        })?;
        if let Some(expiry) = ExpiryEntry::from_history(&entry) {
            ledger.expiries.push(expiry);
        }
    }
    Ok(ledger)
}

/// Records a ledger entry unless its accrual id was credited before.
pub(super) const INSERT_LEDGER_ENTRY: &str =
    "INSERT INTO ledger (accrual_id, job_id, seq, member_id, point_type, amount, reason, applied_at, lot)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (accrual_id) DO NOTHING";

/// Records a history entry; a second write of the same entry is a no-op.
pub(super) const INSERT_HISTORY: &str =
    "INSERT INTO history (member_id, sort_key, point_type, entry) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (member_id, sort_key) DO NOTHING";

pub(super) fn insert_history(
    statement: &mut rusqlite::CachedStatement<'_>,
    member_id: &str,
    entry: &HistoryEntry,
) -> Result<(), Failure> {
    let json = serde_json::to_string(entry).map_err(|e| Failure::Other(Box::new(e)))?;
    statement.execute(params![member_id, entry.sort_key(), entry.point_type, json])?;
    Ok(())
}

/// A member's credits with a sort key below `before`, newest first, at most
/// `limit`, read from the ledger through `ledger_member`.
fn credits_before(
    conn: &Connection,
    member_id: &str,
    point_type: Option<&str>,
    before: &str,
    limit: i64,
) -> Result<Vec<HistoryEntry>, Failure> {
    // Rows at the cursor's own millisecond qualify by kind, then id: all of
    // them (mode 1) if "accrual" sorts before the cursor's kind, none (0) if
    // after, those with a smaller id (2) if it is a credit.
    let (millis, mode, id) = match split_sort_key(before) {
        None => (i64::MAX, 0, ""),
        Some((at, kind, id)) => (
            unix_millis(at),
            match EntryKind::Accrual.as_str().cmp(kind.as_str()) {
                std::cmp::Ordering::Less => 1,
                std::cmp::Ordering::Greater => 0,
                std::cmp::Ordering::Equal => 2,
            },
            id,
        ),
    };
    let mut statement = conn.prepare_cached(
        "SELECT accrual_id, job_id, member_id, point_type, amount, reason, applied_at, lot FROM ledger
         WHERE member_id = ?1 AND (?2 IS NULL OR point_type = ?2)
           AND (applied_at < ?3 OR (applied_at = ?3 AND (?4 = 1 OR (?4 = 2 AND accrual_id < ?5))))
         ORDER BY applied_at DESC, accrual_id DESC LIMIT ?6",
    )?;
    let mut rows = statement.query(params![member_id, point_type, millis, mode, id, limit])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(credit_entry(row)?);
    }
    Ok(entries)
}

/// The history entry of a ledger row (`accrual_id, job_id, member_id,
/// point_type, amount, reason, applied_at, lot`): its lot gives back its
/// dates (whole seconds), `applied_at` its time (whole milliseconds).
fn credit_entry(row: &rusqlite::Row<'_>) -> Result<HistoryEntry, Failure> {
    let id: String = row.get(0)?;
    let key = || format!("ledger {id}");
    let lot = row
        .get::<_, Option<String>>(7)?
        .map(|name| {
            LotKey::from_attribute(&name).ok_or_else(|| Failure::Corrupt {
                key: key(),
                detail: format!("lot is not a lot: {name}"),
            })
        })
        .transpose()?
        .unwrap_or(LotKey::PLAIN);
    let time = |seconds: i64| OffsetDateTime::from_unix_timestamp(seconds).ok();
    let accrual = Accrual {
        accrual_id: id.clone(),
        member_id: row.get(2)?,
        point_type: row.get(3)?,
        amount: to_u64(row.get(4)?, key, "amount")?,
        reason: row.get(5)?,
        apply_at: (lot.from != 0).then(|| time(lot.from)).flatten(),
        expires_at: lot.until.and_then(time),
    };
    // Every job id this program wrote is a UUID; show none otherwise.
    let job_id = row.get::<_, String>(1)?.parse().ok().map(JobId);
    Ok(HistoryEntry::accrual(&accrual, job_id, from_unix_millis(row.get(6)?)))
}

/// The `lot` column of an accrual's entry: `NULL` for the plain lot.
pub(super) fn lot_column(a: &Accrual) -> Option<String> {
    let lot = a.lot();
    (!lot.is_plain()).then(|| lot.attribute())
}

/// Takes `amount` out of a lot (the plain one when `lot` is `None`) if it
/// holds that much; returns whether it did.
pub(super) fn take_from_lot(
    conn: &Connection,
    member_id: &str,
    point_type: &str,
    lot: Option<&str>,
    amount: i64,
) -> Result<bool, Failure> {
    let changed = match lot {
        None => conn
            .prepare_cached(
                "UPDATE balances SET balance = balance - ?3
                 WHERE member_id = ?1 AND point_type = ?2 AND balance >= ?3",
            )?
            .execute(params![member_id, point_type, amount])?,
        Some(lot) => conn
            .prepare_cached(
                "UPDATE lots SET amount = amount - ?4
                 WHERE member_id = ?1 AND point_type = ?2 AND lot = ?3 AND amount >= ?4",
            )?
            .execute(params![member_id, point_type, lot, amount])?,
    };
    Ok(changed == 1)
}

/// Prunes expired lots in a use's transaction: each row goes only if it
/// holds what the plan read, its points move to the balance's `expired`,
/// and its expiry is written to the history.
pub(super) fn prune_lots(conn: &Connection, u: &Use, prunes: &[Lot]) -> Result<(), Failure> {
    let mut expired = 0i64;
    for lot in prunes {
        let amount = to_i64(lot.amount, "amount")?;
        let deleted = conn
            .prepare_cached("DELETE FROM lots WHERE member_id = ?1 AND point_type = ?2 AND lot = ?3 AND amount = ?4")?
            .execute(params![u.member_id, u.point_type, lot.key.attribute(), amount])?;
        if deleted != 1 {
            // Planned from what this transaction just read: cannot happen.
            return Err(Failure::Other("a lot changed under the use's own transaction".into()));
        }
        expired += amount;
        if let Some(entry) = pruned_expiry(&u.point_type, lot.key, lot.amount, &u.use_id) {
            insert_history(&mut conn.prepare_cached(INSERT_HISTORY)?, &u.member_id, &entry)?;
        }
    }
    if expired > 0 {
        conn.prepare_cached("UPDATE balances SET expired = expired + ?3 WHERE member_id = ?1 AND point_type = ?2")?
            .execute(params![u.member_id, u.point_type, expired])?;
    }
    Ok(())
}

/// What a lot (the plain one when `lot` is `None`) holds.
fn lot_amount(conn: &Connection, member_id: &str, point_type: &str, lot: Option<&str>) -> Result<u64, Failure> {
    let held: Option<i64> = match lot {
        None => conn
            .prepare_cached("SELECT balance FROM balances WHERE member_id = ?1 AND point_type = ?2")?
            .query_row(params![member_id, point_type], |row| row.get(0))
            .optional()?,
        Some(lot) => conn
            .prepare_cached("SELECT amount FROM lots WHERE member_id = ?1 AND point_type = ?2 AND lot = ?3")?
            .query_row(params![member_id, point_type, lot], |row| row.get(0))
            .optional()?,
    };
    to_u64(
        held.unwrap_or(0),
        || format!("balance {member_id}/{point_type}"),
        "lot amount",
    )
}

/// Credits a balance: `?3` to the plain lot, `?4` to `earned`.
const CREDIT_BALANCE: &str = "INSERT INTO balances (member_id, point_type, balance, earned, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (member_id, point_type) DO UPDATE SET
         balance = balance + excluded.balance, earned = earned + excluded.earned, updated_at = excluded.updated_at";

/// Credits a lot other than the plain one.
const CREDIT_LOT: &str = "INSERT INTO lots (member_id, point_type, lot, amount) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (member_id, point_type, lot) DO UPDATE SET amount = amount + excluded.amount";

/// A member's balance sheets, read in one transaction.
pub(super) fn read_sheets(
    conn: &Connection,
    member_id: &str,
    point_type: Option<&str>,
) -> Result<Vec<BalanceSheet>, Failure> {
    let key = |pt: &str| format!("balance {member_id}/{pt}");
    let mut sheets = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT point_type, balance, earned, used, expired FROM balances
         WHERE member_id = ?1 AND (?2 IS NULL OR point_type = ?2) ORDER BY point_type",
    )?;
    let mut rows = statement.query(params![member_id, point_type])?;
    while let Some(row) = rows.next()? {
        let pt: String = row.get(0)?;
        let plain = to_u64(row.get(1)?, || key(&pt), "balance")?;
        sheets.push(BalanceSheet {
            lots: if plain > 0 {
                vec![Lot {
                    key: LotKey::PLAIN,
                    amount: plain,
                }]
            } else {
                Vec::new()
            },
            earned: to_u64(row.get(2)?, || key(&pt), "earned")?,
            used: to_u64(row.get(3)?, || key(&pt), "used")?,
            expired: to_u64(row.get(4)?, || key(&pt), "expired")?,
            point_type: pt,
        });
    }
    let mut statement = conn.prepare_cached(
        "SELECT point_type, lot, amount FROM lots
         WHERE member_id = ?1 AND (?2 IS NULL OR point_type = ?2) AND amount > 0",
    )?;
    let mut rows = statement.query(params![member_id, point_type])?;
    while let Some(row) = rows.next()? {
        let pt: String = row.get(0)?;
        let name: String = row.get(1)?;
        let lot_key = LotKey::from_attribute(&name).ok_or_else(|| Failure::Corrupt {
            key: key(&pt),
            detail: format!("lot {name:?} is not a lot name"),
        })?;
        let amount = to_u64(row.get(2)?, || key(&pt), "lot amount")?;
        if let Some(sheet) = sheets.iter_mut().find(|s| s.point_type == pt) {
            sheet.lots.push(Lot { key: lot_key, amount });
        }
    }
    for sheet in &mut sheets {
        sheet.lots.sort_by_key(|lot| lot.key);
    }
    Ok(sheets)
}

pub(super) fn read_use(conn: &Connection, use_id: &str) -> Result<Option<UseRecord>, Failure> {
    let mut statement = conn.prepare_cached(
        "SELECT member_id, point_type, amount, reason, applied_at, audit FROM uses WHERE use_id = ?1",
    )?;
    let mut rows = statement.query([use_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let key = || format!("use {use_id}");
    let applied_at: String = row.get(4)?;
    Ok(Some(UseRecord {
        use_id: use_id.to_owned(),
        member_id: row.get(0)?,
        point_type: row.get(1)?,
        amount: to_u64(row.get(2)?, key, "amount")?,
        reason: row.get(3)?,
        applied_at: OffsetDateTime::parse(&applied_at, &Rfc3339).map_err(|_| Failure::Corrupt {
            key: key(),
            detail: format!("applied_at is not an RFC 3339 time: {applied_at}"),
        })?,
        audit: row
            .get::<_, Option<String>>(5)?
            .map(|text| Audit::from_json(&text).map_err(|detail| Failure::Corrupt { key: key(), detail }))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::test_support::TempDir;
    use super::*;

    /// Throughput of the apply path, not a test: 1,000,000 accruals (500,000
    /// members × 2 point types), 500 per call, on an in-memory and a
    /// file-backed store; with random UUID ids (what derived ids are) and with
    /// ids that share a prefix per job (sorted, so inserts stay local).
    /// `cargo test -p pointflow --features aws,sqlite --release sqlite::ledger::tests::apply_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn apply_throughput() {
        const MEMBERS: usize = 500_000;
        const PER_CALL: usize = 500;
        let dir = TempDir::new();
        for ids in ["uuid", "ordered"] {
            let job = JobId::random();
            let accruals: Vec<Accrual> = (0..MEMBERS)
                .flat_map(|m| {
                    ["BASE", "BONUS"].map(|point_type| Accrual {
                        accrual_id: match ids {
                            "uuid" => uuid::Uuid::new_v4().to_string(),
                            _ => format!("{job}:{m:07}:{point_type}"),
                        },
                        member_id: format!("member-{m:07}"),
                        point_type: point_type.to_owned(),
                        amount: 10,
                        reason: Some("demo".to_owned()),
                        apply_at: None,
                        expires_at: None,
                    })
                })
                .collect();
            for (backing, store) in [
                ("in-memory", SqliteStore::in_memory().unwrap()),
                (
                    "file-backed",
                    SqliteStore::open(&dir.0.join(format!("{ids}.db"))).unwrap(),
                ),
            ] {
                let started = Instant::now();
                for chunk in accruals.chunks(PER_CALL) {
                    let outcome = store
                        .apply_accruals(MessageRef { job_id: job, seq: 0 }, chunk, OffsetDateTime::now_utc())
                        .await
                        .unwrap();
                    assert_eq!(outcome.applied, chunk.len() as u64);
                }
                let elapsed = started.elapsed();
                assert_eq!(store.ledger_len().unwrap(), accruals.len() as u64);
                println!(
                    "{backing}, {ids} ids: {} accruals in {elapsed:.2?} = {:.0} rows/s",
                    accruals.len(),
                    accruals.len() as f64 / elapsed.as_secs_f64()
                );
            }
        }
    }
}
