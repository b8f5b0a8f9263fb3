//! Uploads (`POST /v1/uploads`): one file of any size sent in one HTTP PUT
//! straight to the import bucket, then imported like any dropped file. The
//! rules here fix where the file goes (a key the service chooses), which
//! job it becomes, how long the PUT may wait and how large it may be; the
//! signature itself is a port's ([`crate::ports::uploads`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::submission::job_id_for_file;
use super::text_encoding;
use super::validation::FieldError;
use super::JobId;

/// Where uploads land: under the import prefix, so the bucket's
/// notification imports them, in a folder of their own so an upload key
/// is never an operator's file.
pub const UPLOAD_PREFIX: &str = "imports/uploads/";
/// How long a pre-signed PUT stays valid by default: long enough to start
/// sending a large file, short enough that a leaked URL soon stops working.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// The largest object one S3 PUT takes, 5 GiB
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html>):
/// the default and the ceiling of the declared size.
pub const S3_MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Longest `campaign`, `encoding` or `sheet`: S3 holds at most 2 KB of user
/// metadata per object, for the three together.
pub const MAX_METADATA_CHARS: usize = 256;

/// Namespace of upload ids derived from an `Idempotency-Key` (UUID v5).
const UPLOAD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_5e0b_2f7a_4c8e_9b3d_0a1f_2e4c_7d90);

/// The file formats an upload may hold, each with its key's extension (the
/// importer reads a file by its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    Csv,
    Ndjson,
    Xlsx,
}

impl UploadFormat {
    /// The format named `name` (`csv`, `ndjson`, `xlsx`).
    pub fn parse(name: &str) -> Option<UploadFormat> {
        match name {
            "csv" => Some(UploadFormat::Csv),
            "ndjson" => Some(UploadFormat::Ndjson),
            "xlsx" => Some(UploadFormat::Xlsx),
            _ => None,
        }
    }

    /// The name, which is also the key's extension.
    pub fn name(self) -> &'static str {
        match self {
            UploadFormat::Csv => "csv",
            UploadFormat::Ndjson => "ndjson",
            UploadFormat::Xlsx => "xlsx",
        }
    }
}

/// A valid body of `POST /v1/uploads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub format: UploadFormat,
    /// The file's exact size in bytes: the PUT must carry exactly this many.
    pub size: u64,
    /// The SHA-256 of the file, when the client declares it: the PUT must
    /// then carry that content (S3 checks `x-amz-checksum-sha256`), and the
    /// upload id derives from it.
    pub sha256: Option<[u8; 32]>,
    /// Object metadata the importer reads (`campaign`, `encoding`, `sheet`).
    pub metadata: BTreeMap<String, String>,
}

/// The fields of an upload's body.
const FIELDS: &str = "format, size, sha256, campaign, encoding, sheet";

/// Reads the body of `POST /v1/uploads`, every problem naming its field.
/// `max_bytes` bounds `size` (the stack's `MaxUploadBytes`).
pub fn upload_from_json(body: &Value, max_bytes: u64) -> Result<UploadRequest, Vec<FieldError>> {
    let problem = |field: &str, reason: String| FieldError {
        index: 0,
        field: field.to_owned(),
        reason,
    };
    let Some(object) = body.as_object() else {
        return Err(vec![problem("body", "must be a JSON object".into())]);
    };
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| !FIELDS.split(", ").any(|f| f == key.as_str()))
        .map(|key| problem(key, format!("is not a field of an upload ({FIELDS})")))
        .collect();
    let format = match object.get("format") {
        None | Some(Value::Null) => {
            errors.push(problem("format", "is required: csv, ndjson or xlsx".into()));
            None
        }
        Some(Value::String(name)) => {
            let format = UploadFormat::parse(name);
            if format.is_none() {
                errors.push(problem("format", format!("{name:?} is not csv, ndjson or xlsx")));
            }
            format
        }
        Some(_) => {
            errors.push(problem("format", "must be a string: csv, ndjson or xlsx".into()));
            None
        }
    };
    let size = match object.get("size") {
        None | Some(Value::Null) => {
            errors.push(problem("size", "is required: the file's size in bytes".into()));
            None
        }
        Some(value) => match value.as_u64() {
            Some(0) => {
                errors.push(problem("size", "must be at least 1 (the file is empty)".into()));
                None
            }
            Some(size) if size > max_bytes => {
                errors.push(problem(
                    "size",
                    format!("is {size} bytes; an upload takes at most {max_bytes} (MaxUploadBytes)"),
                ));
                None
            }
            Some(size) => Some(size),
            None => {
                errors.push(problem("size", "must be a whole number of bytes".into()));
                None
            }
        },
    };
    let sha256 = match object.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match parse_sha256(text) {
            Some(digest) => Some(digest),
            None => {
                errors.push(problem("sha256", "must be 64 hexadecimal digits".into()));
                None
            }
        },
        Some(_) => {
            errors.push(problem("sha256", "must be a string of 64 hexadecimal digits".into()));
            None
        }
    };
    let mut metadata = BTreeMap::new();
    for field in ["campaign", "encoding", "sheet"] {
        match object.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => match check_metadata(field, text) {
                Ok(()) => {
                    metadata.insert(field.to_owned(), text.clone());
                }
                Err(reason) => errors.push(problem(field, reason)),
            },
            Some(_) => errors.push(problem(field, "must be a string".into())),
        }
    }
    if metadata.contains_key("sheet") && format.is_some_and(|f| f != UploadFormat::Xlsx) {
        errors.push(problem(
            "sheet",
            "names a sheet of a workbook; only format xlsx has sheets".into(),
        ));
    }
    match (format, size, errors.is_empty()) {
        (Some(format), Some(size), true) => Ok(UploadRequest {
            format,
            size,
            sha256,
            metadata,
        }),
        _ => Err(errors),
    }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// S3 sends user metadata as HTTP headers, which carry printable ASCII.
fn check_metadata(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > MAX_METADATA_CHARS {
        return Err(format!("is longer than {MAX_METADATA_CHARS} characters"));
    }
    if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err("must be printable ASCII (it travels as an S3 metadata header)".into());
    }
    if field == "encoding" {
        text_encoding::declared(value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What the service answers an upload with, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPlan {
    pub upload_id: Uuid,
    /// `imports/uploads/<upload_id>.<format>`.
    pub key: String,
    /// The job the import gives that key ([`upload_job_id`]).
    pub job_id: JobId,
    pub size: u64,
    pub sha256: Option<[u8; 32]>,
    pub metadata: BTreeMap<String, String>,
    /// When the signed PUT stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// Plans an upload into `bucket` at `now`: the key, the job and the expiry.
/// With an `Idempotency-Key` the upload id derives from it and from
/// everything the request declares (size, hash, format, metadata), so the
/// same request sent again (a client retrying, a rerun of the same submit)
/// gets the same key and job, and the file PUT again there is imported
/// once; a different file under the same key gets another upload. Without
/// one, `random` is the id.
pub fn plan_upload(
    bucket: &str,
    request: &UploadRequest,
    idempotency_key: Option<&str>,
    random: Uuid,
    now: OffsetDateTime,
    expiry: Duration,
) -> UploadPlan {
    let upload_id = match idempotency_key {
        Some(key) => {
            let mut seed = format!(
                "{key}\n{}\n{}\n{}",
                request.format.name(),
                request.size,
                request.sha256.map(hex::encode).unwrap_or_default()
            );
            for (name, value) in &request.metadata {
                seed.push_str(&format!("\n{name}={value}"));
            }
            Uuid::new_v5(&UPLOAD_ID_NAMESPACE, seed.as_bytes())
        }
        None => random,
    };
    let key = format!("{UPLOAD_PREFIX}{upload_id}.{}", request.format.name());
    UploadPlan {
        job_id: upload_job_id(bucket, &key),
        upload_id,
        key,
        size: request.size,
        sha256: request.sha256,
        metadata: request.metadata.clone(),
        expires_at: now + expiry,
    }
}

/// Whether `key` is one the service gave an upload.
pub fn is_upload_key(key: &str) -> bool {
    key.starts_with(UPLOAD_PREFIX)
}

/// The job of the upload at `bucket`/`key`. Unlike a dropped file's job it
/// does not depend on the object's ETag, which nobody knows before the PUT:
/// the key itself names the content (the service chose it, and the PUT was
/// signed for its size and, when declared, its hash).
pub fn upload_job_id(bucket: &str, key: &str) -> JobId {
    job_id_for_file(&format!("s3://{bucket}/{key}#upload"))
}

/// Checks the exact length of an upload's body against the declared size:
/// used by a receiver that checks what S3 checks with `Content-Length`.
pub fn check_length(declared: u64, received: u64) -> Result<(), String> {
    if received == declared {
        Ok(())
    } else if received > declared {
        Err(format!(
            "the body is longer than the {declared} bytes the upload was signed for"
        ))
    } else {
        Err(format!(
            "the body is {received} bytes; the upload was signed for exactly {declared}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: u64 = 1000;

    fn fields(result: Result<UploadRequest, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_body_is_read_with_its_metadata() {
        let digest = "ab".repeat(32);
        let request = upload_from_json(
            &json!({"format": "xlsx", "size": 10, "sha256": digest, "campaign": "spring", "encoding": "cp949", "sheet": "Sheet 2"}),
            MAX,
        )
        .unwrap();
        assert_eq!(request.format, UploadFormat::Xlsx);
        assert_eq!(request.size, 10);
        assert_eq!(request.sha256, Some([0xab; 32]));
        assert_eq!(request.metadata["campaign"], "spring");
        assert_eq!(request.metadata["encoding"], "cp949");
        assert_eq!(request.metadata["sheet"], "Sheet 2");
    }

    #[test]
    fn bad_bodies_name_each_field() {
        assert_eq!(fields(upload_from_json(&json!([]), MAX)), ["body"]);
        assert_eq!(fields(upload_from_json(&json!({}), MAX)), ["format", "size"]);
        assert_eq!(
            fields(upload_from_json(&json!({"format": "json", "size": 1}), MAX)),
            ["format"]
        );
        assert_eq!(
            fields(upload_from_json(&json!({"format": "csv", "size": -1}), MAX)),
            ["size"]
        );
        assert_eq!(
            fields(upload_from_json(&json!({"format": "csv", "size": 1.5}), MAX)),
            ["size"]
        );
        assert_eq!(
            fields(upload_from_json(
                &json!({"format": "csv", "size": 1, "sha256": "xyz"}),
                MAX
            )),
            ["sha256"]
        );
        assert_eq!(
            fields(upload_from_json(
                &json!({"format": "csv", "size": 1, "encoding": "klingon"}),
                MAX
            )),
            ["encoding"]
        );
        assert_eq!(
            fields(upload_from_json(
                &json!({"format": "csv", "size": 1, "campaign": "봄"}),
                MAX
            )),
            ["campaign"]
        );
        assert_eq!(
            fields(upload_from_json(
                &json!({"format": "csv", "size": 1, "sheet": "S"}),
                MAX
            )),
            ["sheet"]
        );
        assert_eq!(
            fields(upload_from_json(
                &json!({"format": "csv", "size": 1, "bucket": "b"}),
                MAX
            )),
            ["bucket"]
        );
    }

    #[test]
    fn the_size_is_bounded_by_the_stack_and_not_empty() {
        assert!(upload_from_json(&json!({"format": "csv", "size": MAX}), MAX).is_ok());
        let errors = upload_from_json(&json!({"format": "csv", "size": MAX + 1}), MAX).unwrap_err();
        assert_eq!(errors[0].field, "size");
        assert!(errors[0].reason.contains("MaxUploadBytes"), "{}", errors[0].reason);
        assert_eq!(
            fields(upload_from_json(&json!({"format": "csv", "size": 0}), MAX)),
            ["size"]
        );
    }

    fn request(size: u64) -> UploadRequest {
        upload_from_json(&json!({"format": "csv", "size": size, "campaign": "c"}), MAX).unwrap()
    }

    #[test]
    fn the_key_is_fixed_under_the_upload_prefix_and_names_the_job() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let random = Uuid::from_u128(7);
        let plan = plan_upload("b", &request(5), None, random, now, DEFAULT_UPLOAD_EXPIRY);
        assert_eq!(plan.key, format!("imports/uploads/{random}.csv"));
        assert!(is_upload_key(&plan.key));
        assert_eq!(plan.job_id, upload_job_id("b", &plan.key));
        assert_ne!(
            plan.job_id,
            upload_job_id("other", &plan.key),
            "the bucket is part of it"
        );
        assert_eq!(plan.expires_at, now + Duration::from_secs(900));
        assert_eq!(plan.metadata["campaign"], "c");
    }

    #[test]
    fn an_idempotency_key_derives_the_same_upload_for_the_same_request_only() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let plan = |key: Option<&str>, size: u64, random: u128| {
            plan_upload(
                "b",
                &request(size),
                key,
                Uuid::from_u128(random),
                now,
                DEFAULT_UPLOAD_EXPIRY,
            )
        };
        assert_eq!(plan(Some("k"), 5, 1).key, plan(Some("k"), 5, 2).key);
        assert_eq!(plan(Some("k"), 5, 1).job_id, plan(Some("k"), 5, 2).job_id);
        assert_ne!(plan(Some("k"), 5, 1).key, plan(Some("k"), 6, 1).key, "another size");
        assert_ne!(plan(Some("k"), 5, 1).key, plan(Some("j"), 5, 1).key, "another key");
        assert_ne!(
            plan(None, 5, 1).key,
            plan(None, 5, 2).key,
            "no key: a new upload each time"
        );
    }

    #[test]
    fn the_length_must_be_exact() {
        assert!(check_length(10, 10).is_ok());
        assert!(check_length(10, 9).unwrap_err().contains("exactly 10"));
        assert!(check_length(10, 11).unwrap_err().contains("longer"));
    }
}
