//! The worker: applies queued messages exactly once and folds their counts
//! into their jobs.

use crate::ports::log_form;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use time::OffsetDateTime;
use tracing::{field, info, info_span, warn, Instrument};

use crate::domain::message::{DecodeError, Payload, QueueMessage};
use crate::domain::uses::{Use, UseOutcome};
use crate::domain::{Accrual, JobId, MessageCounts, MessageRef};
use crate::ports::{Credits, Debits, JobStore, Ledger, StoreError};
use crate::services::cancel::CancelError;

/// A delivery of one queue message, whatever the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub message_id: String,
    pub body: String,
    /// Deliveries so far, this one included (SQS `ApproximateReceiveCount`).
    pub receive_count: u32,
}

/// Tunables of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The queue's `maxReceiveCount`: on this delivery a failure sends the
    /// message to the DLQ, so its accruals are counted as failed.
    pub max_receive_count: u32,
    /// Messages of one batch processed at once.
    pub message_concurrency: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            max_receive_count: 5,
            message_concurrency: 4,
        }
    }
}

/// How often the worker tries a message again within one delivery when the
/// store answered with a conflict or throttling that outlasted the store's
/// own retries (a whale member's balance item contended by other workers, a
/// hot job item). Applying and folding are idempotent, so trying again is
/// safe; it spares a delivery, of which a message has only
/// `maxReceiveCount`. "Full jitter" backoff (AWS Architecture Blog,
/// "Exponential Backoff And Jitter"): retry `n` waits a random time in
/// `[0, min(cap, base·2ⁿ)]`, which spreads contending workers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRetry {
    /// Tries in all, the first included; 1 never retries.
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for MessageRetry {
    /// At most about 0.7 s of waiting in all (100 + 200 + 400 ms ceilings),
    /// far inside the function's timeout.
    fn default() -> Self {
        MessageRetry {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        }
    }
}

impl MessageRetry {
    /// A random wait before retry number `retry` (0-based).
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap).mul_f64(fastrand::f64())
    }
}

/// Why one message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("applying the message's accruals failed")]
    Apply(#[source] StoreError),
    #[error("cancelling the message failed")]
    Cancel(#[source] crate::services::cancel::CancelError),
    #[error("folding the message's counts into job {job_id} failed")]
    Fold {
        job_id: JobId,
        #[source]
        source: StoreError,
    },
}

impl MessageError {
    /// Whether trying the message again may succeed: a store failure other
    /// than corrupt data. A body that does not decode, or a cancel that
    /// cannot proceed, stays as it is.
    pub fn is_transient(&self) -> bool {
        match self {
            MessageError::Decode(_) => false,
            MessageError::Apply(source) | MessageError::Fold { source, .. } => source.is_transient(),
            MessageError::Cancel(CancelError::Store(source)) => source.is_transient(),
            MessageError::Cancel(_) => false,
        }
    }
}

/// What one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageReport {
    pub job_id: JobId,
    pub seq: u32,
    pub counts: MessageCounts,
    /// Of `counts.applied`, accruals an earlier delivery had already credited.
    pub replayed: u64,
    /// Whether this delivery folded the counts into the job (false on a
    /// redelivery of a message already folded).
    pub folded: bool,
    pub store_requests: u64,
}

/// What applying one message's items did, before its fold.
struct Applied {
    counts: MessageCounts,
    replayed: u64,
    /// Accruals not credited because the message's cancel had begun.
    cancelled: u64,
    requests: u64,
}

/// What a batch did: the messages to report as failed, and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Ids of messages to return to the queue (ReportBatchItemFailures).
    pub failed_message_ids: Vec<String>,
    pub counts: MessageCounts,
    pub messages_ok: usize,
}

/// Applies messages through the ports.
#[derive(Clone)]
pub struct Worker {
    /// Accrual messages credit; it never reads balances.
    credits: Arc<dyn Credits>,
    /// Bulk-use and cancel messages debit.
    debits: Arc<dyn Debits>,
    jobs: Arc<dyn JobStore>,
    settings: WorkerSettings,
    retry: MessageRetry,
}

impl Worker {
    /// A worker over one store's whole ledger.
    pub fn new(ledger: Arc<dyn Ledger>, jobs: Arc<dyn JobStore>, settings: WorkerSettings) -> Self {
        Worker::from_parts(ledger.clone(), ledger, jobs, settings)
    }

    /// A worker whose credits and debits go to different implementations,
    /// e.g. a fault wrapper around only one of them.
    pub fn from_parts(
        credits: Arc<dyn Credits>,
        debits: Arc<dyn Debits>,
        jobs: Arc<dyn JobStore>,
        settings: WorkerSettings,
    ) -> Self {
        Worker {
            credits,
            debits,
            jobs,
            settings,
            retry: MessageRetry::default(),
        }
    }

    /// The same worker, trying a message again within a delivery by `retry`.
    pub fn with_retry(mut self, retry: MessageRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Processes a batch, several messages at once; a failing message never
    /// holds up the others and is the only one reported failed. Messages
    /// that credit or debit a member in common go one after another
    /// ([`lanes`]).
    pub async fn process_batch(&self, messages: Vec<IncomingMessage>) -> BatchReport {
        let span = info_span!(
            "batch",
            messages = messages.len(),
            failed = field::Empty,
            applied = field::Empty,
            duplicate = field::Empty
        );
        let concurrency = self.settings.message_concurrency.max(1);
        let results: Vec<Vec<(String, Result<MessageReport, MessageError>)>> = stream::iter(lanes(messages))
            .map(|lane| async move {
                let mut results = Vec::with_capacity(lane.len());
                for message in lane {
                    let result = self.process_message(&message).await;
                    results.push((message.message_id, result));
                }
                results
            })
            .buffer_unordered(concurrency)
            .collect()
            .instrument(span.clone())
            .await;
        let mut report = BatchReport::default();
        for (message_id, result) in results.into_iter().flatten() {
            match result {
                Ok(r) => {
                    report.messages_ok += 1;
                    report.counts.applied += r.counts.applied;
                    report.counts.duplicate += r.counts.duplicate;
                    report.counts.refused += r.counts.refused;
                }
                Err(_) => report.failed_message_ids.push(message_id),
            }
        }
        span.record("failed", report.failed_message_ids.len());
        span.record("applied", report.counts.applied);
        span.record("duplicate", report.counts.duplicate);
        span.in_scope(|| info!("batch processed"));
        report
    }

    /// Applies one message and folds its counts into its job, once; tries
    /// again within the delivery on a transient store failure
    /// ([`MessageRetry`]). On the last delivery, a message whose items could
    /// not be applied is counted failed on its job.
    pub async fn process_message(&self, message: &IncomingMessage) -> Result<MessageReport, MessageError> {
        let span = info_span!(
            "message",
            message_id = %message.message_id,
            receive_count = message.receive_count,
            job_id = field::Empty,
            seq = field::Empty,
            accruals = field::Empty,
            applied = field::Empty,
            duplicate = field::Empty,
            replayed = field::Empty,
            folded = field::Empty,
        );
        async {
            let mut retry = 0;
            let result = loop {
                let result = self.apply(message, &span).await;
                match &result {
                    Err(e) if e.is_transient() && retry + 1 < self.retry.attempts => {
                        warn!(error = %log_form(e), retry, "message failed; trying it again");
                        let delay = self.retry.delay(retry);
                        retry += 1;
                        // A zero wait (the simulation's) needs no timer.
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                    }
                    _ => break result,
                }
            };
            if let Err(MessageError::Apply(_)) = &result {
                self.count_failed_if_last_delivery(message).await;
            }
            match &result {
                Ok(r) => {
                    span.record("applied", r.counts.applied);
                    span.record("duplicate", r.counts.duplicate);
                    span.record("replayed", r.replayed);
                    span.record("folded", r.folded);
                    info!("message applied");
                }
                Err(e) => warn!(error = %log_form(e), "message failed"),
            }
            result
        }
        .instrument(span.clone())
        .await
    }

    async fn apply(&self, message: &IncomingMessage, span: &tracing::Span) -> Result<MessageReport, MessageError> {
        let decoded = QueueMessage::decode(&message.body)?;
        let job_id = decoded.job_id;
        span.record("job_id", field::display(job_id));
        span.record("seq", decoded.seq);
        span.record("accruals", decoded.accruals().len());
        // What a credit or use writes carries the message's own time, never
        // this delivery's clock: a redelivery then sends the very requests an
        // earlier delivery sent (a ClientRequestToken names one content).
        // A message from before `queued_at` existed is written at the clock.
        let now = OffsetDateTime::now_utc();
        let at = decoded.queued_at.unwrap_or(now);
        let applied = match &decoded.payload {
            Payload::Cancel => {
                let by = MessageRef {
                    job_id,
                    seq: decoded.seq,
                };
                crate::services::cancel::cancel_message(self.debits.as_ref(), self.jobs.as_ref(), by)
                    .await
                    .map_err(MessageError::Cancel)?;
                return Ok(MessageReport {
                    job_id,
                    seq: decoded.seq,
                    counts: MessageCounts::default(),
                    replayed: 0,
                    folded: false,
                    store_requests: 0,
                });
            }
            Payload::Accruals(accruals) => {
                let applied = self.apply_accruals(&decoded, accruals, at).await?;
                if applied.cancelled > 0 {
                    // The job's cancel began on this message: whatever was
                    // credited before it is the cancel's to reverse, and the
                    // cancel counted the rest `skipped`. Folding now would
                    // move counts the cancel has already accounted for.
                    info!(
                        cancelled = applied.cancelled,
                        "message of a cancelled job: nothing more credited"
                    );
                    return Ok(MessageReport {
                        job_id,
                        seq: decoded.seq,
                        counts: MessageCounts::default(),
                        replayed: applied.replayed,
                        folded: false,
                        store_requests: applied.requests,
                    });
                }
                applied
            }
            Payload::Uses(uses) => {
                let by = MessageRef {
                    job_id,
                    seq: decoded.seq,
                };
                let applied = self.apply_uses(by, uses, at).await?;
                if applied.cancelled > 0 {
                    // As for credits: the cancel gives back what was deducted
                    // before it began and counted the rest `skipped`.
                    info!(
                        cancelled = applied.cancelled,
                        "message of a cancelled job: nothing more deducted"
                    );
                    return Ok(MessageReport {
                        job_id,
                        seq: decoded.seq,
                        counts: MessageCounts::default(),
                        replayed: applied.replayed,
                        folded: false,
                        store_requests: applied.requests,
                    });
                }
                applied
            }
        };
        let folded = self
            .jobs
            .fold_message(job_id, decoded.seq, applied.counts, &decoded.item_ids(), now)
            .await
            .map_err(|source| MessageError::Fold { job_id, source })?;
        Ok(MessageReport {
            job_id,
            seq: decoded.seq,
            counts: applied.counts,
            replayed: applied.replayed,
            folded,
            store_requests: applied.requests,
        })
    }

    /// Credits an accrual message's accruals.
    async fn apply_accruals(
        &self,
        decoded: &QueueMessage,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<Applied, MessageError> {
        let by = MessageRef {
            job_id: decoded.job_id,
            seq: decoded.seq,
        };
        match self.credits.apply_accruals(by, accruals, now).await {
            // The simulation's deliberate defect: this message's own earlier
            // credit taken for another job's.
            Ok(mut outcome) if crate::flaws::active(crate::flaws::Flaw::ReplayCountedDuplicate) => {
                outcome.applied -= outcome.replayed;
                outcome.duplicate += outcome.replayed;
                Ok(Applied {
                    counts: MessageCounts {
                        applied: outcome.applied,
                        duplicate: outcome.duplicate,
                        ..MessageCounts::default()
                    },
                    replayed: 0,
                    cancelled: outcome.cancelled,
                    requests: outcome.requests,
                })
            }
            Ok(outcome) => Ok(Applied {
                counts: MessageCounts {
                    applied: outcome.applied,
                    duplicate: outcome.duplicate,
                    ..MessageCounts::default()
                },
                replayed: outcome.replayed,
                cancelled: outcome.cancelled,
                requests: outcome.requests,
            }),
            Err(error) => Err(MessageError::Apply(error)),
        }
    }

    /// Applies a bulk-use job's message: each use in order, each exactly
    /// once by its `use_id` (a redelivery replays what an earlier delivery
    /// applied); a use the balance cannot cover, or whose `use_id` was taken
    /// by a different deduction, is refused and counted so. Once the
    /// message's cancel has begun nothing more is deducted: the rest of the
    /// message counts `cancelled`.
    async fn apply_uses(&self, by: MessageRef, uses: &[Use], now: OffsetDateTime) -> Result<Applied, MessageError> {
        let mut counts = MessageCounts::default();
        let mut replayed = 0u64;
        let mut requests = 0u64;
        for (index, u) in uses.iter().enumerate() {
            requests += 1;
            match self.debits.apply_message_use(by, u, now).await {
                Ok(UseOutcome::Applied(_)) => counts.applied += 1,
                Ok(UseOutcome::Replayed(_)) => {
                    counts.applied += 1;
                    replayed += 1;
                }
                Ok(UseOutcome::Insufficient { available }) => {
                    info!(use_id = %u.use_id, requested = u.amount, available, "use refused: insufficient balance");
                    counts.refused += 1;
                }
                Ok(UseOutcome::TooManyLots { at_most }) => {
                    info!(use_id = %u.use_id, requested = u.amount, at_most, "use refused: spread over too many lots");
                    counts.refused += 1;
                }
                Ok(UseOutcome::RefusedBefore) => {
                    info!(use_id = %u.use_id, "use refused on an earlier delivery: the refusal stands");
                    counts.refused += 1;
                }
                Ok(UseOutcome::IdReused(_)) => {
                    info!(use_id = %u.use_id, "use refused: use_id taken by a different deduction");
                    counts.refused += 1;
                }
                Ok(UseOutcome::Cancelled) => {
                    return Ok(Applied {
                        counts,
                        replayed,
                        cancelled: (uses.len() - index) as u64,
                        requests,
                    });
                }
                Err(error) => return Err(MessageError::Apply(error)),
            }
        }
        Ok(Applied {
            counts,
            replayed,
            cancelled: 0,
            requests,
        })
    }

    /// On the last delivery before the DLQ, a failing message's accruals are
    /// counted as failed so its job completes (with errors) instead of
    /// waiting forever. Best effort: if this fails too, the job stays running
    /// and the DLQ still holds the message.
    async fn count_failed_if_last_delivery(&self, message: &IncomingMessage) {
        if message.receive_count < self.settings.max_receive_count {
            return;
        }
        // Applying failed, so the body decoded.
        let Ok(decoded) = QueueMessage::decode(&message.body) else {
            return;
        };
        let counts = self.counts_of_failed(&decoded).await;
        if let Err(error) = self
            .jobs
            .fold_message(
                decoded.job_id,
                decoded.seq,
                counts,
                &decoded.item_ids(),
                OffsetDateTime::now_utc(),
            )
            .await
        {
            warn!(error = %log_form(&error), "could not count the failed message on its job");
        }
    }
}

impl Worker {
    /// The counts of a message whose last delivery failed: what the ledger
    /// says this message credited counts `applied` (DynamoDB credits a
    /// message in several transactions, so a failure can leave part of it
    /// credited), what another message credited `duplicate`, the rest
    /// `failed`; all `failed` if the ledger cannot tell (or a use message).
    async fn counts_of_failed(&self, decoded: &QueueMessage) -> MessageCounts {
        let all_failed = MessageCounts {
            failed: decoded.items() as u64,
            ..MessageCounts::default()
        };
        if !matches!(decoded.payload, Payload::Accruals(_)) {
            return all_failed;
        }
        let by = MessageRef {
            job_id: decoded.job_id,
            seq: decoded.seq,
        };
        match self.credits.tally_credits(by, &decoded.item_ids()).await {
            Ok(Some(tally)) if tally.by_message + tally.by_other + tally.not_credited == all_failed.failed => {
                MessageCounts {
                    applied: tally.by_message,
                    duplicate: tally.by_other,
                    failed: tally.not_credited,
                    refused: 0,
                }
            }
            Ok(_) => all_failed,
            Err(error) => {
                warn!(error = %log_form(&error), "could not tell which accruals the failed message credited");
                all_failed
            }
        }
    }
}

/// Splits a batch into lanes: messages within a lane run one after another,
/// lanes run side by side. Messages that credit or debit a member in common
/// share a lane, so a whale member's consecutive messages (more accruals
/// than one message holds) never contend for its balance item within a
/// batch, where each would fail the other's transaction with
/// `TransactionConflict`. Messages that name no member (a cancel, a body
/// that does not decode) each get a lane of their own.
fn lanes(messages: Vec<IncomingMessage>) -> Vec<Vec<IncomingMessage>> {
    let mut lanes: Vec<Lane> = Vec::new();
    for (place, message) in messages.into_iter().enumerate() {
        let mut lane = Lane {
            members: members(&message.body),
            messages: vec![(place, message)],
        };
        // Every lane sharing a member with this message joins its lane.
        let mut index = 0;
        while index < lanes.len() {
            if lanes[index].members.is_disjoint(&lane.members) {
                index += 1;
            } else {
                let joined = lanes.remove(index);
                lane.messages.extend(joined.messages);
                lane.members.extend(joined.members);
            }
        }
        lanes.push(lane);
    }
    lanes
        .into_iter()
        .map(|mut lane| {
            // In batch order: a member's messages are applied as they were queued.
            lane.messages.sort_by_key(|(place, _)| *place);
            lane.messages.into_iter().map(|(_, message)| message).collect()
        })
        .collect()
}

/// Messages of a batch applied one after another, with their places in the
/// batch, and the members they name.
struct Lane {
    messages: Vec<(usize, IncomingMessage)>,
    members: HashSet<String>,
}

/// The members a message body credits or debits (none if it does not decode).
fn members(body: &str) -> HashSet<String> {
    match QueueMessage::decode(body) {
        Ok(decoded) => decoded
            .accruals()
            .iter()
            .map(|a| a.member_id.clone())
            .chain(decoded.uses().iter().map(|u| u.member_id.clone()))
            .collect(),
        Err(_) => HashSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::accrual::sample as accrual;
    use crate::domain::Accrual;
    use crate::ports::ApplyOutcome;

    fn incoming(id: &str, seq: u32, members: &[&str]) -> IncomingMessage {
        let accruals = members
            .iter()
            .enumerate()
            .map(|(i, member)| Accrual {
                accrual_id: format!("{id}-{i}"),
                member_id: (*member).into(),
                point_type: "P".into(),
                amount: 1,
                reason: None,
                apply_at: None,
                expires_at: None,
            })
            .collect();
        IncomingMessage {
            message_id: id.into(),
            body: QueueMessage::new(JobId::random(), seq, Payload::Accruals(accruals)).encode(),
            receive_count: 1,
        }
    }

    fn ids(lanes: &[Vec<IncomingMessage>]) -> Vec<Vec<&str>> {
        let mut ids: Vec<Vec<&str>> = lanes
            .iter()
            .map(|lane| lane.iter().map(|m| m.message_id.as_str()).collect())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn messages_sharing_a_member_share_a_lane() {
        let batch = vec![
            incoming("a", 0, &["whale"]),
            incoming("b", 1, &["x"]),
            incoming("c", 2, &["whale", "y"]),
            incoming("d", 3, &["y", "x"]),
            incoming("e", 4, &["z"]),
            IncomingMessage {
                message_id: "f".into(),
                body: "{".into(),
                receive_count: 1,
            },
        ];
        assert_eq!(ids(&lanes(batch)), [vec!["a", "b", "c", "d"], vec!["e"], vec!["f"]]);
    }

    #[test]
    fn retry_waits_stay_below_their_ceiling() {
        let retry = MessageRetry::default();
        for n in 0..6 {
            let ceiling = retry.base.saturating_mul(1 << n).min(retry.cap);
            assert!(retry.delay(n) <= ceiling);
        }
    }

    /// Records the time each credit is asked for, then credits.
    struct RecordingCredits {
        store: Arc<MemoryStore>,
        times: Mutex<Vec<OffsetDateTime>>,
    }

    #[async_trait]
    impl Credits for RecordingCredits {
        async fn apply_accruals(
            &self,
            by: MessageRef,
            accruals: &[Accrual],
            now: OffsetDateTime,
        ) -> Result<ApplyOutcome, StoreError> {
            self.times.lock().unwrap().push(now);
            self.store.apply_accruals(by, accruals, now).await
        }
    }

    #[tokio::test]
    async fn a_redelivery_credits_at_the_time_the_message_carries() {
        let store = Arc::new(MemoryStore::new());
        let credits = Arc::new(RecordingCredits {
            store: store.clone(),
            times: Mutex::new(Vec::new()),
        });
        let worker = Worker::from_parts(credits.clone(), store.clone(), store.clone(), WorkerSettings::default());
        let queued_at = time::macros::datetime!(2026-11-29 17:00:00.123 UTC);
        let message =
            QueueMessage::new(JobId::random(), 0, Payload::Accruals(vec![accrual(1, 1, "P")])).queued(queued_at);
        let delivery = |receive_count| IncomingMessage {
            message_id: "m-1".into(),
            body: message.encode(),
            receive_count,
        };
        worker.process_message(&delivery(1)).await.unwrap();
        worker.process_message(&delivery(2)).await.unwrap();
        assert_eq!(*credits.times.lock().unwrap(), vec![queued_at, queued_at]);
    }
}
