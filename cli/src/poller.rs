//! Pollers that behave like Lambda's SQS event source mapping: gather a batch
//! (batch size, batching window), invoke the real handler (worker or CSV
//! import) with an SQS event, delete only the messages it did not report
//! failed. Never more invocations in flight than `MaximumConcurrency`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use pointflow::ports::{QueueError, ReceivedMessage, WorkQueue};
use pointflow::services::import::Importer;
use pointflow::services::worker::Worker;
use tokio::sync::watch;
use tracing::warn;

/// A Lambda function that an SQS event source invokes.
#[async_trait]
pub trait SqsHandler: Send + Sync {
    async fn invoke(&self, event: SqsEvent) -> SqsBatchResponse;
}

/// The worker function.
#[async_trait]
impl SqsHandler for Worker {
    async fn invoke(&self, event: SqsEvent) -> SqsBatchResponse {
        worker::handle(self, event).await
    }
}

/// The CSV import function.
#[async_trait]
impl SqsHandler for Importer {
    async fn invoke(&self, event: SqsEvent) -> SqsBatchResponse {
        csv_import::handle_sqs(self, event).await
    }
}

/// How the pollers gather and dispatch batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerSettings {
    pub batch_size: usize,
    pub batching_window: Duration,
    pub maximum_concurrency: usize,
    /// Long-poll wait of an empty receive.
    pub wait: Duration,
}

/// What the pollers did, readable while they run.
#[derive(Debug, Default)]
pub struct PollerStats {
    pub invocations: AtomicU64,
    pub messages_ok: AtomicU64,
    pub messages_failed: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl PollerStats {
    /// The most handler invocations ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }
}

/// Runs `maximum_concurrency` pollers until `shutdown` turns true; each
/// finishes the batch in hand first. (A hard kill instead leaves in-flight
/// messages invisible until their visibility timeout, as on SQS; on the
/// embedded backend the next runner releases them at start, see
/// [`crate::runner::Runner::start`]. Either way they are applied as
/// redeliveries.)
pub async fn run_pollers(
    queue: Arc<dyn WorkQueue>,
    handler: Arc<dyn SqsHandler>,
    settings: PollerSettings,
    stats: Arc<PollerStats>,
    shutdown: watch::Receiver<bool>,
) {
    let tasks: Vec<_> = (0..settings.maximum_concurrency.max(1))
        .map(|_| {
            let (queue, handler, stats, shutdown) = (queue.clone(), handler.clone(), stats.clone(), shutdown.clone());
            tokio::spawn(poll(queue, handler, settings, stats, shutdown))
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            warn!(error = %e, "poller task ended abnormally");
        }
    }
}

async fn poll(
    queue: Arc<dyn WorkQueue>,
    handler: Arc<dyn SqsHandler>,
    settings: PollerSettings,
    stats: Arc<PollerStats>,
    shutdown: watch::Receiver<bool>,
) {
    // Shutdown is checked between batches, never inside one: a batch that
    // was received is always processed and acknowledged, so a clean stop
    // leaves no message invisible until its visibility timeout. Stopping
    // waits at most one long-poll (`wait`) plus the batch in hand.
    while !*shutdown.borrow() {
        let batch = gather(queue.as_ref(), settings).await;
        if batch.is_empty() {
            continue;
        }
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        stats.invocations.fetch_add(1, Ordering::Relaxed);
        let delivered = invoke_and_acknowledge(queue.as_ref(), handler.as_ref(), &batch).await;
        stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        match delivered {
            Ok((ok, failed)) => {
                stats.messages_ok.fetch_add(ok as u64, Ordering::Relaxed);
                stats.messages_failed.fetch_add(failed as u64, Ordering::Relaxed);
            }
            // The messages come back after the visibility timeout and are
            // applied as redeliveries: nothing is credited twice.
            Err(e) => warn!(error = %e, "deleting processed messages failed"),
        }
    }
}

/// One invocation as the event source mapping makes it: the handler gets
/// the batch as an SQS event, and every message it did not report in
/// `batchItemFailures` is deleted. Returns (succeeded, failed).
pub async fn invoke_and_acknowledge(
    queue: &dyn WorkQueue,
    handler: &dyn SqsHandler,
    batch: &[ReceivedMessage],
) -> Result<(usize, usize), QueueError> {
    let response = handler.invoke(worker::to_sqs_event(batch)).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let done: Vec<String> = batch
        .iter()
        .filter(|m| !failed.contains(&m.message_id.as_str()))
        .map(|m| m.receipt_handle.clone())
        .collect();
    if !done.is_empty() {
        queue.delete_messages(&done).await?;
    }
    Ok((done.len(), failed.len()))
}

/// One batch: up to `batch_size` messages, gathered for at most the batching
/// window once the first has arrived.
async fn gather(queue: &dyn WorkQueue, settings: PollerSettings) -> Vec<ReceivedMessage> {
    let mut batch = match queue.receive_messages(settings.batch_size.min(10), settings.wait).await {
        Ok(first) => first,
        Err(e) => {
            warn!(error = %e, "receive failed");
            tokio::time::sleep(settings.wait).await;
            return Vec::new();
        }
    };
    let deadline = Instant::now() + settings.batching_window;
    while !batch.is_empty() && batch.len() < settings.batch_size && Instant::now() < deadline {
        match queue
            .receive_messages((settings.batch_size - batch.len()).min(10), Duration::ZERO)
            .await
        {
            Ok(more) if more.is_empty() => break,
            Ok(more) => batch.extend(more),
            Err(e) => {
                warn!(error = %e, "receive failed");
                break;
            }
        }
    }
    batch
}
