//! Named queues with SQS semantics in the store's database ([`WorkQueue`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{duration_millis, run_blocking, to_i64, wall_millis, Db, Failure};
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};

/// Longest a waiting receive sleeps between looks when nothing wakes it.
/// Sends and releases through this process wake it at once; this only
/// bounds the delay for messages another process writes into the same file
/// (it cannot signal this one) at one cheap query a second per receiver.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// SQS's batch size, used for request accounting and as the receive cap.
const BATCH: usize = 10;

/// A named queue in a [`super::SqliteStore`]'s database, with SQS semantics:
/// at-least-once delivery, a visibility timeout, redrive to a dead-letter
/// queue. Visibility is wall-clock time, so after a restart an undeleted
/// in-flight message reappears once its timeout has passed.
///
/// Cheap to clone: clones share the connection and the request counter.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: Db,
    /// The store's wake-up signal, shared by all its queues.
    wake: Arc<Notify>,
    name: Arc<str>,
    visibility_timeout: Duration,
    /// `(max_receive_count, dead-letter queue name)`.
    redrive: Option<(u32, Arc<str>)>,
    requests: Arc<AtomicU64>,
    /// Longest sleep of a waiting receive without a wake-up.
    recheck: Duration,
    waits: Arc<WaitCounts>,
}

/// How often receives looked at the queue and went to sleep on it (tests
/// count wake-ups with these instead of measuring time).
#[derive(Debug, Default)]
struct WaitCounts {
    looks: AtomicU64,
    sleeps: AtomicU64,
}

impl SqliteQueue {
    /// A queue over `db`; see [`super::SqliteStore::queue`].
    pub(super) fn new(
        db: Db,
        wake: Arc<Notify>,
        name: &str,
        visibility_timeout: Duration,
        redrive: Option<(u32, String)>,
    ) -> Self {
        SqliteQueue {
            db,
            wake,
            name: name.into(),
            visibility_timeout,
            redrive: redrive.map(|(max, dlq)| (max, dlq.into())),
            requests: Arc::new(AtomicU64::new(0)),
            recheck: RECHECK_INTERVAL,
            waits: Arc::default(),
        }
    }

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
    /// the dead-letter queue on the way. When it delivers none, also says in
    /// how many milliseconds the queue's next invisible message turns visible.
    async fn take_visible(&self, max: usize) -> Result<Taken, QueueError> {
        let queue = Arc::clone(&self.name);
        let redrive = self.redrive.clone();
        let hidden_for = duration_millis(self.visibility_timeout);
        self.run("receive_messages", move |conn| {
            let now = wall_millis();
            let invisible_until = now.saturating_add(hidden_for);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut received: Vec<ReceivedMessage> = Vec::new();
            let mut dead_lettered = false;
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
                                dead_lettered = true;
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
            let next_visible_in = if received.is_empty() {
                tx.prepare_cached("SELECT MIN(visible_at) FROM queue_messages WHERE queue = ?1 AND visible_at > ?2")?
                    .query_row(params![&*queue, now], |row| row.get::<_, Option<i64>>(0))
                    .optional()?
                    .flatten()
                    .map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
            } else {
                None
            };
            tx.commit()?;
            Ok(Taken {
                received,
                next_visible_in,
                dead_lettered,
            })
        })
        .await
    }
}

/// What one look at the queue found.
struct Taken {
    received: Vec<ReceivedMessage>,
    /// With nothing received: when the next in-flight message turns visible.
    next_visible_in: Option<Duration>,
    /// Messages moved to the dead-letter queue (which may have receivers waiting).
    dead_lettered: bool,
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
        .await?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn receive_messages(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.count(1);
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so that a send landing between the
            // look and the wait still wakes this receiver.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.waits.looks.fetch_add(1, Ordering::SeqCst);
            let taken = self.take_visible(max.min(BATCH)).await?;
            if taken.dead_lettered {
                self.wake.notify_waiters();
            }
            let now = Instant::now();
            if !taken.received.is_empty() || now >= deadline {
                return Ok(taken.received);
            }
            // Like SQS long polling: sleep until a send or release wakes us,
            // an in-flight message's visibility timeout ends, or the wait is
            // over; no polling of an idle queue.
            let mut wake_at = deadline.min(now + self.recheck);
            if let Some(visible_in) = taken.next_visible_in {
                wake_at = wake_at.min(now + visible_in);
            }
            self.waits.sleeps.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
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
        .await?;
        self.wake.notify_waiters();
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;

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

    /// Lets `queue` receive with a `wait` long enough that only a wake-up
    /// can deliver in time, once its receiver is asleep on an empty queue;
    /// `act` then makes a message visible.
    async fn woken_receive<F, Fut>(queue: SqliteQueue, act: F) -> Vec<ReceivedMessage>
    where
        F: FnOnce(SqliteQueue) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut queue = queue;
        // No rechecks: only a wake-up ends this receive before its hour.
        queue.recheck = Duration::from_secs(3600);
        let receiver = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.receive_messages(10, Duration::from_secs(3600)).await })
        };
        while queue.waits.sleeps.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        act(queue.clone()).await;
        // A guard against hanging for the hour, not a speed check: a woken
        // receive returns as soon as its second look is done.
        let got = tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .expect("the waiting receive was not woken")
            .unwrap()
            .unwrap();
        // One look found the queue empty, the wake-up's look found the message.
        assert_eq!(queue.waits.looks.load(Ordering::SeqCst), 2);
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_receive_is_woken_by_a_send() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = store.queue("q", Duration::from_secs(60), None);
        let got = woken_receive(queue, |queue| async move {
            queue.send_messages(&["hello".to_owned()]).await.unwrap();
        })
        .await;
        assert_eq!(got.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_receive_is_woken_by_a_release() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = store.queue("q", Duration::from_secs(3600), None);
        queue.send_messages(&["hello".to_owned()]).await.unwrap();
        let first = queue.receive_messages(10, Duration::ZERO).await.unwrap();
        let handle = first[0].receipt_handle.clone();
        // A fresh handle on the queue, so the counts start at zero.
        let queue = store.queue("q", Duration::from_secs(3600), None);
        let got = woken_receive(queue, |queue| async move {
            queue.release_messages(&[handle]).await.unwrap();
        })
        .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, 2);
    }

    #[tokio::test]
    async fn waiting_receive_gets_a_message_whose_visibility_timeout_ends() {
        let store = SqliteStore::in_memory().unwrap();
        let queue = store.queue("q", Duration::from_millis(50), None);
        queue.send_messages(&["hello".to_owned()]).await.unwrap();
        assert_eq!(queue.receive_messages(10, Duration::ZERO).await.unwrap().len(), 1);
        let again = queue.receive_messages(10, Duration::from_secs(20)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
    }
}
