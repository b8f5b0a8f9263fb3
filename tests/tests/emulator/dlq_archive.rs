//! The DLQ archive over the emulator: dead letters received from SQS,
//! written to S3 and deleted, then sent back from the S3 object.

use std::io::Read;
use std::time::Duration;

use pointflow::adapters::aws::s3::S3Objects;
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::{Accrual, JobId};
use pointflow::ports::objects::{ObjectRef, ObjectStore};
use pointflow::services::dlq;
use pointflow_tests::backend::{self, unique_name};
use time::OffsetDateTime;

fn message(job: JobId, seq: u32) -> String {
    let accrual = Accrual {
        accrual_id: format!("arch-{seq}"),
        member_id: "m-arch".into(),
        point_type: "P".into(),
        amount: 1,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    QueueMessage::new(job, seq, Payload::Accruals(vec![accrual]))
        .queued(OffsetDateTime::now_utc())
        .encode()
}

#[tokio::test]
async fn dead_letters_archived_to_s3_leave_the_dlq_and_redrive_from_there() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let bucket = unique_name("archive");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let objects = S3Objects::new(s3);
    let job = JobId::random();
    let bodies: Vec<String> = (0..12).map(|seq| message(job, seq)).collect();
    b.dlq.send_messages(&bodies).await.unwrap();

    let now = OffsetDateTime::now_utc();
    let archived = dlq::archive(
        b.dlq.as_ref(),
        dlq::QueueKind::Accruals,
        &objects,
        &bucket,
        "dlq-archive/",
        usize::MAX,
        now,
    )
    .await
    .unwrap();
    assert_eq!((archived.messages, archived.files.len()), (12, 1));
    assert!(
        archived.files[0].starts_with("dlq-archive/dlq-"),
        "{:?}",
        archived.files
    );
    assert!(
        dlq::list(b.dlq.as_ref(), dlq::QueueKind::Accruals, 100)
            .await
            .unwrap()
            .is_empty(),
        "the DLQ is empty"
    );

    let object = ObjectRef {
        bucket: bucket.clone(),
        key: archived.files[0].clone(),
        size: 0,
        etag: None,
        version_id: None,
    };
    let mut reader = objects.open(&object, 0).await.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map(|_| body)
    })
    .await
    .unwrap()
    .unwrap();
    let letters = dlq::decode_archive(&body).unwrap();
    let mut read: Vec<String> = letters.iter().map(|l| l.body.clone()).collect();
    read.sort();
    let mut sent = bodies.clone();
    sent.sort();
    assert_eq!(read, sent);

    let moved = dlq::redrive_archived(
        &letters,
        dlq::RedriveTargets {
            accruals: b.queue.as_ref(),
            imports: None,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!((moved.messages, moved.accruals), (12, 12));
    let mut back = Vec::new();
    for _ in 0..10 {
        let batch = b.queue.receive_messages(10, Duration::from_secs(1)).await.unwrap();
        back.extend(batch.into_iter().map(|m| m.body));
        if back.len() >= 12 {
            break;
        }
    }
    back.sort();
    assert_eq!(back, sent, "every archived message is back in the accrual queue");
}

/// The import DLQ on the emulator: a continuation archived to S3 keeps its
/// queue, and the redrive from the archive sends it to the import queue,
/// not the accrual queue.
#[tokio::test]
async fn import_dead_letters_archived_to_s3_go_back_to_the_import_queue() {
    use pointflow::adapters::aws::sqs::{create_queue_with_dlq, SqsQueue};
    use pointflow::ports::WorkQueue;
    use pointflow::services::import::task::{ImportTask, Resume};
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (import_url, import_dlq_url) = create_queue_with_dlq(&sqs, &unique_name("imports"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    let (imports, import_dlq) = (
        SqsQueue::new(sqs.clone(), import_url),
        SqsQueue::new(sqs, import_dlq_url),
    );
    let s3 = pointflow::adapters::aws::s3_client(&sdk);
    let bucket = unique_name("archive");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let objects = S3Objects::new(s3);
    let now = OffsetDateTime::now_utc();
    let object = ObjectRef {
        bucket: bucket.clone(),
        key: "imports/f.csv".into(),
        size: 100,
        etag: Some("e".into()),
        version_id: None,
    };
    let continuation = ImportTask {
        audit: None,
        resume: Some(Resume {
            job_id: object.job_id(),
            chunk: 1,
            offset: 40,
            line: 3,
            next_seq: 1,
            columns: vec!["member_id".into(), "point_type".into(), "amount".into()],
            report_parts: vec![],
            campaign: Some("c".into()),
            started_at: Some(now),
            encoding: None,
        }),
        object,
    }
    .encode();
    import_dlq
        .send_messages(std::slice::from_ref(&continuation))
        .await
        .unwrap();

    let archived = dlq::archive(
        &import_dlq,
        dlq::QueueKind::Imports,
        &objects,
        &bucket,
        "dlq-archive/",
        usize::MAX,
        now,
    )
    .await
    .unwrap();
    assert_eq!(archived.messages, 1);
    assert!(
        archived.files[0].starts_with("dlq-archive/import-dlq-"),
        "{:?}",
        archived.files
    );
    let object = ObjectRef {
        bucket: bucket.clone(),
        key: archived.files[0].clone(),
        size: 0,
        etag: None,
        version_id: None,
    };
    let mut reader = objects.open(&object, 0).await.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map(|_| body)
    })
    .await
    .unwrap()
    .unwrap();
    let letters = dlq::decode_archive(&body).unwrap();
    assert_eq!(letters[0].queue, dlq::QueueKind::Imports);

    let targets = dlq::RedriveTargets {
        accruals: b.queue.as_ref(),
        imports: Some(&imports),
    };
    let moved = dlq::redrive_archived(&letters, targets, now).await.unwrap();
    assert_eq!((moved.messages, moved.import_tasks), (1, 1));
    let back = imports.receive_messages(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(back.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), [continuation]);
    assert!(
        b.queue
            .receive_messages(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "nothing went to the accrual queue"
    );
}
