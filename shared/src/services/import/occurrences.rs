//! The occurrence table of a file's rows without `accrual_id` (id scheme
//! v2), carried from one chunk to the next through the bucket: chunk `n`
//! writes the counts of every row before chunk `n + 1` to
//! [`report::occurrences_key`] before it queues the continuation, and
//! chunk `n + 1` reads them back before its first row. A chunk read again
//! reads the same table, so it derives the same ids; once chunk `n + 1` is
//! recorded nothing needs its table again, and it is deleted (the lifecycle
//! rule on the report parts removes any left behind): a reading of the
//! chunk that began before the record and finds the table gone finds the
//! chunk recorded and stops.
//!
//! The table is [`COUNT_ENTRY_BYTES`] per distinct content; it is read in
//! pieces, so reading holds the table being built plus one piece.

use std::io::Read;

use crate::domain::accrual_ids::{ContentIds, CorruptCounts, COUNT_ENTRY_BYTES};
use crate::ports::objects::{ObjectError, ObjectRef, ObjectStore};
use crate::services::import::blocking::BlockingReads;
use crate::services::import::report;

/// Entries read at a time.
const PIECE_ENTRIES: usize = 4096;

/// Why the counts of the earlier chunks could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OccurrencesError {
    /// The table is gone (it should not be: it lives as long as the report
    /// parts, longer than a continuation can wait).
    #[error("the occurrence counts of the earlier chunks ({key}) are gone: {detail}")]
    Missing { key: String, detail: String },
    #[error("reading the occurrence counts {key} failed")]
    Object {
        key: String,
        #[source]
        source: ObjectError,
    },
    #[error("reading the occurrence counts {key} failed")]
    Read {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the occurrence counts {key} are corrupt")]
    Corrupt {
        key: String,
        #[source]
        source: CorruptCounts,
    },
    #[error("the thread reading the occurrence counts stopped: {0}")]
    Thread(String),
}

/// Where the table chunk `chunk` of job `job` starts from is kept.
fn table(bucket: &str, prefix: &str, job: impl std::fmt::Display, chunk: u32) -> ObjectRef {
    ObjectRef {
        bucket: bucket.to_owned(),
        key: report::occurrences_key(prefix, job, chunk),
        size: 0,
        etag: None,
        version_id: None,
    }
}

/// The ids of `campaign` with the counts of every row before chunk
/// `chunk`: none for the first chunk, else the table the chunk before it
/// wrote. A missing table is an error, never an empty one: counting from
/// zero again would give rows other ids than a single pass.
#[allow(clippy::too_many_arguments)]
pub async fn load(
    objects: &dyn ObjectStore,
    reads: BlockingReads,
    bucket: &str,
    prefix: &str,
    job: impl std::fmt::Display,
    chunk: u32,
    campaign: &str,
) -> Result<ContentIds, OccurrencesError> {
    let mut ids = ContentIds::new(campaign);
    if chunk == 0 {
        return Ok(ids);
    }
    let table = table(bucket, prefix, job, chunk);
    let key = table.key.clone();
    let mut reader = match objects.open(&table, 0).await {
        Ok(reader) => reader,
        Err(ObjectError::Changed { detail, .. }) => return Err(OccurrencesError::Missing { key, detail }),
        Err(source) => return Err(OccurrencesError::Object { key, source }),
    };
    let read = reads
        .run(move || {
            let mut piece = vec![0u8; COUNT_ENTRY_BYTES * PIECE_ENTRIES];
            loop {
                let mut filled = 0;
                while filled < piece.len() {
                    match reader.read(&mut piece[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => return Err(OccurrencesError::Read { key, source }),
                    }
                }
                if filled == 0 {
                    return Ok(ids);
                }
                if let Err(source) = ids.add_counts(&piece[..filled]) {
                    return Err(OccurrencesError::Corrupt { key, source });
                }
            }
        })
        .await;
    read.unwrap_or_else(|e| Err(OccurrencesError::Thread(e)))
}

/// Writes the counts chunk `chunk` starts from.
pub async fn save(
    objects: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    job: impl std::fmt::Display,
    chunk: u32,
    ids: &ContentIds,
) -> Result<(), ObjectError> {
    objects
        .put(
            bucket,
            &report::occurrences_key(prefix, job, chunk),
            ids.encode_counts(),
        )
        .await
}

/// Deletes the table chunk `chunk` started from, once it is recorded.
pub async fn remove(
    objects: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    job: impl std::fmt::Display,
    chunk: u32,
) -> Result<(), ObjectError> {
    objects
        .delete(bucket, &report::occurrences_key(prefix, job, chunk))
        .await
}
