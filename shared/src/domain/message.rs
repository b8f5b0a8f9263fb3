//! The work queue's message: a batch of one job's accruals or uses, or a
//! cancel, as JSON.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::uses::{check_use_id, Use};
use crate::domain::validation;
use crate::domain::{Accrual, JobId};

/// One queue message: a batch of one job's items, or a cancel.
///
/// `(job_id, seq)` identifies the message across redeliveries and resends;
/// the worker folds each message's counts into its job exactly once by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub job_id: JobId,
    pub seq: u32,
    pub payload: Payload,
    /// The ledger time of what the message writes: its job's creation
    /// time (whole milliseconds), the same on every message of the job and
    /// every resend, so that a redelivery sends the very requests an
    /// earlier delivery sent. `None` on a message queued by a release
    /// before this field: the worker then uses its own clock
    /// ([`crate::services::worker`]).
    pub queued_at: Option<OffsetDateTime>,
}

/// What a message asks the worker to do: exactly one kind of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Credit these accruals (up to a configured number).
    Accruals(Vec<Accrual>),
    /// Deduct these uses, in order (a bulk-use job).
    Uses(Vec<Use>),
    /// Reverse what message `seq` of the job credited ([`crate::services::cancel`]).
    Cancel,
}

/// The message as JSON. The wire format predates [`Payload`] and stays as
/// it was, so that messages already queued (or in a DLQ) by an earlier
/// release still decode: `accruals` always present, `uses` and `cancel`
/// only when set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    job_id: JobId,
    seq: u32,
    accruals: Vec<Accrual>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uses: Vec<Use>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancel: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    queued_at: Option<OffsetDateTime>,
}

/// [`Wire`] by reference, for encoding without copying the items.
#[derive(Serialize)]
struct WireRef<'a> {
    job_id: JobId,
    seq: u32,
    accruals: &'a [Accrual],
    #[serde(skip_serializing_if = "<[Use]>::is_empty")]
    uses: &'a [Use],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cancel: bool,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    queued_at: Option<OffsetDateTime>,
}

/// A message body that is not a valid [`QueueMessage`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable accrual message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("accrual {index} of the message has an invalid {field}: {reason}")]
    InvalidAccrual {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("use {index} of the message has an invalid {field}: {reason}")]
    InvalidUse {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("the message holds no accruals and no uses")]
    Empty,
    #[error("the message holds more than one of accruals, uses and a cancel")]
    Mixed,
}

impl QueueMessage {
    /// A message of `payload` as message `seq` of `job_id`, without a
    /// [`QueueMessage::queued_at`] until [`QueueMessage::queued`] sets it.
    pub fn new(job_id: JobId, seq: u32, payload: Payload) -> Self {
        QueueMessage {
            job_id,
            seq,
            payload,
            queued_at: None,
        }
    }

    /// The message with `at` as its [`QueueMessage::queued_at`], cut to
    /// whole milliseconds (what the ledger's sort keys hold, and what every
    /// store keeps of a job's creation time), so that the same job time
    /// gives the same message however it was read back.
    pub fn queued(mut self, at: OffsetDateTime) -> Self {
        self.stamp(at);
        self
    }

    /// Sets [`QueueMessage::queued_at`] in place, as [`QueueMessage::queued`].
    pub fn stamp(&mut self, at: OffsetDateTime) {
        // Replacing the millisecond drops the nanoseconds below it; it
        // cannot fail for a millisecond read from a valid time.
        self.queued_at = Some(at.replace_millisecond(at.millisecond()).unwrap_or(at));
    }

    /// Parses a message body.
    pub fn decode(body: &str) -> Result<Self, DecodeError> {
        let wire: Wire = serde_json::from_str(body)?;
        let payload = match (wire.accruals.is_empty(), wire.uses.is_empty(), wire.cancel) {
            (true, true, true) => Payload::Cancel,
            (true, true, false) => return Err(DecodeError::Empty),
            (false, false, _) | (_, _, true) => return Err(DecodeError::Mixed),
            (false, true, false) => Payload::Accruals(wire.accruals),
            (true, false, false) => Payload::Uses(wire.uses),
        };
        let mut message = QueueMessage::new(wire.job_id, wire.seq, payload);
        message.queued_at = wire.queued_at;
        for (index, u) in message.uses().iter().enumerate() {
            let checks: [(&'static str, Result<(), String>); 5] = [
                ("use_id", check_use_id(&u.use_id)),
                ("member_id", validation::check_member_id(&u.member_id)),
                ("point_type", validation::check_point_type(&u.point_type)),
                ("amount", validation::check_amount(u.amount)),
                ("reason", u.reason.as_deref().map_or(Ok(()), validation::check_reason)),
            ];
            for (field, result) in checks {
                if let Err(reason) = result {
                    return Err(DecodeError::InvalidUse { index, field, reason });
                }
            }
        }
        // The queue is ours, but a message may have been written by hand or by
        // an older release: apply only what the API would have accepted.
        for (index, a) in message.accruals().iter().enumerate() {
            let checks: [(&'static str, Result<(), String>); 6] = [
                ("accrual_id", validation::check_accrual_id(&a.accrual_id)),
                ("member_id", validation::check_member_id(&a.member_id)),
                ("point_type", validation::check_point_type(&a.point_type)),
                ("amount", validation::check_amount(a.amount)),
                ("reason", a.reason.as_deref().map_or(Ok(()), validation::check_reason)),
                ("expires_at", validation::check_lot_times(a.apply_at, a.expires_at)),
            ];
            for (field, result) in checks {
                if let Err(reason) = result {
                    return Err(DecodeError::InvalidAccrual { index, field, reason });
                }
            }
        }
        Ok(message)
    }

    /// The accruals it carries (none unless [`Payload::Accruals`]).
    pub fn accruals(&self) -> &[Accrual] {
        match &self.payload {
            Payload::Accruals(accruals) => accruals,
            _ => &[],
        }
    }

    /// The uses it carries (none unless [`Payload::Uses`]).
    pub fn uses(&self) -> &[Use] {
        match &self.payload {
            Payload::Uses(uses) => uses,
            _ => &[],
        }
    }

    /// Whether it asks for a cancel.
    pub fn is_cancel(&self) -> bool {
        matches!(self.payload, Payload::Cancel)
    }

    /// The ids of its items: `accrual_id`s, or `use_id`s.
    pub fn item_ids(&self) -> Vec<String> {
        let accruals = self.accruals().iter().map(|a| a.accrual_id.clone());
        accruals.chain(self.uses().iter().map(|u| u.use_id.clone())).collect()
    }

    /// The message asking the worker to cancel message `seq` of `job_id`.
    pub fn cancel_of(job_id: JobId, seq: u32) -> Self {
        QueueMessage::new(job_id, seq, Payload::Cancel)
    }

    /// Items it carries: accruals or uses.
    pub fn items(&self) -> usize {
        self.accruals().len() + self.uses().len()
    }

    /// The message body.
    pub fn encode(&self) -> String {
        let wire = WireRef {
            job_id: self.job_id,
            seq: self.seq,
            accruals: self.accruals(),
            uses: self.uses(),
            cancel: self.is_cancel(),
            queued_at: self.queued_at,
        };
        // A struct of strings, integers and a UUID always serialises.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_invalid_content() {
        let m = QueueMessage::new(
            JobId::random(),
            3,
            Payload::Accruals(vec![Accrual {
                accrual_id: "a".into(),
                member_id: "m".into(),
                point_type: "P".into(),
                amount: 5,
                reason: None,
                apply_at: None,
                expires_at: None,
            }]),
        );
        assert_eq!(QueueMessage::decode(&m.encode()).unwrap(), m);
        assert!(matches!(QueueMessage::decode("not json"), Err(DecodeError::Json(_))));
        let bad = m.encode().replace("\"amount\":5", "\"amount\":0");
        assert!(matches!(
            QueueMessage::decode(&bad),
            Err(DecodeError::InvalidAccrual {
                index: 0,
                field: "amount",
                ..
            })
        ));
        let u = Use {
            use_id: "order-1".into(),
            member_id: "m".into(),
            point_type: "P".into(),
            amount: 5,
            reason: None,
        };
        // The wire format can still say more than one kind, or none: both refused.
        let mixed = m.encode().replacen(
            "\"accruals\":",
            "\"uses\":[{\"use_id\":\"order-1\",\"member_id\":\"m\",\"point_type\":\"P\",\"amount\":5}],\"accruals\":",
            1,
        );
        assert!(matches!(QueueMessage::decode(&mixed), Err(DecodeError::Mixed)));
        let empty = format!("{{\"job_id\":\"{}\",\"seq\":3,\"accruals\":[]}}", m.job_id);
        assert!(matches!(QueueMessage::decode(&empty), Err(DecodeError::Empty)));
        let uses = QueueMessage::new(m.job_id, 3, Payload::Uses(vec![u]));
        assert_eq!(QueueMessage::decode(&uses.encode()).unwrap(), uses);
        assert_eq!(uses.items(), 1);
        let bad = uses.encode().replace("\"amount\":5", "\"amount\":0");
        assert!(matches!(
            QueueMessage::decode(&bad),
            Err(DecodeError::InvalidUse {
                index: 0,
                field: "amount",
                ..
            })
        ));
    }

    #[test]
    fn the_wire_format_is_the_one_earlier_releases_queued() {
        let job_id: JobId = "7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10".parse().unwrap();
        assert_eq!(
            QueueMessage::cancel_of(job_id, 2).encode(),
            r#"{"job_id":"7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10","seq":2,"accruals":[],"cancel":true}"#
        );
        let u = Use {
            use_id: "u".into(),
            member_id: "m".into(),
            point_type: "P".into(),
            amount: 1,
            reason: None,
        };
        let uses = QueueMessage::new(job_id, 0, Payload::Uses(vec![u]));
        assert!(uses
            .encode()
            .starts_with(r#"{"job_id":"7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10","seq":0,"accruals":[],"uses":[{"#));
        assert!(!uses.encode().contains("cancel"));
        let cancel = QueueMessage::decode(
            r#"{"job_id":"7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10","seq":2,"accruals":[],"cancel":true}"#,
        );
        assert_eq!(cancel.unwrap(), QueueMessage::cancel_of(job_id, 2));
    }

    /// `queued_at` is added at the end and only when set: a message queued
    /// by an earlier release (in a queue or a DLQ) still decodes, without it.
    #[test]
    fn queued_at_extends_the_wire_format_and_old_messages_still_decode() {
        let job_id: JobId = "7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10".parse().unwrap();
        let at = time::macros::datetime!(2026-11-29 17:45:12.345678 UTC);
        let stamped = QueueMessage::cancel_of(job_id, 2).queued(at);
        assert_eq!(
            stamped.encode(),
            r#"{"job_id":"7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10","seq":2,"accruals":[],"cancel":true,"queued_at":"2026-11-29T17:45:12.345Z"}"#
        );
        assert_eq!(QueueMessage::decode(&stamped.encode()).unwrap(), stamped);
        let old = r#"{"job_id":"7f0c8a8e-5d8e-4f47-9a55-3f1f0b5c2a10","seq":0,"accruals":[{"accrual_id":"a","member_id":"m","point_type":"P","amount":5}]}"#;
        let decoded = QueueMessage::decode(old).unwrap();
        assert_eq!(decoded.queued_at, None);
        assert_eq!(decoded.accruals().len(), 1);
        assert_eq!(decoded.encode(), old, "an old message re-encodes byte for byte");
    }
}
