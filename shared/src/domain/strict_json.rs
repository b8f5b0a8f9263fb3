//! JSON whose objects may not repeat a key. `serde_json` keeps the last of
//! repeated keys, so `{"amount": 1, "amount": 1000000}` would credit a million
//! points with no error; money-like input must be unambiguous, so every
//! request body and submitted line is read through [`StrictValue`].
//!
//! Parsed JSON takes more memory than its text: a value is 32 bytes, and an
//! object with a key holds a 632-byte tree node per 11 keys, so 6 MB of
//! `{"a":0},` would take over half a gigabyte. Request bodies are therefore
//! read within a [`Budget`] of estimated bytes (see [`from_slice_within`]).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What one value is charged: its slot in the array or object holding it.
pub const VALUE_COST: usize = 32;
/// What an object is charged for each 11 keys (one B-tree node of
/// `String` keys and `Value`s: 632 bytes, rounded up).
pub const OBJECT_NODE_COST: usize = 640;
/// Keys per B-tree node.
const KEYS_PER_NODE: usize = 11;

/// The memory a document may take once parsed, in estimated bytes (strings
/// are not charged: their text is at most the input's).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    left: Cell<usize>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Budget {
            limit: bytes,
            left: Cell::new(bytes),
        }
    }

    /// Takes `cost` from the budget, or fails the parse (at the current
    /// line and column) when it is spent.
    pub fn charge<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the JSON holds more values than this request can take (about {} KB once read)",
                self.limit / 1000
            ))),
        }
    }
}

/// Reads one value strictly, charging `budget` (if any) for what it holds.
#[derive(Clone, Copy)]
pub struct StrictSeed<'b>(pub Option<&'b Budget>);

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor(self.0))
    }
}

/// A JSON value read strictly: an object repeating a key is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor(None)).map(StrictValue)
    }
}

struct StrictVisitor<'b>(Option<&'b Budget>);

impl StrictVisitor<'_> {
    fn charge<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        self.0.map_or(Ok(()), |budget| budget.charge(cost))
    }
}

impl<'de> Visitor<'de> for StrictVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictSeed(self.0).deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed(self.0))? {
            self.charge(VALUE_COST)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key {key:?} appears twice in one object")));
            }
            if object.len() % KEYS_PER_NODE == 0 {
                self.charge(OBJECT_NODE_COST)?;
            }
            self.charge(VALUE_COST)?;
            let value = map.next_value_seed(StrictSeed(self.0))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses `bytes` strictly.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(bytes).map(|v| v.0)
}

/// Parses `bytes` strictly within `budget` estimated bytes of parsed values
/// (see [`Budget`]).
pub fn from_slice_within(bytes: &[u8], budget: usize) -> Result<Value, serde_json::Error> {
    let budget = Budget::new(budget);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed(Some(&budget)).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Parses `text` strictly.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<StrictValue>(text).map(|v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a": [1, -2, 3.5, "x", true, null, {"b": {}}], "c": 18446744073709551615}"#;
        assert_eq!(from_str(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(from_str("[]").unwrap(), json!([]));
    }

    #[test]
    fn refuses_a_repeated_key_at_any_depth_with_its_position() {
        let err = from_str(r#"{"amount": 1, "amount": 1000000}"#).unwrap_err();
        assert!(err.to_string().contains("\"amount\" appears twice"), "{err}");
        assert!(err.to_string().contains("line 1 column"), "{err}");
        assert!(from_str(r#"{"accruals": [{"m": 1}, {"m": 2, "m": 3}]}"#).is_err());
        assert!(from_str(r#"{"m": 1, "n": {"m": 2}}"#).is_ok());
    }

    #[test]
    fn a_budget_bounds_what_a_document_may_hold_once_parsed() {
        let text = br#"{"use_id": "u", "point_type": "P", "amount": 1, "reason": "r"}"#;
        let cost = OBJECT_NODE_COST + 4 * VALUE_COST;
        assert!(from_slice_within(text, cost).is_ok());
        let err = from_slice_within(text, cost - 1).unwrap_err();
        assert!(
            err.to_string().contains("more values than this request can take"),
            "{err}"
        );
        // Many tiny objects, or a long array, are stopped early.
        let objects = format!("[{}]", vec![r#"{"a":0}"#; 100].join(","));
        assert!(from_slice_within(objects.as_bytes(), 10 * OBJECT_NODE_COST).is_err());
        assert!(from_slice_within(objects.as_bytes(), 100 * (OBJECT_NODE_COST + 2 * VALUE_COST)).is_ok());
        let numbers = format!("[{}]", vec!["0"; 1000].join(","));
        assert!(from_slice_within(numbers.as_bytes(), 100 * VALUE_COST).is_err());
    }
}
