//! The queue message: a batch of accruals (or, for a bulk-use job, of uses)
//! of one job, as JSON.

use serde::{Deserialize, Serialize};

use crate::domain::uses::{check_use_id, Use};
use crate::domain::validation;
use crate::domain::{Accrual, JobId};

/// One queue message: up to a configured number of accruals of one job.
///
/// `(job_id, seq)` identifies the message across redeliveries and resends;
/// the worker folds each message's counts into its job exactly once by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMessage {
    pub job_id: JobId,
    pub seq: u32,
    pub accruals: Vec<Accrual>,
    /// A bulk-use job's message carries uses instead (and no accruals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uses: Vec<Use>,
    /// A cancel message carries no items: it asks the worker to reverse
    /// what message `seq` of the job credited ([`crate::services::cancel`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
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
    /// Parses a message body.
    pub fn decode(body: &str) -> Result<Self, DecodeError> {
        let message: QueueMessage = serde_json::from_str(body)?;
        match (message.accruals.is_empty(), message.uses.is_empty(), message.cancel) {
            (true, true, true) => return Ok(message),
            (true, true, false) => return Err(DecodeError::Empty),
            (false, false, _) | (_, _, true) => return Err(DecodeError::Mixed),
            _ => {}
        }
        for (index, u) in message.uses.iter().enumerate() {
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
        for (index, a) in message.accruals.iter().enumerate() {
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

    /// The ids of its items: `accrual_id`s, or `use_id`s.
    pub fn item_ids(&self) -> Vec<String> {
        let accruals = self.accruals.iter().map(|a| a.accrual_id.clone());
        accruals.chain(self.uses.iter().map(|u| u.use_id.clone())).collect()
    }

    /// The message asking the worker to cancel message `seq` of `job_id`.
    pub fn cancel_of(job_id: JobId, seq: u32) -> Self {
        QueueMessage {
            job_id,
            seq,
            accruals: Vec::new(),
            uses: Vec::new(),
            cancel: true,
        }
    }

    /// Items it carries: accruals or uses.
    pub fn items(&self) -> usize {
        self.accruals.len() + self.uses.len()
    }

    /// The message body.
    pub fn encode(&self) -> String {
        // A struct of strings, integers and a UUID always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_invalid_content() {
        let m = QueueMessage {
            job_id: JobId::random(),
            seq: 3,
            accruals: vec![Accrual {
                accrual_id: "a".into(),
                member_id: "m".into(),
                point_type: "P".into(),
                amount: 5,
                reason: None,
                apply_at: None,
                expires_at: None,
            }],
            uses: Vec::new(),
            cancel: false,
        };
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
        let mixed = QueueMessage {
            uses: vec![u.clone()],
            ..m.clone()
        };
        assert!(matches!(QueueMessage::decode(&mixed.encode()), Err(DecodeError::Mixed)));
        let empty = QueueMessage { accruals: vec![], ..m };
        assert!(matches!(QueueMessage::decode(&empty.encode()), Err(DecodeError::Empty)));
        let uses = QueueMessage { uses: vec![u], ..empty };
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
}
