//! The file import over the emulator: a real bucket notification (moto's
//! shape, `%2F` keys and all) into an SQS import queue, S3 ranged reads,
//! the report written back to S3, DynamoDB and SQS for the rest. Small files
//! only: volume runs on the embedded backend (`csv_import.rs`).

use std::sync::Arc;
use std::time::Duration;

use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
use pointflow::domain::packing::PackingLimits;
use pointflow::domain::JobStatus;
use pointflow::ports::objects::ObjectRef;
use pointflow::services::import::ImportSettings;
use pointflow_cli::backend::create_bucket_notifying;
use pointflow_tests::backend::{self, unique_name};
use pointflow_tests::import::ImportRig;

const FILE: &str = "member_id,point_type,amount
m-1,P,10
m-2,P,0
m-1,Q,5
m-3,P,7
bad!,P,1
m-2,P,20
";

#[tokio::test]
async fn a_dropped_file_is_imported_through_the_bucket_notification() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    // As the template wires it: ObjectCreated under imports/ → the import queue.
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();

    let settings = ImportSettings {
        // Three or four chunks, two accruals per message.
        chunk_bytes: 24,
        packing: PackingLimits {
            max_accruals: 2,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    };
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        settings,
        None,
    );
    let put = |key: &'static str| {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(FILE.as_bytes().to_vec().into())
            .send()
    };
    let etag = put("imports/2026/spring.csv")
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    // Outside the prefix: no notification, nothing imported.
    put("elsewhere/spring.csv").await.unwrap();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    assert!(quiet.import_invocations >= 3, "{quiet:?}");

    let balance = |member: &'static str| {
        let ledger = rig.backend.ledger.clone();
        async move {
            ledger
                .balances(member)
                .await
                .unwrap()
                .into_iter()
                .map(|b| (b.point_type, b.balance))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(balance("m-1").await, [("P".to_owned(), 10), ("Q".to_owned(), 5)]);
    assert_eq!(balance("m-2").await, [("P".to_owned(), 20)]);
    assert_eq!(balance("m-3").await, [("P".to_owned(), 7)]);
    let report = rig.report("imports/2026/spring.csv").await.unwrap();
    assert_eq!(
        report,
        "line,column,reason,raw\n3,amount,must be at least 1,\"m-2,P,0\"\n6,member_id,\"contains '!'; only ASCII letters, digits and - _ . : @ are allowed\",\"bad!,P,1\"\n"
    );
    let object = ObjectRef {
        bucket: bucket.clone(),
        key: "imports/2026/spring.csv".into(),
        size: FILE.len() as u64,
        etag: Some(etag),
        version_id: None,
    };
    let job = rig.backend.jobs.get_job(object.job_id()).await.unwrap().unwrap();
    assert_eq!((job.total, job.applied, job.rejected, job.duplicate), (4, 4, 2, 0));
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);

    // The same content dropped again: a new event, the same job, nothing new.
    put("imports/2026/spring.csv").await.unwrap();
    rig.run_until_quiet().await;
    assert_eq!(balance("m-2").await, [("P".to_owned(), 20)]);
    let again = rig.backend.jobs.get_job(object.job_id()).await.unwrap().unwrap();
    assert_eq!(again, job);
}

/// Rows of a campaign: `m-1,P,10` twice (two credits), a chunk apart.
const CAMPAIGN: &str = "member_id,point_type,amount
m-1,P,10
m-2,P,20
m-3,P,30
m-1,P,10
";

/// The same rows uploaded again in parts (another ETag, so another object
/// and job), or at another key with the same `campaign` metadata, credit
/// nothing new; at another key without it (the key is the campaign), they
/// are another campaign's. Through S3: the metadata from `HeadObject`, the
/// occurrence counts carried from chunk to chunk as objects.
#[tokio::test]
async fn the_same_rows_uploaded_again_or_moved_in_their_campaign_credit_nothing_new() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let settings = ImportSettings {
        // A row or two a chunk: the repeat of m-1 is chunks away.
        chunk_bytes: 12,
        ..ImportSettings::default()
    };
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        settings,
        None,
    );
    let object = |key: &str, etag: Option<&str>| ObjectRef {
        bucket: bucket.clone(),
        key: key.to_owned(),
        size: CAMPAIGN.len() as u64,
        etag: etag.map(|e| e.trim_matches('"').to_owned()),
        version_id: None,
    };
    let put = |key: &'static str, campaign: Option<&'static str>| {
        let mut request = s3
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(CAMPAIGN.as_bytes().to_vec().into());
        if let Some(campaign) = campaign {
            request = request.metadata("campaign", campaign);
        }
        request.send()
    };
    let counts = |job: pointflow::domain::Job| (job.total, job.applied, job.duplicate);
    let balance = |member: &'static str| {
        let ledger = rig.backend.ledger.clone();
        async move {
            let balances = ledger.balances(member).await.unwrap();
            balances.iter().map(|b| b.balance).sum::<u64>()
        }
    };

    let first = put("imports/spring.csv", Some("spring-2026")).await.unwrap();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    assert!(quiet.import_invocations >= 4, "{quiet:?}");
    let first = object("imports/spring.csv", first.e_tag());
    let job = rig.backend.jobs.get_job(first.job_id()).await.unwrap().unwrap();
    assert_eq!(counts(job), (4, 4, 0), "identical rows are two credits");

    // The same bytes uploaded in one part of a multipart upload: an ETag
    // of the form <md5 of md5s>-1, another object to S3.
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("imports/spring.csv")
        .metadata("campaign", "spring-2026")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let part = s3
        .upload_part()
        .bucket(&bucket)
        .key("imports/spring.csv")
        .upload_id(upload_id)
        .part_number(1)
        .body(CAMPAIGN.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let done = s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key("imports/spring.csv")
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let reuploaded = object("imports/spring.csv", done.e_tag());
    assert_ne!(reuploaded.etag, first.etag);
    rig.run_until_quiet().await;
    let job = rig.backend.jobs.get_job(reuploaded.job_id()).await.unwrap().unwrap();
    assert_eq!(counts(job), (4, 0, 4), "uploaded again: nothing new");

    let moved = put("imports/archive/spring-copy.csv", Some("spring-2026"))
        .await
        .unwrap();
    rig.run_until_quiet().await;
    let moved = object("imports/archive/spring-copy.csv", moved.e_tag());
    let job = rig.backend.jobs.get_job(moved.job_id()).await.unwrap().unwrap();
    assert_eq!(counts(job), (4, 0, 4), "at another key, same campaign: nothing new");
    assert_eq!(balance("m-1").await, 20);

    let other = put("imports/autumn.csv", None).await.unwrap();
    rig.run_until_quiet().await;
    let other = object("imports/autumn.csv", other.e_tag());
    let job = rig.backend.jobs.get_job(other.job_id()).await.unwrap().unwrap();
    assert_eq!(counts(job), (4, 4, 0), "no metadata: the key is the campaign");
    assert_eq!(balance("m-1").await, 40);
}

/// A CP949 file (Excel's "CSV" on Korean Windows) dropped with
/// `x-amz-meta-encoding: cp949`, read through S3 ranged reads in chunks of
/// a few rows: every row credited, the pointer naming the declared
/// encoding; a row that is not CP949 is a row error naming its line.
#[tokio::test]
async fn a_cp949_file_with_encoding_metadata_is_read_in_chunks() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let settings = ImportSettings {
        chunk_bytes: 40,
        ..ImportSettings::default()
    };
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        settings,
        None,
    );
    let text = "member_id,point_type,amount,reason\nm-1,P,10,신규 가입 적립\nm-2,P,20,\"신규, 가입\"\nm-3,P,30,적립\n";
    let (mut file, _, unmappable) = encoding_rs::EUC_KR.encode(text);
    assert!(!unmappable);
    // Line 5: a lead byte with no trail byte, not CP949.
    file.to_mut().extend_from_slice(b"m-4,P,40,\xb0\n");
    s3.put_object()
        .bucket(&bucket)
        .key("imports/korean.csv")
        .metadata("encoding", "cp949")
        .body(file.into_owned().into())
        .send()
        .await
        .unwrap();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    assert!(quiet.import_invocations >= 3, "{quiet:?}");
    for (member, amount) in [("m-1", 10), ("m-2", 20), ("m-3", 30)] {
        let balances = rig.backend.ledger.balances(member).await.unwrap();
        assert_eq!(balances.iter().map(|b| b.balance).sum::<u64>(), amount, "{member}");
    }
    assert!(rig.backend.ledger.balances("m-4").await.unwrap().is_empty());
    let pointer = rig.read("reports/imports/korean.csv.job.json").await.unwrap();
    let pointer: serde_json::Value = serde_json::from_str(&pointer).unwrap();
    assert_eq!(
        pointer["encoding"],
        serde_json::json!({"name": "EUC-KR", "source": "declared"})
    );
    let report = rig.report("imports/korean.csv").await.unwrap();
    assert!(report.contains("\n5,(row),is not EUC-KR text,"), "{report}");
}

/// An NDJSON file saved as UTF-16LE with a byte-order mark, read through
/// S3 ranged reads in chunks of a few lines: every good line credited, each
/// chunk resumed at a file offset just past a `\n` code unit; the pointer
/// naming the format and the encoding; a bad line a row error.
#[tokio::test]
async fn a_utf16_ndjson_file_is_read_in_chunks() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let settings = ImportSettings {
        chunk_bytes: 100,
        ..ImportSettings::default()
    };
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        settings,
        None,
    );
    let text = "{\"member_id\":\"u-1\",\"point_type\":\"P\",\"amount\":10,\"reason\":\"신규 가입 적립 😀\"}\r\n\
                {\"member_id\":\"u-2\",\"point_type\":\"P\",\"amount\":20}\r\n\
                {\"member_id\":\"u-3\",\"point_type\":\"P\",\"amount\":0}\r\n\
                {\"member_id\":\"u-4\",\"point_type\":\"P\",\"amount\":40,\"reason\":\"적립\"}\r\n";
    let file = pointflow::domain::readers::source::utf16_with_bom(text, false);
    s3.put_object()
        .bucket(&bucket)
        .key("imports/lines.ndjson")
        .body(file.into())
        .send()
        .await
        .unwrap();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    assert!(quiet.import_invocations >= 3, "{quiet:?}");
    for (member, amount) in [("u-1", 10), ("u-2", 20), ("u-4", 40)] {
        let balances = rig.backend.ledger.balances(member).await.unwrap();
        assert_eq!(balances.iter().map(|b| b.balance).sum::<u64>(), amount, "{member}");
    }
    assert!(rig.backend.ledger.balances("u-3").await.unwrap().is_empty());
    let pointer = rig.read("reports/imports/lines.ndjson.job.json").await.unwrap();
    let pointer: serde_json::Value = serde_json::from_str(&pointer).unwrap();
    assert_eq!(pointer["format"], "ndjson");
    assert_eq!(
        pointer["encoding"],
        serde_json::json!({"name": "UTF-16LE", "source": "bom"})
    );
    let report = rig.report("imports/lines.ndjson").await.unwrap();
    assert!(report.contains("\n3,amount,must be at least 1,"), "{report}");
}

/// A file over the points ceiling only at its last chunk, dropped through
/// the bucket notification: the job fails with the reason (also in its
/// `job.json` on S3) and nothing is credited.
#[tokio::test]
async fn a_dropped_file_over_the_points_ceiling_credits_nothing() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let settings = ImportSettings {
        chunk_bytes: 24,
        ceilings: pointflow::domain::limits::Ceilings {
            max_amount_per_accrual: 100,
            max_points_per_job: 40,
            max_accruals_per_job: 100,
        },
        ..ImportSettings::default()
    };
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        settings,
        None,
    );
    // 10 + 10 + 10 + 11 = 41 points: over 40 only at the last row.
    let file = "member_id,point_type,amount\nm-1,P,10\nm-2,P,10\nm-3,P,10\nm-4,P,11\n";
    let etag = s3
        .put_object()
        .bucket(&bucket)
        .key("imports/over.csv")
        .body(file.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    let object = ObjectRef {
        bucket: bucket.clone(),
        key: "imports/over.csv".into(),
        size: file.len() as u64,
        etag: Some(etag),
        version_id: None,
    };
    let job = rig.backend.jobs.get_job(object.job_id()).await.unwrap().unwrap();
    let reason = "the job credits 41 points in all, over the ceiling of 40 points per job; nothing was queued";
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!((job.total, job.messages, job.error.as_deref()), (0, 0, Some(reason)));
    let pointer: serde_json::Value =
        serde_json::from_str(&rig.read("reports/imports/over.csv.job.json").await.unwrap()).unwrap();
    assert_eq!(pointer["error"].as_str(), Some(reason));
    for member in ["m-1", "m-2", "m-3", "m-4"] {
        assert_eq!(rig.backend.ledger.balances(member).await.unwrap(), []);
    }
}

/// An Excel workbook dropped into the bucket with `x-amz-meta-sheet`:
/// read whole through S3 (the object, then its metadata from `HeadObject`),
/// the named sheet credited, its bad row reported by Excel's row number.
#[tokio::test]
async fn a_dropped_workbook_is_imported_from_the_sheet_its_metadata_names() {
    use pointflow_tests::workbooks::{n, t, workbook, Sheet};
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bucket = unique_name("imports");
    let (tasks_url, _) = create_queue_with_dlq(&sqs, &unique_name("import-tasks"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    create_bucket_notifying(&s3, &sqs, &bucket, &tasks_url).await.unwrap();
    let rig = ImportRig::new(
        b,
        Arc::new(SqsQueue::new(sqs.clone(), tasks_url)),
        Arc::new(S3Objects::new(s3.clone())),
        bucket.clone(),
        ImportSettings::default(),
        None,
    );
    let header = || vec![t("member_id"), t("point_type"), t("amount")];
    let book = workbook(&[
        Sheet::new("Notes", vec![header(), vec![t("m-1"), t("P"), n(1_000.0)]]),
        Sheet::new(
            "Campaign",
            vec![
                header(),
                vec![t("m-1"), t("P"), n(10.0)],
                vec![t("m-2"), t("P"), n(2.5)],
                vec![t("m-2"), t("P"), n(20.0)],
            ],
        ),
    ]);
    s3.put_object()
        .bucket(&bucket)
        .key("imports/book.xlsx")
        .metadata("sheet", "Campaign")
        .body(book.into())
        .send()
        .await
        .unwrap();
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    for (member, expected) in [("m-1", 10u64), ("m-2", 20)] {
        let balances = rig.backend.ledger.balances(member).await.unwrap();
        assert_eq!(balances[0].balance, expected, "{member}");
    }
    let report = rig.report("imports/book.xlsx").await.unwrap();
    assert!(
        report.starts_with("line,column,reason,raw\n3,amount,\"must be a whole number"),
        "{report}"
    );
}
