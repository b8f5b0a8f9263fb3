//! Faults over the AWS wire protocols (moto), the ones the emulator can
//! show: a message that keeps failing goes to the DLQ after
//! `maxReceiveCount` receives and comes back once with `dlq redrive`; a
//! message received and not deleted (a worker crash) is redelivered after
//! the visibility timeout and applied once; and throttling answers, injected
//! over the wire by a small proxy in front of the emulator, are retried by
//! the production code, which applies everything exactly once and counts
//! every retry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::domain::packing::PackingLimits;
use pointflow::domain::{Accrual, JobStatus, MessageRef};
use pointflow::ports::Credits;
use pointflow::ports::{ApplyOutcome, JobStore, Ledger, ReceivedMessage, StoreError, WorkQueue};
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::worker::{IncomingMessage, MessageRetry, Worker, WorkerSettings};
use pointflow_cli::poller::invoke_and_acknowledge;
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{call_api, post_job};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// A ledger that fails every `apply_accruals` while `failing` is set: the
/// store being down, or a bug fixed later, for the message it meets.
struct FlakyLedger {
    inner: Arc<dyn Ledger>,
    failing: AtomicBool,
    failures: AtomicU64,
}

#[async_trait]
impl Credits for FlakyLedger {
    async fn apply_accruals(
        &self,
        by: MessageRef,
        accruals: &[Accrual],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Throttled {
                operation: "injected failure",
            });
        }
        self.inner.apply_accruals(by, accruals, now).await
    }
}

fn ingest(backend: &Backend, max_accruals: usize) -> ApiService {
    ApiService::new(
        backend.jobs.clone(),
        backend.ledger.clone(),
        backend.queue.clone(),
        ApiSettings {
            packing: PackingLimits {
                max_accruals,
                ..PackingLimits::default()
            },
            ..ApiSettings::default()
        },
    )
}

/// `count` accruals over `members` members, all of point type P, amount
/// `1 + i`; returns the body and each member's expected balance.
fn campaign(prefix: &str, count: usize, members: usize) -> (Value, HashMap<String, u64>) {
    let mut expected: HashMap<String, u64> = HashMap::new();
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let member = format!("{prefix}-m{}", i % members);
            *expected.entry(member.clone()).or_default() += 1 + i as u64;
            json!({"accrual_id": format!("{prefix}-{i}"), "member_id": member, "point_type": "P", "amount": 1 + i})
        })
        .collect();
    (json!({ "accruals": items }), expected)
}

async fn submit(service: &ApiService, body: &Value) -> pointflow::domain::JobId {
    let (status, accepted) = call_api(service, post_job(body, None)).await;
    assert_eq!(status, 202, "{accepted}");
    accepted["job_id"].as_str().unwrap().parse().unwrap()
}

async fn assert_balances(ledger: &dyn Ledger, expected: &HashMap<String, u64>) {
    for (member, sum) in expected {
        let balances = ledger.balances(member).await.unwrap();
        assert_eq!(balances.len(), 1, "{member}: {balances:?}");
        assert_eq!(balances[0].balance, *sum, "{member} credited once");
    }
}

/// Receives until `expected` messages are in hand (or 10 tries).
async fn receive(queue: &dyn WorkQueue, expected: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    for _ in 0..10 {
        if got.len() >= expected {
            break;
        }
        got.extend(queue.receive_messages(10, Duration::from_secs(1)).await.unwrap());
    }
    got
}

#[tokio::test]
async fn a_message_that_keeps_failing_reaches_the_dlq_and_a_redrive_applies_it_once() {
    // One-second visibility, two receives before the DLQ: all in seconds.
    let Some(backend) = backend::aws(Duration::from_secs(1), 2).await else {
        return;
    };
    let flaky = Arc::new(FlakyLedger {
        inner: backend.ledger.clone(),
        failing: AtomicBool::new(true),
        failures: AtomicU64::new(0),
    });
    let worker = Worker::from_parts(
        flaky.clone(),
        backend.ledger.clone(),
        backend.jobs.clone(),
        WorkerSettings {
            max_receive_count: 2,
            message_concurrency: 1,
        },
    )
    // One try per delivery: this is about deliveries (and the one-second
    // visibility leaves no room for waits within one).
    .with_retry(MessageRetry {
        attempts: 1,
        ..MessageRetry::default()
    });
    let (body, expected) = campaign("dlq", 12, 4);
    let job_id = submit(&ingest(&backend, 500), &body).await;

    // Lambda's event source: receive, invoke, leave the failure in the
    // queue; it comes back after the visibility timeout, twice in all.
    for delivery in 1..=2u32 {
        let batch = receive(backend.queue.as_ref(), 1).await;
        assert_eq!(batch.len(), 1, "delivery {delivery}");
        assert_eq!(batch[0].receive_count, delivery);
        let (done, failed) = invoke_and_acknowledge(backend.queue.as_ref(), &worker, &batch)
            .await
            .unwrap();
        assert_eq!((done, failed), (0, 1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // The next receive finds the message past maxReceiveCount: SQS moves it.
    assert_eq!(
        backend
            .queue
            .receive_messages(10, Duration::from_secs(1))
            .await
            .unwrap(),
        []
    );
    let dead = pointflow::services::dlq::list(backend.dlq.as_ref(), pointflow::services::dlq::QueueKind::Accruals, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job_id, dead[0].accruals), (Some(job_id), 12));
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 2, "one failure per delivery");

    // Its last delivery counted its accruals failed: the job is settled,
    // nothing credited.
    let job = backend.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.applied, job.duplicate, job.failed), (0, 0, 12));
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
    for member in expected.keys() {
        assert_eq!(backend.ledger.balances(member).await.unwrap(), []);
    }

    // The cause is fixed; the operator redrives. The message is applied
    // once, and its accruals move from failed to applied.
    flaky.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await; // `list` left it in flight
    let moved = pointflow::services::dlq::redrive(
        backend.dlq.as_ref(),
        backend.queue.as_ref(),
        pointflow::services::dlq::QueueKind::Accruals,
        10,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    assert_eq!((moved.messages, moved.accruals), (1, 12));
    let batch = receive(backend.queue.as_ref(), 1).await;
    assert_eq!(batch.len(), 1);
    // Delivered twice more (its deletion lost, say): still credited once.
    for _ in 0..2 {
        let response = worker::handle(&worker, worker::to_sqs_event(&batch)).await;
        assert!(response.batch_item_failures.is_empty());
    }
    backend
        .queue
        .delete_messages(&[batch[0].receipt_handle.clone()])
        .await
        .unwrap();
    assert_balances(backend.ledger.as_ref(), &expected).await;
    let job = backend.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.applied, job.duplicate, job.failed), (12, 0, 0));
    assert_eq!(job.status(), JobStatus::Completed);
    let again = pointflow::services::dlq::redrive(
        backend.dlq.as_ref(),
        backend.queue.as_ref(),
        pointflow::services::dlq::QueueKind::Accruals,
        10,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    assert_eq!(again.messages, 0, "the DLQ is empty");
}

#[tokio::test]
async fn a_message_not_deleted_is_redelivered_after_the_visibility_timeout_and_applied_once() {
    let Some(backend) = backend::aws(Duration::from_secs(1), 5).await else {
        return;
    };
    let worker = Worker::new(
        backend.ledger.clone(),
        backend.jobs.clone(),
        WorkerSettings {
            max_receive_count: 5,
            message_concurrency: 1,
        },
    );
    let (body, expected) = campaign("vis", 20, 5);
    let job_id = submit(&ingest(&backend, 500), &body).await;

    // The worker applies the message and dies before deleting it.
    let first = receive(backend.queue.as_ref(), 1).await;
    let received_at = std::time::Instant::now();
    assert_eq!(first.len(), 1);
    let incoming = |m: &ReceivedMessage| IncomingMessage {
        message_id: m.message_id.clone(),
        body: m.body.clone(),
        receive_count: m.receive_count,
    };
    let report = worker.process_message(&incoming(&first[0])).await.unwrap();
    assert_eq!((report.counts.applied, report.replayed, report.folded), (20, 0, true));
    let in_flight = backend
        .queue
        .receive_messages(10, Duration::from_millis(200))
        .await
        .unwrap();
    // Only a check while the timeout has surely not passed: a loaded
    // machine may take longer than the second to get here, and then the
    // message is rightly visible again.
    assert!(
        in_flight.is_empty() || received_at.elapsed() >= backend.visibility_timeout,
        "visible again {:?} after the receive, inside the {:?} visibility timeout",
        received_at.elapsed(),
        backend.visibility_timeout
    );

    // After the visibility timeout SQS delivers it again (at once if the
    // check above already saw it back).
    let second = if in_flight.is_empty() {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        receive(backend.queue.as_ref(), 1).await
    } else {
        in_flight
    };
    assert_eq!(second.len(), 1);
    assert_eq!(
        (&second[0].message_id, second[0].receive_count),
        (&first[0].message_id, 2)
    );
    let report = worker.process_message(&incoming(&second[0])).await.unwrap();
    assert_eq!(
        (
            report.counts.applied,
            report.counts.duplicate,
            report.replayed,
            report.folded
        ),
        (20, 0, 0, false),
        "credited by this very message (DynamoDB answers the resend, same \
         ClientRequestToken and same items inside its 10 minutes, with the \
         first commit's success: applied, not seen as a replay), and not folded again"
    );
    backend
        .queue
        .delete_messages(&[second[0].receipt_handle.clone()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        backend
            .queue
            .receive_messages(10, Duration::from_millis(200))
            .await
            .unwrap(),
        [],
        "deleted for good"
    );

    assert_balances(backend.ledger.as_ref(), &expected).await;
    let job = backend.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.total, job.applied, job.duplicate, job.failed), (20, 20, 0, 0));
    assert_eq!(job.status(), JobStatus::Completed);
}

/// What the proxy did, per `X-Amz-Target` operation, and per refusal.
#[derive(Default)]
struct Traffic {
    forwarded: HashMap<String, u64>,
    throttled: HashMap<String, u64>,
    /// Batch entries answered as failed ([`EntryFault`]).
    entries_failed: HashMap<String, u64>,
    /// Requests that matched a refusal's needle, refused or let through.
    matched: HashMap<&'static str, u64>,
}

/// A canned refusal: the first `times` requests to `target` whose body
/// holds `needle` are answered with `error` (an AWS JSON error body, HTTP
/// 400) without reaching the emulator, so they take no effect.
#[derive(Clone, Copy)]
pub(crate) struct Refusal {
    pub target: &'static str,
    pub needle: &'static str,
    pub times: u64,
    pub error: &'static str,
}

/// A fault-injecting HTTP proxy in front of the emulator. Of the requests
/// to an operation in `faults`, it answers the first `n` of every `n + 1`
/// with that service's throttling error (HTTP 400, the JSON error body AWS
/// sends) without forwarding them; everything else goes to the emulator
/// unchanged. One request per connection (it answers `Connection: close`),
/// so it needs no HTTP framing of its own beyond reading the request.
pub(crate) struct FaultProxy {
    pub url: String,
    traffic: Arc<Mutex<Traffic>>,
}

/// Entries of a `SendMessageBatch` the proxy fails on SQS's side: it takes
/// the batch's last entry out of the request it forwards and adds it to the
/// answer's `Failed` list (`SenderFault: false`, as SQS reports an internal
/// error for one entry of an otherwise successful batch), so the entry is
/// really not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryFault {
    None,
    /// Only in batches of more than one entry: a retry of the failed entry
    /// alone goes through.
    LastOfSeveral,
    /// In every batch: an entry retried alone fails again, every time.
    Last,
}

impl FaultProxy {
    fn start(upstream: &str, faults: &[(&'static str, u64)]) -> Self {
        Self::start_full(upstream, faults, &[], EntryFault::None)
    }

    /// A proxy that also answers requests matching `refusals` with their
    /// canned errors.
    pub(crate) fn start_with(upstream: &str, faults: &[(&'static str, u64)], refusals: &[Refusal]) -> Self {
        Self::start_full(upstream, faults, refusals, EntryFault::None)
    }

    /// A proxy that also fails `SendMessageBatch` entries as `entry_fault` says.
    fn start_with_entry_fault(upstream: &str, faults: &[(&'static str, u64)], entry_fault: EntryFault) -> Self {
        Self::start_full(upstream, faults, &[], entry_fault)
    }

    fn start_full(
        upstream: &str,
        faults: &[(&'static str, u64)],
        refusals: &[Refusal],
        entry_fault: EntryFault,
    ) -> Self {
        let refusals = refusals.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let faults: HashMap<&'static str, u64> = faults.iter().copied().collect();
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let shared = traffic.clone();
        // The accept loop lives as long as the test process; each connection
        // is one request, so every thread ends after its answer.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, faults, traffic) = (upstream.clone(), faults.clone(), shared.clone());
                let refusals = refusals.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(client, &upstream, &faults, &refusals, entry_fault, &traffic) {
                        eprintln!("fault proxy: {e}");
                    }
                });
            }
        });
        FaultProxy { url, traffic }
    }

    fn throttled(&self, operation: &str) -> u64 {
        self.traffic
            .lock()
            .unwrap()
            .throttled
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    fn entries_failed(&self, operation: &str) -> u64 {
        self.traffic
            .lock()
            .unwrap()
            .entries_failed
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Requests that matched refusal `needle`, refused or let through.
    pub(crate) fn matched(&self, needle: &str) -> u64 {
        self.traffic.lock().unwrap().matched.get(needle).copied().unwrap_or(0)
    }

    fn forwarded(&self, prefix: &str) -> u64 {
        let traffic = self.traffic.lock().unwrap();
        traffic
            .forwarded
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    faults: &HashMap<&'static str, u64>,
    refusals: &[Refusal],
    entry_fault: EntryFault,
    traffic: &Mutex<Traffic>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut target = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // closed before a request
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-amz-target:") {
            target = line["x-amz-target:".len()..].trim().to_owned();
        }
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut client = client;

    let text = String::from_utf8_lossy(&body);
    let refusal = refusals.iter().find(|r| {
        r.target == target && text.contains(r.needle) && {
            let mut t = traffic.lock().unwrap();
            let matched = t.matched.entry(r.needle).or_default();
            *matched += 1;
            *matched <= r.times
        }
    });
    if let Some(refusal) = refusal {
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: injected-refusal\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            refusal.error.len(),
            refusal.error
        );
        return client.write_all(response.as_bytes());
    }

    let throttle = faults.get(target.as_str()).is_some_and(|n| {
        let mut t = traffic.lock().unwrap();
        let seen = t.forwarded.get(&target).copied().unwrap_or(0) + t.throttled.get(&target).copied().unwrap_or(0);
        let throttle = seen % (n + 1) < *n;
        if throttle {
            *t.throttled.entry(target.clone()).or_default() += 1;
        }
        throttle
    });
    if throttle {
        let (error, extra) = if target.starts_with("AmazonSQS.") {
            (
                r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Request is throttled."}"#,
                "x-amzn-query-error: RequestThrottled;Sender\r\n",
            )
        } else {
            (
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}"#,
                "",
            )
        };
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: injected-throttle\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{error}",
            error.len()
        );
        return client.write_all(response.as_bytes());
    }
    let failed_entry = if target == "AmazonSQS.SendMessageBatch" {
        fail_last_entry(&mut head, &mut body, entry_fault)
    } else {
        None
    };
    if let Some(failure) = &failed_entry {
        *traffic
            .lock()
            .unwrap()
            .entries_failed
            .entry(target.clone())
            .or_default() += 1;
        if failure.was_alone {
            // The batch's only entry failed: SQS still answers 200.
            let answer = json!({"Successful": [], "Failed": [failed(&failure.id)]}).to_string();
            return client.write_all(http_200(&answer).as_bytes());
        }
    }
    *traffic.lock().unwrap().forwarded.entry(target).or_default() += 1;
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(head.as_bytes())?;
    server.write_all(b"Connection: close\r\n\r\n")?;
    server.write_all(&body)?;
    // The emulator closes after its answer (`Connection: close`).
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if let Some(failure) = failed_entry {
        answer = add_failed_entry(&answer, &failure.id)?;
    }
    client.write_all(&answer)
}

/// A batch entry the proxy fails.
struct FailedEntry {
    /// The entry's `Id` in the batch.
    id: Value,
    /// It was the batch's only entry: nothing is forwarded.
    was_alone: bool,
}

/// Takes the last entry out of a `SendMessageBatch` request as `entry_fault`
/// says, rewriting the body and its `Content-Length`; `None` leaves the
/// request alone.
fn fail_last_entry(head: &mut String, body: &mut Vec<u8>, entry_fault: EntryFault) -> Option<FailedEntry> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let entries = request.get_mut("Entries")?.as_array_mut()?;
    let was_alone = match (entry_fault, entries.len()) {
        (EntryFault::None, _) | (_, 0) | (EntryFault::LastOfSeveral, 1) => return None,
        (_, n) => n == 1,
    };
    let entry = entries.pop()?;
    *body = request.to_string().into_bytes();
    *head = set_content_length(head, body.len());
    Some(FailedEntry {
        id: entry["Id"].clone(),
        was_alone,
    })
}

fn failed(id: &Value) -> Value {
    json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "injected entry failure"})
}

fn set_content_length(head: &str, length: usize) -> String {
    head.split_inclusive("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {length}\r\n")
            } else {
                line.to_owned()
            }
        })
        .collect()
}

fn http_200(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: injected-entry-failure\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The emulator's `SendMessageBatch` answer with `id` added to `Failed`.
fn add_failed_entry(answer: &[u8], id: &Value) -> std::io::Result<Vec<u8>> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers in the emulator's answer"))?;
    let mut output: Value = serde_json::from_slice(&answer[split + 4..]).map_err(std::io::Error::other)?;
    let list = output
        .as_object_mut()
        .ok_or_else(|| std::io::Error::other("answer is not a JSON object"))?
        .entry("Failed")
        .or_insert_with(|| json!([]));
    list.as_array_mut()
        .ok_or_else(|| std::io::Error::other("Failed is not a list"))?
        .push(failed(id));
    Ok(http_200(&output.to_string()).into_bytes())
}

#[tokio::test]
async fn throttling_over_the_wire_is_retried_and_everything_is_applied_once() {
    let Some(sdk) = backend::emulator_config().await else {
        return;
    };
    // Resources made and checked directly; the code under test talks
    // through the proxy.
    let direct = direct_resources(&sdk, "accruals").await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    // Every TransactWriteItems and SendMessageBatch is refused three times,
    // then let through: the SDK's own retries (3 attempts, as in production)
    // are used up once per call, so the production code's retry runs too.
    let proxy = FaultProxy::start(
        &endpoint,
        &[
            ("DynamoDB_20120810.TransactWriteItems", 3),
            ("AmazonSQS.SendMessageBatch", 3),
        ],
    );
    // Production's backoff for the production retries.
    let store = Arc::new(DynamoStore::new(dynamo_through(&sdk, &proxy), &direct.table));
    let queue = Arc::new(SqsQueue::new(sqs_through(&sdk, &proxy), &direct.queue_url));
    let service = ApiService::new(
        store.clone(),
        store.clone(),
        queue.clone(),
        ApiSettings {
            packing: PackingLimits {
                max_accruals: 25,
                ..PackingLimits::default()
            },
            ..ApiSettings::default()
        },
    );
    let worker = Worker::new(
        store.clone(),
        store.clone(),
        WorkerSettings {
            max_receive_count: 3,
            message_concurrency: 1,
        },
    );

    let (body, expected) = campaign("thr", 100, 10);
    let job_id = submit(&service, &body).await;
    let sends = queue.requests();
    assert_eq!(
        sends, 2,
        "one SendMessageBatch of 5 messages (2 members of 10 accruals each), refused (three throttles, all the SDK's attempts) and sent again"
    );
    assert_eq!(proxy.throttled("AmazonSQS.SendMessageBatch"), 3);

    let messages = receive(direct.queue.as_ref(), 5).await;
    assert_eq!(messages.len(), 5);
    let requests_before = store.requests();
    let dynamo_before = proxy.forwarded("DynamoDB_20120810.");
    let (done, failed) = invoke_and_acknowledge(direct.queue.as_ref(), &worker, &messages)
        .await
        .unwrap();
    assert_eq!((done, failed), (5, 0), "every message applied despite throttling");
    let transactions = proxy.forwarded("DynamoDB_20120810.TransactWriteItems");
    let throttled = proxy.throttled("DynamoDB_20120810.TransactWriteItems");
    // Each transaction that went through was refused three times first: one
    // round of SDK retries used up, then one production retry.
    assert_eq!(
        throttled,
        3 * transactions,
        "{throttled} throttled, {transactions} through"
    );
    assert_eq!(transactions, 10, "per message: its accruals, and the fold into its job");
    let retries = throttled / 3;
    // The store counts every attempt it made, failed ones included: what
    // reached DynamoDB plus one per retry.
    let counted = store.requests() - requests_before;
    let reached = proxy.forwarded("DynamoDB_20120810.") - dynamo_before;
    assert_eq!(counted, reached + retries);
    println!(
        "throttling: {throttled} TransactWriteItems and 3 SendMessageBatch answers throttled; \
         {transactions} transactions through after {retries} production retries; \
         worker store requests counted {counted} ({reached} reached the emulator)"
    );

    assert_balances(direct.store.as_ref(), &expected).await;
    let job = direct.store.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.total, job.applied, job.duplicate, job.failed, job.messages),
        (100, 100, 0, 0, 5)
    );
    assert_eq!(job.status(), JobStatus::Completed);
}

/// A table and a work queue (with its DLQ) made directly on the emulator,
/// and the production adapters on them: to set a test up and check its
/// outcome, while the code under test talks through a proxy.
struct Direct {
    table: String,
    queue_url: String,
    store: Arc<DynamoStore>,
    queue: Arc<SqsQueue>,
}

/// Makes a fresh table and a queue named after `queue_prefix` (30 s
/// visibility, 3 receives before the DLQ).
async fn direct_resources(sdk: &aws_config::SdkConfig, queue_prefix: &str) -> Direct {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let table = backend::unique_name("pointflow");
    create_table(&dynamo, &table).await.expect("create table");
    let (queue_url, _dlq_url) =
        create_queue_with_dlq(&sqs, &backend::unique_name(queue_prefix), Duration::from_secs(30), 3)
            .await
            .expect("create queues");
    Direct {
        store: Arc::new(DynamoStore::new(dynamo, &table)),
        queue: Arc::new(SqsQueue::new(sqs, &queue_url)),
        table,
        queue_url,
    }
}

/// Production's retry mode and attempts (standard, 3), with only the SDK's
/// backoff shortened (1 s base by default) so a test takes seconds.
fn short_sdk_retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(5))
}

// The endpoint is set on each client: the SDK prefers AWS_ENDPOINT_URL from
// the environment to the shared config's endpoint.

/// A DynamoDB client that talks through `proxy`, with a short SDK backoff.
pub(crate) fn dynamo_through(sdk: &aws_config::SdkConfig, proxy: &FaultProxy) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(&proxy.url)
        .retry_config(short_sdk_retries())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// An SQS client that talks through `proxy`, with a short SDK backoff.
fn sqs_through(sdk: &aws_config::SdkConfig, proxy: &FaultProxy) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .endpoint_url(&proxy.url)
        .retry_config(short_sdk_retries())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

fn short_backoff() -> pointflow::adapters::retry::Backoff {
    pointflow::adapters::retry::Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        max_attempts: 3,
    }
}

/// Entries SQS fails inside an otherwise successful `SendMessageBatch`
/// (`Failed`, `SenderFault: false`) are sent again by the adapter, alone:
/// over the wire, every body is queued exactly once.
#[tokio::test]
async fn entries_sqs_fails_inside_a_batch_are_sent_again_and_queued_once() {
    let Some(sdk) = backend::emulator_config().await else {
        return;
    };
    let direct = direct_resources(&sdk, "partial").await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = FaultProxy::start_with_entry_fault(&endpoint, &[], EntryFault::LastOfSeveral);
    let queue = SqsQueue::new(sqs_through(&sdk, &proxy), &direct.queue_url).with_backoff(short_backoff());

    let bodies: Vec<String> = (0..13).map(|i| format!("{{\"partial\":{i}}}")).collect();
    queue.send_messages(&bodies).await.unwrap();
    // Two batches (10 and 3 entries) each lose their last entry, which is
    // then sent alone.
    assert_eq!(proxy.entries_failed("AmazonSQS.SendMessageBatch"), 2);
    assert_eq!(queue.requests(), 4);

    let received = receive(direct.queue.as_ref(), bodies.len()).await;
    let mut got: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    got.sort_unstable();
    let mut sent: Vec<&str> = bodies.iter().map(String::as_str).collect();
    sent.sort_unstable();
    assert_eq!(got, sent, "each body queued exactly once");
    // Anything queued twice would be visible now (the ones received stay
    // invisible for 30 s).
    assert_eq!(
        direct.queue.receive_messages(10, Duration::from_secs(1)).await.unwrap(),
        []
    );
}

/// When SQS keeps failing an entry, the API answers 503
/// `enqueue_incomplete` naming the job; a retry with the same idempotency
/// key finishes the enqueue, and the worker credits every accrual once
/// although some messages were queued by both attempts.
#[tokio::test]
async fn an_entry_sqs_keeps_failing_answers_enqueue_incomplete_and_a_retry_finishes_the_job() {
    let Some(sdk) = backend::emulator_config().await else {
        return;
    };
    let Direct {
        queue_url,
        store,
        queue,
        ..
    } = direct_resources(&sdk, "partial").await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = FaultProxy::start_with_entry_fault(&endpoint, &[], EntryFault::Last);
    let broken = Arc::new(SqsQueue::new(sqs_through(&sdk, &proxy), &queue_url).with_backoff(short_backoff()));
    let settings = ApiSettings {
        packing: PackingLimits {
            max_accruals: 10,
            ..PackingLimits::default()
        },
        ..ApiSettings::default()
    };
    let failing = ApiService::new(store.clone(), store.clone(), broken, settings);
    let (body, expected) = campaign("pf", 30, 3);
    let (status, error) = call_api(&failing, post_job(&body, Some("partial-send"))).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "enqueue_incomplete");
    assert!(
        proxy.entries_failed("AmazonSQS.SendMessageBatch") >= 3,
        "the entry failed on every attempt"
    );
    let job_id = error["error"]["job_id"].as_str().unwrap().to_owned();

    let healthy = ApiService::new(store.clone(), store.clone(), queue.clone(), settings);
    let (status, accepted) = call_api(&healthy, post_job(&body, Some("partial-send"))).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["job_id"], job_id.as_str());

    let worker = Worker::new(
        store.clone(),
        store.clone(),
        WorkerSettings {
            max_receive_count: 3,
            message_concurrency: 1,
        },
    );
    let mut delivered = 0;
    loop {
        let batch = queue.receive_messages(10, Duration::from_secs(1)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        delivered += batch.len();
        let (_, failed) = invoke_and_acknowledge(queue.as_ref(), &worker, &batch).await.unwrap();
        assert_eq!(failed, 0);
    }
    assert!(
        delivered > 3,
        "some messages were queued by both attempts ({delivered} delivered)"
    );
    assert_balances(store.as_ref(), &expected).await;
    let job = store.get_job(job_id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((job.total, job.applied, job.duplicate, job.failed), (30, 30, 0, 0));
    assert_eq!(job.status(), JobStatus::Completed);
}
