//! Turning a list of submitted items into the accruals of one job: derive
//! missing ids, validate, collapse in-request duplicates, fingerprint.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

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

/// Validates items one at a time, in request order (all of them, so the
/// client sees every problem at once), and collapses repeats of an id: an
/// exact repeat is counted in `deduplicated`, a repeated id with different
/// content is an error on the later item.
///
/// Items arrive one by one so that a request body can be read straight into
/// validated items, never holding the whole list as JSON values (for a
/// 50,000-item request those took several times the items' own memory).
/// Repeats are found through a table of positions into the kept items, so
/// no id is copied for it.
struct Collapse<T> {
    kind: ItemKind,
    id_field: &'static str,
    id: fn(&T) -> &str,
    kept: Vec<T>,
    indices: Vec<usize>,
    /// Positions in `kept`, hashed by their item's id.
    seen: HashTable<usize>,
    hasher: RandomState,
    deduplicated: u64,
    /// Items pushed so far: the next item's position in the request.
    pushed: usize,
    errors: Vec<FieldError>,
    total_errors: usize,
}

impl<T: PartialEq> Collapse<T> {
    fn new(kind: ItemKind, id_field: &'static str, id: fn(&T) -> &str) -> Self {
        Collapse {
            kind,
            id_field,
            id,
            kept: Vec::new(),
            indices: Vec::new(),
            seen: HashTable::new(),
            hasher: RandomState::new(),
            deduplicated: 0,
            pushed: 0,
            errors: Vec::new(),
            total_errors: 0,
        }
    }

    /// The position the next item will have.
    fn next_index(&self) -> usize {
        self.pushed
    }

    fn record(&mut self, mut errs: Vec<FieldError>) {
        self.total_errors += errs.len();
        let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
        errs.truncate(room);
        self.errors.extend(errs);
    }

    /// Takes the next item, as its parser read it.
    fn push(&mut self, parsed: Result<T, Vec<FieldError>>) {
        let index = self.pushed;
        self.pushed += 1;
        let item = match parsed {
            Ok(item) => item,
            Err(errs) => return self.record(errs),
        };
        let Collapse {
            id, kept, seen, hasher, ..
        } = self;
        let id = *id;
        let hash = hasher.hash_one(id(&item));
        match seen.find(hash, |&p| id(&kept[p]) == id(&item)) {
            None => {
                seen.insert_unique(hash, kept.len(), |&p| hasher.hash_one(id(&kept[p])));
                kept.push(item);
                self.indices.push(index);
            }
            Some(&position) if kept[position] == item => self.deduplicated += 1,
            Some(&position) => {
                let first_item = self.indices[position];
                let id_field = self.id_field;
                let reason = format!(
                    "repeats the {id_field} of item {first_item} with different content; \
                     an {id_field} identifies one {}",
                    match self.kind {
                        ItemKind::Accruals => "credit",
                        ItemKind::Uses => "deduction",
                    }
                );
                self.record(vec![FieldError {
                    index,
                    field: id_field.into(),
                    reason,
                }]);
            }
        }
    }

    /// The items kept, or every problem found (an empty list is one).
    fn finish(self) -> Result<Collapsed<T>, SubmissionError> {
        if self.pushed == 0 {
            return Err(SubmissionError::Empty(self.kind));
        }
        if self.total_errors > 0 {
            return Err(SubmissionError::Invalid {
                kind: self.kind,
                errors: self.errors,
                total_errors: self.total_errors,
            });
        }
        Ok(Collapsed {
            items: self.kept,
            indices: self.indices,
            deduplicated: self.deduplicated,
        })
    }
}

/// Refuses a list over `max_items` before any item is read.
fn check_count(kind: ItemKind, count: usize, max_items: usize) -> Result<(), SubmissionError> {
    if count > max_items {
        return Err(SubmissionError::TooMany {
            kind,
            count,
            max: max_items,
        });
    }
    Ok(())
}

/// The accruals of one request, read one item at a time (see
/// [`prepare_submission`] for the rules): a body is read straight into
/// them ([`crate::services::api::parse_submission`]).
pub struct AccrualItems {
    collapse: Collapse<Accrual>,
    /// Of ids derived from the `Idempotency-Key`, if one was sent.
    prefix: Option<String>,
}

impl AccrualItems {
    /// Items of a request sent with `idempotency_key`, if any.
    pub fn new(idempotency_key: Option<&str>) -> Self {
        AccrualItems {
            collapse: Collapse::new(ItemKind::Accruals, "accrual_id", |a: &Accrual| &a.accrual_id),
            prefix: idempotency_key.map(accrual_id_prefix),
        }
    }

    /// Validates the request's next item and keeps it unless it repeats an
    /// earlier one.
    pub fn push(&mut self, item: &Value) {
        let index = self.collapse.next_index();
        let derived = self.prefix.as_deref().map(|prefix| derived_id(prefix, index));
        self.collapse.push(accrual_from_json(index, item, derived));
    }

    /// The distinct accruals, or why the request is refused.
    pub fn finish(self) -> Result<PreparedSubmission, SubmissionError> {
        let collapsed = self.collapse.finish()?;
        let request_hash = fingerprint(&collapsed.items);
        Ok(PreparedSubmission {
            accruals: collapsed.items,
            indices: collapsed.indices,
            deduplicated: collapsed.deduplicated,
            request_hash,
        })
    }
}

/// The uses of one bulk-use request, read one item at a time (see
/// [`prepare_uses`]).
pub struct UseItems {
    collapse: Collapse<Use>,
}

impl Default for UseItems {
    fn default() -> Self {
        UseItems {
            collapse: Collapse::new(ItemKind::Uses, "use_id", |u: &Use| &u.use_id),
        }
    }
}

impl UseItems {
    /// Validates the request's next item and keeps it unless it repeats an
    /// earlier one.
    pub fn push(&mut self, item: &Value) {
        let index = self.collapse.next_index();
        self.collapse.push(use_item_from_json(index, item));
    }

    /// The distinct uses, or why the request is refused.
    pub fn finish(self) -> Result<PreparedUses, SubmissionError> {
        let collapsed = self.collapse.finish()?;
        let request_hash = fingerprint(&collapsed.items);
        Ok(PreparedUses {
            uses: collapsed.items,
            deduplicated: collapsed.deduplicated,
            request_hash,
        })
    }
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
    if !items.is_empty() {
        check_count(ItemKind::Accruals, items.len(), max_items)?;
    }
    let mut accruals = AccrualItems::new(idempotency_key);
    for item in items {
        accruals.push(item);
    }
    accruals.finish()
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
    if !items.is_empty() {
        check_count(ItemKind::Uses, items.len(), max_items)?;
    }
    let mut uses = UseItems::default();
    for item in items {
        uses.push(item);
    }
    uses.finish()
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
    fn repeats_are_found_among_many_ids_however_far_apart() {
        // 1,000 ids sent twice, the repeats 1,000 items later, then one id
        // again with another amount: the table of positions grows many times
        // in between.
        let mut items: Vec<Value> = (0..2_000).map(|i| item(&format!("a{}", i % 1_000), "m", 5)).collect();
        let p = prepare_submission(&items, None, 5_000).unwrap();
        assert_eq!((p.accruals.len(), p.deduplicated), (1_000, 1_000));
        assert_eq!(p.indices, (0..1_000).collect::<Vec<_>>());
        items.push(item("a500", "m", 6));
        let SubmissionError::Invalid { errors, .. } = prepare_submission(&items, None, 5_000).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].index, errors[0].field.as_str()), (2_000, "accrual_id"));
        assert!(errors[0].reason.contains("item 500"), "{}", errors[0].reason);
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
