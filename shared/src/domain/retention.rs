//! How long the records that make a message's redelivery harmless live, and
//! so how old a message may be when it is redriven.
//!
//! A message's marker (`MSG#<job>#<seq>`: its fold happened) and its cancel
//! item (`CANCEL#<job>#<seq>`: its job's cancel began) expire
//! [`MARKER_TTL_DAYS`] after they are written, which is never before the
//! message's `queued_at`. A delivery after that could fold the message's
//! counts into its job a second time, or credit a cancelled campaign. So
//! every delivery must come within [`MARKER_TTL_DAYS`] of `queued_at`. SQS
//! keeps a message at most [`SQS_MAX_RETENTION_DAYS`] after it is sent, and
//! a message moved to a dead-letter queue keeps its first enqueue time, so a
//! message sent (redriven) at age `a` is delivered before `a` + 14 days.
//! Hence the rule: **a message is redriven only while younger than
//! [`REDRIVE_MAX_AGE_DAYS`]** = TTL − 14 days − 1 day of margin; the
//! `pointflow dlq redrive` commands refuse older ones (their accruals can be
//! submitted again as a new job instead).
//!
//! Sources: the SQS retention maximum (14 days) and the DLQ enqueue
//! timestamp, <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/setting-up-dead-letter-queue-retention.html>;
//! TTL deletes items only after their expiry time,
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/TTL.html>.

use time::{Duration, OffsetDateTime};

/// Days a message marker, cancel item and chunk marker live after being written.
pub const MARKER_TTL_DAYS: i64 = 90;
/// SQS's longest message retention, which the template's queues use.
pub const SQS_MAX_RETENTION_DAYS: i64 = 14;
/// The oldest a message may be (since its `queued_at`) when it is redriven.
pub const REDRIVE_MAX_AGE_DAYS: i64 = MARKER_TTL_DAYS - SQS_MAX_RETENTION_DAYS - 1;
/// The longest a message without `queued_at` (queued by a release before it
/// existed) can have lived before it was archived: its retention in the
/// queue and then in the dead-letter queue.
const UNSTAMPED_LIFETIME_DAYS: i64 = 2 * SQS_MAX_RETENTION_DAYS;

// Checked when compiling: a message redriven at the last moment, then kept
// the longest SQS keeps it, is delivered before its records expire; and an
// unstamped message fresh from the DLQ is young enough to be redriven.
const _: () = assert!(REDRIVE_MAX_AGE_DAYS + SQS_MAX_RETENTION_DAYS < MARKER_TTL_DAYS);
const _: () = assert!(UNSTAMPED_LIFETIME_DAYS < REDRIVE_MAX_AGE_DAYS);

/// Days a file's report parts and occurrence tables (`reports/.parts/`) live
/// after being written: the import bucket's lifecycle rule.
pub const IMPORT_PARTS_TTL_DAYS: i64 = 30;
/// The oldest a file's import may be (since its job was created) when one
/// of its import tasks is redriven: a redriven task may wait
/// [`SQS_MAX_RETENTION_DAYS`] in the import queue, and its last chunk reads
/// every part written since the job began.
pub const IMPORT_REDRIVE_MAX_AGE_DAYS: i64 = IMPORT_PARTS_TTL_DAYS - SQS_MAX_RETENTION_DAYS - 1;

// Checked when compiling: a task redriven at the last moment, then kept the
// longest SQS keeps it, still finds its file's first part.
const _: () = assert!(IMPORT_REDRIVE_MAX_AGE_DAYS + SQS_MAX_RETENTION_DAYS < IMPORT_PARTS_TTL_DAYS);
const _: () = assert!(IMPORT_REDRIVE_MAX_AGE_DAYS > 0);

/// Seconds a marker lives: what the DynamoDB adapter adds to `expires_at`.
pub const MARKER_TTL_SECONDS: i64 = MARKER_TTL_DAYS * 86_400;

/// A message too old to be redriven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "queued {age_days} days ago, more than the {REDRIVE_MAX_AGE_DAYS} days a message may be redriven \
     (its job's records expire after {MARKER_TTL_DAYS} days): submit its accruals again as a new job"
)]
pub struct TooOld {
    pub age_days: i64,
}

/// Whether a message may be redriven at `now`. `queued_at` is the message's
/// own stamp; without one (an older release's message), its age is counted
/// from `archived_at` plus the longest it can have lived before, or, fresh
/// from the dead-letter queue, allowed (it is at most 28 days old unless it
/// was redriven before, which an older release did not check).
pub fn check_redrive(
    queued_at: Option<OffsetDateTime>,
    archived_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), TooOld> {
    let age = match (queued_at, archived_at) {
        (Some(queued_at), _) => now - queued_at,
        (None, Some(archived_at)) => now - archived_at + Duration::days(UNSTAMPED_LIFETIME_DAYS),
        (None, None) => return Ok(()),
    };
    if age >= Duration::days(REDRIVE_MAX_AGE_DAYS) {
        return Err(TooOld {
            age_days: age.whole_days(),
        });
    }
    Ok(())
}

/// An import task too old to be redriven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its file's import started {age_days} days ago, more than the {IMPORT_REDRIVE_MAX_AGE_DAYS} days an import task \
     may be redriven (the file's report parts expire after {IMPORT_PARTS_TTL_DAYS} days): copy the file to a new key \
     with the `campaign` metadata its reports/<key>.job.json names; rows already credited are not credited again"
)]
pub struct ImportTooOld {
    pub age_days: i64,
}

/// Whether an import task may be redriven at `now`. `started_at` is when
/// its file's job was created (a continuation carries it; a notification's
/// `eventTime` stands for it). Without one (a continuation queued by a
/// release before the stamp), its age is counted from `archived_at` plus
/// the [`SQS_MAX_RETENTION_DAYS`] it can have waited before (a task chains
/// from chunk to chunk within seconds, so its job began about when it was
/// first sent), or, fresh from the dead-letter queue, allowed: at most 14
/// days there and 14 after the redrive stay within the parts' 30 days.
pub fn check_import_redrive(
    started_at: Option<OffsetDateTime>,
    archived_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), ImportTooOld> {
    let age = match (started_at, archived_at) {
        (Some(started_at), _) => now - started_at,
        (None, Some(archived_at)) => now - archived_at + Duration::days(SQS_MAX_RETENTION_DAYS),
        (None, None) => return Ok(()),
    };
    if age >= Duration::days(IMPORT_REDRIVE_MAX_AGE_DAYS) {
        return Err(ImportTooOld {
            age_days: age.whole_days(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn redrive_is_refused_from_the_age_on_where_records_could_expire() {
        let queued = datetime!(2026-01-01 00:00 UTC);
        let young = queued + Duration::days(REDRIVE_MAX_AGE_DAYS) - Duration::seconds(1);
        assert_eq!(check_redrive(Some(queued), None, young), Ok(()));
        let old = queued + Duration::days(REDRIVE_MAX_AGE_DAYS);
        assert_eq!(
            check_redrive(Some(queued), Some(queued), old),
            Err(TooOld {
                age_days: REDRIVE_MAX_AGE_DAYS
            })
        );
        // No stamp: an archive's time plus the 28 days before it count.
        let archived = queued;
        let limit = archived + Duration::days(REDRIVE_MAX_AGE_DAYS - UNSTAMPED_LIFETIME_DAYS);
        assert_eq!(
            check_redrive(None, Some(archived), limit - Duration::seconds(1)),
            Ok(())
        );
        assert!(check_redrive(None, Some(archived), limit).is_err());
        assert_eq!(check_redrive(None, None, old), Ok(()));
    }

    #[test]
    fn import_redrive_is_refused_from_the_age_on_where_report_parts_could_expire() {
        let started = datetime!(2026-01-01 00:00 UTC);
        let limit = started + Duration::days(IMPORT_REDRIVE_MAX_AGE_DAYS);
        assert_eq!(IMPORT_REDRIVE_MAX_AGE_DAYS, 15);
        assert_eq!(
            check_import_redrive(Some(started), None, limit - Duration::seconds(1)),
            Ok(())
        );
        assert_eq!(
            check_import_redrive(Some(started), Some(started), limit),
            Err(ImportTooOld { age_days: 15 })
        );
        // Far younger than the accrual side's bound, yet refused.
        assert!(check_redrive(Some(started), None, limit).is_ok());
        // No stamp: the archive's time plus the 14 days before it count.
        let archived = started;
        let unstamped_limit = archived + Duration::days(IMPORT_REDRIVE_MAX_AGE_DAYS - SQS_MAX_RETENTION_DAYS);
        assert_eq!(
            check_import_redrive(None, Some(archived), unstamped_limit - Duration::seconds(1)),
            Ok(())
        );
        assert!(check_import_redrive(None, Some(archived), unstamped_limit).is_err());
        assert_eq!(check_import_redrive(None, None, limit), Ok(()));
    }
}
