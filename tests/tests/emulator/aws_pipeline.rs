//! End to end over the AWS wire protocols (moto): the real ingest and worker
//! handlers, the real SDK clients, a real queue and table per test.

use std::sync::Arc;
use std::time::Duration;

use pointflow::domain::message::QueueMessage;
use pointflow::ports::WorkQueue;
use pointflow::ports::{Credits, Debits, LedgerReads};
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::worker::{Worker, WorkerSettings};
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{api_event, call_api, drain, post_job, sqs_event};
use serde_json::{json, Value};

struct Pipeline {
    backend: Backend,
    ingest: ApiService,
    worker: Worker,
}

async fn pipeline() -> Option<Pipeline> {
    // A long visibility timeout: nothing is redelivered behind a test's back.
    let backend = backend::aws(Duration::from_secs(30), 3).await?;
    let ingest = ApiService::new(
        backend.jobs.clone(),
        backend.ledger.clone(),
        backend.queue.clone(),
        ApiSettings::default(),
    );
    let worker = Worker::new(
        backend.ledger.clone(),
        backend.jobs.clone(),
        WorkerSettings {
            max_receive_count: 3,
            // moto copies a table per transaction and is not safe against a
            // concurrent write to the same table (it answers 500); real
            // DynamoDB is, and the memory-backed tests run concurrently.
            message_concurrency: 1,
        },
    );
    Some(Pipeline {
        backend,
        ingest,
        worker,
    })
}

fn item(id: &str, member: &str, point_type: &str, amount: u64) -> Value {
    json!({"accrual_id": id, "member_id": member, "point_type": point_type, "amount": amount})
}

async fn get(p: &Pipeline, path: &str) -> (i64, Value) {
    call_api(&p.ingest, api_event("GET", path, &[], None)).await
}

/// Every message currently in the queue, left in flight: the latest
/// delivery of each (with a short visibility timeout on a loaded machine, a
/// message may come back before the others arrive).
async fn take_messages(queue: &dyn WorkQueue, expected: usize) -> Vec<pointflow::ports::ReceivedMessage> {
    let mut got: Vec<pointflow::ports::ReceivedMessage> = Vec::new();
    for _ in 0..20 {
        if got.len() >= expected {
            break;
        }
        for message in queue.receive_messages(10, Duration::from_secs(1)).await.unwrap() {
            got.retain(|m| m.message_id != message.message_id);
            got.push(message);
        }
    }
    got
}

#[tokio::test]
async fn campaign_is_credited_end_to_end_with_exact_counts() {
    let Some(p) = pipeline().await else { return };
    // 250 members × 2 point types × 2 accruals = 1,000 accruals, plus one
    // exact repeat that the API collapses.
    let mut items = Vec::new();
    for m in 0..250 {
        for (t, point_type) in ["WELCOME", "BONUS"].iter().enumerate() {
            for r in 0..2 {
                items.push(item(
                    &format!("e2e-{m}-{t}-{r}"),
                    &format!("m-{m:04}"),
                    point_type,
                    100 + r,
                ));
            }
        }
    }
    items.push(items[0].clone());
    let sqs_before = p.backend.queue.requests();
    let (status, accepted) = call_api(&p.ingest, post_job(&json!({ "accruals": items }), None)).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["accepted"], 1000);
    assert_eq!(accepted["deduplicated"], 1);
    let messages = accepted["messages"].as_u64().unwrap();
    assert_eq!(
        messages, 2,
        "1,000 accruals of ~100 bytes pack into two 500-accrual messages"
    );

    let drained = drain(p.backend.queue.as_ref(), &p.worker).await;
    assert_eq!(drained.failures, 0);
    assert_eq!(drained.deliveries, 2);

    let job_id = accepted["job_id"].as_str().unwrap();
    let (status, job) = get(&p, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "completed");
    assert_eq!(
        (job["total"].as_u64(), job["applied"].as_u64()),
        (Some(1000), Some(1000))
    );
    assert_eq!((job["duplicate"].as_u64(), job["failed"].as_u64()), (Some(0), Some(0)));
    assert!(job["completed_at"].is_string());

    for m in [0, 123, 249] {
        let (status, balances) = get(&p, &format!("/v1/members/m-{m:04}/balances")).await;
        assert_eq!(status, 200);
        assert_eq!(balances["balances"], json!({"BONUS": 201, "WELCOME": 201}));
    }

    let sqs = p.backend.queue.requests() - sqs_before;
    let dynamo = (p.backend.store_requests)();
    println!(
        "requests for 1,000 accruals: SQS {sqs} (send + receive + delete), DynamoDB {dynamo}, \
         total {} = {:.4} per accrual",
        sqs + dynamo,
        (sqs + dynamo) as f64 / 1000.0
    );
}

#[tokio::test]
async fn resubmitting_the_same_request_creates_nothing_new() {
    let Some(p) = pipeline().await else { return };
    let body = json!({"accruals": [
        {"member_id": "r-1", "point_type": "P", "amount": 10},
        {"member_id": "r-2", "point_type": "P", "amount": 20},
    ]});
    let (s1, first) = call_api(&p.ingest, post_job(&body, Some("resubmit-key"))).await;
    let (s2, second) = call_api(&p.ingest, post_job(&body, Some("resubmit-key"))).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first, second, "the retry answers with the same job");

    let other = json!({"accruals": [{"member_id": "r-1", "point_type": "P", "amount": 11}]});
    let (s3, conflict) = call_api(&p.ingest, post_job(&other, Some("resubmit-key"))).await;
    assert_eq!(s3, 409, "{conflict}");
    assert_eq!(conflict["error"]["job_id"], first["job_id"]);

    let drained = drain(p.backend.queue.as_ref(), &p.worker).await;
    assert_eq!(drained.deliveries, 1, "only the first request queued its message");
    let (_, job) = get(&p, &format!("/v1/jobs/{}", first["job_id"].as_str().unwrap())).await;
    assert_eq!((job["total"].as_u64(), job["applied"].as_u64()), (Some(2), Some(2)));
    let (_, balances) = get(&p, "/v1/members/r-1/balances").await;
    assert_eq!(balances["balances"], json!({"P": 10}));
}

#[tokio::test]
async fn a_message_delivered_twice_credits_and_counts_once() {
    let Some(p) = pipeline().await else { return };
    let body = json!({"accruals": [item("d-1", "d-m", "P", 5), item("d-2", "d-m", "P", 7)]});
    let (_, accepted) = call_api(&p.ingest, post_job(&body, None)).await;
    let messages = take_messages(p.backend.queue.as_ref(), 1).await;
    assert_eq!(messages.len(), 1);
    for _ in 0..2 {
        let response = worker::handle(&p.worker, sqs_event(&messages)).await;
        assert!(response.batch_item_failures.is_empty());
    }
    let (_, job) = get(&p, &format!("/v1/jobs/{}", accepted["job_id"].as_str().unwrap())).await;
    assert_eq!((job["applied"].as_u64(), job["duplicate"].as_u64()), (Some(2), Some(0)));
    assert_eq!(job["status"], "completed");
    let (_, balances) = get(&p, "/v1/members/d-m/balances").await;
    assert_eq!(balances["balances"], json!({"P": 12}));
}

#[tokio::test]
async fn a_worker_crash_mid_message_is_finished_by_the_redelivery() {
    let Some(p) = pipeline().await else { return };
    let items: Vec<Value> = (0..120)
        .map(|i| item(&format!("c-{i}"), &format!("c-m{}", i % 60), "P", 1))
        .collect();
    let (_, accepted) = call_api(&p.ingest, post_job(&json!({ "accruals": items }), None)).await;
    let messages = take_messages(p.backend.queue.as_ref(), 1).await;
    assert_eq!(messages.len(), 1);
    // The crash: the first transaction's worth of accruals was written, then
    // the worker died before folding the message into its job.
    let decoded = QueueMessage::decode(&messages[0].body).unwrap();
    let partial = p
        .backend
        .ledger
        .apply_accruals(
            pointflow::domain::MessageRef {
                job_id: decoded.job_id,
                seq: decoded.seq,
            },
            &decoded.accruals()[..50],
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    assert_eq!(partial.applied, 50);

    let mut redelivered = messages.clone();
    redelivered[0].receive_count = 2;
    let response = worker::handle(&p.worker, sqs_event(&redelivered)).await;
    assert!(response.batch_item_failures.is_empty());
    let (_, job) = get(&p, &format!("/v1/jobs/{}", accepted["job_id"].as_str().unwrap())).await;
    assert_eq!(
        (job["applied"].as_u64(), job["duplicate"].as_u64()),
        (Some(120), Some(0))
    );
    for m in [0, 59] {
        let (_, balances) = get(&p, &format!("/v1/members/c-m{m}/balances")).await;
        assert_eq!(balances["balances"], json!({"P": 2}));
    }
}

#[tokio::test]
async fn one_member_credited_many_times_in_one_message() {
    let Some(p) = pipeline().await else { return };
    let items: Vec<Value> = (0..180).map(|i| item(&format!("many-{i}"), "vip", "P", 3)).collect();
    let (status, accepted) = call_api(&p.ingest, post_job(&json!({ "accruals": items }), None)).await;
    assert_eq!((status, accepted["messages"].as_u64()), (202, Some(1)));
    assert_eq!(drain(p.backend.queue.as_ref(), &p.worker).await.failures, 0);
    let (_, balances) = get(&p, "/v1/members/vip/balances").await;
    assert_eq!(balances["balances"], json!({"P": 540}));
}

#[tokio::test]
async fn a_member_with_two_point_types_has_two_balances() {
    let Some(p) = pipeline().await else { return };
    let body = json!({"accruals": [item("t-1", "two", "WELCOME", 2000), item("t-2", "two", "BONUS", 500)]});
    call_api(&p.ingest, post_job(&body, None)).await;
    drain(p.backend.queue.as_ref(), &p.worker).await;
    let (status, balances) = get(&p, "/v1/members/two/balances").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&balances["member_id"], &balances["balances"]),
        (&json!("two"), &json!({"BONUS": 500, "WELCOME": 2000}))
    );
    assert_eq!(
        balances["details"]["WELCOME"],
        json!({"available": 2000, "pending": 0, "expiring_soon": 0, "expired": 0,
               "lifetime_earned": 2000, "lifetime_used": 0})
    );
    assert_eq!(get(&p, "/v1/members/nobody/balances").await.0, 404);
}

#[tokio::test]
async fn invalid_items_are_refused_and_nothing_is_queued() {
    let Some(p) = pipeline().await else { return };
    let body = json!({"accruals": [
        item("ok-1", "m", "P", 1),
        {"accrual_id": "bad-1", "member_id": "m", "point_type": "P", "amount": 0},
        {"accrual_id": "bad-2", "point_type": "P", "amount": 1},
    ]});
    let (status, error) = call_api(&p.ingest, post_job(&body, None)).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "invalid_accruals");
    assert_eq!(error["error"]["total_errors"], 2);
    let errors = &error["error"]["errors"];
    assert_eq!(
        (errors[0]["index"].as_u64(), errors[0]["field"].as_str()),
        (Some(1), Some("amount"))
    );
    assert_eq!(
        (errors[1]["index"].as_u64(), errors[1]["field"].as_str()),
        (Some(2), Some("member_id"))
    );
    assert_eq!(
        p.backend
            .queue
            .receive_messages(10, Duration::from_secs(1))
            .await
            .unwrap(),
        []
    );
}

#[tokio::test]
async fn a_poison_message_fails_alone_and_reaches_the_dead_letter_queue() {
    // Short visibility timeout and two receives: the redrive happens in seconds.
    let Some(backend) = backend::aws(Duration::from_secs(1), 2).await else {
        return;
    };
    let worker = Worker::new(backend.ledger.clone(), backend.jobs.clone(), WorkerSettings::default());
    let ingest = ApiService::new(
        backend.jobs.clone(),
        backend.ledger.clone(),
        backend.queue.clone(),
        ApiSettings::default(),
    );
    backend
        .queue
        .send_messages(&["{not an accrual message".to_owned()])
        .await
        .unwrap();
    let (status, _) = call_api(
        &ingest,
        post_job(&json!({"accruals": [item("p-1", "pm", "P", 4)]}), None),
    )
    .await;
    assert_eq!(status, 202);

    let messages = take_messages(backend.queue.as_ref(), 2).await;
    assert_eq!(messages.len(), 2);
    let poison = messages.iter().find(|m| m.body.starts_with("{not")).unwrap();
    let response = worker::handle(&worker, sqs_event(&messages)).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [poison.message_id.as_str()], "only the poison message fails");
    let good: Vec<String> = messages
        .iter()
        .filter(|m| m.message_id != poison.message_id)
        .map(|m| m.receipt_handle.clone())
        .collect();
    backend.queue.delete_messages(&good).await.unwrap();
    assert_eq!(backend.ledger.balances("pm").await.unwrap()[0].balance, 4);

    // Keep failing it like Lambda would; after maxReceiveCount it moves to the DLQ.
    let drained = drain(backend.queue.as_ref(), &worker).await;
    assert!(drained.failures >= 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        backend
            .queue
            .receive_messages(10, Duration::from_secs(1))
            .await
            .unwrap(),
        []
    );
    let dead = take_messages(backend.dlq.as_ref(), 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, poison.body);
}

#[tokio::test]
async fn a_failed_enqueue_is_finished_by_a_retry_with_the_same_key() {
    let Some(p) = pipeline().await else { return };
    // A queue whose URL does not exist: every send fails.
    let sdk = backend::emulator_config().await.unwrap();
    let broken = Arc::new(
        pointflow::adapters::aws::sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            format!(
                "{}/123456789012/no-such-queue",
                std::env::var("AWS_ENDPOINT_URL").unwrap()
            ),
        )
        .with_backoff(pointflow::adapters::retry::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            max_attempts: 2,
        }),
    );
    let failing = ApiService::new(
        p.backend.jobs.clone(),
        p.backend.ledger.clone(),
        broken,
        ApiSettings::default(),
    );
    let body = json!({"accruals": [item("q-1", "q-m", "P", 9)]});
    let (status, error) = call_api(&failing, post_job(&body, Some("enqueue-retry"))).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "enqueue_incomplete");
    let job_id = error["error"]["job_id"].as_str().unwrap().to_owned();

    let (status, accepted) = call_api(&p.ingest, post_job(&body, Some("enqueue-retry"))).await;
    assert_eq!(status, 202);
    assert_eq!(accepted["job_id"], job_id.as_str());
    drain(p.backend.queue.as_ref(), &p.worker).await;
    let (_, job) = get(&p, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!((job["total"].as_u64(), job["applied"].as_u64()), (Some(1), Some(1)));
    assert_eq!(job["status"], "completed");
}

/// What a use and a reversal cost on DynamoDB, counted by the adapter over
/// the wire: one `TransactWriteItems` of the entry and the guarded balance
/// update, 4 write units, plus 2 for the entry's history index entry; a
/// replay costs the 4 (a failed condition is billed too, but writes no
/// index).
#[tokio::test]
async fn a_use_and_a_reversal_are_one_transaction_of_six_or_eight_write_units() {
    use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
    use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
    use pointflow::domain::uses::{Use, UseOutcome};
    use pointflow::domain::{Accrual, JobId, MessageRef};

    let Some(sdk) = backend::emulator_config().await else {
        return;
    };
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = backend::unique_name("pointflow");
    create_table(&dynamo, &table).await.unwrap();
    let store = DynamoStore::new(dynamo, table);
    let now = time::OffsetDateTime::now_utc();
    let credit = Accrual {
        accrual_id: "spring-2026:m-1".into(),
        member_id: "m-1".into(),
        point_type: "POINTS".into(),
        amount: 2000,
        reason: Some("spring campaign".into()),
        apply_at: None,
        expires_at: None,
    };
    let by = MessageRef {
        job_id: JobId::random(),
        seq: 0,
    };
    store.apply_accruals(by, &[credit], now).await.unwrap();
    let credited = store.write_cost();
    // The entry, its index entry, the balance, and the check that the
    // message's cancel has not begun: 2 each.
    assert_eq!((credited.ledger_requests, credited.ledger_units), (1, 8));

    let order = Use {
        use_id: "order-2026-0001".into(),
        member_id: "m-1".into(),
        point_type: "POINTS".into(),
        amount: 600,
        reason: Some("checkout".into()),
    };
    assert!(matches!(
        store.apply_use(&order, now).await.unwrap(),
        UseOutcome::Applied(_)
    ));
    let used = store.write_cost() - credited;
    assert_eq!((used.ledger_requests, used.ledger_units), (1, 6));
    assert!(matches!(
        store.apply_use(&order, now).await.unwrap(),
        UseOutcome::Replayed(_)
    ));
    let replayed = store.write_cost() - credited - used;
    assert_eq!((replayed.ledger_requests, replayed.ledger_units), (1, 4));
    assert_eq!(store.balances("m-1").await.unwrap()[0].balance, 1400);

    // A reversal: one GetItem of the entry, then one transaction marking it,
    // moving the points and writing the reversal's own history entry (4 + 2
    // + its index entry 2), for a use and for an accrual.
    let before = store.write_cost();
    let requests = store.requests();
    let target = ReversalTarget::Use(order.use_id.clone());
    assert!(matches!(
        store.reverse(&target, now).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    let reversed = store.write_cost() - before;
    assert_eq!((reversed.ledger_requests, reversed.ledger_units), (1, 8));
    assert_eq!(store.requests() - requests, 2);
    let before = store.write_cost();
    let target = ReversalTarget::Accrual("spring-2026:m-1".into());
    assert!(matches!(
        store.reverse(&target, now).await.unwrap(),
        ReversalOutcome::Reversed(_)
    ));
    let reversed = store.write_cost() - before;
    assert_eq!((reversed.ledger_requests, reversed.ledger_units), (1, 8));
    assert_eq!(store.balances("m-1").await.unwrap()[0].balance, 0);
}
