//! `pointflow console` against a stack: its router with the API upstream
//! (a recording test server standing in for API Gateway) and the queues and
//! bucket on the emulator. `/v1` calls reach the upstream signed (SigV4,
//! `execute-api`) with the API key, the browser's own headers left behind;
//! the DLQ endpoints read and redrive SQS; reports are read and files
//! dropped on S3.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::{Accrual, JobId};
use pointflow::ports::WorkQueue;
use pointflow::services::import::report::report_key;
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::signing::Signer;
use pointflow_cli::console::{fetch_api_key, serve_console, ApiKeyError, Console, StackResources};
use pointflow_cli::settings::StackSettings;
use pointflow_tests::backend::{emulator_config, unique_name};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// What the upstream received: method, path and query, headers, body.
type Received = Arc<Mutex<Vec<(Method, String, HeaderMap, Vec<u8>)>>>;

/// A stand-in for the stack's API: records each request; `GET
/// /v1/jobs/{id}` answers a file job whose source is `source`, `POST
/// /v1/jobs` a replayed 202, anything else an empty job list.
async fn upstream(source: String) -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        let source = source.clone();
        async move {
            let path = uri.path().to_owned();
            let target = uri.path_and_query().map_or(path.clone(), |p| p.to_string());
            log.lock()
                .unwrap()
                .push((method.clone(), target, headers, body.to_vec()));
            if method == Method::POST && path == "/v1/jobs" {
                let mut answer = axum::Json(json!({"job_id": "j", "accepted": 1})).into_response();
                *answer.status_mut() = StatusCode::ACCEPTED;
                answer
                    .headers_mut()
                    .insert("idempotent-replayed", "true".parse().unwrap());
                answer.headers_mut().insert("set-cookie", "upstream=1".parse().unwrap());
                return answer;
            }
            if let Some(id) = path.strip_prefix("/v1/jobs/") {
                return axum::Json(json!({
                    "job_id": id, "status": "completed_with_errors", "total": 1, "applied": 1,
                    "duplicate": 0, "failed": 0, "refused": 0, "rejected": 1, "deduplicated": 0,
                    "messages": 1, "source": source, "created_at": "2026-12-07T00:00:00Z",
                    "completed_at": "2026-12-07T00:00:01Z"
                }))
                .into_response();
            }
            axum::Json(json!({"jobs": []})).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

fn dead_letter(job: JobId) -> String {
    let accrual = |id: &str, amount: u64| Accrual {
        accrual_id: id.into(),
        member_id: "m-console".into(),
        point_type: "P".into(),
        amount,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    let accruals = vec![accrual("console-1", 4), accrual("console-2", 6)];
    QueueMessage::new(job, 0, Payload::Accruals(accruals))
        .queued(OffsetDateTime::now_utc())
        .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_console_signs_api_calls_and_reads_sqs_and_s3() {
    let Some(sdk) = emulator_config().await else {
        return;
    };
    let settings = StackSettings::from_template().unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let (queue_url, dlq_url) = create_queue_with_dlq(&sqs, &unique_name("console"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    let (import_queue_url, import_dlq_url) =
        create_queue_with_dlq(&sqs, &unique_name("console-imports"), Duration::from_secs(30), 3)
            .await
            .unwrap();
    let bucket = unique_name("console");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    // A file job's report, where the importer writes it.
    let file_job = JobId::random();
    let report = report_key(&settings.import.report_prefix, "imports/spring.csv", file_job);
    s3.put_object()
        .bucket(&bucket)
        .key(&report)
        .body(
            b"line,column,reason,raw\n4,amount,must be a whole number,\"m-4,P,x\"\n"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let (api_base, received) = upstream(format!("s3://{bucket}/imports/spring.csv")).await;

    let credentials = Credentials::new("AKIDCONSOLE", "console-secret", None, None, "test");
    let signer = Signer::new(SharedCredentialsProvider::new(credentials), "eu-west-1");
    let api = ApiClient::new(&api_base, Some("console-key".into()), Duration::from_secs(10))
        .unwrap()
        .with_signer(signer);
    let console = Console::stack(
        &sdk,
        api,
        StackResources {
            stack: Some("pointflow-test".into()),
            queue_url: Some(queue_url.clone()),
            dlq_url: Some(dlq_url.clone()),
            import_queue_url: Some(import_queue_url),
            import_dlq_url: Some(import_dlq_url),
            bucket: Some(bucket.clone()),
            report_prefix: settings.import.report_prefix.clone(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_console(listener, console, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // /v1 is forwarded with the query, signed, with the API key; the
    // browser's cookie stays here.
    let listed = http
        .get(format!("{base}/v1/jobs?status=running&limit=5"))
        .header("cookie", "session=browser")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(listed.json::<Value>().await.unwrap(), json!({"jobs": []}));
    {
        let log = received.lock().unwrap();
        let (method, target, headers, _) = log.last().unwrap();
        assert_eq!(
            (method, target.as_str()),
            (&Method::GET, "/v1/jobs?status=running&limit=5")
        );
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDCONSOLE/")
                && authorization.contains("/eu-west-1/execute-api/aws4_request"),
            "{authorization}"
        );
        assert!(headers.contains_key("x-amz-date"));
        assert_eq!(headers["x-api-key"], "console-key");
        assert!(!headers.contains_key("cookie"), "{headers:?}");
    }
    let body = br#"{"accruals":[]}"#.to_vec();
    let submitted = http
        .post(format!("{base}/v1/jobs"))
        .header("content-type", "application/json")
        .header("idempotency-key", "console-submit-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 202);
    assert_eq!(submitted.headers()["idempotent-replayed"], "true");
    assert!(!submitted.headers().contains_key("set-cookie"));
    {
        let log = received.lock().unwrap();
        let (method, target, headers, forwarded) = log.last().unwrap();
        assert_eq!((method, target.as_str()), (&Method::POST, "/v1/jobs"));
        assert_eq!(headers["idempotency-key"], "console-submit-1");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(forwarded, &body);
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(
            authorization.contains("idempotency-key"),
            "signed with its headers: {authorization}"
        );
    }

    // A page of another site cannot have the console call the stack.
    let calls = received.lock().unwrap().len();
    let forged = http
        .post(format!("{base}/v1/jobs/{}/cancel", JobId::random()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(received.lock().unwrap().len(), calls, "nothing reached the API");

    let info: Value = http
        .get(format!("{base}/console/api/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["backend"], "aws");
    assert_eq!(info["stack"], "pointflow-test");
    assert_eq!(info["api"], api_base.as_str());

    // The DLQ on SQS: listed (and left there), then redriven to its queue.
    let job = JobId::random();
    let sqs_dlq = SqsQueue::new(sqs.clone(), &dlq_url);
    sqs_dlq.send_messages(&[dead_letter(job)]).await.unwrap();
    let listed: Value = http
        .get(format!("{base}/console/api/dlq?queue=accruals"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(
        listed["jobs"],
        json!([{"job_id": job.to_string(), "messages": 1, "accruals": 2}])
    );
    let imports: Value = http
        .get(format!("{base}/console/api/dlq?queue=imports"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imports["count"], 0, "{imports}");
    let moved: Value = http
        .post(format!("{base}/console/api/dlq/redrive?queue=accruals"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (moved["redriven"].as_u64(), moved["accruals"].as_u64()),
        (Some(1), Some(2)),
        "{moved}"
    );
    let back = SqsQueue::new(sqs.clone(), &queue_url)
        .receive_messages(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(QueueMessage::decode(&back[0].body).unwrap().job_id, job);

    // A file job's report, found through the API's `source` and read from S3.
    let report: Value = http
        .get(format!("{base}/console/api/jobs/{file_job}/report"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        report["lines"],
        json!([{"line": 4, "field": "amount", "message": "must be a whole number", "raw": "m-4,P,x"}]),
        "{report}"
    );

    // A file drop lands in the bucket under imports/console/, with its campaign.
    let dropped = http
        .post(format!("{base}/console/api/imports?name=autumn.csv"))
        .body("member_id,point_type,amount\nm-1,P,1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status().as_u16(), 202);
    let dropped: Value = dropped.json().await.unwrap();
    let key = dropped["key"].as_str().unwrap();
    assert!(
        key.starts_with("imports/console/") && key.ends_with("-autumn.csv"),
        "{key}"
    );
    let object = s3.head_object().bucket(&bucket).key(key).send().await.unwrap();
    assert_eq!(
        object.metadata().and_then(|m| m.get("campaign")).map(String::as_str),
        Some("autumn")
    );

    // The same loopback guard as the local server.
    let refused = http
        .get(format!("{base}/console/"))
        .header(reqwest::header::HOST, format!("rebound.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 421);
    let unknown = http.get(format!("{base}/elsewhere")).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Without `--api-key`, `pointflow console --stack` reads the key's value
/// from API Gateway (GetApiKey, signed for `apigateway`) by the stack's
/// `ApiKeyId` output.
#[tokio::test]
async fn the_stacks_api_key_is_read_with_the_operators_credentials() {
    let Some(sdk) = emulator_config().await else {
        return;
    };
    // A key made on the emulator through the same signed management API.
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let signer = Signer::new(sdk.credentials_provider().unwrap(), "us-east-1").for_service("apigateway");
    let http = reqwest::Client::new();
    let mut create = http
        .post(format!("{endpoint}/apikeys"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"name":"{}","enabled":true}}"#, unique_name("console-key")))
        .build()
        .unwrap();
    signer.sign(&mut create).await.unwrap();
    let created: Value = http.execute(create).await.unwrap().json().await.unwrap();
    let (id, value) = (created["id"].as_str().unwrap(), created["value"].as_str().unwrap());

    assert_eq!(fetch_api_key(&sdk, id).await.unwrap(), value);
    let unknown = fetch_api_key(&sdk, "nosuchkey0").await.unwrap_err();
    assert!(unknown.to_string().contains("nosuchkey0"), "{unknown}");
    assert!(matches!(
        fetch_api_key(&sdk, "../apikeys").await,
        Err(ApiKeyError::BadId(_))
    ));
}
