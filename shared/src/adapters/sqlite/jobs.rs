//! The job store port on SQLite: jobs, their counts, and the markers of
//! folded messages, recorded chunks and cancelled messages.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{rfc3339, to_i64, to_u64, Failure, SqliteStore};
use crate::domain::audit::Audit;
use crate::domain::{CancelCounts, CancelProgress, ChunkReport, FoldedItems, Job, JobId, MessageCounts, NewJob};
use crate::ports::{CreateJob, JobStore, StoreError};

fn job_exists(conn: &Connection, job_id: &str) -> Result<bool, Failure> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn read_job(conn: &Connection, job_id: &str) -> Result<Option<Job>, Failure> {
    let mut statement = conn.prepare_cached(
        "SELECT request_hash, total, deduplicated, messages, created_at, enqueued, applied, duplicate, failed,
                completed_at, source, reading, rejected, error, refused,
                cancel_requested_at, cancel_reversed, cancel_spent, cancel_skipped, cancel_messages, cancel_completed_at,
                audit, cancel_audit
         FROM jobs WHERE job_id = ?1",
    )?;
    let mut rows = statement.query([job_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let key = || format!("job {job_id}");
    let corrupt = |detail: String| Failure::Corrupt { key: key(), detail };
    let time = |text: &str, what: &str| {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|_| corrupt(format!("{what} is not an RFC 3339 time: {text}")))
    };
    let audit = |text: Option<String>| text.map(|t| Audit::from_json(&t).map_err(&corrupt)).transpose();
    let created_at: String = row.get(4)?;
    let completed_at: Option<String> = row.get(9)?;
    Ok(Some(Job {
        job_id: job_id.parse().map_err(|_| corrupt("job_id is not a UUID".to_owned()))?,
        request_hash: row.get(0)?,
        total: to_u64(row.get(1)?, key, "total")?,
        deduplicated: to_u64(row.get(2)?, key, "deduplicated")?,
        messages: to_u64(row.get(3)?, key, "messages")?,
        source: row.get(10)?,
        created_at: time(&created_at, "created_at")?,
        enqueued: row.get::<_, i64>(5)? != 0,
        reading: row.get::<_, i64>(11)? != 0,
        rejected: to_u64(row.get(12)?, key, "rejected")?,
        error: row.get(13)?,
        applied: to_u64(row.get(6)?, key, "applied")?,
        duplicate: to_u64(row.get(7)?, key, "duplicate")?,
        failed: to_u64(row.get(8)?, key, "failed")?,
        refused: to_u64(row.get(14)?, key, "refused")?,
        completed_at: completed_at.map(|t| time(&t, "completed_at")).transpose()?,
        cancel: match row.get::<_, Option<String>>(15)? {
            None => None,
            Some(requested_at) => Some(CancelProgress {
                requested_at: time(&requested_at, "cancel_requested_at")?,
                counts: CancelCounts {
                    reversed: to_u64(row.get(16)?, key, "cancel_reversed")?,
                    spent: to_u64(row.get(17)?, key, "cancel_spent")?,
                    skipped: to_u64(row.get(18)?, key, "cancel_skipped")?,
                },
                messages: to_u64(row.get(19)?, key, "cancel_messages")?,
                completed_at: row
                    .get::<_, Option<String>>(20)?
                    .map(|t| time(&t, "cancel_completed_at"))
                    .transpose()?,
                audit: audit(row.get(22)?)?,
            }),
        },
        audit: audit(row.get(21)?)?,
    }))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: &NewJob) -> Result<CreateJob, StoreError> {
        let job = job.clone();
        self.run("create_job", move |conn| {
            let id = job.job_id.to_string();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO jobs (job_id, request_hash, total, deduplicated, messages, created_at, source, reading,
                                       audit)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (job_id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    job.request_hash,
                    to_i64(job.total, "total")?,
                    to_i64(job.deduplicated, "deduplicated")?,
                    to_i64(job.messages, "messages")?,
                    rfc3339(job.created_at)?,
                    job.source,
                    job.reading,
                    job.audit.as_ref().map(Audit::to_json),
                ])?;
            let result = if inserted == 1 {
                CreateJob::Created(Job::from_new(&job))
            } else {
                let existing = read_job(&tx, &id)?.ok_or_else(|| Failure::Corrupt {
                    key: format!("job {id}"),
                    detail: "insert conflicted but the job cannot be read".to_owned(),
                })?;
                CreateJob::Existing(existing)
            };
            tx.commit()?;
            Ok(result)
        })
        .await
    }

    async fn mark_enqueued(&self, job_id: JobId) -> Result<(), StoreError> {
        self.run("mark_enqueued", move |conn| {
            // Like the in-memory store, an unknown job is left alone.
            conn.prepare_cached("UPDATE jobs SET enqueued = 1 WHERE job_id = ?1")?
                .execute([job_id.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn get_job(&self, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.run("get_job", move |conn| read_job(conn, &job_id.to_string()))
            .await
    }

    async fn fold_message(
        &self,
        job_id: JobId,
        seq: u32,
        counts: MessageCounts,
        items: &[String],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let items = items.join("\n");
        self.run("fold_message", move |conn| {
            let id = job_id.to_string();
            let (applied, duplicate, failed, refused) = (
                to_i64(counts.applied, "applied")?,
                to_i64(counts.duplicate, "duplicate")?,
                to_i64(counts.failed, "failed")?,
                to_i64(counts.refused, "refused")?,
            );
            let now = rfc3339(now)?;
            // One transaction: marker, counts and completion land together,
            // so unlike DynamoDB a redelivery never has to finish the stamp.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !job_exists(&tx, &id)? {
                tracing::warn!(%job_id, seq, "message of an unknown job: counts not recorded");
                return Ok(false);
            }
            let marked = tx
                .prepare_cached(
                    "INSERT INTO folded (job_id, seq, applied, duplicate, failed, folded_at, refused, items)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (job_id, seq) DO NOTHING",
                )?
                .execute(params![id, seq, applied, duplicate, failed, now, refused, items])?;
            if marked == 0 {
                // Counted failed before (wholly or in part), applied now (a
                // DLQ redrive): its counts replace the earlier ones, once
                // (the marker then says failed = 0).
                let before: Option<(i64, i64, i64, i64)> = tx
                    .prepare_cached(
                        "SELECT applied, duplicate, failed, refused FROM folded WHERE job_id = ?1 AND seq = ?2",
                    )?
                    .query_row(params![id, seq], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .optional()?;
                let resettled = match before {
                    Some((was_applied, was_duplicate, was_failed, was_refused))
                        if failed == 0
                            && was_failed > 0
                            && was_applied + was_duplicate + was_failed + was_refused
                                == applied + duplicate + refused =>
                    {
                        tx.prepare_cached(
                            "UPDATE folded SET applied = ?3, duplicate = ?4, refused = ?6, failed = 0, folded_at = ?5
                             WHERE job_id = ?1 AND seq = ?2",
                        )?
                        .execute(params![id, seq, applied, duplicate, now, refused])?;
                        tx.prepare_cached(
                            "UPDATE jobs SET failed = failed - ?2, applied = applied + ?3,
                                 duplicate = duplicate + ?4, refused = refused + ?5
                             WHERE job_id = ?1",
                        )?
                        .execute(params![
                            id,
                            was_failed,
                            applied - was_applied,
                            duplicate - was_duplicate,
                            refused - was_refused
                        ])?;
                        tx.commit()?;
                        true
                    }
                    _ => false,
                };
                return Ok(resettled);
            }
            // SET expressions see the row as it was before the update.
            tx.prepare_cached(
                "UPDATE jobs SET
                     applied = applied + ?2,
                     duplicate = duplicate + ?3,
                     failed = failed + ?4,
                     refused = refused + ?6,
                     completed_at = CASE
                         WHEN completed_at IS NULL AND reading = 0
                              AND applied + ?2 + duplicate + ?3 + failed + ?4 + refused + ?6 >= total THEN ?5
                         ELSE completed_at
                     END
                 WHERE job_id = ?1",
            )?
            .execute(params![id, applied, duplicate, failed, now, refused])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn record_chunk(&self, job_id: JobId, chunk: &ChunkReport, now: OffsetDateTime) -> Result<bool, StoreError> {
        let chunk = chunk.clone();
        self.run("record_chunk", move |conn| {
            let id = job_id.to_string();
            let now = rfc3339(now)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !job_exists(&tx, &id)? {
                tracing::warn!(%job_id, chunk = chunk.index, "chunk of an unknown job: counts not recorded");
                return Ok(false);
            }
            let marked = tx
                .prepare_cached(
                    "INSERT INTO chunks (job_id, chunk, recorded_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (job_id, chunk) DO NOTHING",
                )?
                .execute(params![id, chunk.index, now])?;
            if marked == 0 {
                return Ok(false);
            }
            let final_chunk = chunk.is_final();
            tx.prepare_cached(
                "UPDATE jobs SET
                     total = total + ?2,
                     deduplicated = deduplicated + ?3,
                     rejected = rejected + ?4,
                     messages = messages + ?5,
                     reading = CASE WHEN ?6 THEN 0 ELSE reading END,
                     enqueued = CASE WHEN ?6 THEN 1 ELSE enqueued END,
                     error = COALESCE(?7, error)
                 WHERE job_id = ?1",
            )?
            .execute(params![
                id,
                to_i64(chunk.accepted, "accepted")?,
                to_i64(chunk.deduplicated, "deduplicated")?,
                to_i64(chunk.rejected, "rejected")?,
                to_i64(chunk.messages, "messages")?,
                final_chunk,
                chunk.failure(),
            ])?;
            tx.prepare_cached(
                "UPDATE jobs SET completed_at = ?2
                 WHERE job_id = ?1 AND completed_at IS NULL AND reading = 0
                       AND applied + duplicate + failed + refused >= total",
            )?
            .execute(params![id, now])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn chunk_recorded(&self, job_id: JobId, index: u32) -> Result<bool, StoreError> {
        self.run("chunk_recorded", move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM chunks WHERE job_id = ?1 AND chunk = ?2")?
                .query_row(params![job_id.to_string(), index], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn begin_cancel(
        &self,
        job_id: JobId,
        audit: Option<&Audit>,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        let audit = audit.map(Audit::to_json);
        self.run("begin_cancel", move |conn| {
            let id = job_id.to_string();
            // The first request's time and caller stay: asking again resumes.
            conn.prepare_cached(
                "UPDATE jobs SET cancel_audit = CASE WHEN cancel_requested_at IS NULL THEN ?3 ELSE cancel_audit END,
                                 cancel_requested_at = COALESCE(cancel_requested_at, ?2)
                 WHERE job_id = ?1",
            )?
            .execute(params![id, rfc3339(now)?, audit])?;
            read_job(conn, &id)
        })
        .await
    }

    async fn begin_message_cancel(
        &self,
        job_id: JobId,
        seq: u32,
        now: OffsetDateTime,
    ) -> Result<Option<FoldedItems>, StoreError> {
        self.run("begin_message_cancel", move |conn| {
            conn.prepare_cached("INSERT OR IGNORE INTO cancel_begun (job_id, seq, begun_at) VALUES (?1, ?2, ?3)")?
                .execute(params![job_id.to_string(), seq, rfc3339(now)?])?;
            Ok(conn
                .prepare_cached("SELECT items, cancelled_at IS NOT NULL FROM folded WHERE job_id = ?1 AND seq = ?2")?
                .query_row(params![job_id.to_string(), seq], |row| {
                    let items: String = row.get(0)?;
                    Ok(FoldedItems {
                        items: items
                            .split('\n')
                            .filter(|id| !id.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        cancelled: row.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn record_cancelled(
        &self,
        job_id: JobId,
        seq: u32,
        counts: CancelCounts,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run("record_cancelled", move |conn| {
            let id = job_id.to_string();
            let now = rfc3339(now)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cancelling = tx
                .prepare_cached("SELECT 1 FROM jobs WHERE job_id = ?1 AND cancel_requested_at IS NOT NULL")?
                .query_row([&id], |_| Ok(()))
                .optional()?
                .is_some();
            let marked = cancelling
                && tx
                    .prepare_cached(
                        "UPDATE folded SET cancelled_at = ?3 WHERE job_id = ?1 AND seq = ?2 AND cancelled_at IS NULL",
                    )?
                    .execute(params![id, seq, now])?
                    == 1;
            if !marked {
                return Ok(false);
            }
            tx.prepare_cached(
                "UPDATE jobs SET
                     cancel_reversed = cancel_reversed + ?2,
                     cancel_spent = cancel_spent + ?3,
                     cancel_skipped = cancel_skipped + ?4,
                     cancel_messages = cancel_messages + 1,
                     cancel_completed_at = CASE
                         WHEN cancel_completed_at IS NULL AND cancel_messages + 1 >= messages THEN ?5
                         ELSE cancel_completed_at
                     END
                 WHERE job_id = ?1",
            )?
            .execute(params![
                id,
                to_i64(counts.reversed, "reversed")?,
                to_i64(counts.spent, "spent")?,
                to_i64(counts.skipped, "skipped")?,
                now
            ])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
    async fn folded_counts(&self, job_id: JobId) -> Result<Vec<(u32, MessageCounts)>, StoreError> {
        self.run("folded_counts", move |conn| {
            let id = job_id.to_string();
            let mut statement = conn.prepare_cached(
                "SELECT seq, applied, duplicate, failed, refused FROM folded WHERE job_id = ?1 ORDER BY seq",
            )?;
            let mut rows = statement.query([&id])?;
            let mut counts = Vec::new();
            while let Some(row) = rows.next()? {
                let seq: u32 = row.get(0)?;
                let key = || format!("folded {id}#{seq}");
                counts.push((
                    seq,
                    MessageCounts {
                        applied: to_u64(row.get(1)?, key, "applied")?,
                        duplicate: to_u64(row.get(2)?, key, "duplicate")?,
                        failed: to_u64(row.get(3)?, key, "failed")?,
                        refused: to_u64(row.get(4)?, key, "refused")?,
                    },
                ));
            }
            Ok(counts)
        })
        .await
    }

    async fn replace_job_counts(
        &self,
        job_id: JobId,
        read: MessageCounts,
        counts: MessageCounts,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run("replace_job_counts", move |conn| {
            let id = job_id.to_string();
            let changed = conn
                .prepare_cached(
                    "UPDATE jobs SET applied = ?6, duplicate = ?7, failed = ?8, refused = ?9
                     WHERE job_id = ?1 AND applied = ?2 AND duplicate = ?3 AND failed = ?4 AND refused = ?5",
                )?
                .execute(params![
                    id,
                    to_i64(read.applied, "applied")?,
                    to_i64(read.duplicate, "duplicate")?,
                    to_i64(read.failed, "failed")?,
                    to_i64(read.refused, "refused")?,
                    to_i64(counts.applied, "applied")?,
                    to_i64(counts.duplicate, "duplicate")?,
                    to_i64(counts.failed, "failed")?,
                    to_i64(counts.refused, "refused")?
                ])?;
            Ok(changed == 1)
        })
        .await
    }
}
