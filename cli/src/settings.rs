//! Resource names and tunables, read from `template.yaml` (compiled in), so
//! the local runner behaves like the deployed stack without restating a
//! single value: batch size, batching window, `MaximumConcurrency`,
//! `maxReceiveCount`, visibility timeout, packing limits.

use std::time::Duration;

use pointflow::import::ImportSettings;
use pointflow::ingest::{IngestSettings, MAX_BODY_BYTES};
use pointflow::packing::PackingLimits;
use pointflow::worker::WorkerSettings;
use serde_norway::Value;

use crate::poller::PollerSettings;

/// The SAM template, as deployed.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

/// Logical id of the accrual queue in the template (the embedded queue's name).
pub const QUEUE_NAME: &str = "AccrualQueue";
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
    pub ingest: IngestSettings,
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
        Ok(StackSettings {
            ingest: IngestSettings {
                max_items: param("MaxItemsPerRequest")? as usize,
                max_body_bytes: MAX_BODY_BYTES,
                packing,
            },
            import: ImportSettings {
                chunk_bytes: param("ImportChunkBytes")?,
                packing,
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
        })
    }
}

impl StackSettings {
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

    #[test]
    fn reads_the_templates_defaults() {
        let s = StackSettings::from_template().unwrap();
        assert_eq!(s.max_receive_count, 5);
        assert_eq!(s.maximum_concurrency, 50);
        assert_eq!(s.batch_size, 10);
        assert_eq!(s.ingest.packing, PackingLimits::default());
        assert_eq!(s.ingest.max_items, pointflow::ingest::DEFAULT_MAX_ITEMS);
        assert!(s.visibility_timeout >= Duration::from_secs(60));
        assert_eq!(s.import, ImportSettings::default());
    }

    #[test]
    fn names_a_missing_parameter() {
        let err = StackSettings::from_yaml("Parameters: {}").unwrap_err();
        assert!(matches!(err, SettingsError::Missing(_)));
    }
}
