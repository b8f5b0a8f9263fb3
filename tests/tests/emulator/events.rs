//! Every sample event in `events/` goes through its handler against the
//! emulator, so the files `sam local invoke` and `cargo lambda invoke` use
//! can never rot.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::sqs::SqsEvent;
use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::domain::audit::CallerKind;
use pointflow::domain::{JobId, JobStatus, NewJob};
use pointflow::ports::CreateJob;
use pointflow::services::api::{ApiService, ApiSettings};
use pointflow::services::import::{ImportSettings, Importer};
use pointflow::services::worker::Worker;
use pointflow_tests::backend;
use pointflow_tests::lambda::{call_api, event_path, load_event};
use serde_json::json;
use time::OffsetDateTime;

const KNOWN: [&str; 10] = [
    "apigw-post-job.json",
    "apigw-post-use.json",
    "apigw-post-reversal.json",
    "apigw-get-job.json",
    "apigw-post-job-cancel.json",
    "apigw-get-balances.json",
    "apigw-get-ledger.json",
    "sqs-accrual-batch.json",
    "s3-object-created.json",
    "sqs-s3-object-created.json",
];

#[test]
fn every_event_file_is_exercised_here() {
    let dir = event_path("");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut known: Vec<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(
        files, known,
        "a new file in events/ needs a case in tests/tests/emulator/events.rs"
    );
}

#[tokio::test]
async fn sample_events_drive_the_handlers() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let ingest = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());

    // The SQS sample carries two messages of job 5f0c8e7e-…; record that job
    // as the ingest API would have.
    let job_id: JobId = "5f0c8e7e-3d4e-4b8a-9a51-0b6f4f1f2a10".parse().unwrap();
    let created = b
        .jobs
        .create_job(&NewJob {
            job_id,
            request_hash: "sample".into(),
            total: 6,
            deduplicated: 0,
            messages: 2,
            source: None,
            reading: false,
            created_at: OffsetDateTime::now_utc(),
            audit: None,
        })
        .await
        .unwrap();
    assert!(matches!(created, CreateJob::Created(_)));

    let batch: SqsEvent = load_event("sqs-accrual-batch.json");
    let response = worker::handle(&worker, batch).await;
    assert!(response.batch_item_failures.is_empty());

    let (status, job) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-job.json")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "completed");
    assert_eq!((job["applied"].as_u64(), job["duplicate"].as_u64()), (Some(6), Some(0)));

    let (status, balances) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-balances.json")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&balances["member_id"], &balances["balances"]),
        (&json!("m-1001"), &json!({"BONUS": 500, "WELCOME": 2100}))
    );

    let (status, used) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-post-use.json")).await;
    assert_eq!(status, 201, "{used}");
    assert_eq!(
        (used["use_id"].as_str(), used["amount"].as_u64()),
        (Some("order-2026-0001"), Some(600))
    );
    // Who asked, as API Gateway's request context says: the sample's API key.
    assert_eq!(
        used["audit"],
        json!({"caller": {"kind": "api_key", "id": "k9x8w7v6u5", "source_ip": "203.0.113.10"},
               "request_id": "e8c1bc28-9d83-4308-9c63-b50adeadbeef"}),
        "{used}"
    );
    let (again, replay) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-post-use.json")).await;
    assert_eq!((again, &replay), (200, &used), "the use_id makes a retry harmless");
    let (_, balances) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-balances.json")).await;
    assert_eq!(balances["balances"]["WELCOME"], 1500);
    assert_eq!(balances["details"]["WELCOME"]["lifetime_used"], 600);

    let (status, reversed) = call_api(
        &ingest,
        load_event::<ApiGatewayProxyRequest>("apigw-post-reversal.json"),
    )
    .await;
    assert_eq!(status, 201, "{reversed}");
    assert_eq!(
        (reversed["kind"].as_str(), reversed["amount"].as_u64()),
        (Some("use"), Some(600))
    );
    // An IAM caller (the usage plan's key only meters) and the reason given.
    let support = json!({"caller": {"kind": "iam", "id": "arn:aws:iam::123456789012:user/support-alice",
                                    "account_id": "123456789012", "source_ip": "203.0.113.10"},
                         "request_id": "7d2f9a64-1c3b-4e8d-b5a6-0f9e8d7cbeef", "reason": "order refunded"});
    assert_eq!(reversed["audit"], support, "{reversed}");
    let (again, _) = call_api(
        &ingest,
        load_event::<ApiGatewayProxyRequest>("apigw-post-reversal.json"),
    )
    .await;
    assert_eq!(again, 200);
    let (_, balances) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-balances.json")).await;
    assert_eq!(balances["balances"]["WELCOME"], 2100);

    // The sample asks for the 2 newest WELCOME entries: the reversal and the use.
    let (status, ledger) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-ledger.json")).await;
    assert_eq!(status, 200, "{ledger}");
    let entries = ledger["entries"].as_array().unwrap();
    let seen: Vec<(&str, i64)> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["amount"].as_i64().unwrap()))
        .collect();
    assert_eq!(seen, [("reversal", 600), ("use", -600)], "{ledger}");
    assert_eq!(entries[0]["reverses"], "use");
    assert_eq!(entries[0]["audit"], support, "{ledger}");
    assert_eq!(entries[1]["audit"], used["audit"], "{ledger}");
    assert!(
        ledger["next_cursor"].is_string(),
        "the credits are on the next page: {ledger}"
    );

    // Cancelling the sample job reverses what its two messages credited:
    // the workers do it from the queue.
    let (status, cancel) = call_api(
        &ingest,
        load_event::<ApiGatewayProxyRequest>("apigw-post-job-cancel.json"),
    )
    .await;
    assert_eq!(status, 202, "{cancel}");
    pointflow_tests::lambda::drain(b.queue.as_ref(), &worker).await;
    let (_, job) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-job.json")).await;
    assert_eq!(job["cancel"]["counts"]["reversed"], 6, "{job}");
    assert_eq!(
        job["cancel"]["audit"],
        json!({"caller": {"kind": "iam", "id": "arn:aws:iam::123456789012:user/ops-bob",
                          "account_id": "123456789012", "source_ip": "203.0.113.10"},
               "request_id": "0c4a7d1e-2b9f-4e63-a8d5-91f2c3b4feed", "reason": "sent to the wrong segment"}),
        "{job}"
    );
    let (_, balances) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-get-balances.json")).await;
    assert_eq!(balances["balances"], json!({"BONUS": 0, "WELCOME": 0}), "{balances}");

    let (status, accepted) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-post-job.json")).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["accepted"], 6);
    let (again, replay) = call_api(&ingest, load_event::<ApiGatewayProxyRequest>("apigw-post-job.json")).await;
    assert_eq!(
        (again, &replay),
        (202, &accepted),
        "the sample's Idempotency-Key makes a replay harmless"
    );
    // The stored job names the sample's caller and request.
    let created: JobId = accepted["job_id"].as_str().unwrap().parse().unwrap();
    let audit = b.jobs.get_job(created).await.unwrap().unwrap().audit.unwrap();
    assert_eq!(
        (
            audit.caller.kind,
            audit.caller.id.as_deref(),
            audit.request_id.as_deref()
        ),
        (
            CallerKind::ApiKey,
            Some("k9x8w7v6u5"),
            Some("c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
        )
    );
}

/// The S3 samples name `imports/spring-campaign.csv` in bucket
/// `pointflow-imports-example` with the ETag of `events/files/spring-campaign.csv`:
/// the direct event imports it, the same notification through the import
/// queue finds it imported.
#[tokio::test]
async fn sample_s3_events_drive_the_import_handler() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let bucket = "pointflow-imports-example";
    // Tests share one emulator: the bucket may be there from another run.
    let _ = s3.create_bucket().bucket(bucket).send().await;
    let content = std::fs::read(event_path("files/spring-campaign.csv")).unwrap();
    s3.put_object()
        .bucket(bucket)
        .key("imports/spring-campaign.csv")
        .body(content.into())
        .send()
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &backend::unique_name("imports"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    let importer = Importer::new(
        std::sync::Arc::new(S3Objects::new(s3.clone())),
        b.jobs.clone(),
        b.queue.clone(),
        std::sync::Arc::new(SqsQueue::new(sqs, tasks_url)),
        ImportSettings::default(),
    );

    let direct: serde_json::Value = load_event("s3-object-created.json");
    let answer = csv_import::handle(&importer, direct).await.unwrap();
    assert_eq!(answer["chunks"][0]["accepted"], 3, "{answer}");
    assert_eq!(answer["chunks"][0]["continues"], false, "{answer}");
    let wrapped: SqsEvent = load_event("sqs-s3-object-created.json");
    let response = csv_import::handle_sqs(&importer, wrapped).await;
    assert!(response.batch_item_failures.is_empty());

    let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), b.worker_settings());
    pointflow_tests::lambda::drain(b.queue.as_ref(), &worker).await;
    let balances = b.ledger.balances("m-2001").await.unwrap();
    assert_eq!(
        balances
            .iter()
            .map(|b| (b.point_type.as_str(), b.balance))
            .collect::<Vec<_>>(),
        [("BONUS", 500), ("WELCOME", 2000)]
    );
    let job_id: JobId = answer["chunks"][0]["job_id"].as_str().unwrap().parse().unwrap();
    let job = b.jobs.get_job(job_id).await.unwrap().unwrap();
    assert_eq!((job.total, job.applied, job.status()), (3, 3, JobStatus::Completed));
    // Who dropped the file, from the S3 event.
    let audit = job.audit.expect("the file job records who dropped it");
    assert_eq!(
        (
            audit.caller.kind,
            audit.caller.id.as_deref(),
            audit.caller.source_ip.as_deref()
        ),
        (CallerKind::S3, Some("AWS:AIDAEXAMPLEOPERATOR"), Some("203.0.113.10"))
    );
    assert_eq!(audit.request_id.as_deref(), Some("8F3D2C1B0A9E8D7C"));
}
