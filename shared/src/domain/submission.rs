//! Turning a list of submitted items into the accruals of one job: derive
//! missing ids, validate, collapse in-request duplicates, fingerprint.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::uses::{use_item_from_json, Use};
use crate::domain::validation::{accrual_from_json, FieldError};
use crate::domain::{Accrual, JobId};

/// How many item errors a rejection lists; the total is always reported.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Namespace of accrual ids derived from an `Idempotency-Key` (UUIDv5).
const ACCRUAL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_4c4e_8a1d_4b5e_9f0a_3c2b_7d61_a001);
/// Namespace of job ids derived from an `Idempotency-Key` (UUIDv5).
const JOB_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_4c4e_8a1d_4b5e_9f0a_3c2b_7d61_a002);
/// Namespace of accrual ids derived from a file's identity (UUIDv5): apart
/// from the API's, so no `Idempotency-Key` can name a file's ids.
const FILE_ACCRUAL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_4c4e_8a1d_4b5e_9f0a_3c2b_7d61_a003);
/// Namespace of job ids derived from a file's identity (UUIDv5).
const FILE_JOB_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_4c4e_8a1d_4b5e_9f0a_3c2b_7d61_a004);

/// The id of the item at `position` of a request sent with `key`:
/// `<UUIDv5 of the key>:<position, 7 digits>`. The same key and position
/// always give the same id, so a retried request credits nothing twice; and
/// one request's ids share a prefix and sort by position, so a store's index
/// takes them as one run of neighbouring keys instead of a million random
/// ones (SQLite credits several times faster that way).
pub fn derive_accrual_id(key: &str, position: usize) -> String {
    derived_id(&accrual_id_prefix(key), position)
}

/// The part of derived ids shared by every item of a request sent with `key`.
pub fn accrual_id_prefix(key: &str) -> String {
    Uuid::new_v5(&ACCRUAL_ID_NAMESPACE, key.as_bytes()).to_string()
}

/// The part of derived ids shared by every row of the file `file_identity`
/// names (bucket, key and ETag); a row's id adds its line number.
pub fn file_id_prefix(file_identity: &str) -> String {
    Uuid::new_v5(&FILE_ACCRUAL_ID_NAMESPACE, file_identity.as_bytes()).to_string()
}

/// The job of the file `file_identity` names: the same object always names
/// the same job, however often its event is delivered.
pub fn job_id_for_file(file_identity: &str) -> JobId {
    JobId(Uuid::new_v5(&FILE_JOB_ID_NAMESPACE, file_identity.as_bytes()))
}

/// A derived id from its prefix and the item's position (or line).
pub fn derived_id(prefix: &str, position: usize) -> String {
    format!("{prefix}:{position:07}")
}

/// The job of a request sent with `key`: the same key always names the same job.
pub fn job_id_for_key(key: &str) -> JobId {
    JobId(Uuid::new_v5(&JOB_ID_NAMESPACE, key.as_bytes()))
}

/// Accruals ready to be packed and queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSubmission {
    /// Distinct accruals, in submission order.
    pub accruals: Vec<Accrual>,
    /// Each accrual's position in the request, for errors that name it.
    pub indices: Vec<usize>,
    /// Items dropped because they repeated an earlier item exactly.
    pub deduplicated: u64,
    /// SHA-256 over the distinct accruals: equal for a retry of the same request.
    pub request_hash: String,
}

/// What a job submits: its items are accruals or uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Accruals,
    Uses,
}

impl ItemKind {
    /// The items' name in a request body and in messages (`accruals`, `uses`).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Accruals => "accruals",
            ItemKind::Uses => "uses",
        }
    }
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a submission was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    #[error("the {0} list is empty; send at least one item")]
    Empty(ItemKind),
    #[error("{count} {kind} in one request; at most {max} are accepted, split the campaign into several requests")]
    TooMany { kind: ItemKind, count: usize, max: usize },
    #[error("{total_errors} problem(s) with the submitted {kind}; nothing was queued")]
    Invalid {
        kind: ItemKind,
        /// The first [`MAX_REPORTED_ERRORS`] problems, in item order.
        errors: Vec<FieldError>,
        total_errors: usize,
    },
}

/// Items validated, with exact repeats collapsed.
struct Collapsed<T> {
    items: Vec<T>,
    /// Each kept item's position in the request.
    indices: Vec<usize>,
    deduplicated: u64,
}

/// Validates every item with `parse` (all of them, so the client sees every
/// problem at once) and collapses repeats of an id: an exact repeat is
/// counted in `deduplicated`, a repeated id with different content is an
/// error on the later item.
fn collapse<T: PartialEq>(
    kind: ItemKind,
    items: &[Value],
    max_items: usize,
    id_field: &str,
    mut parse: impl FnMut(usize, &Value) -> Result<T, Vec<FieldError>>,
    id: impl Fn(&T) -> &str,
) -> Result<Collapsed<T>, SubmissionError> {
    if items.is_empty() {
        return Err(SubmissionError::Empty(kind));
    }
    if items.len() > max_items {
        return Err(SubmissionError::TooMany {
            kind,
            count: items.len(),
            max: max_items,
        });
    }
    let mut errors = Vec::new();
    let mut total_errors = 0usize;
    let mut record = |mut errs: Vec<FieldError>| {
        total_errors += errs.len();
        let room = MAX_REPORTED_ERRORS.saturating_sub(errors.len());
        errs.truncate(room);
        errors.extend(errs);
    };
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    let mut indices: Vec<usize> = Vec::with_capacity(items.len());
    let mut first_index: HashMap<String, (usize, usize)> = HashMap::with_capacity(items.len());
    let mut deduplicated = 0u64;
    for (index, value) in items.iter().enumerate() {
        let item = match parse(index, value) {
            Ok(item) => item,
            Err(errs) => {
                record(errs);
                continue;
            }
        };
        match first_index.entry(id(&item).to_owned()) {
            Entry::Vacant(slot) => {
                slot.insert((index, kept.len()));
                kept.push(item);
                indices.push(index);
            }
            Entry::Occupied(seen) => {
                let (first_item, position) = *seen.get();
                if kept[position] == item {
                    deduplicated += 1;
                } else {
                    record(vec![FieldError {
                        index,
                        field: id_field.into(),
                        reason: format!(
                            "repeats the {id_field} of item {first_item} with different content; \
                             an {id_field} identifies one {}",
                            match kind {
                                ItemKind::Accruals => "credit",
                                ItemKind::Uses => "deduction",
                            }
                        ),
                    }]);
                }
            }
        }
    }
    if total_errors > 0 {
        return Err(SubmissionError::Invalid {
            kind,
            errors,
            total_errors,
        });
    }
    Ok(Collapsed {
        items: kept,
        indices,
        deduplicated,
    })
}

/// Validates every item (all of them, so the client sees every problem at
/// once), derives missing ids from `idempotency_key`, and collapses
/// duplicates: an exact repeat is counted in `deduplicated`, a repeated
/// `accrual_id` with different content is an error on the later item.
pub fn prepare_submission(
    items: &[Value],
    idempotency_key: Option<&str>,
    max_items: usize,
) -> Result<PreparedSubmission, SubmissionError> {
    let prefix = idempotency_key.map(accrual_id_prefix);
    let collapsed = collapse(
        ItemKind::Accruals,
        items,
        max_items,
        "accrual_id",
        |index, item| accrual_from_json(index, item, prefix.as_deref().map(|prefix| derived_id(prefix, index))),
        |a: &Accrual| &a.accrual_id,
    )?;
    let request_hash = fingerprint(&collapsed.items);
    Ok(PreparedSubmission {
        accruals: collapsed.items,
        indices: collapsed.indices,
        deduplicated: collapsed.deduplicated,
        request_hash,
    })
}

/// Uses ready to be packed and queued (a bulk-use job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedUses {
    /// Distinct uses, in submission order.
    pub uses: Vec<Use>,
    pub deduplicated: u64,
    /// SHA-256 over the distinct uses: equal for a retry of the same request.
    pub request_hash: String,
}

/// Validates a bulk-use job's items (`{use_id, member_id, point_type,
/// amount, reason?}`, as a single use plus its member) and collapses
/// repeats as [`prepare_submission`] does; `use_id` is always required.
pub fn prepare_uses(items: &[Value], max_items: usize) -> Result<PreparedUses, SubmissionError> {
    let collapsed = collapse(
        ItemKind::Uses,
        items,
        max_items,
        "use_id",
        use_item_from_json,
        |u: &Use| &u.use_id,
    )?;
    let request_hash = fingerprint(&collapsed.items);
    Ok(PreparedUses {
        uses: collapsed.items,
        deduplicated: collapsed.deduplicated,
        request_hash,
    })
}

/// SHA-256 over the items' canonical JSON, one per line.
pub fn fingerprint<T: serde::Serialize>(items: &[T]) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        // Serialising a struct of strings and integers cannot fail.
        if let Ok(line) = serde_json::to_vec(item) {
            hasher.update(&line);
        }
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(id: &str, member: &str, amount: u64) -> Value {
        json!({"accrual_id": id, "member_id": member, "point_type": "P", "amount": amount})
    }

    #[test]
    fn exact_repeats_collapse_and_are_counted() {
        let items = [item("a", "m1", 5), item("b", "m2", 5), item("a", "m1", 5)];
        let p = prepare_submission(&items, None, 10).unwrap();
        assert_eq!(p.accruals.len(), 2);
        assert_eq!(p.deduplicated, 1);
    }

    #[test]
    fn same_id_with_different_content_is_rejected_naming_both_items() {
        let items = [item("a", "m1", 5), item("a", "m1", 6)];
        let SubmissionError::Invalid {
            errors, total_errors, ..
        } = prepare_submission(&items, None, 10).unwrap_err()
        else {
            panic!("expected Invalid")
        };
        assert_eq!(total_errors, 1);
        assert_eq!(errors[0].index, 1);
        assert_eq!(errors[0].field, "accrual_id");
        assert!(errors[0].reason.contains("item 0"));
    }

    #[test]
    fn derived_ids_are_stable_across_retries_and_distinct_by_position() {
        let items = vec![json!({"member_id":"m","point_type":"P","amount":1}); 3];
        let a = prepare_submission(&items, Some("key-1"), 10).unwrap();
        let b = prepare_submission(&items, Some("key-1"), 10).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.accruals.len(),
            3,
            "identical items at different positions are different credits"
        );
        let c = prepare_submission(&items, Some("key-2"), 10).unwrap();
        assert_ne!(a.accruals[0].accrual_id, c.accruals[0].accrual_id);
        assert!(
            a.accruals[0].accrual_id < a.accruals[1].accrual_id,
            "ids sort by position"
        );
        assert!(crate::domain::validation::check_accrual_id(&a.accruals[2].accrual_id).is_ok());
        assert_ne!(a.request_hash, c.request_hash);
        assert_eq!(job_id_for_key("key-1"), job_id_for_key("key-1"));
        assert_ne!(job_id_for_key("key-1"), job_id_for_key("key-2"));
    }

    #[test]
    fn missing_ids_without_key_are_refused_with_the_fix() {
        let items = vec![json!({"member_id":"m","point_type":"P","amount":1})];
        let err = prepare_submission(&items, None, 10).unwrap_err();
        let SubmissionError::Invalid { errors, .. } = err else {
            panic!()
        };
        assert!(errors[0].reason.contains("Idempotency-Key"));
    }

    #[test]
    fn errors_are_capped_but_counted() {
        let items: Vec<Value> = (0..250).map(|i| item(&format!("a{i}"), "", 1)).collect();
        let SubmissionError::Invalid {
            errors, total_errors, ..
        } = prepare_submission(&items, None, 1000).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(total_errors, 250);
        assert_eq!(errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(errors[99].index, 99);
    }

    #[test]
    fn empty_and_oversized_lists_are_refused() {
        assert_eq!(
            prepare_submission(&[], None, 10),
            Err(SubmissionError::Empty(ItemKind::Accruals))
        );
        let items = vec![item("a", "m", 1); 11];
        assert_eq!(
            prepare_submission(&items, None, 10),
            Err(SubmissionError::TooMany {
                kind: ItemKind::Accruals,
                count: 11,
                max: 10
            })
        );
    }

    fn use_item(id: &str, member: &str, amount: u64) -> Value {
        json!({"use_id": id, "member_id": member, "point_type": "P", "amount": amount})
    }

    #[test]
    fn bulk_uses_are_validated_collapsed_and_fingerprinted_like_accruals() {
        let items = [
            use_item("u1", "m1", 5),
            use_item("u2", "m2", 5),
            use_item("u1", "m1", 5),
        ];
        let p = prepare_uses(&items, 10).unwrap();
        assert_eq!((p.uses.len(), p.deduplicated), (2, 1));
        assert_eq!(p.request_hash, prepare_uses(&items[..2], 10).unwrap().request_hash);
        let conflicting = [use_item("u1", "m1", 5), use_item("u1", "m1", 6)];
        let SubmissionError::Invalid { kind, errors, .. } = prepare_uses(&conflicting, 10).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(
            (kind, errors[0].index, errors[0].field.as_str()),
            (ItemKind::Uses, 1, "use_id")
        );
        assert!(errors[0].reason.contains("deduction"), "{}", errors[0].reason);
        let bad = [
            json!({"use_id": "u", "point_type": "P", "amount": 1}),
            json!({"use_id": "u", "member_id": "m", "point_type": "P", "amount": 0}),
            json!({"member_id": "m", "point_type": "P", "amount": 1}),
            json!({"use_id": "u", "member_id": "m", "point_type": "P", "amount": 1, "apply_at": "x"}),
            json!("not an object"),
        ];
        let SubmissionError::Invalid {
            errors, total_errors, ..
        } = prepare_uses(&bad, 10).unwrap_err()
        else {
            panic!("expected Invalid")
        };
        let named: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            named,
            [
                (0, "member_id"),
                (1, "amount"),
                (2, "use_id"),
                (3, "apply_at"),
                (4, "(item)")
            ]
        );
        assert_eq!(total_errors, 5);
        assert_eq!(prepare_uses(&[], 10), Err(SubmissionError::Empty(ItemKind::Uses)));
    }
}
