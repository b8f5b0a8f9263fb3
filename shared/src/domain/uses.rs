//! Uses: points deducted from one balance, exactly once per `use_id`, and
//! never below zero — the store checks the balance in the same atomic write
//! that records the use, so concurrent uses can never overdraw it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::audit::Audit;
use crate::domain::lots::UseShortfall;
use crate::domain::validation::{
    check_accrual_id, check_amount, check_member_id, check_point_type, check_reason, FieldError,
};

/// A deduction a client asks for (also as a bulk-use job's queue message
/// carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Use {
    /// Idempotency key of this deduction: applied at most once, whatever happens.
    pub use_id: String,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A use as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UseRecord {
    pub use_id: String,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Who asked for the use, from which request; `None` for a bulk use
    /// (its job records who asked) and uses made before the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

impl UseRecord {
    /// The record of `u` applied at `at`.
    pub fn of(u: &Use, at: OffsetDateTime) -> Self {
        UseRecord {
            use_id: u.use_id.clone(),
            member_id: u.member_id.clone(),
            point_type: u.point_type.clone(),
            amount: u.amount,
            reason: u.reason.clone(),
            applied_at: at,
            audit: None,
        }
    }

    /// The same record, asked for as `audit` says.
    pub fn with_audit(mut self, audit: Option<&Audit>) -> Self {
        self.audit = audit.cloned();
        self
    }

    /// Whether `u` asks for what this record did (a retry), as opposed to a
    /// different deduction reusing its id. The reason is a note, not part of
    /// the deduction.
    pub fn matches(&self, u: &Use) -> bool {
        self.member_id == u.member_id && self.point_type == u.point_type && self.amount == u.amount
    }
}

/// What applying a use did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseOutcome {
    /// Deducted now.
    Applied(UseRecord),
    /// Deducted before by the same request (a retry): nothing changed.
    Replayed(UseRecord),
    /// The balance holds less than the amount: nothing changed.
    Insufficient { available: u64 },
    /// The id was used for a different deduction (returned): nothing changed.
    IdReused(UseRecord),
    /// Enough points, but spread over more lots than one use may take
    /// ([`crate::domain::lots::MAX_USE_LOTS`]): nothing changed; a use of at
    /// most `at_most` points would apply now (the rest in another use).
    TooManyLots { at_most: u64 },
    /// Refused before: an earlier delivery of the same bulk-use message
    /// found too few points or too many lots for it, and the store recorded
    /// the refusal, so it stands whatever the balance holds now (the job
    /// counted it `refused` once). Nothing changed.
    RefusedBefore,
    /// Not deducted: the use came in a message of a bulk-use job whose
    /// cancel has begun on that message
    /// ([`crate::ports::Debits::apply_message_use`]). Nothing changed.
    Cancelled,
}

impl From<UseShortfall> for UseOutcome {
    fn from(shortfall: UseShortfall) -> Self {
        match shortfall {
            UseShortfall::Insufficient { available } => UseOutcome::Insufficient { available },
            UseShortfall::TooManyLots { at_most } => UseOutcome::TooManyLots { at_most },
        }
    }
}

/// The id of a use shares the accrual id rules.
pub fn check_use_id(value: &str) -> Result<(), String> {
    check_accrual_id(value)
}

/// Reads a use for `member_id` from the body of `POST
/// /v1/members/{member_id}/uses`: `{"use_id", "point_type", "amount",
/// "reason"?}`. Every problem is reported, each naming its field.
pub fn use_from_json(member_id: &str, body: &Value) -> Result<Use, Vec<FieldError>> {
    read_use(0, body, Some(member_id))
}

/// Reads item `index` of a bulk-use job: a use with its `member_id`
/// (`{"use_id", "member_id", "point_type", "amount", "reason"?}`), by the
/// same rules as a single use.
pub fn use_item_from_json(index: usize, item: &Value) -> Result<Use, Vec<FieldError>> {
    read_use(index, item, None)
}

/// A use from `body`; the member comes from the path if given, else from
/// the body's `member_id`.
fn read_use(index: usize, body: &Value, path_member: Option<&str>) -> Result<Use, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, reason: String| {
        errors.push(FieldError {
            index,
            field: field.to_owned(),
            reason,
        });
    };
    let Some(object) = body.as_object() else {
        fail(
            if path_member.is_some() { "body" } else { "(item)" },
            "must be a JSON object".into(),
        );
        return Err(errors);
    };
    for key in object.keys() {
        let known = matches!(key.as_str(), "use_id" | "point_type" | "amount" | "reason")
            || (path_member.is_none() && key == "member_id");
        if !known {
            let fields = if path_member.is_some() {
                "use_id, point_type, amount, reason"
            } else {
                "use_id, member_id, point_type, amount, reason"
            };
            fail(key, format!("is not a field of a use ({fields})"));
        }
    }
    let member_id = match (path_member, object.get("member_id")) {
        (Some(member), _) => Some(member),
        (None, Some(Value::String(member))) => Some(member.as_str()),
        (None, None | Some(Value::Null)) => {
            fail("member_id", "is required".into());
            None
        }
        (None, Some(_)) => {
            fail("member_id", "must be a string".into());
            None
        }
    };
    if let Some(Err(reason)) = member_id.map(check_member_id) {
        fail("member_id", reason);
    }
    let member_id = member_id.unwrap_or_default();
    let mut text = |field: &str, required: bool, check: fn(&str) -> Result<(), String>| match object.get(field) {
        None | Some(Value::Null) if !required => None,
        None | Some(Value::Null) => {
            fail(field, "is required".into());
            None
        }
        Some(Value::String(s)) => match check(s) {
            Ok(()) => Some(s.clone()),
            Err(reason) => {
                fail(field, reason);
                None
            }
        },
        Some(_) => {
            fail(field, "must be a string".into());
            None
        }
    };
    let use_id = text("use_id", true, check_use_id);
    let point_type = text("point_type", true, check_point_type);
    let reason = text("reason", false, check_reason);
    let amount = match object.get("amount") {
        None | Some(Value::Null) => {
            fail("amount", "is required".into());
            None
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(a) => match check_amount(a) {
                Ok(()) => Some(a),
                Err(reason) => {
                    fail("amount", reason);
                    None
                }
            },
            None => {
                fail("amount", "must be a whole number of points, at least 1".into());
                None
            }
        },
        Some(_) => {
            fail("amount", "must be a number".into());
            None
        }
    };
    match (use_id, point_type, amount) {
        (Some(use_id), Some(point_type), Some(amount)) if errors.is_empty() => Ok(Use {
            use_id,
            member_id: member_id.to_owned(),
            point_type,
            amount,
            reason,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_valid_use() {
        let u = use_from_json(
            "m-1",
            &json!({"use_id": "order-7", "point_type": "PT", "amount": 300, "reason": "checkout"}),
        )
        .unwrap();
        assert_eq!(
            u,
            Use {
                use_id: "order-7".into(),
                member_id: "m-1".into(),
                point_type: "PT".into(),
                amount: 300,
                reason: Some("checkout".into()),
            }
        );
    }

    #[test]
    fn names_every_bad_field() {
        let errors = use_from_json("m 1", &json!({"point_type": 5, "amount": -3, "extra": true})).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["extra", "member_id", "use_id", "point_type", "amount"]);
        let errors = use_from_json("m", &json!({"use_id": "u", "point_type": "PT", "amount": 1.5})).unwrap_err();
        assert_eq!(errors[0].field, "amount");
        assert!(errors[0].reason.contains("whole number"));
        let errors = use_from_json("m", &json!([1])).unwrap_err();
        assert_eq!(errors[0].field, "body");
        let errors = use_from_json("m", &json!({"use_id": "u", "point_type": "PT", "amount": 0})).unwrap_err();
        assert_eq!(
            (errors[0].field.as_str(), errors[0].reason.as_str()),
            ("amount", "must be at least 1")
        );
    }

    #[test]
    fn a_retry_matches_whatever_its_reason() {
        let u = use_from_json("m", &json!({"use_id": "u", "point_type": "PT", "amount": 5})).unwrap();
        let mut record = UseRecord::of(&u, OffsetDateTime::UNIX_EPOCH);
        record.reason = Some("note".into());
        assert!(record.matches(&u));
        record.amount = 6;
        assert!(!record.matches(&u));
    }
}
