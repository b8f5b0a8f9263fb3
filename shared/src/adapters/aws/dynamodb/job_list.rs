//! Listing jobs newest first on DynamoDB: the `job_list` index and the
//! reads of one listing.
//!
//! Every job item carries `list_pk = JOBS#<year of created_at, UTC>` and
//! `list_sk = <JobListKey>` (`<created_at to the millisecond>#<job_id>`),
//! set once when the job is created. The `job_list` index is keyed on them
//! and projects keys only, so the counts a fold adds to the job never write
//! to it. A listing queries the year buckets newest first
//! (`ScanIndexForward=false`, `list_sk` between the range's bounds), from
//! the cursor's year (or next year's, near a new year) down to the oldest
//! bucket the range can reach, then reads the jobs themselves with
//! `BatchGetItem`, 100 keys a call.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use time::{Duration, OffsetDateTime, UtcOffset};

use super::errors::{backend, single_call_error};
use super::items::{item_bytes, job_from_item, s, ItemExt};
use super::{DynamoStore, Item};
use crate::domain::capacity::{index_writes, write_units, WriteKind};
use crate::domain::job_list::{JobListKey, JobRange};
use crate::domain::Job;
use crate::ports::StoreError;

/// The global secondary index jobs are listed by (`list_pk`, `list_sk`).
pub const JOB_LIST_INDEX: &str = "job_list";

/// The oldest year bucket: Pointflow's first release. A job created
/// earlier (only a test's made-up time can be) goes to this bucket, still
/// in order, so a listing never walks further back.
pub(super) const FIRST_LISTED_YEAR: i32 = 2026;

/// Keys one `BatchGetItem` may ask for (DynamoDB API Reference, `BatchGetItem`).
const BATCH_GET_KEYS: usize = 100;

/// The year bucket of a job created at `created_at`.
fn bucket_year(created_at: OffsetDateTime) -> i32 {
    created_at.to_offset(UtcOffset::UTC).year().max(FIRST_LISTED_YEAR)
}

/// A job's `list_pk`.
fn bucket(year: i32) -> String {
    format!("JOBS#{year}")
}

/// The listing attributes of a job created at `created_at`.
pub(super) fn list_attributes(key: &JobListKey) -> [(String, AttributeValue); 2] {
    [
        ("list_pk".to_owned(), s(bucket(bucket_year(key.created_at())))),
        ("list_sk".to_owned(), s(key.as_str())),
    ]
}

/// The attributes a `job_list` index entry holds (the index projects keys
/// only): the table's keys and the index's.
const LIST_ENTRY_ATTRIBUTES: [&str; 4] = ["pk", "sk", "list_pk", "list_sk"];

/// What the `job_list` index holds of job item `item`.
pub(super) fn list_entry(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| LIST_ENTRY_ATTRIBUTES.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Write units of the `job_list` index entry that putting the new job item
/// `item` writes: one entry ([`index_writes`], a new item with the index's
/// keys) sized by what it holds.
pub(super) fn list_entry_units(item: &Item) -> u64 {
    index_writes(None, item.get("list_sk"), true) * write_units(item_bytes(&list_entry(item)), WriteKind::Standard)
}

impl DynamoStore {
    /// [`crate::ports::JobStore::list_jobs`]: the keys from the index, then
    /// the jobs.
    pub(super) async fn list_jobs_newest_first(
        &self,
        range: &JobRange,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Job>, StoreError> {
        let keys = self.listed_keys(range, limit, now).await?;
        self.jobs_by_key(keys).await
    }

    /// The table keys (`pk`, `sk`) of up to `limit` jobs of `range`, in
    /// listing order.
    async fn listed_keys(&self, range: &JobRange, limit: usize, now: OffsetDateTime) -> Result<Vec<Item>, StoreError> {
        let before = range.before.as_ref().map(JobListKey::as_str);
        // Every key starts with a year's digits: above and below them all.
        let high = before.unwrap_or("~");
        let low = range.after_bound().unwrap_or_else(|| " ".to_owned());
        let mut keys = Vec::new();
        if low.as_str() >= high || limit == 0 {
            return Ok(keys);
        }
        // A job a clock slightly ahead created "next year" is still found.
        let newest = range
            .before
            .as_ref()
            .map_or(now + Duration::days(1), JobListKey::created_at);
        let oldest = range.created_after.map_or(FIRST_LISTED_YEAR, bucket_year);
        let mut year = bucket_year(newest);
        while year >= oldest && keys.len() < limit {
            let mut start: Option<Item> = None;
            loop {
                self.count();
                // `BETWEEN` includes `before`'s own entry: one more.
                let want = limit - keys.len() + usize::from(before.is_some());
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(JOB_LIST_INDEX)
                    .key_condition_expression("list_pk = :pk AND list_sk BETWEEN :low AND :high")
                    .expression_attribute_values(":pk", s(bucket(year)))
                    .expression_attribute_values(":low", s(&low))
                    .expression_attribute_values(":high", s(high))
                    .scan_index_forward(false)
                    .limit(i32::try_from(want).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| single_call_error("Query", e))?;
                for item in page.items() {
                    if item.string("list_sk") == before {
                        continue;
                    }
                    let key = ["pk", "sk"].map(|name| {
                        item.get(name)
                            .cloned()
                            .map(|value| (name.to_owned(), value))
                            .ok_or_else(|| item.corrupt("job_list index entry without its table key"))
                    });
                    let [pk, sk] = key;
                    keys.push(Item::from([pk?, sk?]));
                    if keys.len() == limit {
                        return Ok(keys);
                    }
                }
                match page.last_evaluated_key() {
                    Some(key) if !key.is_empty() => start = Some(key.clone()),
                    _ => break,
                }
            }
            year -= 1;
        }
        Ok(keys)
    }

    /// The jobs of `keys`, in their order, by `BatchGetItem` (eventually
    /// consistent, as the index is), retrying unprocessed keys.
    async fn jobs_by_key(&self, keys: Vec<Item>) -> Result<Vec<Job>, StoreError> {
        let order: Vec<Option<String>> = keys.iter().map(|k| k.string("pk").map(str::to_owned)).collect();
        let mut found: HashMap<String, Job> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                self.count();
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .build()
                    .map_err(|e| backend("BatchGetItem", e))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| single_call_error("BatchGetItem", e))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(pk) = item.string("pk") {
                        found.insert(pk.to_owned(), job_from_item(item)?);
                    }
                }
                // What DynamoDB did not read this time (throttling, or 16 MB
                // a call) comes back to be asked for again, after a pause.
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt >= self.backoff.max_attempts {
                        return Err(StoreError::Throttled {
                            operation: "BatchGetItem",
                        });
                    }
                    self.backoff.sleep(attempt - 1).await;
                }
            }
        }
        // A key whose job is gone (never, short of a hand-made deletion) is skipped.
        Ok(order.into_iter().flatten().filter_map(|pk| found.remove(&pk)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobId;
    use time::macros::datetime;

    #[test]
    fn jobs_go_to_the_bucket_of_their_utc_year_never_before_the_first() {
        let id = JobId(uuid::Uuid::from_u128(1));
        let attributes = |t| list_attributes(&JobListKey::of(t, id));
        let [(_, pk), (_, sk)] = attributes(datetime!(2027-01-01 08:59:59 +09:00));
        assert_eq!(pk, s("JOBS#2026"), "still 2026 in UTC");
        assert_eq!(sk, s("2026-12-31T23:59:59.000Z#00000000-0000-0000-0000-000000000001"));
        let [(_, pk), _] = attributes(datetime!(2027-01-01 00:00:00 UTC));
        assert_eq!(pk, s("JOBS#2027"));
        let [(_, pk), _] = attributes(datetime!(1970-01-01 00:00:00 UTC));
        assert_eq!(pk, s("JOBS#2026"));
    }
}
