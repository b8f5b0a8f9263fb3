//! Bulk file import: a CSV object dropped in the bucket is read in chunks,
//! validated row by row, packed and queued with the same code the API uses,
//! and tracked as one job; bad rows go to an error report next to it. The
//! bucket is reached through [`crate::ports::objects::ObjectStore`].
//!
//! - [`task`]: the import queue's messages (S3 notifications and the
//!   continuations that carry a file from one chunk to the next).
//! - [`report`]: the error report's format.
//! - [`service`]: [`service::Importer`], which reads one chunk per call.

pub mod report;
pub mod service;
pub mod task;

pub use service::{ChunkOutcome, ImportError, ImportSettings, Importer};
pub use task::{ImportTask, Resume};
