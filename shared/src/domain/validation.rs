//! Validation of accruals as clients send them.
//!
//! Each rule is a small function over one field so that every entry point
//! (JSON API today, CSV files later) applies exactly the same rules and words
//! its errors the same way.

use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::lots::lot_times;
use crate::domain::{
    is_id_char, is_point_type_char, Accrual, MAX_ACCRUAL_ID_LEN, MAX_AMOUNT, MAX_MEMBER_ID_LEN, MAX_POINT_TYPE_LEN,
    MAX_REASON_LEN,
};

/// Longest `Idempotency-Key` header value accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// One thing wrong with one submitted item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the item in the submitted list (0-based).
    pub index: usize,
    /// The offending field, as the client named it.
    pub field: String,
    /// What is wrong and, where it helps, how to fix it.
    pub reason: String,
}

fn check_id(value: &str, max_len: usize, allowed: fn(char) -> bool, charset: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    let len = value.chars().count();
    if len > max_len {
        return Err(format!("is {len} characters long; at most {max_len} allowed"));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!("contains {bad:?}; only {charset} are allowed"));
    }
    Ok(())
}

const ID_CHARSET: &str = "ASCII letters, digits and - _ . : @";

/// Rules for `accrual_id`: 1–128 characters from [`ID_CHARSET`].
pub fn check_accrual_id(value: &str) -> Result<(), String> {
    check_id(value, MAX_ACCRUAL_ID_LEN, is_id_char, ID_CHARSET)
}

/// Rules for `member_id`: 1–64 characters from [`ID_CHARSET`].
pub fn check_member_id(value: &str) -> Result<(), String> {
    check_id(value, MAX_MEMBER_ID_LEN, is_id_char, ID_CHARSET)
}

/// Rules for `point_type`: 1–32 ASCII letters, digits, `-` or `_`.
pub fn check_point_type(value: &str) -> Result<(), String> {
    check_id(
        value,
        MAX_POINT_TYPE_LEN,
        is_point_type_char,
        "ASCII letters, digits, - and _",
    )
}

/// Rules for `amount`: an integer from 1 to [`MAX_AMOUNT`].
pub fn check_amount(value: u64) -> Result<(), String> {
    if value == 0 {
        return Err("must be at least 1".into());
    }
    if value > MAX_AMOUNT {
        return Err(format!("must be at most {MAX_AMOUNT}"));
    }
    Ok(())
}

/// Rules for `reason`: at most 256 characters, no control characters.
pub fn check_reason(value: &str) -> Result<(), String> {
    let len = value.chars().count();
    if len > MAX_REASON_LEN {
        return Err(format!("is {len} characters long; at most {MAX_REASON_LEN} allowed"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Rules for the `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn check_idempotency_key(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!("is longer than {MAX_IDEMPOTENCY_KEY_LEN} characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must contain only visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

/// The fields of an accrual, in the API and as CSV columns.
pub const ACCRUAL_FIELDS: [&str; 7] = [
    "accrual_id",
    "member_id",
    "point_type",
    "amount",
    "reason",
    "apply_at",
    "expires_at",
];

/// Turns one submitted JSON item into an [`Accrual`], or says everything that
/// is wrong with it.
///
/// `derived_id` supplies the id of an item that has none (only possible when
/// the request carries an `Idempotency-Key`); `None` makes a missing id an error.
pub fn accrual_from_json(index: usize, item: &Value, derived_id: Option<String>) -> Result<Accrual, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, reason: String| {
        errors.push(FieldError {
            index,
            field: field.to_owned(),
            reason,
        })
    };
    let Some(object) = item.as_object() else {
        fail("(item)", format!("must be a JSON object, found {}", json_kind(item)));
        return Err(errors);
    };
    for key in object.keys() {
        if !ACCRUAL_FIELDS.contains(&key.as_str()) {
            fail(key, format!("unknown field; expected {}", ACCRUAL_FIELDS.join(", ")));
        }
    }

    let accrual_id = match object.get("accrual_id") {
        None | Some(Value::Null) => match derived_id {
            Some(id) => Some(id),
            None => {
                fail(
                    "accrual_id",
                    "is missing; give every accrual an accrual_id, or send an Idempotency-Key \
                     header so ids are derived from it"
                        .into(),
                );
                None
            }
        },
        Some(v) => string_field(v, "accrual_id", check_accrual_id, &mut fail),
    };
    let member_id = required_string(object, "member_id", check_member_id, &mut fail);
    let point_type = required_string(object, "point_type", check_point_type, &mut fail);
    let amount = match object.get("amount") {
        None | Some(Value::Null) => {
            fail("amount", "is missing".into());
            None
        }
        Some(v) => match v.as_u64() {
            Some(n) => match check_amount(n) {
                Ok(()) => Some(n),
                Err(e) => {
                    fail("amount", e);
                    None
                }
            },
            None => {
                let reason = match v {
                    Value::Number(n) if n.is_f64() || n.is_i64() => {
                        format!("must be a positive whole number from 1 to {MAX_AMOUNT}, found {n}")
                    }
                    other => format!("must be a number, found {}", json_kind(other)),
                };
                fail("amount", reason);
                None
            }
        },
    };
    let reason = match object.get("reason") {
        None | Some(Value::Null) => None,
        Some(v) => string_field(v, "reason", check_reason, &mut fail),
    };
    let mut time = |field: &str| match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match parse_time(text) {
            Ok(t) => Some(t),
            Err(e) => {
                fail(field, e);
                None
            }
        },
        Some(other) => {
            fail(
                field,
                format!("must be an RFC 3339 time string, found {}", json_kind(other)),
            );
            None
        }
    };
    let apply_at = time("apply_at");
    let expires_at = time("expires_at");
    if let Err(e) = check_lot_times(apply_at, expires_at) {
        fail("expires_at", e);
    }
    let (apply_at, expires_at) = lot_times(apply_at, expires_at);

    match (accrual_id, member_id, point_type, amount) {
        (Some(accrual_id), Some(member_id), Some(point_type), Some(amount)) if errors.is_empty() => Ok(Accrual {
            accrual_id,
            member_id,
            point_type,
            amount,
            reason,
            apply_at,
            expires_at,
        }),
        _ => Err(errors),
    }
}

/// Parses `apply_at` / `expires_at`: an RFC 3339 time, in the offset it was
/// written with (which [`crate::domain::lots::lot_times`] rounds in, then
/// turns to UTC).
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("must be an RFC 3339 time such as 2026-12-01T00:00:00Z, found {text:?}"))?;
    if t.year() < 2000 || t.year() > 9999 {
        return Err(format!(
            "must be a time between the years 2000 and 9999, found {text:?}"
        ));
    }
    Ok(t)
}

/// Rules between `apply_at` and `expires_at`: points must be available for at
/// least a second before they expire.
pub fn check_lot_times(apply_at: Option<OffsetDateTime>, expires_at: Option<OffsetDateTime>) -> Result<(), String> {
    match (apply_at, expires_at) {
        (Some(from), Some(until)) if until.unix_timestamp() <= from.unix_timestamp() => {
            Err("must be later than apply_at (the points would expire before they are available)".into())
        }
        _ => Ok(()),
    }
}

fn required_string(
    object: &Map<String, Value>,
    field: &str,
    check: fn(&str) -> Result<(), String>,
    fail: &mut impl FnMut(&str, String),
) -> Option<String> {
    match object.get(field) {
        None | Some(Value::Null) => {
            fail(field, "is missing".into());
            None
        }
        Some(v) => string_field(v, field, check, fail),
    }
}

fn string_field(
    value: &Value,
    field: &str,
    check: fn(&str) -> Result<(), String>,
    fail: &mut impl FnMut(&str, String),
) -> Option<String> {
    match value.as_str() {
        Some(s) => match check(s) {
            Ok(()) => Some(s.to_owned()),
            Err(e) => {
                fail(field, e);
                None
            }
        },
        None => {
            fail(field, format!("must be a string, found {}", json_kind(value)));
            None
        }
    }
}

/// What kind of JSON value `value` is, as an error message names it
/// ("a string", "null", …); shared with the NDJSON reader's messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(item: Value) -> Vec<(String, String)> {
        accrual_from_json(7, &item, None)
            .unwrap_err()
            .into_iter()
            .map(|e| {
                assert_eq!(e.index, 7);
                (e.field, e.reason)
            })
            .collect()
    }

    #[test]
    fn valid_item_becomes_accrual() {
        let a = accrual_from_json(
            0,
            &json!({"accrual_id":"a-1","member_id":"m-1","point_type":"WELCOME","amount":2000,"reason":"hi"}),
            None,
        )
        .unwrap();
        assert_eq!(a.accrual_id, "a-1");
        assert_eq!(a.amount, 2000);
        assert_eq!(a.reason.as_deref(), Some("hi"));
    }

    #[test]
    fn scheduled_and_expiring_accruals_carry_their_times() {
        let a = accrual_from_json(
            0,
            &json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":1,
                    "apply_at":"2026-12-01T00:00:00+09:00","expires_at":"2027-12-01T00:00:00Z"}),
            None,
        )
        .unwrap();
        assert_eq!(a.apply_at.unwrap().unix_timestamp(), 1_796_083_200 - 9 * 3_600);
        assert_eq!(a.apply_at.unwrap().offset(), time::UtcOffset::UTC);
        assert_eq!(a.expires_at.unwrap().unix_timestamp(), 1_827_619_200);
        // Times are rounded up to the next midnight of their own offset
        // (domain::lots::lot_times): 09:00 in Tokyo is 00:00 the next day there.
        let b = accrual_from_json(
            0,
            &json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":1,
                    "apply_at":"2026-12-01T09:00:00+09:00","expires_at":"2027-11-30T23:59:59Z"}),
            None,
        )
        .unwrap();
        assert_eq!(b.apply_at.unwrap().unix_timestamp(), 1_796_083_200 + 15 * 3_600);
        assert_eq!(b.expires_at.unwrap().unix_timestamp(), 1_827_619_200);
        let errs = errors_of(json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":1,
                                    "apply_at":"tomorrow","expires_at":5}));
        assert_eq!(errs[0].0, "apply_at");
        assert!(errs[0].1.contains("RFC 3339"), "{}", errs[0].1);
        assert_eq!(
            errs[1],
            (
                "expires_at".to_owned(),
                "must be an RFC 3339 time string, found a number".to_owned()
            )
        );
        let errs = errors_of(json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":1,
                                    "apply_at":"2027-01-01T00:00:00Z","expires_at":"2026-01-01T00:00:00Z"}));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "expires_at");
        assert!(errs[0].1.contains("later than apply_at"));
        let errs = errors_of(json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":1,
                                    "expires_at":"1970-01-01T00:00:00Z"}));
        assert!(errs[0].1.contains("between the years"));
    }

    #[test]
    fn missing_id_uses_derived_id_or_explains_the_fix() {
        let item = json!({"member_id":"m-1","point_type":"P","amount":1});
        let a = accrual_from_json(0, &item, Some("derived".into())).unwrap();
        assert_eq!(a.accrual_id, "derived");
        let errs = errors_of(item);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "accrual_id");
        assert!(errs[0].1.contains("Idempotency-Key"), "{}", errs[0].1);
    }

    #[test]
    fn explicit_id_wins_over_derived_id() {
        let item = json!({"accrual_id":"mine","member_id":"m-1","point_type":"P","amount":1});
        assert_eq!(
            accrual_from_json(0, &item, Some("derived".into())).unwrap().accrual_id,
            "mine"
        );
    }

    #[test]
    fn every_bad_field_is_reported() {
        let errs = errors_of(json!({"accrual_id":"","member_id":"bad id","point_type":"P.x","amount":0,"extra":1}));
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["extra", "accrual_id", "member_id", "point_type", "amount"]);
    }

    #[test]
    fn amount_rules() {
        assert!(check_amount(1).is_ok());
        assert!(check_amount(MAX_AMOUNT).is_ok());
        assert!(check_amount(0).is_err());
        assert!(check_amount(MAX_AMOUNT + 1).is_err());
        for bad in [json!(-5), json!(1.5), json!("10"), json!(true)] {
            let errs = errors_of(json!({"accrual_id":"a","member_id":"m","point_type":"P","amount":bad}));
            assert_eq!(errs[0].0, "amount");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        assert!(check_accrual_id(&"a".repeat(MAX_ACCRUAL_ID_LEN)).is_ok());
        assert!(check_accrual_id(&"a".repeat(MAX_ACCRUAL_ID_LEN + 1)).is_err());
        assert!(check_member_id(&"m".repeat(MAX_MEMBER_ID_LEN + 1)).is_err());
        assert!(check_point_type(&"P".repeat(MAX_POINT_TYPE_LEN + 1)).is_err());
        assert!(check_reason(&"r".repeat(MAX_REASON_LEN)).is_ok());
        assert!(check_reason(&"r".repeat(MAX_REASON_LEN + 1)).is_err());
        assert!(check_reason("line\nbreak").is_err());
    }

    #[test]
    fn non_object_item_is_named() {
        let errs = errors_of(json!([1, 2]));
        assert_eq!(
            errs,
            [(
                "(item)".to_string(),
                "must be a JSON object, found an array".to_string()
            )]
        );
    }

    #[test]
    fn idempotency_key_rules() {
        assert!(check_idempotency_key("campaign-2026-11:batch/1").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }
}
