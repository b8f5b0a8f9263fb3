//! Bulk file import: a CSV object dropped in the bucket is read in chunks,
//! validated row by row, packed and queued with the same code the API uses,
//! and tracked as one job; bad rows go to an error report next to it. The
//! bucket is reached through [`crate::ports::objects::ObjectStore`].
//!
//! - [`task`]: the import queue's messages (S3 notifications and the
//!   continuations that carry a file from one chunk to the next).
//! - [`report`]: the error report's format and where it and the parts go.
//! - [`service`]: [`service::Importer`], which reads one chunk per call.
//! - [`parse`]: the parsing half of a chunk, pure over a reader.
//! - [`occurrences`]: the id-scheme-v2 counts a chunk hands the next.
//! - [`blocking`]: where parsing and other blocking reads run.

pub mod blocking;
pub mod occurrences;
pub mod parse;
pub mod report;
pub mod service;
pub mod settings;
pub mod task;

pub use blocking::BlockingReads;
pub use service::{ChunkOutcome, ImportError, ImportSettings, Importer};
pub use task::{ImportTask, Resume};
