//! Looking into a dead-letter queue and moving its messages back.
//!
//! Messages land in the DLQ after `maxReceiveCount` failed deliveries; their
//! accruals are then counted `failed` on their job. Moving them back is safe
//! whenever the cause is fixed: the ledger credits each accrual once, however
//! often its message is delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::domain::message::QueueMessage;
use crate::domain::JobId;
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};

/// How long a receive waits for the first message before the queue counts
/// as empty.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// One dead-lettered message, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub receive_count: u32,
    pub job_id: Option<JobId>,
    pub seq: Option<u32>,
    pub accruals: usize,
    /// Why the body is not a message the worker can apply, if it is not.
    pub problem: Option<String>,
}

impl DeadLetter {
    fn from_received(m: &ReceivedMessage) -> Self {
        let decoded = QueueMessage::decode(&m.body);
        DeadLetter {
            message_id: m.message_id.clone(),
            receive_count: m.receive_count,
            job_id: decoded.as_ref().ok().map(|d| d.job_id),
            seq: decoded.as_ref().ok().map(|d| d.seq),
            accruals: decoded.as_ref().map_or(0, |d| d.accruals().len()),
            problem: decoded.err().map(|e| e.to_string()),
        }
    }
}

/// Receives up to `max` messages from `dlq`, then makes them visible again:
/// a look that leaves the queue as it was (except receive counts).
pub async fn list(dlq: &dyn WorkQueue, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let mut seen: Vec<ReceivedMessage> = Vec::new();
    while seen.len() < max {
        let batch = dlq.receive_messages((max - seen.len()).min(10), RECEIVE_WAIT).await?;
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    let handles: Vec<String> = seen.iter().map(|m| m.receipt_handle.clone()).collect();
    dlq.release_messages(&handles).await?;
    Ok(seen.iter().map(DeadLetter::from_received).collect())
}

/// What a redrive moved, per job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Redriven {
    pub messages: usize,
    pub accruals: u64,
    /// Messages that are not accrual messages (moved too; they will fail again).
    pub undecodable: usize,
    /// job → (messages, accruals)
    pub by_job: BTreeMap<String, (usize, u64)>,
}

/// Moves up to `max` messages from `dlq` back to `target`: each batch is
/// sent first and deleted from the DLQ after, so a crash in between leaves a
/// message in both (applied once) and never in neither.
pub async fn redrive(dlq: &dyn WorkQueue, target: &dyn WorkQueue, max: usize) -> Result<Redriven, QueueError> {
    let mut moved = Redriven::default();
    while moved.messages < max {
        let batch = dlq
            .receive_messages((max - moved.messages).min(10), RECEIVE_WAIT)
            .await?;
        if batch.is_empty() {
            break;
        }
        let bodies: Vec<String> = batch.iter().map(|m| m.body.clone()).collect();
        target.send_messages(&bodies).await?;
        let handles: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
        dlq.delete_messages(&handles).await?;
        for letter in batch.iter().map(DeadLetter::from_received) {
            moved.messages += 1;
            moved.accruals += letter.accruals as u64;
            match letter.job_id {
                Some(job) => {
                    let entry = moved.by_job.entry(job.to_string()).or_default();
                    entry.0 += 1;
                    entry.1 += letter.accruals as u64;
                }
                None => moved.undecodable += 1,
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryQueue;
    use crate::domain::message::Payload;
    use crate::domain::Accrual;

    fn message(job: JobId, seq: u32, n: usize) -> String {
        QueueMessage::new(
            job,
            seq,
            Payload::Accruals(
                (0..n)
                    .map(|i| Accrual {
                        accrual_id: format!("a-{seq}-{i}"),
                        member_id: "m".into(),
                        point_type: "P".into(),
                        amount: 1,
                        reason: None,
                        apply_at: None,
                        expires_at: None,
                    })
                    .collect(),
            ),
        )
        .encode()
    }

    #[tokio::test]
    async fn list_looks_without_taking_and_redrive_moves_everything_once() {
        let dlq = MemoryQueue::new(Duration::from_secs(60));
        let main = MemoryQueue::new(Duration::from_secs(60));
        let job = JobId::random();
        let mut bodies: Vec<String> = (0..12).map(|seq| message(job, seq, 3)).collect();
        bodies.push("not json".into());
        dlq.send_messages(&bodies).await.unwrap();

        let listed = list(&dlq, 100).await.unwrap();
        assert_eq!(listed.len(), 13);
        assert_eq!(listed.iter().filter(|l| l.problem.is_some()).count(), 1);
        assert_eq!(list(&dlq, 100).await.unwrap().len(), 13, "still all there");

        let moved = redrive(&dlq, &main, 100).await.unwrap();
        assert_eq!((moved.messages, moved.accruals, moved.undecodable), (13, 36, 1));
        assert_eq!(moved.by_job[&job.to_string()], (12, 36));
        assert_eq!((dlq.len(), main.len()), (0, 13));
    }
}
