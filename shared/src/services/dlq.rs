//! Looking into a dead-letter queue, archiving its messages, and moving
//! them back.
//!
//! Messages land in the DLQ after `maxReceiveCount` failed deliveries; their
//! accruals are then counted `failed` on their job. Moving them back is safe
//! whenever the cause is fixed: the ledger credits each accrual once, however
//! often its message is delivered, as long as the message is younger than
//! the redrive bound of [`crate::domain::retention`] (older ones are refused
//! and stay where they are). SQS drops a message 14 days after it was first
//! sent; [`archive`] moves messages to files (or S3 objects) that keep them,
//! and [`redrive_archived`] sends them back from there.
//!
//! Both dead-letter queues are served: the accrual queue's and the import
//! queue's ([`QueueKind`]). An archive line records its queue, so a redrive
//! from an archive sends each message back where it came from. Import tasks
//! follow the import side's age rule
//! ([`crate::domain::retention::check_import_redrive`]): a continuation whose
//! file's report parts may have expired is refused, never half-imported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::message::QueueMessage;
use crate::domain::retention::{check_import_redrive, check_redrive};
use crate::domain::JobId;
use crate::ports::objects::{ObjectError, ObjectStore};
use crate::ports::{QueueError, ReceivedMessage, WorkQueue};
use crate::services::import::task::{parse_tasks, ImportTask};

/// Which dead-letter queue a message came from: where a redrive sends it,
/// and which age rule it follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// The accrual queue's DLQ: messages of accruals, uses and cancels.
    /// Archives written before the field existed hold only these.
    #[default]
    Accruals,
    /// The import queue's DLQ: S3 notifications and chunk continuations.
    Imports,
}

impl std::fmt::Display for QueueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueKind::Accruals => "accruals",
            QueueKind::Imports => "imports",
        })
    }
}

/// The job an import task belongs to: its continuation's, or the one its
/// object names.
fn import_job(task: &ImportTask) -> JobId {
    task.resume.as_ref().map_or_else(|| task.object.job_id(), |r| r.job_id)
}

/// An S3 notification's `eventTime`, if it has a full RFC 3339 one
/// (emulators send it without a zone; such a notification counts as
/// unstamped).
fn event_time(body: &str) -> Option<OffsetDateTime> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = value.pointer("/Records/0/eventTime")?.as_str()?;
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// How long a receive waits for the first message before the queue counts
/// as empty.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// One dead-lettered message, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub receive_count: u32,
    pub job_id: Option<JobId>,
    /// The message's sequence number; for an import task, its chunk
    /// (`None` for a notification, which starts the file).
    pub seq: Option<u32>,
    pub accruals: usize,
    /// Why the body is not a message its queue's function can use, if it is not.
    pub problem: Option<String>,
}

impl DeadLetter {
    fn from_received(kind: QueueKind, m: &ReceivedMessage) -> Self {
        Self::from_body(kind, &m.message_id, m.receive_count, &m.body)
    }

    fn from_body(kind: QueueKind, message_id: &str, receive_count: u32, body: &str) -> Self {
        let mut letter = DeadLetter {
            message_id: message_id.to_owned(),
            receive_count,
            job_id: None,
            seq: None,
            accruals: 0,
            problem: None,
        };
        match kind {
            QueueKind::Accruals => match QueueMessage::decode(body) {
                Ok(d) => {
                    letter.job_id = Some(d.job_id);
                    letter.seq = Some(d.seq);
                    letter.accruals = d.accruals().len();
                }
                Err(e) => letter.problem = Some(e.to_string()),
            },
            QueueKind::Imports => match parse_tasks(body) {
                Ok(tasks) => {
                    letter.job_id = tasks.first().map(import_job);
                    letter.seq = tasks.first().and_then(|t| t.resume.as_ref()).map(|r| r.chunk);
                }
                Err(e) => letter.problem = Some(e.to_string()),
            },
        }
        letter
    }
}

/// Receives up to `max` messages from `dlq`, then makes them visible again:
/// a look that leaves the queue as it was (except receive counts).
pub async fn list(dlq: &dyn WorkQueue, kind: QueueKind, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let mut seen: Vec<ReceivedMessage> = Vec::new();
    while seen.len() < max {
        let batch = dlq.receive_messages((max - seen.len()).min(10), RECEIVE_WAIT).await?;
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    let handles: Vec<String> = seen.iter().map(|m| m.receipt_handle.clone()).collect();
    dlq.release_messages(&handles).await?;
    // A message whose visibility timeout ran out during the look came
    // back: shown once.
    let mut ids = std::collections::HashSet::new();
    seen.retain(|m| ids.insert(m.message_id.clone()));
    Ok(seen.iter().map(|m| DeadLetter::from_received(kind, m)).collect())
}

/// What a redrive moved, per job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Redriven {
    pub messages: usize,
    pub accruals: u64,
    /// Import tasks among the messages (notifications and continuations).
    pub import_tasks: usize,
    /// Messages that are not messages of their queue (moved too; they will fail again).
    pub undecodable: usize,
    /// job → (messages, accruals)
    pub by_job: BTreeMap<String, (usize, u64)>,
    /// Messages too old to be redriven, left where they were, with why.
    pub refused: Vec<RefusedLetter>,
}

/// A message a redrive did not move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedLetter {
    pub message_id: String,
    pub job_id: Option<JobId>,
    pub reason: String,
}

impl Redriven {
    fn count(&mut self, kind: QueueKind, body: &str) {
        let letter = DeadLetter::from_body(kind, "", 0, body);
        self.messages += 1;
        self.accruals += letter.accruals as u64;
        if kind == QueueKind::Imports && letter.problem.is_none() {
            self.import_tasks += 1;
        }
        match letter.job_id {
            Some(job) => {
                let entry = self.by_job.entry(job.to_string()).or_default();
                entry.0 += 1;
                entry.1 += letter.accruals as u64;
            }
            None => self.undecodable += 1,
        }
    }
}

/// Why a message may not be redriven at `now` (too old), if it may not.
fn refusal(
    kind: QueueKind,
    message_id: &str,
    body: &str,
    archived_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<RefusedLetter> {
    if kind == QueueKind::Imports {
        return import_refusal(message_id, body, archived_at, now);
    }
    // An undecodable body has no stamp: it is moved, and fails again.
    let decoded = QueueMessage::decode(body).ok();
    let queued_at = decoded.as_ref().and_then(|m| m.queued_at);
    check_redrive(queued_at, archived_at, now)
        .err()
        .map(|too_old| RefusedLetter {
            message_id: message_id.to_owned(),
            job_id: decoded.map(|m| m.job_id),
            reason: too_old.to_string(),
        })
}

/// Why an import task may not be redriven at `now`, if it may not. A
/// continuation follows the import side's rule: its last chunk reads every
/// report part since the job began, which expire. A notification starts
/// (or re-reads) the first chunk, which writes its parts afresh; what it
/// risks is the markers of messages an earlier attempt queued, so it follows
/// the accrual side's rule, counted from its `eventTime`.
fn import_refusal(
    message_id: &str,
    body: &str,
    archived_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<RefusedLetter> {
    // An unreadable body is moved, and fails again.
    let tasks = parse_tasks(body).ok()?;
    let refuse = |job: JobId, reason: String| RefusedLetter {
        message_id: message_id.to_owned(),
        job_id: Some(job),
        reason,
    };
    for task in &tasks {
        let job = import_job(task);
        let verdict = match &task.resume {
            Some(resume) => check_import_redrive(resume.started_at, archived_at, now).map_err(|e| e.to_string()),
            None => check_redrive(event_time(body), archived_at, now).map_err(|e| e.to_string()),
        };
        if let Err(reason) = verdict {
            return Some(refuse(job, reason));
        }
    }
    None
}

/// Moves up to `max` messages from `dlq` back to `target`: each batch is
/// sent first and deleted from the DLQ after, so a crash in between leaves a
/// message in both (applied once) and never in neither. Messages too old to
/// be redriven at `now` stay in the DLQ and are listed in `refused`.
pub async fn redrive(
    dlq: &dyn WorkQueue,
    target: &dyn WorkQueue,
    kind: QueueKind,
    max: usize,
    now: OffsetDateTime,
) -> Result<Redriven, QueueError> {
    let mut moved = Redriven::default();
    let mut kept: Vec<String> = Vec::new();
    while moved.messages < max {
        let batch = dlq
            .receive_messages((max - moved.messages).min(10), RECEIVE_WAIT)
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut send = Vec::with_capacity(batch.len());
        for m in batch {
            match refusal(kind, &m.message_id, &m.body, None, now) {
                // Held invisible until the end, so this run does not meet it again.
                Some(refused) => {
                    moved.refused.push(refused);
                    kept.push(m.receipt_handle);
                }
                None => send.push(m),
            }
        }
        if send.is_empty() {
            continue;
        }
        let bodies: Vec<String> = send.iter().map(|m| m.body.clone()).collect();
        target.send_messages(&bodies).await?;
        let handles: Vec<String> = send.iter().map(|m| m.receipt_handle.clone()).collect();
        dlq.delete_messages(&handles).await?;
        for body in &bodies {
            moved.count(kind, body);
        }
    }
    if !kept.is_empty() {
        dlq.release_messages(&kept).await?;
    }
    Ok(moved)
}

/// One archived message: what `dlq archive` writes, one JSON object a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedLetter {
    pub message_id: String,
    pub receive_count: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub archived_at: OffsetDateTime,
    /// The dead-letter queue it came from (absent in archives written
    /// before the import DLQ was archived: those are accrual messages).
    #[serde(default)]
    pub queue: QueueKind,
    /// The message body, as the worker reads it.
    pub body: String,
}

/// A DLQ operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the queue failed")]
    Queue(#[from] QueueError),
    #[error("writing or reading the archive failed")]
    Object(#[from] ObjectError),
    #[error("line {line} of the archive is not an archived message: {reason}")]
    Corrupt { line: usize, reason: String },
}

/// Messages per archive file: a file is written whole, and a message is at
/// most 1 MiB (the queues' `MaximumMessageSize`), so a file holds at most
/// 100 MiB (a message of 500 accruals is about 60 KiB).
pub const ARCHIVE_FILE_MESSAGES: usize = 100;

/// What an archive run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Archived {
    pub messages: usize,
    /// The keys written, under the archive's prefix.
    pub files: Vec<String>,
}

/// The archive's lines.
pub fn encode_archive(letters: &[ArchivedLetter]) -> Vec<u8> {
    let mut out = Vec::new();
    for letter in letters {
        // Strings, a number and a time always serialise.
        out.extend_from_slice(&serde_json::to_vec(letter).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// Reads an archive written by [`encode_archive`] (blank lines skipped).
pub fn decode_archive(bytes: &[u8]) -> Result<Vec<ArchivedLetter>, ArchiveError> {
    let mut letters = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let letter = serde_json::from_slice(line).map_err(|e| ArchiveError::Corrupt {
            line: i + 1,
            reason: e.to_string(),
        })?;
        letters.push(letter);
    }
    Ok(letters)
}

/// Moves up to `max` messages from `dlq` (the dead-letter queue of `kind`)
/// into files of at most [`ARCHIVE_FILE_MESSAGES`] under `prefix` in
/// `bucket` (`<prefix>dlq-<now>-<n>.jsonl`, `<prefix>import-dlq-<now>-<n>.jsonl`
/// for the import DLQ): each file is written first and its messages deleted
/// from the DLQ after, so a crash in between leaves a message in both
/// (redriving both applies it once), never in neither.
pub async fn archive(
    dlq: &dyn WorkQueue,
    kind: QueueKind,
    objects: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    max: usize,
    now: OffsetDateTime,
) -> Result<Archived, ArchiveError> {
    let mut archived = Archived::default();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    while archived.messages < max {
        let mut file: Vec<ReceivedMessage> = Vec::new();
        let room = (max - archived.messages).min(ARCHIVE_FILE_MESSAGES);
        while file.len() < room {
            let batch = dlq.receive_messages((room - file.len()).min(10), RECEIVE_WAIT).await?;
            if batch.is_empty() {
                break;
            }
            file.extend(batch);
        }
        if file.is_empty() {
            break;
        }
        // A message whose visibility timeout ran out while the file filled
        // came back: archived once (every handle is still deleted).
        let mut ids = std::collections::HashSet::new();
        let letters: Vec<ArchivedLetter> = file
            .iter()
            .filter(|m| ids.insert(m.message_id.clone()))
            .map(|m| ArchivedLetter {
                message_id: m.message_id.clone(),
                receive_count: m.receive_count,
                archived_at: now,
                queue: kind,
                body: m.body.clone(),
            })
            .collect();
        let name = match kind {
            QueueKind::Accruals => "dlq",
            QueueKind::Imports => "import-dlq",
        };
        let key = format!("{prefix}{name}-{stamp}-{:04}.jsonl", archived.files.len());
        objects.put(bucket, &key, encode_archive(&letters)).await?;
        let handles: Vec<String> = file.iter().map(|m| m.receipt_handle.clone()).collect();
        dlq.delete_messages(&handles).await?;
        archived.messages += letters.len();
        archived.files.push(key);
    }
    Ok(archived)
}

/// Where a redrive from an archive sends each message back.
#[derive(Clone, Copy)]
pub struct RedriveTargets<'a> {
    /// The accrual queue.
    pub accruals: &'a dyn WorkQueue,
    /// The import queue, if known: import tasks are refused without it.
    pub imports: Option<&'a dyn WorkQueue>,
}

/// Sends archived messages back to the queue each came from, except those
/// too old at `now` (listed in `refused`, as are import tasks when
/// `targets` has no import queue). Sending the same archive twice is
/// harmless (each message is applied and folded once, each chunk recorded
/// once), so a run that failed half-way is simply run again.
pub async fn redrive_archived(
    letters: &[ArchivedLetter],
    targets: RedriveTargets<'_>,
    now: OffsetDateTime,
) -> Result<Redriven, QueueError> {
    let mut moved = Redriven::default();
    let mut send: BTreeMap<QueueKind, Vec<&ArchivedLetter>> = BTreeMap::new();
    for letter in letters {
        if letter.queue == QueueKind::Imports && targets.imports.is_none() {
            moved.refused.push(RefusedLetter {
                message_id: letter.message_id.clone(),
                job_id: DeadLetter::from_body(letter.queue, "", 0, &letter.body).job_id,
                reason: "an import task, and no import queue was named".into(),
            });
            continue;
        }
        match refusal(
            letter.queue,
            &letter.message_id,
            &letter.body,
            Some(letter.archived_at),
            now,
        ) {
            Some(refused) => moved.refused.push(refused),
            None => send.entry(letter.queue).or_default().push(letter),
        }
    }
    for (kind, letters) in send {
        let target = match (kind, targets.imports) {
            (QueueKind::Imports, Some(imports)) => imports,
            _ => targets.accruals,
        };
        for batch in letters.chunks(10) {
            let bodies: Vec<String> = batch.iter().map(|l| l.body.clone()).collect();
            target.send_messages(&bodies).await?;
            for body in &bodies {
                moved.count(kind, body);
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryQueue;
    use crate::domain::message::Payload;
    use crate::domain::Accrual;

    fn message(job: JobId, seq: u32, n: usize) -> String {
        QueueMessage::new(
            job,
            seq,
            Payload::Accruals(
                (0..n)
                    .map(|i| Accrual {
                        accrual_id: format!("a-{seq}-{i}"),
                        member_id: "m".into(),
                        point_type: "P".into(),
                        amount: 1,
                        reason: None,
                        apply_at: None,
                        expires_at: None,
                    })
                    .collect(),
            ),
        )
        .encode()
    }

    #[tokio::test]
    async fn list_looks_without_taking_and_redrive_moves_everything_once() {
        let dlq = MemoryQueue::new(Duration::from_secs(60));
        let main = MemoryQueue::new(Duration::from_secs(60));
        let job = JobId::random();
        let mut bodies: Vec<String> = (0..12).map(|seq| message(job, seq, 3)).collect();
        bodies.push("not json".into());
        dlq.send_messages(&bodies).await.unwrap();

        let listed = list(&dlq, QueueKind::Accruals, 100).await.unwrap();
        assert_eq!(listed.len(), 13);
        assert_eq!(listed.iter().filter(|l| l.problem.is_some()).count(), 1);
        assert_eq!(
            list(&dlq, QueueKind::Accruals, 100).await.unwrap().len(),
            13,
            "still all there"
        );

        let moved = redrive(&dlq, &main, QueueKind::Accruals, 100, OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!((moved.messages, moved.accruals, moved.undecodable), (13, 36, 1));
        assert_eq!(moved.by_job[&job.to_string()], (12, 36));
        assert_eq!((dlq.len(), main.len()), (0, 13));
    }

    fn stamped(job: JobId, seq: u32, queued_at: OffsetDateTime) -> String {
        let body = message(job, seq, 2);
        QueueMessage::decode(&body).unwrap().queued(queued_at).encode()
    }

    fn accruals_only(queue: &MemoryQueue) -> RedriveTargets<'_> {
        RedriveTargets {
            accruals: queue,
            imports: None,
        }
    }

    /// A temporary folder standing in for the archive bucket.
    struct Folder(std::path::PathBuf);
    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn archive_keeps_every_message_and_redrive_from_it_sends_each_back_once() {
        let dlq = MemoryQueue::new(Duration::from_secs(60));
        let main = MemoryQueue::new(Duration::from_secs(60));
        let folder = Folder(std::env::temp_dir().join(format!("pointflow-archive-{}", uuid::Uuid::new_v4().simple())));
        let objects = crate::adapters::local_dir::DirObjects::new(&folder.0);
        let now = OffsetDateTime::now_utc();
        let job = JobId::random();
        let mut bodies: Vec<String> = (0..130)
            .map(|seq| stamped(job, seq, now - time::Duration::days(3)))
            .collect();
        bodies.push("not json".into());
        dlq.send_messages(&bodies).await.unwrap();

        let archived = archive(&dlq, QueueKind::Accruals, &objects, "", "dlq/", usize::MAX, now)
            .await
            .unwrap();
        assert_eq!(archived.messages, 131);
        assert_eq!(archived.files.len(), 2, "{:?}", archived.files);
        assert_eq!(dlq.len(), 0, "archived messages leave the DLQ");

        let mut letters = Vec::new();
        for file in &archived.files {
            letters.extend(decode_archive(&std::fs::read(folder.0.join(file)).unwrap()).unwrap());
        }
        let mut read: Vec<String> = letters.iter().map(|l| l.body.clone()).collect();
        read.sort();
        bodies.sort();
        assert_eq!(read, bodies, "every message archived once, body intact");

        let moved = redrive_archived(&letters, accruals_only(&main), now).await.unwrap();
        assert_eq!((moved.messages, moved.accruals, moved.undecodable), (131, 260, 1));
        assert!(moved.refused.is_empty());
        assert_eq!(main.len(), 131);
        assert!(matches!(
            decode_archive(b"{\"message_id\":1}\n"),
            Err(ArchiveError::Corrupt { line: 1, .. })
        ));
    }

    /// A message whose job's records may have expired by its last delivery
    /// is not redriven: from the DLQ it stays there, from an archive it is
    /// left out; both are listed with the reason.
    #[tokio::test]
    async fn messages_too_old_for_their_records_are_refused() {
        use crate::domain::retention::REDRIVE_MAX_AGE_DAYS;
        let dlq = MemoryQueue::new(Duration::from_secs(60));
        let main = MemoryQueue::new(Duration::from_secs(60));
        let now = OffsetDateTime::now_utc();
        let (old_job, young_job) = (JobId::random(), JobId::random());
        let old = stamped(old_job, 0, now - time::Duration::days(REDRIVE_MAX_AGE_DAYS));
        let young = stamped(young_job, 0, now - time::Duration::days(REDRIVE_MAX_AGE_DAYS - 1));
        dlq.send_messages(&[old.clone(), young.clone()]).await.unwrap();

        let moved = redrive(&dlq, &main, QueueKind::Accruals, usize::MAX, now)
            .await
            .unwrap();
        assert_eq!(moved.messages, 1);
        assert_eq!(moved.by_job.keys().collect::<Vec<_>>(), [&young_job.to_string()]);
        assert_eq!(moved.refused.len(), 1);
        assert_eq!(moved.refused[0].job_id, Some(old_job));
        assert!(
            moved.refused[0].reason.contains("submit its accruals again"),
            "{:?}",
            moved.refused
        );
        assert_eq!((dlq.len(), main.len()), (1, 1), "the old message stays in the DLQ");

        let letter = |body: &str| ArchivedLetter {
            message_id: "m".into(),
            receive_count: 5,
            archived_at: now,
            queue: QueueKind::Accruals,
            body: body.to_owned(),
        };
        let moved = redrive_archived(&[letter(&old), letter(&young)], accruals_only(&main), now)
            .await
            .unwrap();
        assert_eq!((moved.messages, moved.refused.len()), (1, 1));
    }

    fn continuation(chunk: u32, started_at: Option<OffsetDateTime>) -> (JobId, String) {
        use crate::ports::objects::ObjectRef;
        use crate::services::import::task::Resume;
        let object = ObjectRef {
            bucket: "b".into(),
            key: format!("imports/file-{chunk}.csv"),
            size: 100,
            etag: Some("e".into()),
            version_id: None,
        };
        let job_id = object.job_id();
        let task = ImportTask {
            object,
            audit: None,
            resume: Some(Resume {
                job_id,
                chunk,
                offset: 10,
                line: 2,
                next_seq: 1,
                columns: vec!["member_id".into(), "point_type".into(), "amount".into()],
                report_parts: vec![0],
                campaign: Some("c".into()),
                started_at,
                encoding: None,
            }),
        };
        (job_id, task.encode())
    }

    /// The import DLQ: its tasks are archived with their queue, sent back to
    /// the import queue (never to the accrual queue), and a continuation
    /// whose file's report parts may expire before its last chunk is
    /// refused, from the DLQ and from an archive.
    #[tokio::test]
    async fn import_tasks_are_archived_and_redriven_to_the_import_queue_by_the_parts_age_rule() {
        use crate::domain::retention::IMPORT_REDRIVE_MAX_AGE_DAYS;
        let import_dlq = MemoryQueue::new(Duration::from_secs(60));
        let imports = MemoryQueue::new(Duration::from_secs(60));
        let accruals = MemoryQueue::new(Duration::from_secs(60));
        let now = OffsetDateTime::now_utc();
        let (young_job, young) = continuation(1, Some(now - time::Duration::days(IMPORT_REDRIVE_MAX_AGE_DAYS - 1)));
        // Young for the accrual side's 75 days, too old for the parts' 30.
        let (old_job, old) = continuation(2, Some(now - time::Duration::days(IMPORT_REDRIVE_MAX_AGE_DAYS)));
        let (_, unstamped) = continuation(3, None);
        let notification =
            crate::services::import::task::object_created_notification(&crate::ports::objects::ObjectRef {
                bucket: "b".into(),
                key: "imports/new.csv".into(),
                size: 5,
                etag: Some("n".into()),
                version_id: None,
            });
        let bodies = [young.clone(), old.clone(), unstamped.clone(), notification.clone()];
        import_dlq.send_messages(&bodies).await.unwrap();

        let listed = list(&import_dlq, QueueKind::Imports, 10).await.unwrap();
        assert!(listed.iter().all(|l| l.problem.is_none()), "{listed:?}");
        let old_letter = listed.iter().find(|l| l.job_id == Some(old_job)).unwrap();
        assert_eq!(old_letter.seq, Some(2));

        let moved = redrive(&import_dlq, &imports, QueueKind::Imports, usize::MAX, now)
            .await
            .unwrap();
        assert_eq!((moved.messages, moved.import_tasks, moved.undecodable), (3, 3, 0));
        assert_eq!(moved.refused.len(), 1);
        assert_eq!(moved.refused[0].job_id, Some(old_job));
        assert!(
            moved.refused[0].reason.contains("report parts expire"),
            "{:?}",
            moved.refused
        );
        assert_eq!(
            (import_dlq.len(), imports.len()),
            (1, 3),
            "the old continuation stays in the DLQ"
        );

        // Archived, the same tasks keep their queue; an archive a day old
        // makes an unstamped continuation too old (14 days before it count).
        let folder = Folder(std::env::temp_dir().join(format!("pointflow-archive-{}", uuid::Uuid::new_v4().simple())));
        let objects = crate::adapters::local_dir::DirObjects::new(&folder.0);
        let again = MemoryQueue::new(Duration::from_secs(60));
        again.send_messages(&bodies).await.unwrap();
        let archived = archive(&again, QueueKind::Imports, &objects, "", "a/", usize::MAX, now)
            .await
            .unwrap();
        assert_eq!(archived.files.len(), 1);
        assert!(archived.files[0].starts_with("a/import-dlq-"), "{:?}", archived.files);
        let letters = decode_archive(&std::fs::read(folder.0.join(&archived.files[0])).unwrap()).unwrap();
        assert!(letters.iter().all(|l| l.queue == QueueKind::Imports));

        let fresh = MemoryQueue::new(Duration::from_secs(60));
        let targets = RedriveTargets {
            accruals: &accruals,
            imports: Some(&fresh),
        };
        let moved = redrive_archived(&letters, targets, now).await.unwrap();
        assert_eq!((moved.messages, moved.refused.len()), (3, 1));
        assert_eq!(
            (fresh.len(), accruals.len()),
            (3, 0),
            "import tasks go back to the import queue"
        );
        assert_eq!(moved.by_job[&young_job.to_string()], (1, 0));

        let later = now + time::Duration::days(1);
        let moved = redrive_archived(&letters, targets, later).await.unwrap();
        let refused: Vec<_> = moved.refused.iter().map(|r| r.job_id).collect();
        assert_eq!(moved.messages, 1, "only the notification: {refused:?}");

        // Without an import queue, import tasks are refused, not misrouted.
        let moved = redrive_archived(&letters, accruals_only(&accruals), now).await.unwrap();
        assert_eq!((moved.messages, moved.refused.len(), accruals.len()), (0, 4, 0));
        assert!(moved.refused[0].reason.contains("no import queue"));

        // An archive line without `queue` (an older release's) is an accrual message's.
        let line =
            b"{\"message_id\":\"m\",\"receive_count\":3,\"archived_at\":\"2026-01-01T00:00:00Z\",\"body\":\"x\"}\n";
        assert_eq!(decode_archive(line).unwrap()[0].queue, QueueKind::Accruals);
    }
}
