//! The database schema, its version (`PRAGMA user_version`) and the
//! migrations from older versions.

use rusqlite::{Connection, OptionalExtension};

use super::ledger::{insert_history, read_use, INSERT_HISTORY};
use super::{parse_rfc3339, to_u64, Failure};
use crate::domain::history::HistoryEntry;
use crate::domain::reversal::{ReversalKind, ReversalRecord};

/// The schema this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 5;

/// Small tables keyed by their natural keys are `WITHOUT ROWID`: one B-tree
/// each. The ledger is the exception: entries are appended in rowid order and
/// only the narrow unique index on `accrual_id` takes the random inserts that
/// UUID ids cause, which measured faster than a `WITHOUT ROWID` ledger (every
/// random insert dirties a page, and index pages hold three times more keys).
/// Times are unix milliseconds where rows are many (ledger, queue) and RFC
/// 3339 text on jobs, which must read back exactly as created (offset and
/// sub-millisecond precision included).
const SCHEMA: &str = "
-- Append-only: entries are never deleted, so MAX(id) counts them.
CREATE TABLE IF NOT EXISTS ledger (
    id         INTEGER PRIMARY KEY,
    accrual_id TEXT NOT NULL UNIQUE,
    job_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL DEFAULT -1,
    member_id  TEXT NOT NULL,
    point_type TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    reason     TEXT,
    applied_at INTEGER NOT NULL,
    -- LotKey::attribute of its lot; NULL for the plain lot (version 3).
    lot        TEXT,
    reversed_at TEXT,
    -- Who reversed it, from which request, why: an Audit as JSON (version 5).
    reversal_audit TEXT
);

-- `balance` is the plain lot (points available at once, never expiring);
-- `earned` and `used` are lifetime counters (version 3).
CREATE TABLE IF NOT EXISTS balances (
    member_id  TEXT NOT NULL,
    point_type TEXT NOT NULL,
    balance    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    earned     INTEGER NOT NULL DEFAULT 0,
    used       INTEGER NOT NULL DEFAULT 0,
    -- Points of expired lots pruned by uses (added on open to older files).
    expired    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (member_id, point_type)
) WITHOUT ROWID;

-- The other lots of a balance, named as LotKey::attribute (version 3).
CREATE TABLE IF NOT EXISTS lots (
    member_id  TEXT NOT NULL,
    point_type TEXT NOT NULL,
    lot        TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    PRIMARY KEY (member_id, point_type, lot)
) WITHOUT ROWID;

-- Uses (deductions), keyed by their idempotency id (version 3).
CREATE TABLE IF NOT EXISTS uses (
    use_id     TEXT NOT NULL PRIMARY KEY,
    member_id  TEXT NOT NULL,
    point_type TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    reason     TEXT,
    applied_at TEXT NOT NULL,
    -- What it took from each lot, as JSON {lot: amount} (for its reversal).
    consumed   TEXT NOT NULL DEFAULT '{}',
    reversed_at TEXT,
    -- The bulk-use message that applied it, if any (for its job's cancel;
    -- added on open to older files, see `migrate`).
    job_id     TEXT,
    seq        INTEGER,
    -- Who asked for the use and for its reversal: Audit JSON (version 5).
    audit      TEXT,
    reversal_audit TEXT
) WITHOUT ROWID;

-- A member's history of uses and reversals (version 4), written in the
-- transaction that made the change; `entry` is the HistoryEntry as JSON.
-- Credits are read from the ledger itself, through `ledger_member`: a narrow
-- index costs a credit far less than a history row would.
CREATE TABLE IF NOT EXISTS history (
    member_id  TEXT NOT NULL,
    sort_key   TEXT NOT NULL,
    point_type TEXT NOT NULL,
    entry      TEXT NOT NULL,
    PRIMARY KEY (member_id, sort_key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT NOT NULL PRIMARY KEY,
    request_hash TEXT NOT NULL,
    total        INTEGER NOT NULL,
    deduplicated INTEGER NOT NULL,
    messages     INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    enqueued     INTEGER NOT NULL DEFAULT 0,
    applied      INTEGER NOT NULL DEFAULT 0,
    duplicate    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    completed_at TEXT,
    source       TEXT,
    reading      INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    -- Uses of a bulk-use job refused (version 4).
    refused      INTEGER NOT NULL DEFAULT 0,
    -- The job's cancel (version 4): asked for at, counts, messages done.
    cancel_requested_at TEXT,
    cancel_reversed     INTEGER NOT NULL DEFAULT 0,
    cancel_spent        INTEGER NOT NULL DEFAULT 0,
    cancel_skipped      INTEGER NOT NULL DEFAULT 0,
    cancel_messages     INTEGER NOT NULL DEFAULT 0,
    cancel_completed_at TEXT,
    -- Who asked for the job and for its cancel: Audit JSON (version 5).
    audit               TEXT,
    cancel_audit        TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS chunks (
    job_id      TEXT NOT NULL,
    chunk       INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS folded (
    job_id    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    applied   INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    folded_at TEXT NOT NULL,
    refused   INTEGER NOT NULL DEFAULT 0,
    -- The message's item ids, one per line (version 4; for job cancel).
    items     TEXT NOT NULL DEFAULT '',
    cancelled_at TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- Messages whose cancel has begun: a credit on their behalf checks this
-- table in its transaction and credits nothing (created on every open, so
-- a version-4 file gains it without a migration).
CREATE TABLE IF NOT EXISTS cancel_begun (
    job_id   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    begun_at TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- Bulk uses refused once (too few points, too many lots), by use_id: a
-- redelivery of the message replays the refusal instead of applying the use
-- (created on every open, so a version-4 file gains it without a
-- migration). Not a balance change: never in `history`.
CREATE TABLE IF NOT EXISTS use_refusals (
    use_id     TEXT NOT NULL PRIMARY KEY,
    member_id  TEXT NOT NULL,
    point_type TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    reason     TEXT,
    refused_at TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;

-- AUTOINCREMENT: ids (hence message ids) are never reused, even after the
-- newest message is deleted.
CREATE TABLE IF NOT EXISTS queue_messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT NOT NULL,
    body           TEXT NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    visible_at     INTEGER NOT NULL,
    receipt_handle TEXT,
    sent_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_messages_fifo ON queue_messages (queue, id);
-- A member's credits in time order, for the history (version 4).
CREATE INDEX IF NOT EXISTS ledger_member ON ledger (member_id, applied_at);
";

/// Upgrades a version-1 database; `SCHEMA` then adds the new tables.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE ledger ADD COLUMN seq INTEGER NOT NULL DEFAULT -1;
ALTER TABLE jobs ADD COLUMN source TEXT;
ALTER TABLE jobs ADD COLUMN reading INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN error TEXT;
";

/// Upgrades a version-2 database: lifetime counters on balances (what was
/// credited so far is what is left plus nothing used); `SCHEMA` then adds
/// the `lots` and `uses` tables.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE ledger ADD COLUMN lot TEXT;
ALTER TABLE ledger ADD COLUMN reversed_at TEXT;
ALTER TABLE balances ADD COLUMN earned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE balances ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
UPDATE balances SET earned = balance;
";

/// Brings the schema of `conn` to [`SCHEMA_VERSION`]: creates it in a fresh
/// database, migrates an older one, and refuses a newer one.
pub(super) fn migrate(conn: &Connection) -> Result<(), Failure> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Failure::Other(
            format!("database schema version {version} is newer than this program's {SCHEMA_VERSION}").into(),
        ));
    }
    if version == 1 {
        // Version 2 added file jobs and remembers the crediting message.
        conn.execute_batch(MIGRATE_1_TO_2)?;
    }
    if (1..=2).contains(&version) {
        // Version 3 added lots, lifetime counters and uses.
        conn.execute_batch(MIGRATE_2_TO_3)?;
    }
    conn.execute_batch(SCHEMA)?;
    // Version 5 added the audit trail (NULL: recorded before it, by no one).
    for (table, column) in [
        ("jobs", "audit"),
        ("jobs", "cancel_audit"),
        ("uses", "audit"),
        ("uses", "reversal_audit"),
        ("ledger", "reversal_audit"),
    ] {
        add_column_if_missing(conn, table, column, "TEXT")?;
    }
    if (1..=3).contains(&version) {
        // Version 4 added the history, rebuilt from what the ledger kept, and
        // refused uses on jobs (on tables older versions may or may not have).
        backfill_history(conn)?;
        add_column_if_missing(conn, "jobs", "refused", "INTEGER NOT NULL DEFAULT 0")?;
        add_column_if_missing(conn, "folded", "refused", "INTEGER NOT NULL DEFAULT 0")?;
        add_column_if_missing(conn, "folded", "items", "TEXT NOT NULL DEFAULT ''")?;
        add_column_if_missing(conn, "folded", "cancelled_at", "TEXT")?;
        add_column_if_missing(conn, "jobs", "cancel_requested_at", "TEXT")?;
        for counter in ["cancel_reversed", "cancel_spent", "cancel_skipped", "cancel_messages"] {
            add_column_if_missing(conn, "jobs", counter, "INTEGER NOT NULL DEFAULT 0")?;
        }
        add_column_if_missing(conn, "jobs", "cancel_completed_at", "TEXT")?;
    }
    // A version-4 file written before bulk uses recorded their message gains
    // the columns (NULL: applied by no message, never given back by a cancel).
    add_column_if_missing(conn, "uses", "job_id", "TEXT")?;
    add_column_if_missing(conn, "uses", "seq", "INTEGER")?;
    // Likewise a file written before uses pruned expired lots.
    add_column_if_missing(conn, "balances", "expired", "INTEGER NOT NULL DEFAULT 0")?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

fn add_column_if_missing(conn: &Connection, table: &str, column: &str, declaration: &str) -> Result<(), Failure> {
    let exists: bool = conn
        .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
        .query_row([column], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"))?;
    }
    Ok(())
}

/// Writes the history of uses and reversals of a database from before
/// version 4 (credits need nothing: they are read from the ledger).
fn backfill_history(conn: &Connection) -> Result<(), Failure> {
    let mut insert = conn.prepare_cached(INSERT_HISTORY)?;
    let mut entries: Vec<(String, HistoryEntry)> = Vec::new();
    {
        let mut ledger = conn.prepare(
            "SELECT accrual_id, member_id, point_type, amount, reversed_at FROM ledger WHERE reversed_at IS NOT NULL",
        )?;
        let mut rows = ledger.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let member_id: String = row.get(1)?;
            let at: String = row.get(4)?;
            let reversal = HistoryEntry::reversal(&ReversalRecord {
                kind: ReversalKind::Accrual,
                id: id.clone(),
                member_id: member_id.clone(),
                point_type: row.get(2)?,
                amount: to_u64(row.get(3)?, || format!("ledger {id}"), "amount")?,
                reversed_at: parse_rfc3339(&at, || format!("ledger {id}"))?,
                audit: None,
            });
            entries.push((member_id, reversal));
        }
    }
    {
        let mut uses = conn.prepare("SELECT use_id, reversed_at FROM uses")?;
        let ids: Vec<(String, Option<String>)> = uses
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, reversed_at) in ids {
            let Some(record) = read_use(conn, &id)? else { continue };
            entries.push((record.member_id.clone(), HistoryEntry::use_of(&record)));
            if let Some(at) = reversed_at {
                entries.push((
                    record.member_id.clone(),
                    HistoryEntry::reversal(&ReversalRecord {
                        kind: ReversalKind::Use,
                        id: id.clone(),
                        member_id: record.member_id.clone(),
                        point_type: record.point_type.clone(),
                        amount: record.amount,
                        reversed_at: parse_rfc3339(&at, || format!("use {id}"))?,
                        audit: None,
                    }),
                ));
            }
        }
    }
    for (member_id, entry) in &entries {
        insert_history(&mut insert, member_id, entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::super::test_support::TempDir;
    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::history::EntryKind;
    use crate::domain::reversal::{ReversalOutcome, ReversalTarget};
    use crate::domain::uses::{Use, UseOutcome};
    use crate::ports::{Debits, LedgerReads};

    /// A version-2 database (as the previous release wrote it) keeps its
    /// balances and ledger when opened: what it held counts as earned, its
    /// entries are in the plain lot (so they can be reversed), and uses work.
    #[tokio::test]
    async fn a_version_2_database_is_migrated_to_lots_uses_and_history() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE ledger (
                     id INTEGER PRIMARY KEY, accrual_id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
                     seq INTEGER NOT NULL DEFAULT -1, member_id TEXT NOT NULL, point_type TEXT NOT NULL,
                     amount INTEGER NOT NULL, reason TEXT, applied_at INTEGER NOT NULL);
                 CREATE TABLE balances (
                     member_id TEXT NOT NULL, point_type TEXT NOT NULL, balance INTEGER NOT NULL,
                     updated_at INTEGER NOT NULL, PRIMARY KEY (member_id, point_type)) WITHOUT ROWID;
                 INSERT INTO ledger (accrual_id, job_id, seq, member_id, point_type, amount, applied_at)
                     VALUES ('old-1', 'job', 0, 'm', 'PT', 70, 0);
                 INSERT INTO balances VALUES ('m', 'PT', 70, 0);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let now = OffsetDateTime::now_utc();
        let sheets = store.balance_sheets("m").await.unwrap();
        assert_eq!((sheets[0].available(now), sheets[0].earned), (70, 70));
        let u = Use {
            use_id: "u".into(),
            member_id: "m".into(),
            point_type: "PT".into(),
            amount: 20,
            reason: None,
        };
        assert!(matches!(
            store.apply_use(&u, now).await.unwrap(),
            UseOutcome::Applied(_)
        ));
        let old = ReversalTarget::Accrual("old-1".into());
        assert_eq!(
            store.reverse(&old, now).await.unwrap(),
            ReversalOutcome::AlreadySpent { remaining: 50 }
        );
        let back = ReversalTarget::Use("u".into());
        assert!(matches!(
            store.reverse(&back, now).await.unwrap(),
            ReversalOutcome::Reversed(_)
        ));
        assert!(matches!(
            store.reverse(&old, now).await.unwrap(),
            ReversalOutcome::Reversed(_)
        ));
        assert_eq!(store.balances("m").await.unwrap()[0].balance, 0);
        // The old credit is in the history, with what was done since.
        let history = store.history_entries("m", None, None, 10).await.unwrap();
        let seen: Vec<(EntryKind, i64, &str)> = history.iter().map(|e| (e.kind, e.amount, e.id.as_str())).collect();
        assert!(seen.contains(&(EntryKind::Accrual, 70, "old-1")), "{seen:?}");
        assert_eq!(history.len(), 4, "{seen:?}");
        assert_eq!(history.last().map(|e| e.at), Some(OffsetDateTime::UNIX_EPOCH));
        drop(store);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// A version-4 database (before the audit trail) gains the audit
    /// columns when opened: what it held reads back with no caller, and
    /// what is done from then on records its caller.
    #[tokio::test]
    async fn a_version_4_database_gains_the_audit_trail() {
        use crate::domain::audit::Audit;
        use crate::domain::{JobId, NewJob};
        use crate::ports::JobStore;

        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("v4.db");
        let now = OffsetDateTime::now_utc();
        let job = NewJob {
            job_id: JobId::random(),
            request_hash: "h".into(),
            total: 1,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: now,
            audit: None,
        };
        let old_use = Use {
            use_id: "old-u".into(),
            member_id: "m".into(),
            point_type: "PT".into(),
            amount: 10,
            reason: None,
        };
        {
            // A database as version 4 wrote it: today's tables less the
            // audit columns.
            let store = SqliteStore::open(&path).unwrap();
            store.create_job(&job).await.unwrap();
            drop(store);
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE jobs DROP COLUMN audit;
                 ALTER TABLE jobs DROP COLUMN cancel_audit;
                 ALTER TABLE uses DROP COLUMN audit;
                 ALTER TABLE uses DROP COLUMN reversal_audit;
                 ALTER TABLE ledger DROP COLUMN reversal_audit;
                 INSERT INTO balances (member_id, point_type, balance, updated_at, earned) VALUES ('m', 'PT', 90, 0, 100);
                 INSERT INTO uses (use_id, member_id, point_type, amount, applied_at, consumed)
                     VALUES ('old-u', 'm', 'PT', 10, '2026-01-01T00:00:00Z', '{\"balance\":10}');
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let read = store.get_job(job.job_id).await.unwrap().unwrap();
        assert_eq!(read.audit, None, "recorded before the audit trail, by no one");
        assert!(matches!(store.apply_use(&old_use, now).await.unwrap(), UseOutcome::Replayed(r) if r.audit.is_none()));
        let support = Audit::local(Some("127.0.0.1:1".into())).with_reason(Some("refund"));
        let back = ReversalTarget::Use("old-u".into());
        match store.reverse_audited(&back, Some(&support), now).await.unwrap() {
            ReversalOutcome::Reversed(record) => assert_eq!(record.audit.as_ref(), Some(&support)),
            other => panic!("expected Reversed, got {other:?}"),
        }
        let cancelled = store
            .begin_cancel(job.job_id, Some(&support), now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.cancel.and_then(|c| c.audit), Some(support.clone()));
        let history = store.history_entries("m", None, None, 10).await.unwrap();
        assert!(history
            .iter()
            .any(|e| e.kind == EntryKind::Reversal && e.audit.as_ref() == Some(&support)));
        drop(store);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
