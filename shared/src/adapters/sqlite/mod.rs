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
//!
//! Files: this one holds the store (connection, opening, counters, the
//! inspection methods); `schema.rs` the schema and its migrations;
//! `leases.rs` the runner lock and the release of a gone runner's leases;
//! `ledger.rs` the ledger ports; `jobs.rs` the job store; `queue.rs` the
//! queues; `baseline.rs` the naive baseline's single writes (`testkit`).
//!
//! The store charges no DynamoDB write units itself: wrap it in
//! [`crate::adapters::metered::Metered`] to count what the same writes would
//! cost there ([`crate::backend::sqlite::ports`] does).

#[cfg(feature = "testkit")]
mod baseline;
mod jobs;
mod leases;
mod ledger;
mod queue;
mod schema;
mod uses;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::ports::{BoxError, QueueError, StoreError};

pub use leases::RunnerLock;
pub use queue::SqliteQueue;

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

fn from_unix_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn parse_rfc3339(text: &str, key: impl FnOnce() -> String) -> Result<OffsetDateTime, Failure> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| Failure::Corrupt {
        key: key(),
        detail: format!("not an RFC 3339 time: {text}"),
    })
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
    schema::migrate(conn)
}

/// Ledger and job store in one SQLite database; also hands out the queues
/// that live in the same database ([`SqliteStore::queue`]).
///
/// Cheap to clone: clones share the connection and the request counter.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    requests: Arc<AtomicU64>,
    /// Signalled whenever a message may have become visible in any of this
    /// store's queues (send, release): waiting receivers wake on it instead
    /// of polling.
    wake: Arc<Notify>,
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
            wake: Arc::new(Notify::new()),
        }
    }

    /// The queue called `name` in this database, with SQS semantics.
    /// `redrive = Some((max_receive_count, dlq_name))` moves a message to the
    /// queue `dlq_name` instead of delivering it once it has been received
    /// `max_receive_count` times. Queues need no creation: a name is enough.
    pub fn queue(&self, name: &str, visibility_timeout: Duration, redrive: Option<(u32, String)>) -> SqliteQueue {
        SqliteQueue::new(
            Arc::clone(&self.db),
            Arc::clone(&self.wake),
            name,
            visibility_timeout,
            redrive,
        )
    }

    /// Port calls made to this store (and its clones) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
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
        let mut all = Vec::new();
        self.for_each_balance(|member, point_type, balance| {
            all.push((member.to_owned(), point_type.to_owned(), balance));
        })?;
        Ok(all)
    }

    /// Calls `f` with every balance, sorted by member then point type, in one
    /// query and without holding them all: a million-member verifier stays
    /// within a few kilobytes.
    pub fn for_each_balance(&self, mut f: impl FnMut(&str, &str, u64)) -> Result<(), StoreError> {
        let conn = lock(&self.db);
        let mut read = || -> Result<(), Failure> {
            let mut statement = conn
                .prepare_cached("SELECT member_id, point_type, balance FROM balances ORDER BY member_id, point_type")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let text = |i: usize| row.get_ref(i).and_then(|v| v.as_str().map_err(rusqlite::Error::from));
                let (member, point_type) = (text(0)?, text(1)?);
                let balance = to_u64(row.get(2)?, || format!("balance {member}/{point_type}"), "balance")?;
                f(member, point_type, balance);
            }
            Ok(())
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

#[cfg(test)]
mod test_support {
    use std::path::PathBuf;

    /// A unique directory under the system temp dir, removed on drop (also
    /// when the test fails).
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            TempDir(std::env::temp_dir().join(format!("pointflow-sqlite-{}", uuid::Uuid::new_v4().simple())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::test_support::TempDir;
    use super::*;
    use crate::domain::{Accrual, JobId, MessageCounts, MessageRef, NewJob};
    use crate::ports::{CreateJob, Credits, JobStore, LedgerReads, WorkQueue};

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
            audit: Some(crate::domain::audit::Audit::local(Some("127.0.0.1:5555".into()))),
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
}
