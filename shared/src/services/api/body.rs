//! Request bodies, read strictly (a repeated key is malformed, not
//! last-wins) and within a memory budget, then validated.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::ApiError;
use crate::domain::audit::reason_from_json;
use crate::domain::reversal::{reversal_from_json, ReversalTarget};
use crate::domain::strict_json::{self, Budget, StrictSeed};
use crate::domain::submission::{AccrualItems, ItemKind, PreparedSubmission, PreparedUses, SubmissionError, UseItems};
use crate::domain::uses::{use_from_json, Use};

/// Estimated memory one submitted item may take once parsed: a valid item
/// (an object of at most 7 scalar fields) takes under 1 KiB, so only items
/// hiding arrays or objects inside reach it.
pub const ITEM_BUDGET_BYTES: usize = 1024;
/// The same for a use or reversal body, a single small object.
const SINGLE_BODY_BUDGET_BYTES: usize = 4 * ITEM_BUDGET_BYTES;

/// The body of `POST /v1/jobs`: `{"accruals": [...]}` or, for a bulk-use
/// job, `{"uses": [...]}`, each item read strictly (a repeated key is
/// malformed, not last-wins) within a budget, and the items beyond
/// `max_items` counted but not kept, so that neither a flood of items nor
/// items full of nested JSON can exhaust the function's memory before the
/// limits are checked.
///
/// Each item is validated as soon as it is read and its JSON value dropped:
/// the list is never held as JSON values, which for a 50,000-item request
/// took several times the memory of the validated items.
struct SubmitBody {
    kind: ItemKind,
    items: Items,
    /// Items in the body, also those not kept.
    count: usize,
}

/// The validated items of a body, of its kind.
enum Items {
    Accruals(AccrualItems),
    Uses(UseItems),
}

impl Items {
    fn push(&mut self, item: &Value) {
        match self {
            Items::Accruals(items) => items.push(item),
            Items::Uses(items) => items.push(item),
        }
    }
}

/// The two lists a submission may hold, one of them.
const SUBMIT_FIELDS: &[&str] = &["accruals", "uses"];

struct SubmitSeed<'b> {
    max_items: usize,
    budget: &'b Budget,
    /// Accrual ids are derived from it when missing.
    idempotency_key: Option<&'b str>,
}

impl<'de> DeserializeSeed<'de> for SubmitSeed<'_> {
    type Value = SubmitBody;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SubmitBody, D::Error> {
        deserializer.deserialize_struct("SubmitBody", SUBMIT_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for SubmitSeed<'_> {
    type Value = SubmitBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"an object {"accruals": [...]} or {"uses": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SubmitBody, A::Error> {
        let mut body: Option<SubmitBody> = None;
        while let Some(key) = map.next_key::<String>()? {
            let kind = match key.as_str() {
                "accruals" => ItemKind::Accruals,
                "uses" => ItemKind::Uses,
                _ => return Err(de::Error::unknown_field(&key, SUBMIT_FIELDS)),
            };
            if body.is_some() {
                return Err(de::Error::custom(
                    r#"the body must hold exactly one of "accruals" and "uses""#,
                ));
            }
            let items = match kind {
                ItemKind::Accruals => Items::Accruals(AccrualItems::new(self.idempotency_key)),
                ItemKind::Uses => Items::Uses(UseItems::default()),
            };
            body = Some(map.next_value_seed(ItemsSeed {
                kind,
                items,
                max_items: self.max_items,
                budget: self.budget,
            })?);
        }
        body.ok_or_else(|| de::Error::custom(r#"the body must hold exactly one of "accruals" and "uses""#))
    }
}

struct ItemsSeed<'b> {
    kind: ItemKind,
    items: Items,
    max_items: usize,
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = SubmitBody;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SubmitBody, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = SubmitBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list of {}", self.kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SubmitBody, A::Error> {
        let ItemsSeed {
            kind,
            mut items,
            max_items,
            budget,
        } = self;
        let mut count = 0usize;
        while count < max_items {
            match seq.next_element_seed(StrictSeed(Some(budget)))? {
                Some(item) => {
                    // Charged as if kept, as when the list was held as
                    // values: the budget bounds what a body may hold.
                    budget.charge(strict_json::VALUE_COST)?;
                    items.push(&item);
                    count += 1;
                }
                None => return Ok(SubmitBody { kind, items, count }),
            }
        }
        // At the limit: any further item makes the answer 413 with the
        // count, so the rest is only counted (still checked to be
        // well-formed JSON) and nothing kept.
        let mut more = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more += 1;
        }
        Ok(SubmitBody {
            kind,
            items,
            count: count + more,
        })
    }
}

/// A use or reversal body, read strictly within a small budget; malformed
/// JSON names its line and column.
fn parse_single(body: &[u8]) -> Result<Value, ApiError> {
    strict_json::from_slice_within(body, SINGLE_BODY_BUDGET_BYTES)
        .map_err(|e| ApiError::MalformedJson { detail: e.to_string() })
}

/// Reads and validates the body of `POST /v1/jobs` (content type, size and
/// `Idempotency-Key` already checked): the accruals to queue, or why the
/// request is refused. Public so the fuzz targets and tests run this very
/// path (see [`crate::testkit::fuzzing`]).
pub fn parse_submission(body: &[u8], idempotency_key: Option<&str>, max_items: usize) -> Result<Prepared, ApiError> {
    let budget = Budget::new(
        max_items
            .saturating_mul(ITEM_BUDGET_BYTES)
            .saturating_add(ITEM_BUDGET_BYTES),
    );
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let malformed = |e: serde_json::Error| ApiError::MalformedJson { detail: e.to_string() };
    let body = SubmitSeed {
        max_items,
        budget: &budget,
        idempotency_key,
    }
    .deserialize(&mut deserializer)
    .map_err(malformed)?;
    deserializer.end().map_err(malformed)?;
    if body.count > max_items {
        return Err(ApiError::Submission(SubmissionError::TooMany {
            kind: body.kind,
            count: body.count,
            max: max_items,
        }));
    }
    match body.items {
        Items::Accruals(items) => items.finish().map(Prepared::Accruals),
        Items::Uses(items) => items.finish().map(Prepared::Uses),
    }
    .map_err(ApiError::Submission)
}

/// A submission ready to be packed: accruals, or a bulk-use job's uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Accruals(PreparedSubmission),
    Uses(PreparedUses),
}

/// Reads and validates the body of `POST /v1/members/{member_id}/uses`.
pub fn parse_use(member_id: &str, body: &[u8]) -> Result<Use, ApiError> {
    let body = parse_single(body)?;
    use_from_json(member_id, &body).map_err(|errors| ApiError::InvalidUse { errors })
}

/// Reads and validates the body of `POST /v1/reversals`: what to reverse,
/// and the reason given.
pub fn parse_reversal(body: &[u8]) -> Result<(ReversalTarget, Option<String>), ApiError> {
    let body = parse_single(body)?;
    reversal_from_json(&body).map_err(|errors| ApiError::InvalidReversal { errors })
}

/// Reads the optional body of `POST /v1/jobs/{job_id}/cancel`:
/// `{"reason"?}`; an empty body gives no reason.
pub fn parse_cancel(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body = parse_single(body)?;
    reason_from_json(&body).map_err(|errors| ApiError::InvalidCancel { errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, item: &str) -> Vec<u8> {
        format!("{{\"accruals\": [{}]}}", vec![item; n].join(",")).into_bytes()
    }

    const ITEM: &str = r#"{"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 1}"#;

    #[test]
    fn items_over_the_limit_are_counted_not_kept() {
        let err = parse_submission(&items(7, ITEM), None, 5).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Submission(SubmissionError::TooMany {
                    kind: ItemKind::Accruals,
                    count: 7,
                    max: 5
                })
            ),
            "{err:?}"
        );
        // Still well-formed JSON after the limit, or malformed.
        let mut body = items(7, ITEM);
        body.truncate(body.len() - 3);
        assert!(matches!(
            parse_submission(&body, None, 5),
            Err(ApiError::MalformedJson { .. })
        ));
        let Prepared::Accruals(prepared) = parse_submission(&items(5, ITEM), None, 5).unwrap() else {
            panic!("expected accruals")
        };
        assert_eq!((prepared.accruals.len(), prepared.deduplicated), (1, 4));
    }

    #[test]
    fn items_full_of_nested_json_are_refused_before_they_exhaust_memory() {
        // One item hiding 10,000 objects: 6 MB of these took 0.5 GB.
        let nested = format!(r#"{{"x": [{}]}}"#, vec![r#"{"a":0}"#; 10_000].join(","));
        let ApiError::MalformedJson { detail } = parse_submission(&items(1, &nested), None, 100).unwrap_err() else {
            panic!("expected malformed_json")
        };
        assert!(detail.contains("more values than this request can take"), "{detail}");
        let ApiError::MalformedJson { .. } = parse_use("m", nested.as_bytes()).unwrap_err() else {
            panic!("expected malformed_json")
        };
        // The body's shape is checked as before.
        for (body, expected) in [
            (&br#"{"accruals": [], "x": 1}"#[..], "unknown field `x`"),
            (br#"{"accruals": [], "accruals": []}"#, "exactly one of"),
            (br#"{"accruals": [], "uses": []}"#, "exactly one of"),
            (br#"{}"#, "exactly one of"),
            (br#"{"uses": 5}"#, "expected a list of uses"),
            (br#"{"accruals": 5}"#, "expected a list of accruals"),
            (br#"[[]]"#, "expected an object"),
        ] {
            let ApiError::MalformedJson { detail } = parse_submission(body, None, 10).unwrap_err() else {
                panic!("expected malformed_json for {}", String::from_utf8_lossy(body))
            };
            assert!(detail.contains(expected), "{detail}");
        }
    }
}
