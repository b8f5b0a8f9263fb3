//! Embedded backend: [`Ledger`], [`JobStore`] and [`WorkQueue`] in one
//! SQLite database, with the semantics of the AWS adapters (checked by the
//! shared contract suite). For running Pointflow on one machine: a file-backed
//! store survives restarts, queued messages included.
//!
//! Schema (version 4, `PRAGMA user_version`; version-1 to -3 files are migrated):
//!
//! | table            | key                       | holds |
//! |------------------|---------------------------|-------|
//! | `ledger`         | `id`, unique `accrual_id` | every credited accrual, the message (job, seq) that credited it, its lot, when it was reversed |
//! | `balances`       | `(member_id, point_type)` | the plain lot (`balance`) and lifetime `earned` / `used` |
//! | `lots`           | `(member_id, point_type, lot)` | the other lots: scheduled or expiring points |
//! | `uses`           | `use_id`                  | applied uses, what each took from which lot, when it was reversed |
//! | `history`        | `(member_id, sort_key)`   | every use and reversal of a member, as [`HistoryEntry`] JSON (credits are read from `ledger` through its `ledger_member` index) |
//! | `jobs`           | `job_id`                  | jobs and their counts |
//! | `folded`         | `(job_id, seq)`           | messages whose counts are in their job |
//! | `chunks`         | `(job_id, chunk)`         | file chunks whose counts are in their job |
//! | `queue_messages` | `id` (FIFO order)         | messages of every named queue |
//!
//! Every port call is one transaction on one connection, so each is atomic
//! without the chunking and retries DynamoDB needs. The connection sits behind
//! a mutex and calls run on tokio's blocking pool: SQLite work never stalls an
//! async worker thread.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::adapters::aws::dynamodb::{plan_transactions, sum_by_balance};
use crate::domain::capacity::{
    fold_units, indexed_write_units, ledger_entry_bytes, ledger_transaction_units, use_entry_bytes, write_units,
    WriteCost, WriteKind, WriteMeter, MARKER_AND_UPDATE_UNITS, SMALL_WRITE_UNITS,
};
use crate::domain::history::{split_sort_key, EntryKind, HistoryEntry};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::reversal::{ReversalKind, ReversalOutcome, ReversalRecord, ReversalTarget};
use crate::domain::uses::{Use, UseOutcome, UseRecord};
use crate::domain::{
    Accrual, CancelCounts, CancelProgress, ChunkReport, FoldedItems, Job, JobId, MessageCounts, MessageRef, NewJob,
};
use crate::ports::{ApplyOutcome, BoxError, CreateJob, JobStore, QueueError, ReceivedMessage, StoreError, WorkQueue};
use crate::ports::{Credits, Debits, LedgerReads};
#[cfg(feature = "testkit")]
use crate::testkit::baseline::SingleWrites;

/// The schema this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

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
    reversed_at TEXT
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
    reversed_at TEXT
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
    cancel_completed_at TEXT
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

/// How long a call waits for another process's write lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Page cache per connection (KiB, hence negative): the default 2 MiB
/// thrashes once the ledger index outgrows it. 64 MiB measured faster than
/// 256 MiB for a million-accrual demo (ids derived from one key sort
/// together, so inserts stay local) and keeps the runner's memory down.
const CACHE_SIZE_KIB: i64 = 64 * 1024;
/// WAL pages between automatic checkpoints (64 MiB at 4 KiB pages; the
/// default is 1,000). Random ledger keys dirty about one page per accrual, so
/// the default checkpoints (and syncs) every couple of calls; this measured
/// about 1.5× faster over a million accruals with UUID ids. The WAL is truncated back to this size afterwards.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16 * 1024;
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Pause between polls of an empty queue while a receive waits.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// SQS's batch size, used for request accounting and as the receive cap.
const BATCH: usize = 10;

type Db = Arc<Mutex<Connection>>;

fn lock(db: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock rolled back its transaction when the
    // `Transaction` dropped; the connection is still usable.
    db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a closure on the connection failed; mapped to the port's error type
/// by the caller, who knows the operation.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    Corrupt { key: String, detail: String },
    Other(BoxError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl Failure {
    fn into_store(self, operation: &'static str) -> StoreError {
        match self {
            Failure::Sql(e) => StoreError::Backend {
                operation,
                source: Box::new(e),
            },
            Failure::Corrupt { key, detail } => StoreError::Corrupt { key, detail },
            Failure::Other(source) => StoreError::Backend { operation, source },
        }
    }

    fn into_queue(self, operation: &'static str) -> QueueError {
        let source: BoxError = match self {
            Failure::Sql(e) => Box::new(e),
            Failure::Corrupt { key, detail } => format!("stored item {key} is malformed: {detail}").into(),
            Failure::Other(source) => source,
        };
        QueueError::Backend { operation, source }
    }
}

/// Runs `f` on the connection on tokio's blocking pool. Works on the
/// current-thread runtime too (unlike `block_in_place`).
async fn run_blocking<T, F>(db: &Db, f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&mut lock(&db)))
        .await
        .map_err(|e| Failure::Other(Box::new(e)))?
}

/// SQLite integers are `i64`; amounts and counts are `u64` bounded far below
/// `i64::MAX` by validation, so a failure here means a broken caller.
fn to_i64(value: u64, what: &str) -> Result<i64, Failure> {
    i64::try_from(value).map_err(|_| Failure::Other(format!("{what} {value} exceeds SQLite's integer range").into()))
}

fn to_u64(value: i64, key: impl FnOnce() -> String, what: &str) -> Result<u64, Failure> {
    u64::try_from(value).map_err(|_| Failure::Corrupt {
        key: key(),
        detail: format!("{what} is negative: {value}"),
    })
}

fn unix_millis(t: OffsetDateTime) -> i64 {
    // i128 → i64 only overflows ~292 million years from 1970.
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Wall-clock now in unix milliseconds: queue visibility must survive a
/// restart, which an `Instant` would not.
fn wall_millis() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(t: OffsetDateTime) -> Result<String, Failure> {
    t.format(&Rfc3339).map_err(|e| Failure::Other(Box::new(e)))
}

fn sql_count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64, Failure> {
    let n: i64 = conn.prepare_cached(sql)?.query_row(params, |row| row.get(0))?;
    to_u64(n, || sql.to_owned(), "count")
}

/// Configures a fresh connection and creates or checks the schema.
fn prepare(conn: &Connection, file_backed: bool) -> Result<(), Failure> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    if file_backed {
        // WAL: readers never block the writer, and a commit is one append.
        // NORMAL: a power cut may lose the last commits but never corrupts
        // the file; the queue redelivers whatever was not acknowledged.
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::Other(format!("SQLite refused WAL mode (got {mode})").into()));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    }
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
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

/// Ledger and job store in one SQLite database; also hands out the queues
/// that live in the same database ([`SqliteStore::queue`]).
///
/// Cheap to clone: clones share the connection and the request counter.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    requests: Arc<AtomicU64>,
    /// What the same writes would cost on DynamoDB ([`crate::domain::capacity`]).
    write_units: WriteMeter,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, its parent
    /// directories and the schema.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Backend {
                operation: "open",
                source: Box::new(e),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| Failure::from(e).into_store("open"))?;
        prepare(&conn, true).map_err(|e| e.into_store("open"))?;
        Ok(Self::with_connection(conn))
    }

    /// A private in-memory database (for tests): gone when the last clone of
    /// the store and its queues drops.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| Failure::from(e).into_store("open"))?;
        prepare(&conn, false).map_err(|e| e.into_store("open"))?;
        Ok(Self::with_connection(conn))
    }

    fn with_connection(conn: Connection) -> Self {
        SqliteStore {
            db: Arc::new(Mutex::new(conn)),
            requests: Arc::new(AtomicU64::new(0)),
            write_units: WriteMeter::new(),
        }
    }

    /// The queue called `name` in this database, with SQS semantics.
    /// `redrive = Some((max_receive_count, dlq_name))` moves a message to the
    /// queue `dlq_name` instead of delivering it once it has been received
    /// `max_receive_count` times. Queues need no creation: a name is enough.
    pub fn queue(&self, name: &str, visibility_timeout: Duration, redrive: Option<(u32, String)>) -> SqliteQueue {
        SqliteQueue {
            db: Arc::clone(&self.db),
            name: name.into(),
            visibility_timeout,
            redrive: redrive.map(|(max, dlq)| (max, dlq.into())),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Port calls made to this store (and its clones) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The write requests and units the same writes make on DynamoDB,
    /// charged as the DynamoDB adapter charges them (for like-for-like
    /// benchmarks; [`SqliteStore::requests`] counts port calls instead).
    pub fn write_cost(&self) -> WriteCost {
        self.write_units.cost()
    }

    /// Accruals settled over all jobs: the sum of `applied + duplicate +
    /// failed`. Cheap (one row per job), for progress reporting.
    ///
    /// This and the other inspection methods below block on the connection:
    /// call them from a plain thread or `spawn_blocking` when the store is busy.
    pub fn applied_total(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.db);
        let sql = "SELECT COALESCE(SUM(applied + duplicate + failed + refused), 0) FROM jobs";
        sql_count(&conn, sql, []).map_err(|e| e.into_store("applied_total"))
    }

    /// Ledger entries (credited accruals). Cheap: one index probe, as the
    /// ledger is append-only (`COUNT(*)` would scan a million rows).
    pub fn ledger_len(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.db);
        sql_count(&conn, "SELECT COALESCE(MAX(id), 0) FROM ledger", []).map_err(|e| e.into_store("ledger_len"))
    }

    /// Messages held by the queue called `queue`, visible or in flight.
    pub fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        let conn = lock(&self.db);
        sql_count(&conn, "SELECT COUNT(*) FROM queue_messages WHERE queue = ?1", [queue])
            .map_err(|e| e.into_store("queue_depth"))
    }

    /// Every balance as `(member_id, point_type, balance)`, sorted by member
    /// then point type: one query for a verifier.
    pub fn all_balances(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let conn = lock(&self.db);
        let read = || -> Result<Vec<(String, String, u64)>, Failure> {
            let mut statement = conn
                .prepare_cached("SELECT member_id, point_type, balance FROM balances ORDER BY member_id, point_type")?;
            let mut rows = statement.query([])?;
            let mut all = Vec::new();
            while let Some(row) = rows.next()? {
                let (member, point_type): (String, String) = (row.get(0)?, row.get(1)?);
                let balance = to_u64(row.get(2)?, || format!("balance {member}/{point_type}"), "balance")?;
                all.push((member, point_type, balance));
            }
            Ok(all)
        };
        read().map_err(|e| e.into_store("all_balances"))
    }

    async fn run<T, F>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.requests.fetch_add(1, Ordering::Relaxed);
        run_blocking(&self.db, f).await.map_err(|e| e.into_store(operation))
    }
}

#[async_trait]
impl Credits for SqliteStore {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let transactions = plan_transactions(accruals);
        self.write_units.charge_ledger(
            transactions.len() as u64,
            transactions
                .iter()
                .map(|chunk| ledger_transaction_units(by, chunk, sum_by_balance(chunk).len()))
                .sum(),
        );
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
    async fn apply_use(&self, u: &Use, now: OffsetDateTime) -> Result<UseOutcome, StoreError> {
        // As DynamoDB: one transaction of a put and a balance update.
        self.write_units.charge_ledger(
            1,
            indexed_write_units(use_entry_bytes(u), WriteKind::Transactional)
                + write_units(0, WriteKind::Transactional),
        );
        let u = u.clone();
        self.run("apply_use", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(record) = read_use(&tx, &u.use_id)? {
                return Ok(if record.matches(&u) {
                    UseOutcome::Replayed(record)
                } else {
                    UseOutcome::IdReused(record)
                });
            }
            let sheet = read_sheets(&tx, &u.member_id, Some(&u.point_type))?.pop();
            let plan = match sheet.map(|sheet| sheet.plan_use(u.amount, now)) {
                Some(Ok(plan)) => plan,
                Some(Err(available)) => return Ok(UseOutcome::Insufficient { available }),
                None => return Ok(UseOutcome::Insufficient { available: 0 }),
            };
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
            tx.prepare_cached(
                "UPDATE balances SET used = used + ?3, updated_at = ?4 WHERE member_id = ?1 AND point_type = ?2",
            )?
            .execute(params![u.member_id, u.point_type, amount, unix_millis(now)])?;
            tx.prepare_cached(
                "INSERT INTO uses (use_id, member_id, point_type, amount, reason, applied_at, consumed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.use_id,
                u.member_id,
                u.point_type,
                amount,
                u.reason,
                rfc3339(now)?,
                serde_json::Value::Object(consumed).to_string()
            ])?;
            let record = UseRecord::of(&u, now);
            insert_history(
                &mut tx.prepare_cached(INSERT_HISTORY)?,
                &u.member_id,
                &HistoryEntry::use_of(&record),
            )?;
            tx.commit()?;
            Ok(UseOutcome::Applied(record))
        })
        .await
    }

    async fn reverse(&self, target: &ReversalTarget, now: OffsetDateTime) -> Result<ReversalOutcome, StoreError> {
        // As DynamoDB: one transaction updating the entry and the balance.
        // …and the reversal's own history entry.
        self.write_units.charge_ledger(
            1,
            2 * write_units(0, WriteKind::Transactional) + indexed_write_units(0, WriteKind::Transactional),
        );
        let target = target.clone();
        self.run("reverse", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let kind = target.kind();
            let sql = match kind {
                ReversalKind::Accrual => {
                    "SELECT member_id, point_type, amount, lot, reversed_at, job_id, seq FROM ledger WHERE accrual_id = ?1"
                }
                ReversalKind::Use => {
                    "SELECT member_id, point_type, amount, consumed, reversed_at, NULL, NULL FROM uses WHERE use_id = ?1"
                }
            };
            let id = target.id().to_owned();
            type Row = (String, String, i64, Option<String>, Option<String>, Option<String>, Option<i64>);
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
                    ))
                })
                .optional()?;
            let Some((member_id, point_type, amount, lot_or_consumed, reversed_at, job, seq)) = row else {
                return Ok(ReversalOutcome::NotFound);
            };
            if let ReversalTarget::CreditBy { by, .. } = &target {
                if job.as_deref() != Some(by.job_id.to_string().as_str()) || seq != Some(i64::from(by.seq)) {
                    return Ok(ReversalOutcome::NotFound);
                }
            }
            let key = || format!("{kind:?} {id}");
            let record = |at: OffsetDateTime| -> Result<ReversalRecord, Failure> {
                Ok(ReversalRecord {
                    kind,
                    id: id.clone(),
                    member_id: member_id.clone(),
                    point_type: point_type.clone(),
                    amount: to_u64(amount, key, "amount")?,
                    reversed_at: at,
                })
            };
            if let Some(at) = reversed_at {
                let at = OffsetDateTime::parse(&at, &Rfc3339).map_err(|_| Failure::Corrupt {
                    key: key(),
                    detail: format!("reversed_at is not an RFC 3339 time: {at}"),
                })?;
                return Ok(ReversalOutcome::Replayed(record(at)?));
            }
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
                    tx.prepare_cached("UPDATE ledger SET reversed_at = ?2 WHERE accrual_id = ?1")?
                        .execute(params![id, rfc3339(now)?])?;
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
                    tx.prepare_cached("UPDATE uses SET reversed_at = ?2 WHERE use_id = ?1")?
                        .execute(params![id, rfc3339(now)?])?;
                }
            }
            let reversed = record(now)?;
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
}

/// The naive baseline's writes: each its own SQLite transaction (autocommit),
/// as a conditional `PutItem` and an `UpdateItem` are on DynamoDB.
#[cfg(feature = "testkit")]
#[async_trait]
impl SingleWrites for SqliteStore {
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError> {
        let units = write_units(ledger_entry_bytes(accrual, by), WriteKind::Standard);
        self.write_units.charge_ledger(1, units);
        let a = accrual.clone();
        let inserted = self
            .run("put_entry", move |conn| {
                let amount = to_i64(a.amount, "amount")?;
                let inserted = conn.prepare_cached(INSERT_LEDGER_ENTRY)?.execute(params![
                    a.accrual_id,
                    by.job_id.to_string(),
                    i64::from(by.seq),
                    a.member_id,
                    a.point_type,
                    amount,
                    a.reason,
                    unix_millis(now),
                    lot_column(&a)
                ])?;
                Ok(inserted == 1)
            })
            .await?;
        if inserted {
            // As on DynamoDB: a failed condition writes no index entry.
            self.write_units.charge_ledger(0, units);
        }
        Ok(inserted)
    }

    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError> {
        self.write_units.charge_ledger(1, SMALL_WRITE_UNITS);
        let (member_id, point_type, amount) = (accrual.member_id.clone(), accrual.point_type.clone(), accrual.amount);
        self.run("add_to_balance", move |conn| {
            conn.prepare_cached(
                "INSERT INTO balances (member_id, point_type, balance, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (member_id, point_type)
                 DO UPDATE SET balance = balance + excluded.balance, updated_at = excluded.updated_at",
            )?
            .execute(params![
                member_id,
                point_type,
                to_i64(amount, "amount")?,
                unix_millis(now)
            ])?;
            Ok(())
        })
        .await
    }
}

/// Records a ledger entry unless its accrual id was credited before.
const INSERT_LEDGER_ENTRY: &str =
    "INSERT INTO ledger (accrual_id, job_id, seq, member_id, point_type, amount, reason, applied_at, lot)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (accrual_id) DO NOTHING";

/// Records a history entry; a second write of the same entry is a no-op.
const INSERT_HISTORY: &str = "INSERT INTO history (member_id, sort_key, point_type, entry) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (member_id, sort_key) DO NOTHING";

fn insert_history(
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

fn from_unix_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn parse_rfc3339(text: &str, key: impl FnOnce() -> String) -> Result<OffsetDateTime, Failure> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| Failure::Corrupt {
        key: key(),
        detail: format!("not an RFC 3339 time: {text}"),
    })
}

/// The `lot` column of an accrual's entry: `NULL` for the plain lot.
fn lot_column(a: &Accrual) -> Option<String> {
    let lot = a.lot();
    (!lot.is_plain()).then(|| lot.attribute())
}

/// Takes `amount` out of a lot (the plain one when `lot` is `None`) if it
/// holds that much; returns whether it did.
fn take_from_lot(
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
fn read_sheets(conn: &Connection, member_id: &str, point_type: Option<&str>) -> Result<Vec<BalanceSheet>, Failure> {
    let key = |pt: &str| format!("balance {member_id}/{pt}");
    let mut sheets = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT point_type, balance, earned, used FROM balances
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

fn read_use(conn: &Connection, use_id: &str) -> Result<Option<UseRecord>, Failure> {
    let mut statement =
        conn.prepare_cached("SELECT member_id, point_type, amount, reason, applied_at FROM uses WHERE use_id = ?1")?;
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
    }))
}

fn job_exists(conn: &Connection, job_id: &str) -> Result<bool, Failure> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn read_job(conn: &Connection, job_id: &str) -> Result<Option<Job>, Failure> {
    let mut statement = conn.prepare_cached(
        "SELECT request_hash, total, deduplicated, messages, created_at, enqueued, applied, duplicate, failed,
                completed_at, source, reading, rejected, error, refused,
                cancel_requested_at, cancel_reversed, cancel_spent, cancel_skipped, cancel_messages, cancel_completed_at
         FROM jobs WHERE job_id = ?1",
    )?;
    let mut rows = statement.query([job_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let key = || format!("job {job_id}");
    let corrupt = |detail: String| Failure::Corrupt { key: key(), detail };
    let time = |text: &str, what: &str| {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|_| corrupt(format!("{what} is not an RFC 3339 time: {text}")))
    };
    let created_at: String = row.get(4)?;
    let completed_at: Option<String> = row.get(9)?;
    Ok(Some(Job {
        job_id: job_id.parse().map_err(|_| corrupt("job_id is not a UUID".to_owned()))?,
        request_hash: row.get(0)?,
        total: to_u64(row.get(1)?, key, "total")?,
        deduplicated: to_u64(row.get(2)?, key, "deduplicated")?,
        messages: to_u64(row.get(3)?, key, "messages")?,
        source: row.get(10)?,
        created_at: time(&created_at, "created_at")?,
        enqueued: row.get::<_, i64>(5)? != 0,
        reading: row.get::<_, i64>(11)? != 0,
        rejected: to_u64(row.get(12)?, key, "rejected")?,
        error: row.get(13)?,
        applied: to_u64(row.get(6)?, key, "applied")?,
        duplicate: to_u64(row.get(7)?, key, "duplicate")?,
        failed: to_u64(row.get(8)?, key, "failed")?,
        refused: to_u64(row.get(14)?, key, "refused")?,
        completed_at: completed_at.map(|t| time(&t, "completed_at")).transpose()?,
        cancel: match row.get::<_, Option<String>>(15)? {
            None => None,
            Some(requested_at) => Some(CancelProgress {
                requested_at: time(&requested_at, "cancel_requested_at")?,
                counts: CancelCounts {
                    reversed: to_u64(row.get(16)?, key, "cancel_reversed")?,
                    spent: to_u64(row.get(17)?, key, "cancel_spent")?,
                    skipped: to_u64(row.get(18)?, key, "cancel_skipped")?,
                },
                messages: to_u64(row.get(19)?, key, "cancel_messages")?,
                completed_at: row
                    .get::<_, Option<String>>(20)?
                    .map(|t| time(&t, "cancel_completed_at"))
                    .transpose()?,
            }),
        },
    }))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        let job = job.clone();
        self.write_units.charge_jobs(1, SMALL_WRITE_UNITS);
        self.run("create_job", move |conn| {
            let id = job.job_id.to_string();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO jobs (job_id, request_hash, total, deduplicated, messages, created_at, source, reading)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (job_id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    job.request_hash,
                    to_i64(job.total, "total")?,
                    to_i64(job.deduplicated, "deduplicated")?,
                    to_i64(job.messages, "messages")?,
                    rfc3339(job.created_at)?,
                    job.source,
                    job.reading,
                ])?;
            let result = if inserted == 1 {
                CreateJob::Created(Job::from_new(&job))
            } else {
                let existing = read_job(&tx, &id)?.ok_or_else(|| Failure::Corrupt {
                    key: format!("job {id}"),
                    detail: "insert conflicted but the job cannot be read".to_owned(),
                })?;
                CreateJob::Existing(existing)
            };
            tx.commit()?;
            Ok(result)
        })
        .await
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.write_units.charge_jobs(1, SMALL_WRITE_UNITS);
        self.run("mark_enqueued", move |conn| {
            // Like the in-memory store, an unknown job is left alone.
            conn.prepare_cached("UPDATE jobs SET enqueued = 1 WHERE job_id = ?1")?
                .execute([job_id.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.run("get_job", move |conn| read_job(conn, &job_id.to_string()))
            .await
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // The marker-and-job transaction, then the completion check.
        let items = items.join("\n");
        self.write_units
            .charge_jobs(2, fold_units(items.len() + 1) + SMALL_WRITE_UNITS);
        self.run("fold_message", move |conn| {
            let id = job_id.to_string();
            let (applied, duplicate, failed, refused) = (
                to_i64(counts.applied, "applied")?,
                to_i64(counts.duplicate, "duplicate")?,
                to_i64(counts.failed, "failed")?,
                to_i64(counts.refused, "refused")?,
            );
            let now = rfc3339(now)?;
            // One transaction: marker, counts and completion land together,
            // so unlike DynamoDB a redelivery never has to finish the stamp.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !job_exists(&tx, &id)? {
                tracing::warn!(%job_id, seq, "message of an unknown job: counts not recorded");
                return Ok(false);
            }
            let marked = tx
                .prepare_cached(
                    "INSERT INTO folded (job_id, seq, applied, duplicate, failed, folded_at, refused, items)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (job_id, seq) DO NOTHING",
                )?
                .execute(params![id, seq, applied, duplicate, failed, now, refused, items])?;
            if marked == 0 {
                // Counted failed before, applied now (a DLQ redrive): move the
                // counts, once (the marker then says failed = 0).
                let resettled = failed == 0
                    && tx
                        .prepare_cached(
                            "UPDATE folded SET applied = ?3, duplicate = ?4, refused = ?6, failed = 0, folded_at = ?5
                             WHERE job_id = ?1 AND seq = ?2 AND failed > 0 AND failed = ?3 + ?4 + ?6",
                        )?
                        .execute(params![id, seq, applied, duplicate, now, refused])?
                        == 1;
                if resettled {
                    tx.prepare_cached(
                        "UPDATE jobs SET failed = failed - ?2 - ?3 - ?4, applied = applied + ?2,
                             duplicate = duplicate + ?3, refused = refused + ?4
                         WHERE job_id = ?1",
                    )?
                    .execute(params![id, applied, duplicate, refused])?;
                    tx.commit()?;
                }
                return Ok(resettled);
            }
            // SET expressions see the row as it was before the update.
            tx.prepare_cached(
                "UPDATE jobs SET
                     applied = applied + ?2,
                     duplicate = duplicate + ?3,
                     failed = failed + ?4,
                     refused = refused + ?6,
                     completed_at = CASE
                         WHEN completed_at IS NULL AND reading = 0
                              AND applied + ?2 + duplicate + ?3 + failed + ?4 + refused + ?6 >= total THEN ?5
                         ELSE completed_at
                     END
                 WHERE job_id = ?1",
            )?
            .execute(params![id, applied, duplicate, failed, now, refused])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        let chunk = chunk.clone();
        // The marker-and-job transaction, then (last chunk) the completion check.
        let last = u64::from(chunk.is_final());
        self.write_units
            .charge_jobs(1 + last, MARKER_AND_UPDATE_UNITS + last * SMALL_WRITE_UNITS);
        self.run("record_chunk", move |conn| {
            let id = job_id.to_string();
            let now = rfc3339(now)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !job_exists(&tx, &id)? {
                tracing::warn!(%job_id, chunk = chunk.index, "chunk of an unknown job: counts not recorded");
                return Ok(false);
            }
            let marked = tx
                .prepare_cached(
                    "INSERT INTO chunks (job_id, chunk, recorded_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (job_id, chunk) DO NOTHING",
                )?
                .execute(params![id, chunk.index, now])?;
            if marked == 0 {
                return Ok(false);
            }
            let final_chunk = chunk.is_final();
            tx.prepare_cached(
                "UPDATE jobs SET
                     total = total + ?2,
                     deduplicated = deduplicated + ?3,
                     rejected = rejected + ?4,
                     messages = messages + ?5,
                     reading = CASE WHEN ?6 THEN 0 ELSE reading END,
                     enqueued = CASE WHEN ?6 THEN 1 ELSE enqueued END,
                     error = COALESCE(?7, error)
                 WHERE job_id = ?1",
            )?
            .execute(params![
                id,
                to_i64(chunk.accepted, "accepted")?,
                to_i64(chunk.deduplicated, "deduplicated")?,
                to_i64(chunk.rejected, "rejected")?,
                to_i64(chunk.messages, "messages")?,
                final_chunk,
                chunk.failure(),
            ])?;
            tx.prepare_cached(
                "UPDATE jobs SET completed_at = ?2
                 WHERE job_id = ?1 AND completed_at IS NULL AND reading = 0
                       AND applied + duplicate + failed + refused >= total",
            )?
            .execute(params![id, now])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.run("chunk_recorded", move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM chunks WHERE job_id = ?1 AND chunk = ?2")?
                .query_row(params![job_id.to_string(), index], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn begin_cancel(&self, job_id: JobId, now: OffsetDateTime) -> Result<Option<Job>, StoreError> {
        self.write_units.charge_jobs(1, SMALL_WRITE_UNITS);
        self.run("begin_cancel", move |conn| {
            let id = job_id.to_string();
            conn.prepare_cached(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2) WHERE job_id = ?1",
            )?
            .execute(params![id, rfc3339(now)?])?;
            read_job(conn, &id)
        })
        .await
    }

    async fn folded_items(&self, job_id: JobId, seq: u32) -> Result<Option<FoldedItems>, StoreError> {
        self.run("folded_items", move |conn| {
            Ok(conn
                .prepare_cached("SELECT items, cancelled_at IS NOT NULL FROM folded WHERE job_id = ?1 AND seq = ?2")?
                .query_row(params![job_id.to_string(), seq], |row| {
                    let items: String = row.get(0)?;
                    Ok(FoldedItems {
                        items: items
                            .split('\n')
                            .filter(|id| !id.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        cancelled: row.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // As DynamoDB: the marker-and-job transaction, then the completion stamp.
        self.write_units
            .charge_jobs(2, MARKER_AND_UPDATE_UNITS + SMALL_WRITE_UNITS);
        self.run("record_cancelled", move |conn| {
            let id = job_id.to_string();
            let now = rfc3339(now)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cancelling = tx
                .prepare_cached("SELECT 1 FROM jobs WHERE job_id = ?1 AND cancel_requested_at IS NOT NULL")?
                .query_row([&id], |_| Ok(()))
                .optional()?
                .is_some();
            let marked = cancelling
                && tx
                    .prepare_cached(
                        "UPDATE folded SET cancelled_at = ?3 WHERE job_id = ?1 AND seq = ?2 AND cancelled_at IS NULL",
                    )?
                    .execute(params![id, seq, now])?
                    == 1;
            if !marked {
                return Ok(false);
            }
            tx.prepare_cached(
                "UPDATE jobs SET
                     cancel_reversed = cancel_reversed + ?2,
                     cancel_spent = cancel_spent + ?3,
                     cancel_skipped = cancel_skipped + ?4,
                     cancel_messages = cancel_messages + 1,
                     cancel_completed_at = CASE
                         WHEN cancel_completed_at IS NULL AND cancel_messages + 1 >= messages THEN ?5
                         ELSE cancel_completed_at
                     END
                 WHERE job_id = ?1",
            )?
            .execute(params![
                id,
                to_i64(counts.reversed, "reversed")?,
                to_i64(counts.spent, "spent")?,
                to_i64(counts.skipped, "skipped")?,
                now
            ])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

/// A named queue in a [`SqliteStore`]'s database, with SQS semantics:
/// at-least-once delivery, a visibility timeout, redrive to a dead-letter
/// queue. Visibility is wall-clock time, so after a restart an undeleted
/// in-flight message reappears once its timeout has passed.
///
/// Cheap to clone: clones share the connection and the request counter.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: Db,
    name: Arc<str>,
    visibility_timeout: Duration,
    /// `(max_receive_count, dead-letter queue name)`.
    redrive: Option<(u32, Arc<str>)>,
    requests: Arc<AtomicU64>,
}

impl SqliteQueue {
    /// The queue's name in the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn count(&self, requests: usize) {
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
    }

    async fn run<T, F>(&self, operation: &'static str, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        run_blocking(&self.db, f).await.map_err(|e| e.into_queue(operation))
    }

    /// Delivers up to `max` visible messages, moving those out of receives to
    /// the dead-letter queue on the way.
    async fn take_visible(&self, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        let queue = Arc::clone(&self.name);
        let redrive = self.redrive.clone();
        let hidden_for = duration_millis(self.visibility_timeout);
        self.run("receive_messages", move |conn| {
            let now = wall_millis();
            let invisible_until = now.saturating_add(hidden_for);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut received: Vec<ReceivedMessage> = Vec::new();
            {
                let mut select = tx.prepare_cached(
                    "SELECT id, body, receive_count FROM queue_messages
                     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY id LIMIT ?3",
                )?;
                let mut deliver = tx.prepare_cached(
                    "UPDATE queue_messages SET receive_count = ?2, visible_at = ?3, receipt_handle = ?4 WHERE id = ?1",
                )?;
                let mut dead_letter = tx.prepare_cached(
                    "UPDATE queue_messages SET queue = ?2, receive_count = 0, visible_at = ?3, receipt_handle = NULL
                     WHERE id = ?1",
                )?;
                loop {
                    let wanted = max - received.len();
                    if wanted == 0 {
                        break;
                    }
                    let candidates = select
                        .query_map(params![&*queue, now, to_i64(wanted as u64, "max")?], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut redriven = 0;
                    for (id, body, receive_count) in candidates {
                        let receive_count = u32::try_from(receive_count).map_err(|_| Failure::Corrupt {
                            key: format!("message {id}"),
                            detail: format!("receive_count out of range: {receive_count}"),
                        })?;
                        // With a zero visibility timeout a message delivered
                        // by an earlier pass is visible again: once per call.
                        if received.iter().any(|m| m.message_id == message_id(id)) {
                            continue;
                        }
                        if let Some((max_receives, dlq)) = &redrive {
                            if receive_count >= *max_receives {
                                dead_letter.execute(params![id, &**dlq, now])?;
                                redriven += 1;
                                continue;
                            }
                        }
                        let receive_count = receive_count + 1;
                        // The nonce makes every delivery's handle unique, so a
                        // stale handle (also one from before a restart, or
                        // from the source queue of a dead-lettered message)
                        // never deletes a later delivery.
                        let receipt_handle = format!("{id}:{receive_count}:{:016x}", fastrand::u64(..));
                        deliver.execute(params![id, receive_count, invisible_until, receipt_handle])?;
                        received.push(ReceivedMessage {
                            message_id: message_id(id),
                            receipt_handle,
                            body,
                            receive_count,
                        });
                    }
                    // Without redrives the select already returned every
                    // visible message that fits; with some, look again to
                    // fill their places.
                    if redriven == 0 {
                        break;
                    }
                }
            }
            tx.commit()?;
            Ok(received)
        })
        .await
    }
}

fn message_id(id: i64) -> String {
    format!("sqlite-{id:012}")
}

#[async_trait]
impl WorkQueue for SqliteQueue {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        // Counted like SQS: one SendMessageBatch per 10 messages.
        self.count(bodies.len().div_ceil(BATCH));
        let bodies = bodies.to_vec();
        let queue = Arc::clone(&self.name);
        self.run("send_messages", move |conn| {
            let now = wall_millis();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO queue_messages (queue, body, visible_at, sent_at) VALUES (?1, ?2, ?3, ?3)",
                )?;
                for body in &bodies {
                    insert.execute(params![&*queue, body, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.count(1);
        let deadline = Instant::now() + wait;
        loop {
            let received = self.take_visible(max.min(BATCH)).await?;
            if !received.is_empty() || Instant::now() >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.count(receipt_handles.len().div_ceil(BATCH));
        // The handle starts with the row id: delete by primary key, checking
        // the whole handle so only the current delivery counts.
        let targets: Vec<(i64, String)> = receipt_handles
            .iter()
            .filter_map(|handle| {
                let id = handle.split(':').next()?.parse().ok()?;
                Some((id, handle.clone()))
            })
            .collect();
        let queue = Arc::clone(&self.name);
        self.run("delete_messages", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM queue_messages WHERE id = ?1 AND queue = ?2 AND receipt_handle = ?3",
                )?;
                for (id, handle) in &targets {
                    delete.execute(params![id, &*queue, handle])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.count(receipt_handles.len().div_ceil(BATCH));
        let handles = receipt_handles.to_vec();
        let queue = Arc::clone(&self.name);
        self.run("release_messages", move |conn| {
            let now = wall_millis();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut release = tx.prepare_cached(
                    "UPDATE queue_messages SET visible_at = ?3 WHERE queue = ?1 AND receipt_handle = ?2",
                )?;
                for handle in &handles {
                    release.execute(params![&*queue, handle, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A unique directory under the system temp dir, removed on drop (also
    /// when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            TempDir(std::env::temp_dir().join(format!("pointflow-sqlite-{}", uuid::Uuid::new_v4().simple())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

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

    fn accrual(id: &str, member: &str, point_type: &str, amount: u64) -> Accrual {
        Accrual {
            accrual_id: id.into(),
            member_id: member.into(),
            point_type: point_type.into(),
            amount,
            reason: None,
            apply_at: None,
            expires_at: None,
        }
    }

    fn new_job(total: u64) -> NewJob {
        NewJob {
            job_id: JobId::random(),
            request_hash: "hash".into(),
            total,
            deduplicated: 0,
            messages: 1,
            source: Some("s3://bucket/imports/a.csv".into()),
            reading: false,
            // Sub-millisecond precision and an offset: must read back exactly.
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_790_000_000_123_456_789)
                .unwrap()
                .to_offset(time::macros::offset!(+2)),
        }
    }

    const VISIBILITY: Duration = Duration::from_millis(300);

    fn queues(store: &SqliteStore) -> (SqliteQueue, SqliteQueue) {
        (
            store.queue("accruals", VISIBILITY, Some((2, "accruals-dlq".into()))),
            store.queue("accruals-dlq", VISIBILITY, None),
        )
    }

    #[tokio::test]
    async fn file_backed_store_survives_a_restart() {
        let dir = TempDir::new();
        // A nested path: `open` creates the parents.
        let path = dir.0.join("data").join("pointflow.db");
        let job = new_job(2);
        let created = {
            let store = SqliteStore::open(&path).unwrap();
            let (queue, _) = queues(&store);
            let created = match store.create_job(&job).await.unwrap() {
                CreateJob::Created(j) => j,
                other => panic!("expected Created, got {other:?}"),
            };
            store.mark_enqueued(job.job_id).await.unwrap();
            let batch = [accrual("r-1", "m1", "P", 10), accrual("r-2", "m1", "Q", 5)];
            let outcome = store
                .apply_accruals(
                    MessageRef {
                        job_id: job.job_id,
                        seq: 0,
                    },
                    &batch,
                    OffsetDateTime::now_utc(),
                )
                .await
                .unwrap();
            assert_eq!(outcome.applied, 2);
            queue
                .send_messages(&["one".to_owned(), "two".to_owned()])
                .await
                .unwrap();
            assert_eq!(store.requests(), 3);
            assert_eq!(queue.requests(), 1);
            created
        };
        let store = SqliteStore::open(&path).unwrap();
        let (queue, _) = queues(&store);
        let mut expected = created;
        expected.enqueued = true;
        assert_eq!(store.get_job(job.job_id).await.unwrap(), Some(expected.clone()));
        assert_eq!(
            store.get_job(job.job_id).await.unwrap().unwrap().created_at,
            job.created_at
        );
        assert_eq!(store.ledger_len().unwrap(), 2);
        assert_eq!(
            store.all_balances().unwrap(),
            [
                ("m1".to_owned(), "P".to_owned(), 10),
                ("m1".to_owned(), "Q".to_owned(), 5)
            ]
        );
        // The ledger remembers: a replay by the same job is not credited again.
        let replay = store
            .apply_accruals(
                MessageRef {
                    job_id: job.job_id,
                    seq: 0,
                },
                &[accrual("r-1", "m1", "P", 10)],
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        assert_eq!((replay.applied, replay.replayed), (1, 1));
        assert_eq!(store.balances("m1").await.unwrap()[0].balance, 10);
        assert_eq!(store.queue_depth("accruals").unwrap(), 2);
        let got = queue.receive_messages(10, Duration::ZERO).await.unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two"]);
        // Completion survives too.
        let counts = MessageCounts {
            applied: 2,
            ..MessageCounts::default()
        };
        assert!(store
            .fold_message(job.job_id, 0, counts, &[], OffsetDateTime::now_utc())
            .await
            .unwrap());
        assert_eq!(store.applied_total().unwrap(), 2);
        drop((store, queue));
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.get_job(job.job_id).await.unwrap().unwrap().completed_at.is_some());
        assert!(!store
            .fold_message(job.job_id, 0, counts, &[], OffsetDateTime::now_utc())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn in_flight_message_reappears_after_a_restart() {
        let dir = TempDir::new();
        let path = dir.0.join("pointflow.db");
        let stale_handle = {
            let store = SqliteStore::open(&path).unwrap();
            let (queue, _) = queues(&store);
            queue.send_messages(&["in flight".to_owned()]).await.unwrap();
            let got = queue.receive_messages(10, Duration::ZERO).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].receive_count, 1);
            got[0].receipt_handle.clone()
            // Dropped without deleting: the process "died" mid-message.
        };
        let store = SqliteStore::open(&path).unwrap();
        let (queue, _) = queues(&store);
        // Still invisible right after the restart…
        assert_eq!(queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
        // …and back once the visibility timeout has passed.
        let got = queue
            .receive_messages(10, VISIBILITY + Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "in flight");
        assert_eq!(got[0].receive_count, 2);
        // The pre-restart handle no longer deletes anything; the fresh one does.
        queue.delete_messages(&[stale_handle]).await.unwrap();
        assert_eq!(store.queue_depth("accruals").unwrap(), 1);
        queue.delete_messages(&[got[0].receipt_handle.clone()]).await.unwrap();
        assert_eq!(store.queue_depth("accruals").unwrap(), 0);
    }

    #[tokio::test]
    async fn dead_lettered_message_keeps_its_id_and_restarts_its_count() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = store.queue("q", Duration::ZERO, Some((1, "q-dlq".into())));
        let dlq = store.queue("q-dlq", Duration::from_secs(60), None);
        queue.send_messages(&["poison".to_owned()]).await.unwrap();
        let first = queue.receive_messages(10, Duration::ZERO).await.unwrap();
        // A zero visibility timeout delivers a message once per call.
        assert_eq!(first.len(), 1);
        assert_eq!(queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
        assert_eq!(store.queue_depth("q").unwrap(), 0);
        let dead = dlq.receive_messages(10, Duration::ZERO).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].message_id.as_str(), dead[0].receive_count),
            (first[0].message_id.as_str(), 1)
        );
        // The source queue's handle does not delete the dead letter.
        dlq.delete_messages(&[first[0].receipt_handle.clone()]).await.unwrap();
        assert_eq!(store.queue_depth("q-dlq").unwrap(), 1);
        assert_eq!((queue.requests(), dlq.requests()), (3, 2));
    }

    #[tokio::test]
    async fn receive_caps_at_ten_in_send_order() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = store.queue("q", Duration::from_secs(60), None);
        let bodies: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        queue.send_messages(&bodies).await.unwrap();
        assert_eq!(queue.requests(), 3);
        let got = queue.receive_messages(50, Duration::ZERO).await.unwrap();
        let got: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(got, bodies[..10].iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Throughput of the apply path, not a test: 1,000,000 accruals (500,000
    /// members × 2 point types), 500 per call, on an in-memory and a
    /// file-backed store; with random UUID ids (what derived ids are) and with
    /// ids that share a prefix per job (sorted, so inserts stay local).
    /// `cargo test -p pointflow-shared --release sqlite::tests::apply_throughput -- --ignored --nocapture`
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
