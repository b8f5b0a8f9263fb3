//! Implementations of the ports, one folder per backend: AWS (DynamoDB,
//! SQS, S3), the embedded SQLite store with a local folder for files, and
//! an in-memory backend that is the fast fake for logic tests.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "sqlite")]
pub mod local_dir;
#[cfg(feature = "sqlite")]
pub mod local_uploads;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
// Charges by the DynamoDB adapter's transaction plan; only the embedded
// backend needs it (DynamoDB charges what it sends).
#[cfg(feature = "sqlite")]
pub mod metered;
pub mod retry;
#[cfg(feature = "sqlite")]
pub mod sqlite;
