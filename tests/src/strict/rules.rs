//! The checks the strict layer makes on a DynamoDB request, as pure
//! functions of its JSON body: item sizes, expression sizes and operator
//! counts, and the per-request limits of `TransactWriteItems` and
//! `BatchWriteItem`. Each limit is AWS's, with its source in
//! `docs/strict-aws-layer.md`.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Largest item: 400 KB (DynamoDB Developer Guide, "Quotas", Items).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Longest expression string: 4 KB (Guide, "Quotas", Expression parameters).
pub const MAX_EXPRESSION_BYTES: usize = 4 * 1024;
/// Most operators or functions in one expression (same page).
pub const MAX_EXPRESSION_OPERATORS: usize = 300;
/// Most actions in one `TransactWriteItems` (API Reference).
pub const MAX_TRANSACTION_ACTIONS: usize = 100;
/// Largest aggregate size of one transaction's items: 4 MB (API Reference).
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// Most put or delete requests in one `BatchWriteItem` (API Reference).
pub const MAX_BATCH_WRITES: usize = 25;

/// The expression parameters a request or a transaction action may carry.
const EXPRESSIONS: [&str; 5] = [
    "UpdateExpression",
    "ConditionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
];

/// What AWS would refuse, and how it says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An item over 400 KB.
    ItemTooLarge { bytes: usize },
    /// An expression string over 4 KB.
    ExpressionTooLong { parameter: String, bytes: usize },
    /// An expression with more than 300 operators or functions.
    TooManyOperators { parameter: String, operators: usize },
    /// A transaction of more than 100 actions.
    TooManyActions { actions: usize },
    /// A transaction whose items add up to more than 4 MB.
    TransactionTooLarge { bytes: usize },
    /// A `BatchWriteItem` of more than 25 requests.
    TooManyBatchWrites { requests: usize },
}

impl Violation {
    /// The `ValidationException` message AWS sends for it.
    pub fn message(&self) -> String {
        match self {
            Violation::ItemTooLarge { .. } => "Item size has exceeded the maximum allowed size".to_owned(),
            Violation::ExpressionTooLong { parameter, bytes } => format!(
                "Invalid {parameter}: Expression size has exceeded the maximum allowed size; expression size: {bytes}"
            ),
            Violation::TooManyOperators { parameter, operators } => {
                format!("Invalid {parameter}: The expression contains too many operators; operator count: {operators}")
            }
            Violation::TooManyActions { actions } => format!(
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: \
                 Member must have length less than or equal to {MAX_TRANSACTION_ACTIONS} (got {actions})"
            ),
            Violation::TransactionTooLarge { .. } => "Transaction request cannot be larger than 4 MB".to_owned(),
            Violation::TooManyBatchWrites { .. } => "Too many items requested for the BatchWriteItem call".to_owned(),
        }
    }
}

/// The size DynamoDB counts for an attribute value in wire JSON
/// (`{"S": "…"}`, `{"N": "…"}`, …), without its name.
pub fn value_bytes(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        ("N", Value::String(n)) => number_bytes(n),
        ("B", Value::String(b)) => base64_raw_len(b),
        ("BOOL" | "NULL", _) => 1,
        ("SS", Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::len).sum(),
        ("NS", Value::Array(items)) => items.iter().filter_map(Value::as_str).map(number_bytes).sum(),
        ("BS", Value::Array(items)) => items.iter().filter_map(Value::as_str).map(base64_raw_len).sum(),
        // 3 bytes per list or map, 1 per element.
        ("L", Value::Array(items)) => 3 + items.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        ("M", Value::Object(map)) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_bytes(v)).sum::<usize>(),
        _ => 0,
    }
}

/// A number's size: one byte per two significant digits, plus one
/// (leading and trailing zeros trimmed).
pub fn number_bytes(number: &str) -> usize {
    let digits: String = number
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// The raw length of base64 text (the size DynamoDB counts for binary).
fn base64_raw_len(text: &str) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_or(text.len(), |raw| raw.len())
}

/// An item's size: each attribute's name in UTF-8 bytes plus its value.
pub fn item_bytes(item: &Map<String, Value>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_bytes(value)).sum()
}

/// Counts the operators and functions of an expression: comparators,
/// `AND`/`OR`/`NOT`, `BETWEEN`, `IN`, arithmetic `+`/`-` and every function
/// call (`attribute_exists(…)`, `if_not_exists(…)`…). Placeholders and
/// attribute paths are operands and count nothing.
pub fn expression_operators(expression: &str) -> usize {
    let bytes = expression.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'#' || c == b':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'#' | b':' | b'.'))
            {
                i += 1;
            }
            let word = &expression[start..i];
            let rest = expression[i..].trim_start();
            if matches!(
                word.to_ascii_uppercase().as_str(),
                "AND" | "OR" | "NOT" | "BETWEEN" | "IN"
            ) || (rest.starts_with('(') && !word.starts_with([':', '#']))
            {
                count += 1;
            }
            continue;
        }
        match c {
            b'<' | b'>' => {
                count += 1;
                // `<=`, `>=`, `<>` are one operator.
                if matches!(bytes.get(i + 1), Some(b'=' | b'>')) {
                    i += 1;
                }
            }
            b'=' | b'+' | b'-' => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
}

/// The expression limits of one request or action: each expression string
/// at most 4 KB and 300 operators.
pub fn check_expressions(request: &Map<String, Value>) -> Result<(), Violation> {
    for parameter in EXPRESSIONS {
        let Some(expression) = request.get(parameter).and_then(Value::as_str) else {
            continue;
        };
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(Violation::ExpressionTooLong {
                parameter: parameter.to_owned(),
                bytes: expression.len(),
            });
        }
        let operators = expression_operators(expression);
        if operators > MAX_EXPRESSION_OPERATORS {
            return Err(Violation::TooManyOperators {
                parameter: parameter.to_owned(),
                operators,
            });
        }
    }
    Ok(())
}

/// The bytes an action brings to a transaction: a put's item, or the key
/// and the substitution values of an update, delete or condition check
/// (values count toward the 4 MB, per the Guide's expression quotas).
pub fn action_bytes(action: &Map<String, Value>) -> usize {
    let map_bytes = |field: &str| action.get(field).and_then(Value::as_object).map_or(0, item_bytes);
    map_bytes("Item") + map_bytes("Key") + map_bytes("ExpressionAttributeValues")
}

/// The one action of a `TransactItems` element (`{"Put": {...}}` and so
/// on), with its kind.
pub fn transact_action(element: &Value) -> Option<(&str, &Map<String, Value>)> {
    let (kind, body) = element.as_object()?.iter().next()?;
    Some((kind.as_str(), body.as_object()?))
}

/// The request-level limits of `TransactWriteItems`: at most 100 actions,
/// 4 MB in all, and each action's expressions within bounds. Items over
/// 400 KB are the caller's to check (AWS cancels the transaction for them).
pub fn check_transaction(request: &Map<String, Value>) -> Result<(), Violation> {
    let actions = request
        .get("TransactItems")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if actions.len() > MAX_TRANSACTION_ACTIONS {
        return Err(Violation::TooManyActions { actions: actions.len() });
    }
    let mut bytes = 0;
    for (_, action) in actions.iter().filter_map(transact_action) {
        check_expressions(action)?;
        bytes += action_bytes(action);
    }
    if bytes > MAX_TRANSACTION_BYTES {
        return Err(Violation::TransactionTooLarge { bytes });
    }
    Ok(())
}

/// `BatchWriteItem`: at most 25 requests over all tables, and each put's
/// item at most 400 KB.
pub fn check_batch_write(request: &Map<String, Value>) -> Result<(), Violation> {
    let tables = request.get("RequestItems").and_then(Value::as_object);
    let writes: Vec<&Value> = tables
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    if writes.len() > MAX_BATCH_WRITES {
        return Err(Violation::TooManyBatchWrites { requests: writes.len() });
    }
    for write in writes {
        if let Some(item) = write.pointer("/PutRequest/Item").and_then(Value::as_object) {
            check_item(item)?;
        }
    }
    Ok(())
}

/// An item of at most 400 KB.
pub fn check_item(item: &Map<String, Value>) -> Result<(), Violation> {
    let bytes = item_bytes(item);
    if bytes > MAX_ITEM_BYTES {
        return Err(Violation::ItemTooLarge { bytes });
    }
    Ok(())
}

/// JSON with every object's keys sorted, recursively: two requests that
/// differ only in key order digest the same.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The SHA-256 of a request's canonical JSON.
pub fn digest(request: &Value) -> [u8; 32] {
    Sha256::digest(canonical(request).to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn item_size_follows_the_guides_rules() {
        // Names in UTF-8 bytes; strings in UTF-8 bytes.
        assert_eq!(item_bytes(&item(json!({"pk": {"S": "abc"}}))), 2 + 3);
        assert_eq!(item_bytes(&item(json!({"é": {"S": "é"}}))), 2 + 2);
        // Numbers: one byte per two significant digits, plus one.
        assert_eq!(number_bytes("1"), 2);
        assert_eq!(number_bytes("12345"), 4);
        assert_eq!(number_bytes("-1000"), 2, "trailing zeros trimmed");
        assert_eq!(number_bytes("0.0012"), 2, "leading zeros trimmed");
        // Binary: raw bytes, not base64 text.
        assert_eq!(value_bytes(&json!({"B": "AAECAw=="})), 4);
        assert_eq!(value_bytes(&json!({"B": "AAEC"})), 3);
        // Booleans and nulls: one byte.
        assert_eq!(value_bytes(&json!({"BOOL": true})), 1);
        assert_eq!(value_bytes(&json!({"NULL": true})), 1);
        // Lists and maps: 3 bytes, plus 1 per element.
        assert_eq!(value_bytes(&json!({"L": []})), 3);
        assert_eq!(
            value_bytes(&json!({"L": [{"S": "ab"}, {"N": "7"}]})),
            3 + (1 + 2) + (1 + 2)
        );
        assert_eq!(value_bytes(&json!({"M": {"k": {"S": "v"}}})), 3 + 1 + 1 + 1);
        assert_eq!(value_bytes(&json!({"SS": ["a", "bc"]})), 3);
    }

    #[test]
    fn an_item_of_400_kb_passes_and_one_byte_more_does_not() {
        let fill = |n: usize| item(json!({"pk": {"S": "x".repeat(n - 2)}}));
        assert_eq!(check_item(&fill(MAX_ITEM_BYTES)), Ok(()));
        assert_eq!(
            check_item(&fill(MAX_ITEM_BYTES + 1)),
            Err(Violation::ItemTooLarge {
                bytes: MAX_ITEM_BYTES + 1
            })
        );
    }

    #[test]
    fn operators_and_functions_are_counted_operands_are_not() {
        assert_eq!(expression_operators("attribute_not_exists(pk)"), 1);
        assert_eq!(
            expression_operators("balance >= :amount AND attribute_not_exists(lots)"),
            3
        );
        assert_eq!(
            expression_operators("SET updated_at = :now ADD balance :minus, used :amount"),
            1
        );
        assert_eq!(expression_operators("#a <> :b OR NOT (#c BETWEEN :d AND :e)"), 5);
        assert_eq!(expression_operators("SET #n = if_not_exists(#n, :zero) + :one"), 3);
        assert_eq!(expression_operators("a-b-c-d"), 3);
        assert_eq!(expression_operators("#t0 >= :take0"), 1);
    }

    #[test]
    fn expressions_over_4_kb_or_300_operators_are_refused() {
        let long = format!("attribute_exists(#{})", "a".repeat(MAX_EXPRESSION_BYTES));
        assert!(matches!(
            check_expressions(&item(json!({"ConditionExpression": long}))),
            Err(Violation::ExpressionTooLong { .. })
        ));
        let terms = |n: usize| {
            (0..n)
                .map(|i| format!("#a{i} = :v{i}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        // n comparisons and n - 1 ANDs.
        assert_eq!(
            check_expressions(&item(json!({"ConditionExpression": terms(150)}))),
            Ok(())
        );
        assert_eq!(
            check_expressions(&item(json!({"ConditionExpression": terms(151)}))),
            Err(Violation::TooManyOperators {
                parameter: "ConditionExpression".into(),
                operators: 301
            })
        );
    }

    #[test]
    fn transactions_hold_at_most_100_actions_and_4_mb() {
        let put = |bytes: usize| json!({"Put": {"TableName": "t", "Item": {"pk": {"S": "x".repeat(bytes - 2)}}}});
        let request = |actions: Vec<Value>| item(json!({ "TransactItems": actions }));
        assert_eq!(check_transaction(&request(vec![put(10); 100])), Ok(()));
        assert_eq!(
            check_transaction(&request(vec![put(10); 101])),
            Err(Violation::TooManyActions { actions: 101 })
        );
        assert_eq!(
            check_transaction(&request(vec![put(MAX_TRANSACTION_BYTES / 16); 16])),
            Ok(())
        );
        let mut over = vec![put(MAX_TRANSACTION_BYTES / 16); 16];
        over.push(put(10));
        assert!(matches!(
            check_transaction(&request(over)),
            Err(Violation::TransactionTooLarge { .. })
        ));
    }

    #[test]
    fn batch_writes_hold_at_most_25_requests_over_all_tables() {
        let put = json!({"PutRequest": {"Item": {"pk": {"S": "a"}}}});
        let request =
            |a: usize, b: usize| item(json!({"RequestItems": {"a": vec![put.clone(); a], "b": vec![put.clone(); b]}}));
        assert_eq!(check_batch_write(&request(20, 5)), Ok(()));
        assert_eq!(
            check_batch_write(&request(20, 6)),
            Err(Violation::TooManyBatchWrites { requests: 26 })
        );
    }

    #[test]
    fn the_digest_ignores_key_order_only() {
        let a = json!({"x": 1, "y": {"b": 2, "a": [1, 2]}});
        let b = json!({"y": {"a": [1, 2], "b": 2}, "x": 1});
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"x": 1, "y": {"b": 2, "a": [2, 1]}})));
    }
}
