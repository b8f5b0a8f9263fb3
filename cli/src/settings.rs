//! Resource names and tunables, read from `template.yaml` (compiled in), so
//! the local runner behaves like the deployed stack without restating a
//! single value: batch size, batching window, `MaximumConcurrency`,
//! `maxReceiveCount`, visibility timeout, packing limits.

use std::time::Duration;

use pointflow::domain::limits::Ceilings;
use pointflow::domain::packing::PackingLimits;
use pointflow::services::api::{ApiSettings, MAX_BODY_BYTES};
use pointflow::services::import::ImportSettings;
use pointflow::services::worker::WorkerSettings;
use serde_norway::Value;

use crate::poller::PollerSettings;

/// The SAM template, as deployed.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

/// Logical id of the accrual queue in the template (the embedded queue's name).
pub const QUEUE_NAME: &str = "WorkQueue";
/// Logical id of the dead-letter queue in the template.
pub const DLQ_NAME: &str = "AccrualDeadLetterQueue";
/// Logical id of the import queue in the template.
pub const IMPORT_QUEUE_NAME: &str = "ImportQueue";
/// Logical id of the import dead-letter queue in the template.
pub const IMPORT_DLQ_NAME: &str = "ImportDeadLetterQueue";
/// Logical id of the table in the template.
pub const TABLE_NAME: &str = "PointflowTable";

/// The stack's settings that the runner reproduces.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSettings {
    pub ingest: ApiSettings,
    pub worker: WorkerSettings,
    /// Event source mapping: messages per invocation.
    pub batch_size: usize,
    /// Event source mapping: how long to gather a batch.
    pub batching_window: Duration,
    /// Event source mapping: `ScalingConfig.MaximumConcurrency`.
    pub maximum_concurrency: usize,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub import: ImportSettings,
    /// Import event source: `ScalingConfig.MaximumConcurrency` (files at once).
    pub import_maximum_concurrency: usize,
    pub import_visibility_timeout: Duration,
    /// `POST /v1/uploads`: how long an upload URL is valid (`UploadExpirySeconds`).
    pub upload_expiry: Duration,
    /// `POST /v1/uploads`: the largest declared size (`MaxUploadBytes`).
    pub max_upload_bytes: u64,
}

/// The template lacks a parameter or has one of the wrong type.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("template.yaml is not valid YAML")]
    Yaml(#[from] serde_norway::Error),
    #[error("template.yaml has no numeric default for parameter {0}")]
    Missing(&'static str),
}

/// The numeric default of one of the template's parameters.
pub fn template_parameter(name: &'static str) -> Result<u64, SettingsError> {
    let doc: Value = serde_norway::from_str(TEMPLATE)?;
    parameter(&doc, name)
}

fn parameter(doc: &Value, name: &'static str) -> Result<u64, SettingsError> {
    doc.get("Parameters")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("Default"))
        .and_then(|d| d.as_u64().or_else(|| d.as_str().and_then(|s| s.parse().ok())))
        .ok_or(SettingsError::Missing(name))
}

impl StackSettings {
    /// The defaults of the template's parameters.
    pub fn from_template() -> Result<Self, SettingsError> {
        Self::from_yaml(TEMPLATE)
    }

    /// Settings from a template's text.
    pub fn from_yaml(text: &str) -> Result<Self, SettingsError> {
        let doc: Value = serde_norway::from_str(text)?;
        let param = |name: &'static str| parameter(&doc, name);
        let max_receive_count = u32::try_from(param("MaxReceiveCount")?).unwrap_or(u32::MAX);
        let packing = PackingLimits {
            max_accruals: param("MessageMaxAccruals")? as usize,
            max_bytes: param("MessageMaxBytes")? as usize,
        };
        let ceilings = Ceilings {
            max_amount_per_accrual: param("MaxAmountPerAccrual")?,
            max_points_per_job: param("MaxPointsPerJob")?,
            max_accruals_per_job: param("MaxAccrualsPerJob")?,
        };
        Ok(StackSettings {
            ingest: ApiSettings {
                max_items: param("MaxItemsPerRequest")? as usize,
                max_body_bytes: MAX_BODY_BYTES,
                packing,
                ceilings,
            },
            import: ImportSettings {
                chunk_bytes: param("ImportChunkBytes")?,
                packing,
                ceilings,
                ..ImportSettings::default()
            },
            import_maximum_concurrency: param("ImportMaximumConcurrency")? as usize,
            import_visibility_timeout: Duration::from_secs(param("ImportQueueVisibilityTimeoutSeconds")?),
            worker: WorkerSettings {
                max_receive_count,
                message_concurrency: param("MessageConcurrency")? as usize,
            },
            batch_size: param("WorkerBatchSize")? as usize,
            batching_window: Duration::from_secs(param("WorkerMaxBatchingWindowSeconds")?),
            maximum_concurrency: param("WorkerMaximumConcurrency")? as usize,
            visibility_timeout: Duration::from_secs(param("QueueVisibilityTimeoutSeconds")?),
            max_receive_count,
            upload_expiry: Duration::from_secs(param("UploadExpirySeconds")?),
            max_upload_bytes: param("MaxUploadBytes")?,
        })
    }
}

/// Worker invocations in flight at most on the embedded backend, unless
/// `--concurrency` says otherwise. SQLite applies one transaction at a time,
/// so invocations beyond a few only wait for it, each holding its batch (up
/// to 10 messages of 500 accruals, received and decoded): on the default
/// demo, the template's 50 took about 170 MiB more peak RSS than 8, for no
/// more throughput (docs/performance.md). On AWS the template's
/// `WorkerMaximumConcurrency` applies unchanged.
pub const EMBEDDED_MAXIMUM_CONCURRENCY: usize = 8;

impl StackSettings {
    /// Sets the worker's `MaximumConcurrency` for the runner: `flag`
    /// (`--concurrency`) if given, else the template's, held to
    /// [`EMBEDDED_MAXIMUM_CONCURRENCY`] on the embedded backend.
    pub fn cap_worker_concurrency(&mut self, flag: Option<usize>, embedded: bool) {
        self.maximum_concurrency = match flag {
            Some(cap) => cap.max(1),
            None if embedded => self.maximum_concurrency.min(EMBEDDED_MAXIMUM_CONCURRENCY),
            None => self.maximum_concurrency,
        };
    }

    /// The worker's event source mapping as the template configures it, with
    /// empty receives long-polling for `wait`.
    pub fn worker_pollers(&self, wait: Duration) -> PollerSettings {
        PollerSettings {
            batch_size: self.batch_size,
            batching_window: self.batching_window,
            maximum_concurrency: self.maximum_concurrency,
            wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file's report parts are read by its last chunk, which may run after
    /// a continuation waited out its retention in the import queue and then
    /// in its dead-letter queue (and was redriven): the parts must outlive
    /// both retentions together.
    #[test]
    fn report_parts_outlive_the_import_queue_and_its_dlq() {
        let doc: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let resources = &doc["Resources"];
        let retention = |queue: &str| {
            resources[queue]["Properties"]["MessageRetentionPeriod"]
                .as_u64()
                .unwrap_or_else(|| panic!("{queue} has a MessageRetentionPeriod"))
        };
        let rules = resources["ImportBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
            .as_sequence()
            .unwrap();
        let parts = rules
            .iter()
            .find(|r| r["Prefix"].as_str() == Some("reports/.parts/"))
            .unwrap();
        let days = parts["ExpirationInDays"].as_u64().unwrap();
        // The import side's redrive rule counts on exactly this lifetime.
        assert_eq!(
            days as i64,
            pointflow::domain::retention::IMPORT_PARTS_TTL_DAYS,
            "retention.rs's IMPORT_PARTS_TTL_DAYS must be the parts' lifecycle rule"
        );
        let needed = retention(IMPORT_QUEUE_NAME) + retention(IMPORT_DLQ_NAME);
        assert!(
            days * 86_400 >= needed,
            "report parts expire after {days} days, but a continuation may run {} days later",
            needed / 86_400
        );
    }

    /// A message redriven at the oldest the redrive rule allows is then
    /// kept at most its queue's retention (a move to the DLQ keeps its first
    /// enqueue time): every delivery must come before its job's markers and
    /// cancel items expire.
    #[test]
    fn markers_outlive_the_last_delivery_of_a_redriven_message() {
        use pointflow::domain::retention::{MARKER_TTL_SECONDS, REDRIVE_MAX_AGE_DAYS, SQS_MAX_RETENTION_DAYS};
        let doc: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let retention = |queue: &str| {
            doc["Resources"][queue]["Properties"]["MessageRetentionPeriod"]
                .as_i64()
                .unwrap_or_else(|| panic!("{queue} has a MessageRetentionPeriod"))
        };
        for queue in ["AccrualQueue", DLQ_NAME] {
            assert!(retention(queue) <= SQS_MAX_RETENTION_DAYS * 86_400, "{queue}");
        }
        let last_delivery = REDRIVE_MAX_AGE_DAYS * 86_400 + retention("AccrualQueue");
        assert!(
            last_delivery < MARKER_TTL_SECONDS,
            "a redriven message may be delivered {} days after it was queued, its markers expire after {} days",
            last_delivery / 86_400,
            MARKER_TTL_SECONDS / 86_400
        );
    }

    #[test]
    fn reads_the_templates_defaults() {
        let s = StackSettings::from_template().unwrap();
        assert_eq!(s.max_receive_count, 5);
        assert_eq!(s.maximum_concurrency, 50);
        assert_eq!(s.batch_size, 10);
        assert_eq!(s.ingest.packing, PackingLimits::default());
        assert_eq!(s.ingest.max_items, pointflow::services::api::DEFAULT_MAX_ITEMS);
        // The template's defaults are the library's, documented once.
        assert_eq!(s.ingest.ceilings, Ceilings::default());
        assert!(s.visibility_timeout >= Duration::from_secs(60));
        assert_eq!(s.import, ImportSettings::default());
    }

    #[test]
    fn the_embedded_backend_runs_fewer_workers_unless_told_otherwise() {
        let template = StackSettings::from_template().unwrap();
        let capped = |flag, embedded| {
            let mut s = template.clone();
            s.cap_worker_concurrency(flag, embedded);
            s.maximum_concurrency
        };
        assert_eq!(capped(None, true), EMBEDDED_MAXIMUM_CONCURRENCY);
        assert_eq!(capped(None, false), template.maximum_concurrency);
        assert_eq!(capped(Some(50), true), 50);
        assert_eq!(capped(Some(3), false), 3);
        assert_eq!(capped(Some(0), true), 1);
    }

    /// Every IAM statement (an item of a `Statement` list) anywhere below `value`.
    fn statements<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
        match value {
            Value::Mapping(map) => {
                for (k, v) in map {
                    // Key policies are checked on their own (template_checks):
                    // there Resource "*" means the key itself.
                    if k.as_str() == Some("KeyPolicy") {
                        continue;
                    }
                    if k.as_str() == Some("Statement") {
                        if let Some(list) = v.as_sequence() {
                            out.extend(list.iter());
                        }
                    }
                    statements(v, out);
                }
            }
            Value::Sequence(list) => list.iter().for_each(|v| statements(v, out)),
            Value::Tagged(tagged) => statements(&tagged.value, out),
            _ => {}
        }
    }

    /// Least privilege and no open door, checked on the template as shipped:
    /// no IAM statement that allows grants a wildcard action or every resource, the API
    /// requires a key with a throttled usage plan, and no function event
    /// turns the key off.
    #[test]
    fn the_template_grants_no_wildcards_and_requires_api_keys() {
        let doc: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let mut found = Vec::new();
        statements(&doc["Resources"], &mut found);
        assert!(
            found.len() >= 5,
            "expected the functions' and queues' statements, found {}",
            found.len()
        );
        for statement in found {
            let as_list = |v: &Value| -> Vec<Value> {
                match v {
                    Value::Sequence(list) => list.clone(),
                    Value::Null => Vec::new(),
                    other => vec![other.clone()],
                }
            };
            // A Deny only narrows: the TLS-only bucket policy denies s3:* to "*".
            if statement["Effect"].as_str() == Some("Deny") {
                continue;
            }
            for action in as_list(&statement["Action"]) {
                let action = action.as_str().unwrap_or_default();
                assert!(!action.contains('*'), "wildcard action {action:?} in {statement:?}");
            }
            for resource in as_list(&statement["Resource"]) {
                assert_ne!(resource.as_str(), Some("*"), "every resource granted in {statement:?}");
            }
            assert_ne!(
                statement["Effect"].as_str(),
                None,
                "statement without an effect: {statement:?}"
            );
        }
        let api = &doc["Resources"]["PointflowApi"]["Properties"];
        assert_eq!(api["Auth"]["ApiKeyRequired"].as_bool(), Some(true));
        assert!(!api["Auth"]["UsagePlan"]["Throttle"]["RateLimit"].is_null());
        let mut routes = 0;
        for (_, resource) in doc["Resources"].as_mapping().unwrap() {
            if let Some(events) = resource["Properties"]["Events"].as_mapping() {
                for (name, event) in events {
                    if event["Type"].as_str() == Some("Api") {
                        routes += 1;
                        assert_ne!(
                            event["Properties"]["Auth"]["ApiKeyRequired"].as_bool(),
                            Some(false),
                            "{name:?} is open without a key"
                        );
                    }
                }
            }
        }
        assert_eq!(routes, 9, "every API route is checked");
    }

    /// The table the template deploys has the history index the adapter
    /// queries, projecting exactly what the adapter reads back.
    #[test]
    fn the_template_history_index_matches_the_adapter() {
        use pointflow::adapters::aws::dynamodb::{HISTORY_INDEX, HISTORY_PROJECTION};
        let doc: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let table = &doc["Resources"]["PointflowTable"]["Properties"];
        let indexes = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
        let history = indexes
            .iter()
            .find(|i| i["IndexName"].as_str() == Some(HISTORY_INDEX))
            .expect("the history index");
        let keys: Vec<&str> = history["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|k| k["AttributeName"].as_str())
            .collect();
        assert_eq!(keys, ["hist_pk", "hist_sk"]);
        let projected: Vec<&str> = history["Projection"]["NonKeyAttributes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(projected, HISTORY_PROJECTION);
    }

    /// The table the template deploys has the job list index the adapter
    /// queries (keys only, so folds write no index entry), and the ingest
    /// function may query it and read the jobs it lists.
    #[test]
    fn the_template_job_list_index_matches_the_adapter() {
        use pointflow::adapters::aws::dynamodb::JOB_LIST_INDEX;
        let doc: Value = serde_norway::from_str(TEMPLATE).unwrap();
        let table = &doc["Resources"]["PointflowTable"]["Properties"];
        let index = table["GlobalSecondaryIndexes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|i| i["IndexName"].as_str() == Some(JOB_LIST_INDEX))
            .expect("the job list index");
        let keys: Vec<&str> = index["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|k| k["AttributeName"].as_str())
            .collect();
        assert_eq!(keys, ["list_pk", "list_sk"]);
        assert_eq!(index["Projection"]["ProjectionType"].as_str(), Some("KEYS_ONLY"));
        let statements =
            serde_norway::to_string(&doc["Resources"]["IngestApiFunction"]["Properties"]["Policies"]).unwrap();
        assert!(statements.contains("dynamodb:BatchGetItem"), "{statements}");
        assert!(statements.contains(&format!("/index/{JOB_LIST_INDEX}")), "{statements}");
    }

    #[test]
    fn names_a_missing_parameter() {
        let err = StackSettings::from_yaml("Parameters: {}").unwrap_err();
        assert!(matches!(err, SettingsError::Missing(_)));
    }
}
