//! Leases a stopped runner left behind: the embedded runner owns its
//! database, so messages a killed process still held in flight are released
//! at start instead of sitting out their visibility timeout.
//!
//! Releasing is only safe when no other process is consuming the same queues
//! (its deliveries in hand would be handed out twice, and its deletes would
//! miss). [`RunnerLock`] ensures that with SQLite's own file locking: a lock
//! database next to the store, held in `locking_mode = EXCLUSIVE` for as long
//! as the runner lives. The operating system drops the lock when the process
//! dies, `kill -9` included, so a stale lock never blocks the next run.

use std::path::{Path, PathBuf};

use rusqlite::{params_from_iter, Connection, ErrorCode};

use super::{lock, wall_millis, Failure, SqliteStore};
use crate::ports::StoreError;

/// Proof that this process is the only runner of a database file; the lock
/// is released when this drops (or the process dies).
#[derive(Debug)]
pub struct RunnerLock {
    /// Holds the exclusive lock; never used otherwise.
    _conn: Connection,
    path: PathBuf,
}

impl RunnerLock {
    /// The lock file for the store at `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".runner-lock");
        PathBuf::from(name)
    }

    /// Takes the runner lock of the store at `db`: `Ok(None)` when another
    /// live process holds it.
    pub fn try_acquire(db: &Path) -> Result<Option<RunnerLock>, StoreError> {
        let path = Self::path_for(db);
        let fail = |e: rusqlite::Error| Failure::from(e).into_store("runner_lock");
        let conn = Connection::open(&path).map_err(fail)?;
        // Exclusive mode keeps the lock of the first write until the
        // connection closes; no busy wait (rusqlite's default is 5 s), so a
        // held lock answers at once.
        conn.busy_timeout(std::time::Duration::ZERO).map_err(fail)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(fail)?;
        let claimed = conn.execute_batch(
            "BEGIN EXCLUSIVE;
             CREATE TABLE IF NOT EXISTS runner (pid INTEGER NOT NULL);
             DELETE FROM runner;
             COMMIT;",
        );
        match claimed {
            Ok(()) => {
                // Who holds it, for someone looking with `sqlite3` (best effort).
                let _ = conn.execute("INSERT INTO runner (pid) VALUES (?1)", [std::process::id()]);
                Ok(Some(RunnerLock { _conn: conn, path }))
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                Ok(None)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SqliteStore {
    /// Makes every in-flight message of `queues` visible now, as if its
    /// visibility timeout had ended; returns how many. Only for a process
    /// holding the [`RunnerLock`]: the leases it releases belong to runners
    /// that are gone.
    pub fn release_leases(&self, _owner: &RunnerLock, queues: &[&str]) -> Result<u64, StoreError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let conn = lock(&self.db);
        let now = wall_millis();
        let marks = vec!["?"; queues.len()].join(", ");
        // A message is in flight exactly when it is invisible: sends and
        // dead-lettering make messages visible at once.
        let sql = format!("UPDATE queue_messages SET visible_at = ? WHERE visible_at > ? AND queue IN ({marks})");
        let mut values: Vec<rusqlite::types::Value> = vec![now.into(), now.into()];
        values.extend(queues.iter().map(|q| rusqlite::types::Value::from((*q).to_owned())));
        let released = conn
            .execute(&sql, params_from_iter(values))
            .map_err(|e| Failure::from(e).into_store("release_leases"))?;
        drop(conn);
        self.wake.notify_waiters();
        Ok(released as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::TempDir;
    use super::*;
    use crate::ports::WorkQueue;

    #[test]
    fn only_one_process_holds_the_runner_lock_and_dropping_frees_it() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let db = dir.0.join("local.db");
        let first = RunnerLock::try_acquire(&db).unwrap().expect("free lock");
        // A second connection behaves as another process would (POSIX locks
        // are per process, but SQLite tracks them per connection too).
        assert!(RunnerLock::try_acquire(&db).unwrap().is_none());
        drop(first);
        assert!(RunnerLock::try_acquire(&db).unwrap().is_some());
    }

    #[tokio::test]
    async fn leases_left_by_a_killed_runner_are_delivered_at_once_after_release() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let db = dir.0.join("local.db");
        let hour = Duration::from_secs(3600);
        {
            // A runner that received messages and was killed before deleting.
            let store = SqliteStore::open(&db).unwrap();
            let queue = store.queue("work", hour, None);
            let other = store.queue("other", hour, None);
            queue.send_messages(&["a".to_owned(), "b".to_owned()]).await.unwrap();
            other.send_messages(&["c".to_owned()]).await.unwrap();
            assert_eq!(queue.receive_messages(10, Duration::ZERO).await.unwrap().len(), 2);
            assert_eq!(other.receive_messages(10, Duration::ZERO).await.unwrap().len(), 1);
        }
        let store = SqliteStore::open(&db).unwrap();
        let queue = store.queue("work", hour, None);
        assert_eq!(queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
        let owner = RunnerLock::try_acquire(&db).unwrap().expect("free lock");
        assert_eq!(store.release_leases(&owner, &["work"]).unwrap(), 2);
        let again = queue.receive_messages(10, Duration::ZERO).await.unwrap();
        assert_eq!(again.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [2, 2]);
        // Queues not named keep their leases.
        let other = store.queue("other", hour, None);
        assert_eq!(other.receive_messages(10, Duration::ZERO).await.unwrap(), []);
    }
}
