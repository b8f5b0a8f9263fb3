//! A simulated SQS standard queue on the virtual clock: messages in flight
//! for a visibility timeout, receive counts, a move to the dead-letter queue
//! after `maxReceiveCount` receives, and the liberties SQS takes: delivery in
//! any order, a message delivered twice, a delete that does not happen.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::message::QueueMessage;
use crate::domain::JobId;
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};

use super::exec::{Core, Sim};
use super::FaultKind;

/// Which queue of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueId {
    /// The accrual queue the worker reads.
    Main = 0,
    Dead = 1,
    /// The import queue: S3 notifications and chunk continuations.
    Imports = 2,
    ImportsDead = 3,
}

impl QueueId {
    /// The dead-letter queue of a source queue.
    pub(crate) fn dead_letter(self) -> QueueId {
        match self {
            QueueId::Main | QueueId::Dead => QueueId::Dead,
            QueueId::Imports | QueueId::ImportsDead => QueueId::ImportsDead,
        }
    }
}

/// One stored message.
#[derive(Debug, Clone)]
pub(crate) struct SimMessage {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    /// Virtual ms from which it can be received again.
    pub visible_at: u64,
    /// Handle of its latest delivery.
    pub receipt: Option<String>,
    /// Why it is in the dead-letter queue.
    pub dead_reason: Option<String>,
}

impl SimMessage {
    /// `(job, seq, accruals)` of an accrual message.
    pub(crate) fn describe(&self) -> Option<(JobId, u32, usize)> {
        QueueMessage::decode(&self.body)
            .ok()
            .map(|m| (m.job_id, m.seq, m.accruals().len()))
    }
}

/// One queue's messages, oldest first, and its settings.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub messages: Vec<SimMessage>,
    pub visibility_ms: u64,
    /// `maxReceiveCount` of the redrive policy (main queue only).
    pub max_receive_count: Option<u32>,
    pub requests: u64,
    /// Every `(job, seq)` ever sent to this queue.
    pub sent: std::collections::BTreeSet<(JobId, u32)>,
}

/// The identity of an accrual message, read without decoding its accruals
/// (the worker decodes and checks them; this only notes what was sent).
#[derive(serde::Deserialize)]
struct Envelope {
    job_id: JobId,
    seq: u32,
}

/// A short name of a job for the trace.
pub(crate) fn short(job: JobId) -> String {
    job.to_string()[..8].to_owned()
}

fn label(body: &str) -> String {
    if let Ok(m) = QueueMessage::decode(body) {
        return format!("{}:{} ({} accruals)", short(m.job_id), m.seq, m.accruals().len());
    }
    match crate::services::import::task::parse_tasks(body).as_deref() {
        Ok([task]) => match &task.resume {
            Some(r) => format!("{} chunk {} of {}", short(r.job_id), r.chunk, task.object.key),
            None => format!("{} created", task.object.key),
        },
        _ => "(neither an accrual message nor an import task)".into(),
    }
}

impl Core {
    /// Queues bodies on `q`.
    pub(crate) fn push_messages(&mut self, q: QueueId, bodies: &[String]) {
        for body in bodies {
            let message_id = format!("msg-{}", self.next_message);
            self.next_message += 1;
            if let Ok(m) = serde_json::from_str::<Envelope>(body) {
                self.queues[q as usize].sent.insert((m.job_id, m.seq));
            }
            self.note(|| format!("{q:?} queue: {message_id} sent, {}", label(body)));
            self.queues[q as usize].messages.push(SimMessage {
                message_id,
                body: body.clone(),
                receive_count: 0,
                visible_at: self.now_ms,
                receipt: None,
                dead_reason: None,
            });
        }
    }

    /// Delivers message `index` of `q` once more.
    fn deliver(&mut self, q: QueueId, index: usize) -> ReceivedMessage {
        let now = self.now_ms;
        let queue = &mut self.queues[q as usize];
        let visibility = queue.visibility_ms;
        let m = &mut queue.messages[index];
        m.receive_count += 1;
        m.visible_at = now + visibility;
        let handle = format!("{}#{}", m.message_id, m.receive_count);
        m.receipt = Some(handle.clone());
        ReceivedMessage {
            message_id: m.message_id.clone(),
            receipt_handle: handle,
            body: m.body.clone(),
            receive_count: m.receive_count,
        }
    }

    /// Receives up to `max` visible messages of `q` in random order (SQS
    /// standard queues keep no order); a message past `maxReceiveCount` moves
    /// to the dead-letter queue instead. Out of calm, sometimes also delivers
    /// a message that is already in flight (SQS's at-least-once delivery).
    pub(crate) fn receive(&mut self, q: QueueId, max: usize) -> Vec<ReceivedMessage> {
        self.queues[q as usize].requests += 1;
        let mut out: Vec<ReceivedMessage> = Vec::new();
        while out.len() < max {
            let now = self.now_ms;
            let visible: Vec<usize> = self.queues[q as usize]
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.visible_at <= now && !out.iter().any(|o| o.message_id == m.message_id))
                .map(|(i, _)| i)
                .collect();
            if visible.is_empty() {
                break;
            }
            let pick = if self.calm { 0 } else { self.rng.usize(..visible.len()) };
            if pick != 0 {
                self.count(FaultKind::Reordered);
            }
            let index = visible[pick];
            let queue = &self.queues[q as usize];
            if let Some(max_receives) = queue.max_receive_count {
                let m = &queue.messages[index];
                if m.receive_count >= max_receives {
                    let mut dead = self.queues[q as usize].messages.remove(index);
                    let reason = format!(
                        "received {} times without being deleted (maxReceiveCount {max_receives})",
                        dead.receive_count
                    );
                    self.note(|| {
                        format!(
                            "{q:?} queue: {} to the DLQ: {reason}, {}",
                            dead.message_id,
                            label(&dead.body)
                        )
                    });
                    dead.receive_count = 0;
                    dead.visible_at = now;
                    dead.receipt = None;
                    dead.dead_reason = Some(reason);
                    self.dead_lettered += 1;
                    self.queues[q.dead_letter() as usize].messages.push(dead);
                    continue;
                }
            }
            let received = self.deliver(q, index);
            out.push(received);
        }
        if !self.calm && !out.is_empty() && self.rng.f64() < self.rates.duplicate_delivery {
            let now = self.now_ms;
            let limit = self.queues[q as usize].max_receive_count.unwrap_or(u32::MAX);
            let in_flight: Vec<usize> = self.queues[q as usize]
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    m.visible_at > now && m.receive_count < limit && !out.iter().any(|o| o.message_id == m.message_id)
                })
                .map(|(i, _)| i)
                .collect();
            if !in_flight.is_empty() {
                let index = in_flight[self.rng.usize(..in_flight.len())];
                let again = self.deliver(q, index);
                self.count(FaultKind::DuplicateDelivery);
                self.note(|| format!("{q:?} queue: {} delivered again while in flight", again.message_id));
                out.push(again);
            }
        }
        for m in &out {
            let (id, count) = (m.message_id.clone(), m.receive_count);
            self.note(|| format!("{q:?} queue: {id} received (receive {count}), {}", label(&m.body)));
        }
        out
    }

    /// Deletes deliveries. `lossy`: out of calm, a delete may be lost, and a
    /// stale receipt handle (the message was received again since) may or
    /// may not delete, as SQS documents.
    pub(crate) fn delete(&mut self, q: QueueId, handles: &[String], lossy: bool) {
        self.queues[q as usize].requests += 1;
        for handle in handles {
            let message_id = handle.split('#').next().unwrap_or_default();
            let Some(index) = self.queues[q as usize]
                .messages
                .iter()
                .position(|m| m.message_id == message_id)
            else {
                continue;
            };
            let current = self.queues[q as usize].messages[index].receipt.as_deref() == Some(handle.as_str());
            let chaos = lossy && !self.calm;
            if chaos && current && self.rng.f64() < self.rates.lost_delete {
                self.count(FaultKind::DeleteLost);
                self.note(|| format!("{q:?} queue: delete of {handle} lost"));
                continue;
            }
            // SQS: a delete with an older handle "succeeds, but the message
            // might not be deleted". Calm, it never is.
            if !current && (!chaos || self.rng.bool()) {
                if chaos {
                    self.count(FaultKind::StaleDeleteIgnored);
                }
                self.note(|| format!("{q:?} queue: stale receipt handle {handle}: not deleted"));
                continue;
            }
            self.note(|| format!("{q:?} queue: {handle} deleted"));
            self.queues[q as usize].messages.remove(index);
        }
    }

    /// Makes an in-flight message visible now, as if its visibility timeout
    /// had passed while its worker still runs.
    pub(crate) fn expire(&mut self, q: QueueId, message_id: &str) {
        let now = self.now_ms;
        if let Some(m) = self.queues[q as usize]
            .messages
            .iter_mut()
            .find(|m| m.message_id == message_id && m.visible_at > now)
        {
            m.visible_at = now;
            self.count(FaultKind::VisibilityExpired);
            let id = message_id.to_owned();
            self.note(|| format!("{q:?} queue: visibility timeout of {id} expired while its worker runs"));
        }
    }

    /// Whether `q` holds a message that can be received now.
    pub(crate) fn has_visible(&self, q: QueueId) -> bool {
        let now = self.now_ms;
        self.queues[q as usize].messages.iter().any(|m| m.visible_at <= now)
    }

    /// When the next in-flight message of `q` becomes visible.
    pub(crate) fn next_visible(&self, q: QueueId) -> Option<u64> {
        let now = self.now_ms;
        self.queues[q as usize]
            .messages
            .iter()
            .map(|m| m.visible_at)
            .filter(|t| *t > now)
            .min()
    }
}

/// One queue of the run behind the [`WorkQueue`] port, with no fault of
/// its own but SQS's (wrap it in [`super::faults::FaultyQueue`] for those of
/// the calls).
pub(crate) struct SimQueue {
    pub sim: Sim,
    pub id: QueueId,
}

#[async_trait]
impl WorkQueue for SimQueue {
    async fn send_messages(&self, bodies: &[String]) -> Result<(), QueueError> {
        let mut core = self.sim.lock();
        core.queues[self.id as usize].requests += bodies.len().div_ceil(10) as u64;
        core.push_messages(self.id, bodies);
        Ok(())
    }

    async fn receive_messages(&self, max: usize, _wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        // Waiting is virtual: an empty queue answers at once.
        Ok(self.sim.lock().receive(self.id, max.min(10)))
    }

    async fn delete_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.sim.lock().delete(self.id, receipt_handles, false);
        Ok(())
    }

    async fn release_messages(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        let mut core = self.sim.lock();
        let now = core.now_ms;
        for m in core.queues[self.id as usize].messages.iter_mut() {
            if m.receipt.as_ref().is_some_and(|r| receipt_handles.contains(r)) {
                m.visible_at = now;
            }
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        self.sim.lock().queues[self.id as usize].requests
    }
}
