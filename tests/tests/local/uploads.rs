//! `POST /v1/uploads` on the embedded backend: `pointflow local serve`'s
//! stack answers a URL to itself, receives the PUT (checked against what
//! it signed), streams it into the bucket folder and imports it; `submit
//! --via upload` drives it and a rerun credits nothing twice. The API's
//! answers pass through a proxy that checks them against docs/openapi.yaml.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pointflow::domain::uploads::UploadFormat;
use pointflow::domain::JobStatus;
use pointflow::services::api::{JobView, UploadAnswer};
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::upload::{hash_file, submit_upload, upload_key, UploadOptions};
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use pointflow_tests::openapi_proxy::CheckingProxy;
use serde_json::json;

struct Stack {
    backend: LocalBackend,
    runner: Runner,
    client: ApiClient,
    proxy: CheckingProxy,
    dir: TempDir,
}

async fn stack_with(offer_uploads: bool) -> Stack {
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new("pointflow-uploads");
    let choice = BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: dir.0.join("bucket"),
    };
    let mut backend = LocalBackend::open(&choice, &settings).await.unwrap();
    if !offer_uploads {
        backend.import = None;
    }
    let pollers = settings.worker_pollers(Duration::from_millis(100));
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers)
        .await
        .unwrap();
    let proxy = CheckingProxy::start(&runner.base_url()).await;
    let client = ApiClient::new(proxy.base_url(), None, Duration::from_secs(30)).unwrap();
    Stack {
        backend,
        runner,
        client,
        proxy,
        dir,
    }
}

/// Stops the stack; every answer of the API passed the document's check
/// (the proxy fails the test when dropped otherwise).
async fn finish(stack: Stack) {
    assert!(stack.proxy.answers() > 0);
    stack.runner.stop().await.unwrap();
}

/// `members` rows without `accrual_id`: member m gets m+1 WELCOME points.
fn csv(members: u64) -> String {
    let mut out = String::from("member_id,point_type,amount\n");
    for m in 0..members {
        out.push_str(&format!("m-{m},WELCOME,{}\n", m + 1));
    }
    out
}

fn options(path: std::path::PathBuf, format: UploadFormat) -> UploadOptions {
    UploadOptions {
        path,
        format,
        campaign: "spring".into(),
        sheet: None,
        encoding: None,
        wait: true,
        poll_interval: Duration::from_millis(50),
        wait_timeout: Duration::from_secs(120),
    }
}

async fn balance(stack: &Stack, member: &str) -> u64 {
    let balances = stack.backend.ledger.balances(member).await.unwrap();
    balances.iter().map(|b| b.balance).sum()
}

async fn wait_for_job(client: &ApiClient, job_id: &str) -> JobView {
    for _ in 0..2400 {
        match client.job(job_id).await {
            Ok(view) if view.completed_at.is_some() => return view,
            Ok(_) => {}
            Err(e) => assert_eq!(e.refused_status(), Some(404), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job_id} did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_csv_is_imported_once_however_often_it_is_submitted() {
    let stack = stack_with(true).await;
    let path = stack.dir.0.join("spring.csv");
    std::fs::write(&path, csv(500)).unwrap();

    let first = submit_upload(&stack.client, &options(path.clone(), UploadFormat::Csv), false)
        .await
        .unwrap()
        .unwrap();
    let upload = first.upload.clone().unwrap();
    assert!(upload.key.starts_with("imports/uploads/") && upload.key.ends_with(".csv"));
    assert!(!upload.landed_before);
    assert_eq!(
        (first.accepted, first.applied, first.duplicate, first.rejected_lines),
        (500, 500, 0, 0)
    );
    assert_eq!(first.jobs[0].status, JobStatus::Completed);
    assert_eq!(first.jobs[0].job_id.to_string(), upload.job_id);
    assert_eq!(first.exit_code(), 0);
    assert_eq!(balance(&stack, "m-499").await, 500);
    // The file sits at the key the service chose, whole.
    let stored = stack.dir.0.join("bucket").join(&upload.key);
    assert_eq!(std::fs::read(&stored).unwrap(), std::fs::read(&path).unwrap());

    // The same submit again: the same upload and job, found landed, not sent again.
    let again = submit_upload(&stack.client, &options(path.clone(), UploadFormat::Csv), false)
        .await
        .unwrap()
        .unwrap();
    let second = again.upload.clone().unwrap();
    assert_eq!(
        (second.key.as_str(), second.job_id.as_str()),
        (upload.key.as_str(), upload.job_id.as_str())
    );
    assert!(second.landed_before);
    assert_eq!((again.applied, again.duplicate), (500, 0), "the same job's counts");

    // A run interrupted after its PUT, resumed: the same bytes PUT again at
    // the same key. Its import is the same job's, found imported: skipped.
    let imports_before = stack.runner.import_stats.messages_ok.load(Ordering::Relaxed);
    let (size, sha256) = hash_file(&path).unwrap();
    let body = json!({"format": "csv", "size": size, "sha256": hex::encode(sha256), "campaign": "spring"});
    let answer = stack
        .client
        .create_upload(&upload_key("spring", &sha256), &body)
        .await
        .unwrap();
    assert_eq!(answer.key, upload.key);
    stack.client.put_upload(&answer, &path).await.unwrap();
    for _ in 0..2400 {
        if stack.runner.import_stats.messages_ok.load(Ordering::Relaxed) > imports_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stack.runner.import_stats.messages_ok.load(Ordering::Relaxed) > imports_before);
    let job = wait_for_job(&stack.client, &upload.job_id).await;
    assert_eq!((job.total, job.applied, job.duplicate), (500, 500, 0));

    // Another upload of the same rows in the same campaign (another key):
    // a job of its own whose every row is found credited.
    let other = stack.client.create_upload("another-key", &body).await.unwrap();
    assert_ne!(other.key, upload.key);
    stack.client.put_upload(&other, &path).await.unwrap();
    let job = wait_for_job(&stack.client, &other.job_id.to_string()).await;
    assert_eq!((job.total, job.applied, job.duplicate), (500, 0, 500));
    assert_eq!(balance(&stack, "m-499").await, 500, "nothing credited twice");
    assert_eq!(balance(&stack, "m-0").await, 1);
    finish(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_workbook_is_imported() {
    let stack = stack_with(true).await;
    let path = stack.dir.0.join("spring.xlsx");
    let rows = pointflow_tests::workbooks::cells_of_csv(&csv(40));
    std::fs::write(&path, pointflow_tests::workbooks::one_sheet(rows)).unwrap();
    let report = submit_upload(&stack.client, &options(path, UploadFormat::Xlsx), false)
        .await
        .unwrap()
        .unwrap();
    assert!(report.upload.as_ref().unwrap().key.ends_with(".xlsx"));
    assert_eq!((report.accepted, report.applied, report.rejected_lines), (40, 40, 0));
    assert_eq!(balance(&stack, "m-39").await, 40);
    finish(stack).await;
}

/// An NDJSON file, one accrual per line in UTF-16LE with a byte-order mark
/// and a bad line, goes up the same way and is read by the import's NDJSON
/// reader (the upload's key ends in `.ndjson`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_ndjson_file_is_imported_with_its_bad_line_reported() {
    let stack = stack_with(true).await;
    let path = stack.dir.0.join("spring.ndjson");
    let mut text = String::new();
    for m in 0..30 {
        text.push_str(&format!(
            "{{\"member_id\":\"m-{m}\",\"point_type\":\"WELCOME\",\"amount\":{},\"reason\":\"신규 가입 적립\"}}\n",
            m + 1
        ));
    }
    text.push_str("{\"member_id\":\"m 30\",\"point_type\":\"WELCOME\",\"amount\":1}\n");
    let bytes = pointflow::domain::readers::source::utf16_with_bom(&text, false);
    std::fs::write(&path, bytes).unwrap();
    let report = submit_upload(&stack.client, &options(path, UploadFormat::Ndjson), false)
        .await
        .unwrap()
        .unwrap();
    assert!(report.upload.as_ref().unwrap().key.ends_with(".ndjson"));
    assert_eq!((report.accepted, report.applied, report.rejected_lines), (30, 30, 1));
    assert_eq!(balance(&stack, "m-29").await, 30);
    finish(stack).await;
}

/// Sends `body` to the answer's URL with its headers, `change` applied.
async fn put(answer: &UploadAnswer, body: Vec<u8>, change: impl FnOnce(&mut reqwest::Request)) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut request = http.put(&answer.url).body(body);
    for (name, value) in &answer.headers {
        request = request.header(name, value);
    }
    let mut request = request.build().unwrap();
    change(&mut request);
    let response = http.execute(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_put_the_server_signed_is_received() {
    let stack = stack_with(true).await;
    let content = csv(3).into_bytes();
    let other = csv(3).replace("m-0", "x-0").into_bytes();
    assert_eq!(content.len(), other.len());
    let digest: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&content)).into();
    let body = json!({"format": "csv", "size": content.len(), "sha256": hex::encode(digest)});
    let answer = stack.client.create_upload("refusals", &body).await.unwrap();
    assert_eq!(answer.method, "PUT");
    assert!(answer.url.contains("/local-uploads/imports/uploads/"), "{}", answer.url);
    // The job is known before the file lands, and not found until then.
    let missing = stack.client.job(&answer.job_id.to_string()).await.unwrap_err();
    assert_eq!(missing.refused_status(), Some(404));

    let (status, text) = put(&answer, content.clone(), |r| {
        let url = r.url().as_str().replace("signature=", "signature=00");
        *r.url_mut() = url.parse().unwrap();
    })
    .await;
    assert_eq!((status, text.contains("bad_signature")), (403, true), "{text}");
    let (status, text) = put(&answer, content.clone(), |r| {
        let url = r.url().as_str().replace("expires=", "expires=1");
        *r.url_mut() = url.parse().unwrap();
    })
    .await;
    assert_eq!(
        (status, text.contains("bad_signature")),
        (403, true),
        "another expiry: {text}"
    );
    let mut longer = content.clone();
    longer.push(b'\n');
    let (status, text) = put(&answer, longer, |r| {
        r.headers_mut().remove("content-length");
    })
    .await;
    assert_eq!(
        (status, text.contains("bad_signature")),
        (403, true),
        "another length: {text}"
    );
    let (status, text) = put(&answer, content.clone(), |r| {
        r.headers_mut()
            .insert("x-amz-meta-campaign", "smuggled".parse().unwrap());
    })
    .await;
    assert_eq!(
        (status, text.contains("bad_signature")),
        (403, true),
        "other metadata: {text}"
    );
    let (status, text) = put(&answer, other, |_| {}).await;
    assert_eq!(
        (status, text.contains("bad_digest")),
        (400, true),
        "other content: {text}"
    );
    // A body sent without a length (chunked) cannot be held to one.
    let http = reqwest::Client::new();
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(content.clone())]);
    let mut request = http.put(&answer.url).body(reqwest::Body::wrap_stream(stream));
    for (name, value) in answer.headers.iter().filter(|(n, _)| *n != "content-length") {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 411);
    // Nothing refused left a file or a job behind.
    let folder = stack.dir.0.join("bucket/imports/uploads");
    assert_eq!(std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0), 0);
    assert_eq!(
        stack
            .client
            .job(&answer.job_id.to_string())
            .await
            .unwrap_err()
            .refused_status(),
        Some(404)
    );

    // The signed PUT itself lands and becomes the announced job.
    let (status, text) = put(&answer, content, |_| {}).await;
    assert_eq!(status, 200, "{text}");
    let job = wait_for_job(&stack.client, &answer.job_id.to_string()).await;
    assert_eq!((job.total, job.applied), (3, 3));
    finish(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upload_bodies_are_refused_naming_the_field() {
    let stack = stack_with(true).await;
    for (body, field) in [
        (json!({"format": "json", "size": 10}), "format"),
        (json!({"format": "csv", "size": 0}), "size"),
        (json!({"format": "csv", "size": 5_368_709_121u64}), "size"),
        (json!({"format": "csv", "size": 10, "encoding": "klingon"}), "encoding"),
        (json!({"format": "csv", "size": 10, "sheet": "S1"}), "sheet"),
        (json!({"format": "csv", "size": 10, "url": "x"}), "url"),
    ] {
        let error = stack.client.create_upload("k", &body).await.unwrap_err();
        let pointflow_cli::client::api::ClientError::Refused {
            status, body: answer, ..
        } = error
        else {
            panic!("{error}")
        };
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_upload", "{answer}");
        assert_eq!(answer["error"]["errors"][0]["field"], field, "{answer}");
    }
    finish(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_uploads_the_route_is_404_and_submit_falls_back() {
    let stack = stack_with(false).await;
    let path = stack.dir.0.join("spring.csv");
    std::fs::write(&path, csv(5)).unwrap();
    let body = json!({"format": "csv", "size": 10});
    let error = stack.client.create_upload("k", &body).await.unwrap_err();
    assert_eq!(error.refused_status(), Some(404));
    let fell_back = submit_upload(&stack.client, &options(path.clone(), UploadFormat::Csv), true)
        .await
        .unwrap();
    assert!(fell_back.is_none(), "auto: send requests instead");
    assert!(submit_upload(&stack.client, &options(path, UploadFormat::Csv), false)
        .await
        .is_err());
    finish(stack).await;
}
