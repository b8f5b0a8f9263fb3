//! Reversals: cancelling one credited accrual or one applied use, exactly
//! once. Reversing an accrual takes its points back out of the lot they went
//! to, and is refused when they were already spent (the balance never goes
//! below zero); reversing a use gives back what it took, to the lots it took
//! it from.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::uses::check_use_id;
use crate::domain::validation::{check_accrual_id, check_reason, FieldError};
use crate::domain::MessageRef;

/// What to reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversalTarget {
    Accrual(String),
    Use(String),
    /// An accrual, only if message `by` credited it: a job cancel must not
    /// take back another job's credit of the same id (to that job, it was a
    /// duplicate). Otherwise [`ReversalOutcome::NotFound`].
    CreditBy {
        accrual_id: String,
        by: MessageRef,
    },
    /// A use, only if message `by` (of a bulk-use job) applied it: a job
    /// cancel must not give back a deduction made on its own or by another
    /// job under the same `use_id`. Otherwise [`ReversalOutcome::NotFound`].
    UseBy {
        use_id: String,
        by: MessageRef,
    },
}

impl ReversalTarget {
    pub fn kind(&self) -> ReversalKind {
        match self {
            ReversalTarget::Accrual(_) | ReversalTarget::CreditBy { .. } => ReversalKind::Accrual,
            ReversalTarget::Use(_) | ReversalTarget::UseBy { .. } => ReversalKind::Use,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ReversalTarget::Accrual(id) | ReversalTarget::Use(id) => id,
            ReversalTarget::CreditBy { accrual_id, .. } => accrual_id,
            ReversalTarget::UseBy { use_id, .. } => use_id,
        }
    }

    /// The message the target must have been applied by, if any.
    pub fn by(&self) -> Option<MessageRef> {
        match self {
            ReversalTarget::Accrual(_) | ReversalTarget::Use(_) => None,
            ReversalTarget::CreditBy { by, .. } | ReversalTarget::UseBy { by, .. } => Some(*by),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReversalKind {
    Accrual,
    Use,
}

/// A reversal as recorded on the entry it reversed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReversalRecord {
    pub kind: ReversalKind,
    pub id: String,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub reversed_at: OffsetDateTime,
    /// Who asked for the reversal, from which request, and why; `None` for
    /// a job cancel's reversals (the job's cancel records its caller) and
    /// reversals made before the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// What reversing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Reversed now.
    Reversed(ReversalRecord),
    /// Reversed before: nothing changed.
    Replayed(ReversalRecord),
    /// No accrual (or use) with this id was ever applied.
    NotFound,
    /// The accrual's points were spent (or partly): its lot holds only
    /// `remaining` of them. Nothing changed.
    AlreadySpent { remaining: u64 },
}

/// Reads `POST /v1/reversals`: `{"accrual_id": …}` or `{"use_id": …}`, and
/// an optional `reason` (kept in the reversal's audit record, never logged).
pub fn reversal_from_json(body: &Value) -> Result<(ReversalTarget, Option<String>), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, reason: String| {
        errors.push(FieldError {
            index: 0,
            field: field.to_owned(),
            reason,
        })
    };
    let Some(object) = body.as_object() else {
        fail("body", "must be a JSON object".into());
        return Err(errors);
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "accrual_id" | "use_id" | "reason") {
            fail(
                key,
                "is not a field of a reversal (accrual_id or use_id, reason)".into(),
            );
        }
    }
    let mut given_reason = None;
    if let Some(reason) = object.get("reason") {
        match reason.as_str() {
            Some(text) => match check_reason(text) {
                Ok(()) => given_reason = Some(text.to_owned()),
                Err(e) => fail("reason", e),
            },
            None if reason.is_null() => {}
            None => fail("reason", "must be a string".into()),
        }
    }
    let text = |field: &str| object.get(field).filter(|v| !v.is_null());
    let target = match (text("accrual_id"), text("use_id")) {
        (Some(_), Some(_)) => {
            fail("use_id", "give either accrual_id or use_id, not both".into());
            None
        }
        (None, None) => {
            fail("accrual_id", "is required (or use_id, to reverse a use)".into());
            None
        }
        (Some(id), None) => match id.as_str() {
            Some(id) => match check_accrual_id(id) {
                Ok(()) => Some(ReversalTarget::Accrual(id.to_owned())),
                Err(e) => {
                    fail("accrual_id", e);
                    None
                }
            },
            None => {
                fail("accrual_id", "must be a string".into());
                None
            }
        },
        (None, Some(id)) => match id.as_str() {
            Some(id) => match check_use_id(id) {
                Ok(()) => Some(ReversalTarget::Use(id.to_owned())),
                Err(e) => {
                    fail("use_id", e);
                    None
                }
            },
            None => {
                fail("use_id", "must be a string".into());
                None
            }
        },
    };
    match target {
        Some(target) if errors.is_empty() => Ok((target, given_reason)),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_target() {
        assert_eq!(
            reversal_from_json(&json!({"accrual_id": "a-1", "reason": "fraud"})).unwrap(),
            (ReversalTarget::Accrual("a-1".into()), Some("fraud".to_owned()))
        );
        assert_eq!(
            reversal_from_json(&json!({"use_id": "order-1"})).unwrap(),
            (ReversalTarget::Use("order-1".into()), None)
        );
    }

    #[test]
    fn refuses_none_both_and_bad_fields() {
        let fields = |body: Value| {
            reversal_from_json(&body)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(json!({})), ["accrual_id"]);
        assert_eq!(fields(json!({"accrual_id": "a", "use_id": "u"})), ["use_id"]);
        assert_eq!(fields(json!({"accrual_id": "a b", "x": 1})), ["x", "accrual_id"]);
        assert_eq!(fields(json!({"use_id": 5})), ["use_id"]);
        assert_eq!(fields(json!("a")), ["body"]);
    }
}
