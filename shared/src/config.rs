//! Configuration from environment variables, read once per cold start into
//! typed structs. Errors name the variable.

use crate::domain::capabilities::AuthMode;
use crate::domain::limits::Ceilings;
use crate::domain::packing::PackingLimits;
use crate::domain::uploads::S3_MAX_PUT_BYTES;
use crate::services::api::{ApiSettings, UploadSettings, DEFAULT_MAX_ITEMS, MAX_BODY_BYTES};
use crate::services::import::ImportSettings;
use crate::services::worker::WorkerSettings;

/// A missing or malformed variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} must be {expected}, got {value:?}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
}

fn required(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ConfigError> {
    lookup(name).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name))
}

fn number<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            expected,
            value: v,
        }),
    }
}

/// `MESSAGE_MAX_ACCRUALS` and `MESSAGE_MAX_BYTES`, checked against SQS.
fn packing(lookup: &impl Fn(&str) -> Option<String>) -> Result<PackingLimits, ConfigError> {
    let defaults = PackingLimits::default();
    let packing = PackingLimits {
        max_accruals: number(
            lookup,
            "MESSAGE_MAX_ACCRUALS",
            defaults.max_accruals,
            "a positive integer",
        )?,
        max_bytes: number(lookup, "MESSAGE_MAX_BYTES", defaults.max_bytes, "a byte count")?,
    };
    packing.validate().map_err(|e| ConfigError::Invalid {
        name: "MESSAGE_MAX_ACCRUALS/MESSAGE_MAX_BYTES",
        expected: "limits SQS accepts",
        value: e.to_string(),
    })
}

/// `MAX_AMOUNT_PER_ACCRUAL`, `MAX_POINTS_PER_JOB`, `MAX_ACCRUALS_PER_JOB`:
/// positive integers, the defaults of [`Ceilings`] when unset.
pub fn ceilings(lookup: &impl Fn(&str) -> Option<String>) -> Result<Ceilings, ConfigError> {
    let defaults = Ceilings::default();
    let positive = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        match number(lookup, name, default, "a positive integer")? {
            0 => Err(ConfigError::Invalid {
                name,
                expected: "a positive integer",
                value: "0".into(),
            }),
            n => Ok(n),
        }
    };
    Ok(Ceilings {
        max_amount_per_accrual: positive("MAX_AMOUNT_PER_ACCRUAL", defaults.max_amount_per_accrual)?,
        max_points_per_job: positive("MAX_POINTS_PER_JOB", defaults.max_points_per_job)?,
        max_accruals_per_job: positive("MAX_ACCRUALS_PER_JOB", defaults.max_accruals_per_job)?,
    })
}

/// The ingest function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    pub table_name: String,
    pub queue_url: String,
    pub settings: ApiSettings,
    /// The identity a request's context must carry (`AUTH_MODE`).
    pub auth_mode: AuthMode,
    /// `POST /v1/uploads` into `UPLOAD_BUCKET`, when that is set.
    pub uploads: Option<UploadSettings>,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `TABLE_NAME`, `QUEUE_URL`, `MAX_ITEMS_PER_REQUEST`,
    /// `MESSAGE_MAX_ACCRUALS`, `MESSAGE_MAX_BYTES`, the [`ceilings`] and
    /// `AUTH_MODE` (`iam` when unset: the stricter mode), and the uploads'
    /// `UPLOAD_BUCKET`, `UPLOAD_EXPIRY_SECONDS` and `MAX_UPLOAD_BYTES`
    /// through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let packing = packing(&lookup)?;
        let max_items = number(
            &lookup,
            "MAX_ITEMS_PER_REQUEST",
            DEFAULT_MAX_ITEMS,
            "a positive integer",
        )?;
        if max_items == 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_ITEMS_PER_REQUEST",
                expected: "a positive integer",
                value: "0".into(),
            });
        }
        Ok(IngestConfig {
            table_name: required(&lookup, "TABLE_NAME")?,
            queue_url: required(&lookup, "QUEUE_URL")?,
            settings: ApiSettings {
                max_items,
                max_body_bytes: MAX_BODY_BYTES,
                packing,
                ceilings: ceilings(&lookup)?,
            },
            auth_mode: auth_mode(&lookup)?,
            uploads: uploads(&lookup)?,
        })
    }
}

/// The upload settings: none without `UPLOAD_BUCKET`; the expiry 1 second
/// to 7 days (SigV4's longest pre-signature), the size 1 byte to 5 GiB.
fn uploads(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<UploadSettings>, ConfigError> {
    let Some(bucket) = lookup("UPLOAD_BUCKET").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let mut settings = UploadSettings::new(bucket);
    let expiry: u64 = number(
        lookup,
        "UPLOAD_EXPIRY_SECONDS",
        settings.expiry.as_secs(),
        "1 to 604800 seconds",
    )?;
    if !(1..=604_800).contains(&expiry) {
        return Err(ConfigError::Invalid {
            name: "UPLOAD_EXPIRY_SECONDS",
            expected: "1 to 604800 seconds",
            value: expiry.to_string(),
        });
    }
    settings.expiry = std::time::Duration::from_secs(expiry);
    settings.max_bytes = number(lookup, "MAX_UPLOAD_BYTES", S3_MAX_PUT_BYTES, "1 to 5368709120 bytes")?;
    if !(1..=S3_MAX_PUT_BYTES).contains(&settings.max_bytes) {
        return Err(ConfigError::Invalid {
            name: "MAX_UPLOAD_BYTES",
            expected: "1 to 5368709120 bytes",
            value: settings.max_bytes.to_string(),
        });
    }
    Ok(Some(settings))
}

/// `AUTH_MODE`: `iam` or `api-key`; unset or empty is `iam`.
fn auth_mode(lookup: &impl Fn(&str) -> Option<String>) -> Result<AuthMode, ConfigError> {
    match lookup("AUTH_MODE").filter(|v| !v.is_empty()) {
        None => Ok(AuthMode::Iam),
        Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
            name: "AUTH_MODE",
            expected: "iam or api-key",
            value,
        }),
    }
}

/// The worker function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub table_name: String,
    pub settings: WorkerSettings,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `TABLE_NAME`, `MAX_RECEIVE_COUNT`, `MESSAGE_CONCURRENCY`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = WorkerSettings::default();
        Ok(WorkerConfig {
            table_name: required(&lookup, "TABLE_NAME")?,
            settings: WorkerSettings {
                max_receive_count: number(
                    &lookup,
                    "MAX_RECEIVE_COUNT",
                    defaults.max_receive_count,
                    "a positive integer",
                )?,
                message_concurrency: number(
                    &lookup,
                    "MESSAGE_CONCURRENCY",
                    defaults.message_concurrency,
                    "a positive integer",
                )?
                .max(1),
            },
        })
    }
}

/// The CSV import function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportConfig {
    pub table_name: String,
    /// The accrual queue the worker reads.
    pub queue_url: String,
    /// The import queue: S3 notifications and continuations.
    pub import_queue_url: String,
    pub settings: ImportSettings,
}

impl ImportConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `TABLE_NAME`, `QUEUE_URL`, `IMPORT_QUEUE_URL`,
    /// `IMPORT_CHUNK_BYTES`, `REPORT_PREFIX`, `MESSAGE_MAX_ACCRUALS`,
    /// `MESSAGE_MAX_BYTES` and the [`ceilings`] through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = ImportSettings::default();
        let chunk_bytes = number(
            &lookup,
            "IMPORT_CHUNK_BYTES",
            defaults.chunk_bytes,
            "a positive byte count",
        )?;
        if chunk_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "IMPORT_CHUNK_BYTES",
                expected: "a positive byte count",
                value: "0".into(),
            });
        }
        let report_prefix = lookup("REPORT_PREFIX")
            .filter(|p| !p.is_empty())
            .unwrap_or(defaults.report_prefix);
        Ok(ImportConfig {
            table_name: required(&lookup, "TABLE_NAME")?,
            queue_url: required(&lookup, "QUEUE_URL")?,
            import_queue_url: required(&lookup, "IMPORT_QUEUE_URL")?,
            settings: ImportSettings {
                chunk_bytes,
                packing: packing(&lookup)?,
                report_prefix,
                max_derived_contents: defaults.max_derived_contents,
                ceilings: ceilings(&lookup)?,
                max_workbook_bytes: defaults.max_workbook_bytes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn ingest_config_names_the_missing_variable() {
        assert_eq!(
            IngestConfig::from_lookup(env(&[("TABLE_NAME", "t")])),
            Err(ConfigError::Missing("QUEUE_URL"))
        );
    }

    #[test]
    fn ingest_config_reads_limits_and_defaults() {
        let c = IngestConfig::from_lookup(env(&[
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("MESSAGE_MAX_ACCRUALS", "50"),
        ]))
        .unwrap();
        assert_eq!(c.settings.packing.max_accruals, 50);
        assert_eq!(c.settings.packing.max_bytes, PackingLimits::default().max_bytes);
        assert_eq!(c.settings.max_items, DEFAULT_MAX_ITEMS);
        let bad = IngestConfig::from_lookup(env(&[
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("MESSAGE_MAX_BYTES", "2000000"),
        ]));
        assert!(matches!(bad, Err(ConfigError::Invalid { .. })));
        let bad = IngestConfig::from_lookup(env(&[
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("MAX_ITEMS_PER_REQUEST", "lots"),
        ]));
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                name: "MAX_ITEMS_PER_REQUEST",
                ..
            })
        ));
    }

    #[test]
    fn ingest_config_reads_the_upload_settings() {
        let base = [("TABLE_NAME", "t"), ("QUEUE_URL", "q")];
        assert_eq!(IngestConfig::from_lookup(env(&base)).unwrap().uploads, None);
        let mut with = base.to_vec();
        with.push(("UPLOAD_BUCKET", "imports-b"));
        let uploads = IngestConfig::from_lookup(env(&with)).unwrap().uploads.unwrap();
        assert_eq!(uploads, UploadSettings::new("imports-b"));
        with.push(("UPLOAD_EXPIRY_SECONDS", "60"));
        with.push(("MAX_UPLOAD_BYTES", "1000"));
        let uploads = IngestConfig::from_lookup(env(&with)).unwrap().uploads.unwrap();
        assert_eq!((uploads.expiry.as_secs(), uploads.max_bytes), (60, 1000));
        for (name, value) in [
            ("UPLOAD_EXPIRY_SECONDS", "0"),
            ("UPLOAD_EXPIRY_SECONDS", "604801"),
            ("MAX_UPLOAD_BYTES", "5368709121"),
            ("MAX_UPLOAD_BYTES", "0"),
        ] {
            let mut bad = base.to_vec();
            bad.extend([("UPLOAD_BUCKET", "b"), (name, value)]);
            assert!(
                matches!(IngestConfig::from_lookup(env(&bad)), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={value}"
            );
        }
    }

    #[test]
    fn ingest_config_reads_the_auth_mode_iam_when_unset() {
        let base = [("TABLE_NAME", "t"), ("QUEUE_URL", "q")];
        assert_eq!(IngestConfig::from_lookup(env(&base)).unwrap().auth_mode, AuthMode::Iam);
        let mut api_key = base.to_vec();
        api_key.push(("AUTH_MODE", "api-key"));
        assert_eq!(
            IngestConfig::from_lookup(env(&api_key)).unwrap().auth_mode,
            AuthMode::ApiKey
        );
        let mut bad = base.to_vec();
        bad.push(("AUTH_MODE", "none"));
        assert_eq!(
            IngestConfig::from_lookup(env(&bad)),
            Err(ConfigError::Invalid {
                name: "AUTH_MODE",
                expected: "iam or api-key",
                value: "none".into()
            })
        );
    }

    #[test]
    fn import_config_reads_chunk_size_and_prefix() {
        let base = [("TABLE_NAME", "t"), ("QUEUE_URL", "q"), ("IMPORT_QUEUE_URL", "i")];
        let c = ImportConfig::from_lookup(env(&base)).unwrap();
        assert_eq!(c.settings, ImportSettings::default());
        let mut custom = base.to_vec();
        custom.extend([("IMPORT_CHUNK_BYTES", "4096"), ("REPORT_PREFIX", "errors/")]);
        let c = ImportConfig::from_lookup(env(&custom)).unwrap();
        assert_eq!(
            (c.settings.chunk_bytes, c.settings.report_prefix.as_str()),
            (4096, "errors/")
        );
        assert_eq!(
            ImportConfig::from_lookup(env(&base[..2])),
            Err(ConfigError::Missing("IMPORT_QUEUE_URL"))
        );
    }

    #[test]
    fn import_config_reads_the_same_ceilings_as_ingest() {
        let vars = [
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("IMPORT_QUEUE_URL", "i"),
            ("MAX_AMOUNT_PER_ACCRUAL", "5"),
            ("MAX_POINTS_PER_JOB", "50"),
            ("MAX_ACCRUALS_PER_JOB", "10"),
        ];
        let import = ImportConfig::from_lookup(env(&vars)).unwrap();
        let ingest = IngestConfig::from_lookup(env(&vars)).unwrap();
        assert_eq!(import.settings.ceilings, ingest.settings.ceilings);
        assert_eq!(import.settings.ceilings.max_points_per_job, 50);
        let zero = [vars[0], vars[1], vars[2], ("MAX_POINTS_PER_JOB", "0")];
        assert!(matches!(
            ImportConfig::from_lookup(env(&zero)),
            Err(ConfigError::Invalid {
                name: "MAX_POINTS_PER_JOB",
                ..
            })
        ));
    }

    #[test]
    fn worker_config_reads_receive_count() {
        let c = WorkerConfig::from_lookup(env(&[("TABLE_NAME", "t"), ("MAX_RECEIVE_COUNT", "3")])).unwrap();
        assert_eq!(c.settings.max_receive_count, 3);
        assert_eq!(c.settings.message_concurrency, 4);
    }

    #[test]
    fn reads_the_ceilings_and_refuses_zero() {
        assert_eq!(ceilings(&env(&[])), Ok(Ceilings::default()));
        let read = ceilings(&env(&[
            ("MAX_AMOUNT_PER_ACCRUAL", "5"),
            ("MAX_POINTS_PER_JOB", "50"),
            ("MAX_ACCRUALS_PER_JOB", "10"),
        ]));
        assert_eq!(
            read,
            Ok(Ceilings {
                max_amount_per_accrual: 5,
                max_points_per_job: 50,
                max_accruals_per_job: 10
            })
        );
        for name in ["MAX_AMOUNT_PER_ACCRUAL", "MAX_POINTS_PER_JOB", "MAX_ACCRUALS_PER_JOB"] {
            assert!(
                matches!(ceilings(&env(&[(name, "0")])), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}"
            );
        }
        assert!(ceilings(&env(&[("MAX_POINTS_PER_JOB", "many")])).is_err());
    }
}
