//! What the import queue carries: S3 "object created" notifications, which
//! start a file, and continuations, which carry it from one chunk to the
//! next. A direct S3 invocation's event has the notification's shape too.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::domain::audit::{Audit, Caller};
use crate::domain::text_encoding::EncodingRecord;
use serde_json::Value;

use crate::domain::JobId;
use crate::ports::objects::ObjectRef;

/// One chunk of one file to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportTask {
    pub object: ObjectRef,
    /// Where to pick up; `None` starts the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Who dropped the file, from which S3 request (from the S3 event;
    /// recorded on the file's job when its first chunk creates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// Where the next chunk of a file starts, and what it needs from earlier
/// chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub job_id: JobId,
    /// The chunk to read (0-based).
    pub chunk: u32,
    /// Byte offset of its first row.
    pub offset: u64,
    /// Line number of its first row.
    pub line: u64,
    /// Sequence number of its first queue message.
    pub next_seq: u32,
    /// The header's columns, in file order.
    pub columns: Vec<String>,
    /// Earlier chunks that wrote a part of the error report.
    #[serde(default)]
    pub report_parts: Vec<u32>,
    /// The file's campaign: its rows without `accrual_id` get id scheme v2
    /// ids, whose occurrence counts so far the previous chunk wrote
    /// (`report::occurrences_key`). `None`: a file whose import started
    /// before scheme v2, which keeps its v1 ids to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// When the file's job was created: no report part or occurrence table
    /// of the file is older, so a redrive checks its age against their
    /// expiry (`domain::retention::check_import_redrive`). `None`: queued
    /// by a release before this stamp.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started_at: Option<time::OffsetDateTime>,
    /// The encoding the first chunk chose (declared, byte-order mark,
    /// detected or default). `None`: a continuation written before
    /// encodings were read, of a UTF-8 file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<EncodingRecord>,
}

/// The envelope of a continuation on the import queue.
#[derive(Serialize, Deserialize)]
struct Continuation {
    pointflow_import: ImportTask,
}

impl ImportTask {
    /// The body of a continuation message.
    pub fn encode(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(&Continuation {
            pointflow_import: self.clone(),
        })
        .unwrap_or_default()
    }
}

/// A message the import function cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error("the message is neither an S3 notification nor a Pointflow import continuation")]
    Unrecognised,
    #[error("S3 record {index} lacks {field}")]
    MissingField { index: usize, field: &'static str },
    #[error("malformed continuation: {0}")]
    BadContinuation(String),
}

/// The tasks in one import-queue message body (or one direct S3 event):
/// one per `ObjectCreated:*` record, none for S3's `s3:TestEvent`, one for
/// a continuation. Other S3 events (removals) are ignored.
///
/// Only the fields used are read, so both AWS's shape and emulators' looser
/// ones (moto sends no `userIdentity`, a `Z`-less `eventTime` and keys with
/// `/` as `%2F`) are accepted.
pub fn parse_tasks(body: &str) -> Result<Vec<ImportTask>, TaskError> {
    let value: Value = serde_json::from_str(body).map_err(|e| TaskError::NotJson(e.to_string()))?;
    parse_tasks_value(&value)
}

/// [`parse_tasks`] on parsed JSON.
pub fn parse_tasks_value(value: &Value) -> Result<Vec<ImportTask>, TaskError> {
    if let Some(task) = value.get("pointflow_import") {
        let task: ImportTask =
            serde_json::from_value(task.clone()).map_err(|e| TaskError::BadContinuation(e.to_string()))?;
        return Ok(vec![task]);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let Some(records) = value.get("Records").and_then(Value::as_array) else {
        return Err(TaskError::Unrecognised);
    };
    let mut tasks = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let text = |path: &[&str]| {
            let mut v = record;
            for p in path {
                v = v.get(*p)?;
            }
            v.as_str()
        };
        if text(&["eventSource"]) != Some("aws:s3") {
            return Err(TaskError::Unrecognised);
        }
        if !text(&["eventName"]).is_some_and(|n| n.starts_with("ObjectCreated:")) {
            continue;
        }
        let missing = |field| TaskError::MissingField { index, field };
        let bucket = text(&["s3", "bucket", "name"]).ok_or_else(|| missing("s3.bucket.name"))?;
        let raw_key = text(&["s3", "object", "key"]).ok_or_else(|| missing("s3.object.key"))?;
        let object = record.pointer("/s3/object").ok_or_else(|| missing("s3.object"))?;
        tasks.push(ImportTask {
            object: ObjectRef {
                bucket: bucket.to_owned(),
                key: decode_key(raw_key),
                size: object.get("size").and_then(Value::as_u64).unwrap_or(0),
                etag: object
                    .get("eTag")
                    .and_then(Value::as_str)
                    .map(|e| e.trim_matches('"').to_owned())
                    .filter(|e| !e.is_empty()),
                version_id: object
                    .get("versionId")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty() && *v != "null")
                    .map(str::to_owned),
            },
            resume: None,
            audit: Some(Audit::new(
                Caller::s3(
                    text(&["userIdentity", "principalId"]),
                    text(&["requestParameters", "sourceIPAddress"]),
                ),
                text(&["responseElements", "x-amz-request-id"]),
            )),
        });
    }
    Ok(tasks)
}

/// The notification S3 sends when `object` is created (its essential
/// fields), for a bucket without notifications: the local runner's folder.
/// The uploader is `local` (the file's job records it so).
pub fn object_created_notification(object: &ObjectRef) -> String {
    let key: String = percent_encoding::utf8_percent_encode(&object.key, KEY_ENCODE).collect();
    serde_json::json!({ "Records": [{
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "userIdentity": { "principalId": "local" },
        "s3": {
            "bucket": { "name": object.bucket },
            "object": { "key": key, "size": object.size, "eTag": object.etag, "versionId": object.version_id }
        }
    }]})
    .to_string()
}

/// What S3 escapes in event keys: everything but unreserved characters and `/`.
const KEY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// S3 event keys are URL-encoded with `+` for spaces.
fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::CallerKind;

    /// An event as AWS sends it (from the S3 documentation's example).
    const AWS_EVENT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-11-25T12:00:00.000Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},"requestParameters":{"sourceIPAddress":"203.0.113.7"},
        "responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"imports","bucket":{"name":"pointflow-imports",
        "ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::pointflow-imports"},
        "object":{"key":"imports/spring+campaign%282026%29.csv","size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e",
        "versionId":"096fKKXTRTtl3on89fVO.nfljtsv6qko","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    /// The same as moto 5.2.5 sends it.
    const MOTO_EVENT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-11-25T12:00:00.000","eventName":"ObjectCreated:Put",
        "s3":{"s3SchemaVersion":"1.0","configurationId":"imports","bucket":{"name":"pointflow-imports",
        "arn":"arn:aws:s3:::pointflow-imports"},"object":{"key":"imports%2Fa.csv","size":10,
        "eTag":"\"abc\"","versionId":null,"sequencer":"0"}}}]}"#;

    #[test]
    fn reads_aws_and_emulator_notifications() {
        let aws = parse_tasks(AWS_EVENT).unwrap();
        assert_eq!(aws.len(), 1);
        let o = &aws[0].object;
        assert_eq!(o.key, "imports/spring campaign(2026).csv");
        assert_eq!((o.bucket.as_str(), o.size), ("pointflow-imports", 1024));
        assert_eq!(o.version_id.as_deref(), Some("096fKKXTRTtl3on89fVO.nfljtsv6qko"));
        // Who dropped it, from where, in which S3 request.
        let audit = aws[0].audit.as_ref().expect("the uploader");
        assert_eq!(audit.caller.kind, CallerKind::S3);
        assert_eq!(
            (audit.caller.id.as_deref(), audit.caller.source_ip.as_deref()),
            (Some("AWS:AIDAEXAMPLE"), Some("203.0.113.7"))
        );
        assert_eq!(audit.request_id.as_deref(), Some("C3D13FE58DE4C810"));
        let moto = parse_tasks(MOTO_EVENT).unwrap();
        // moto names no uploader: an s3 caller with no id.
        let nobody = moto[0].audit.as_ref().map(|a| (a.caller.kind, a.caller.id.clone()));
        assert_eq!(nobody, Some((CallerKind::S3, None)));
        assert_eq!(moto[0].object.key, "imports/a.csv");
        assert_eq!(
            (moto[0].object.etag.as_deref(), moto[0].object.version_id.as_deref()),
            (Some("abc"), None)
        );
    }

    #[test]
    fn test_events_and_removals_start_nothing_and_junk_is_refused() {
        let test_event =
            r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-25T12:00:00.000Z","Bucket":"b"}"#;
        assert_eq!(parse_tasks(test_event).unwrap(), []);
        let removed = AWS_EVENT.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(parse_tasks(&removed).unwrap(), []);
        assert_eq!(parse_tasks(r#"{"job_id":"x"}"#), Err(TaskError::Unrecognised));
        assert!(matches!(parse_tasks("nope"), Err(TaskError::NotJson(_))));
    }

    #[test]
    fn synthesised_notifications_read_back_as_the_object() {
        let object = ObjectRef {
            bucket: "b".into(),
            key: "imports/spring campaign+100%.csv".into(),
            size: 12,
            etag: Some("abc".into()),
            version_id: None,
        };
        let tasks = parse_tasks(&object_created_notification(&object)).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!((&tasks[0].object, &tasks[0].resume), (&object, &None));
        let audit = tasks[0].audit.as_ref().expect("who dropped it");
        assert_eq!(
            (audit.caller.kind, audit.caller.id.as_deref()),
            (CallerKind::S3, Some("local"))
        );
    }

    #[test]
    fn continuations_round_trip() {
        let mut task = parse_tasks(AWS_EVENT).unwrap().remove(0);
        task.resume = Some(Resume {
            job_id: task.object.job_id(),
            chunk: 3,
            offset: 1 << 26,
            line: 1_500_001,
            next_seq: 3000,
            columns: vec!["member_id".into(), "point_type".into(), "amount".into()],
            report_parts: vec![0, 2],
            campaign: Some("spring-2026".into()),
            started_at: Some(time::macros::datetime!(2026-03-01 10:00:00 UTC)),
            encoding: Some(crate::domain::text_encoding::declared("cp949").unwrap().record()),
        });
        assert_eq!(parse_tasks(&task.encode()).unwrap(), [task]);
    }

    #[test]
    fn identity_follows_content_not_delivery() {
        let a = parse_tasks(AWS_EVENT).unwrap().remove(0).object;
        let mut b = a.clone();
        b.version_id = Some("another-version-same-bytes".into());
        assert_eq!(a.job_id(), b.job_id(), "same ETag: same content, same job");
        b.etag = Some("0cc175b9c0f1b6a831c399e269772661".into());
        assert_ne!(a.job_id(), b.job_id());
    }
}
