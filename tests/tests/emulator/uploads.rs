//! `POST /v1/uploads` over the emulator: the S3 pre-signing adapter's URL
//! takes a PUT of the declared size with its headers, the object lands at
//! the key with its metadata, the bucket notification imports it as the
//! job the API announced, and a PUT of another length or content is
//! refused.
//!
//! What moto checks of a pre-signed PUT: not its SigV4 signature (moto
//! verifies none unless its own auth checks are switched on), and not the
//! body against `x-amz-checksum-sha256` (it stored other content of the
//! declared length, seen while writing this test). S3 refuses both: a query-string SigV4
//! signature covers every header named in `X-Amz-SignedHeaders`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>),
//! and a body whose SHA-256 differs from `x-amz-checksum-sha256` is
//! `400 BadDigest`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>).
//! [`s3_would_take`] holds a PUT to those two rules here, in moto's place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use pointflow::adapters::aws::presign::S3Presigner;
use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::ports::uploads::{PutToSign, UploadSigner};
use pointflow::services::api::{ApiService, ApiSettings, UploadSettings};
use pointflow::services::import::ImportSettings;
use pointflow_cli::backend::create_bucket_notifying;
use pointflow_tests::backend::{self, unique_name};
use pointflow_tests::import::ImportRig;
use pointflow_tests::lambda::{api_event, call_api};
use sha2::{Digest, Sha256};

const FILE: &str = "member_id,point_type,amount\nm-1,P,10\nm-2,P,20\nm-1,Q,5\n";

/// The signed header names of a pre-signed URL.
fn signed_headers(url: &str) -> Vec<String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
        .unwrap_or("");
    percent_decode(value).split(';').map(str::to_owned).collect()
}

fn percent_decode(text: &str) -> String {
    text.replace("%3B", ";").replace("%3b", ";")
}

/// Whether S3 would take `body` sent with `headers` to the pre-signed
/// `url`: every signed header sent with the value the signer gave it
/// (`content-length` being the body's length), and the body's SHA-256 the
/// signed checksum.
fn s3_would_take(
    url: &str,
    signed: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> bool {
    let names = signed_headers(url);
    let length = body.len().to_string();
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    names.iter().filter(|name| name.as_str() != "host").all(|name| {
        let sent = match name.as_str() {
            "content-length" => Some(&length),
            _ => headers.get(name),
        };
        sent == signed.get(name)
    }) && signed
        .get("x-amz-checksum-sha256")
        .is_none_or(|declared| *declared == checksum)
}

async fn put(url: &str, headers: &BTreeMap<String, String>, body: Vec<u8>) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut request = http.put(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_presigned_put_lands_with_its_metadata_and_only_as_signed() {
    let Some(sdk) = backend::emulator_config().await else {
        return;
    };
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let bucket = unique_name("uploads");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let digest: [u8; 32] = Sha256::digest(FILE.as_bytes()).into();
    let metadata = BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]);
    let key = "imports/uploads/presigned.csv";
    let signed = S3Presigner::new(s3.clone())
        .presign_put(&PutToSign {
            bucket: bucket.clone(),
            key: key.into(),
            size: FILE.len() as u64,
            sha256: Some(digest),
            metadata,
            now: time::OffsetDateTime::now_utc(),
            expires_in: Duration::from_secs(900),
        })
        .await
        .unwrap();
    assert!(signed.url.contains("X-Amz-Expires=900"), "{}", signed.url);
    let names = signed_headers(&signed.url);
    for header in ["content-length", "x-amz-checksum-sha256", "x-amz-meta-campaign", "host"] {
        assert!(names.iter().any(|n| n == header), "{header} is not signed: {names:?}");
    }
    assert_eq!(signed.headers["content-length"], FILE.len().to_string());
    assert_eq!(signed.headers["x-amz-meta-campaign"], "spring");
    assert_eq!(
        signed.headers["x-amz-checksum-sha256"],
        base64::engine::general_purpose::STANDARD.encode(digest)
    );

    // What S3 would refuse: another length, other content, other metadata.
    let take =
        |headers: &BTreeMap<String, String>, body: &[u8]| s3_would_take(&signed.url, &signed.headers, headers, body);
    assert!(take(&signed.headers, FILE.as_bytes()));
    assert!(
        !take(&signed.headers, format!("{FILE}m-3,P,1\n").as_bytes()),
        "another length"
    );
    assert!(
        !take(&signed.headers, FILE.replace("m-2", "m-9").as_bytes()),
        "other content"
    );
    let mut smuggled = signed.headers.clone();
    smuggled.insert("x-amz-meta-campaign".into(), "autumn".into());
    assert!(!take(&smuggled, FILE.as_bytes()), "other metadata");

    let (status, text) = put(&signed.url, &signed.headers, FILE.as_bytes().to_vec()).await;
    assert_eq!(status, 200, "{text}");
    let head = s3.head_object().bucket(&bucket).key(key).send().await.unwrap();
    assert_eq!(head.content_length(), Some(FILE.len() as i64));
    assert_eq!(head.metadata().unwrap()["campaign"], "spring");
    let body = s3.get_object().bucket(&bucket).key(key).send().await.unwrap();
    assert_eq!(body.body.collect().await.unwrap().into_bytes(), FILE.as_bytes());
}

#[tokio::test]
async fn an_upload_through_the_api_becomes_the_announced_job() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("uploads");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let api = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    )
    .with_uploads(
        Arc::new(S3Presigner::new(s3.clone())),
        UploadSettings::new(bucket.clone()),
    );
    let body = serde_json::json!({"format": "csv", "size": FILE.len(), "campaign": "spring"});
    let request = |key: &str| {
        api_event(
            "POST",
            "/v1/uploads",
            &[("content-type", "application/json"), ("idempotency-key", key)],
            Some(body.to_string()),
        )
    };
    let (status, answer) = call_api(&api, request("upload-1")).await;
    assert_eq!(status, 201, "{answer}");
    let headers: BTreeMap<String, String> = serde_json::from_value(answer["headers"].clone()).unwrap();
    let url = answer["url"].as_str().unwrap().to_owned();
    let job_id = answer["job_id"].as_str().unwrap().to_owned();
    // The same request again: the same upload and job.
    let (_, again) = call_api(&api, request("upload-1")).await;
    assert_eq!((&again["key"], &again["job_id"]), (&answer["key"], &answer["job_id"]));
    let (status, missing) = call_api(&api, api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None)).await;
    assert_eq!(status, 404, "not landed yet: {missing}");

    let (status, text) = put(&url, &headers, FILE.as_bytes().to_vec()).await;
    assert_eq!(status, 200, "{text}");
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        ImportSettings::default(),
        None,
    );
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    let (status, job) = call_api(&api, api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None)).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        (job["total"].as_u64(), job["applied"].as_u64()),
        (Some(3), Some(3)),
        "{job}"
    );
    assert_eq!(job["status"], "completed");

    // The same bytes PUT again (a client retrying): the job's import runs once.
    let (status, _) = put(&url, &headers, FILE.as_bytes().to_vec()).await;
    assert_eq!(status, 200);
    rig.run_until_quiet().await;
    let (_, same) = call_api(&api, api_event("GET", &format!("/v1/jobs/{job_id}"), &[], None)).await;
    assert_eq!(
        (same["total"].as_u64(), same["applied"].as_u64()),
        (Some(3), Some(3)),
        "{same}"
    );
    let balances = rig.backend.ledger.balances("m-1").await.unwrap();
    assert_eq!(balances.iter().map(|b| b.balance).sum::<u64>(), 15);
}
