//! Ids of accruals sent without one by `pointflow submit`, derived from what
//! the accrual *is* rather than from where it sat in a request (id scheme
//! `v2`).
//!
//! An id is `v2:<campaign>:<content>`: `<campaign>` is the UUIDv5 of the
//! campaign name the user chose, `<content>` the UUIDv5 (in the campaign's
//! namespace) of the accrual's canonical content (member, point type,
//! amount, reason, apply and expiry times) and its occurrence number: the
//! n-th line with that content in the campaign is occurrence n. So
//! re-chunking a file, fixing a bad line, or sending the file from another
//! path never changes the id of a line already sent, and a rerun credits
//! only what is new; two identical lines are still two credits (occurrence
//! 1 and 2), as the API treats identical items without ids.
//!
//! A dropped file (S3 → `csv-import`) uses the same ids: its campaign is
//! its `campaign` metadata, else its key ([`campaign_of_object`]), and the
//! occurrence table travels from chunk to chunk ([`ContentIds::encode_counts`],
//! [`ContentIds::add_counts`]), so a file and `pointflow submit` of the
//! same rows in the same campaign are the same accruals.
//!
//! Scheme v1 (before this module) derived the ids from each request's
//! `Idempotency-Key`, itself a hash of the chunk's body and position (and a
//! dropped file's from its bucket, key, ETag and line): a v1 run resumed
//! with v2 credits its lines again, since the ids differ.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::Accrual;

/// The version tag every derived id starts with.
pub const SCHEME: &str = "v2";

/// Namespace of campaign UUIDs (UUIDv5 of the campaign name).
const CAMPAIGN_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f_4c4e_8a1d_4b5e_9f0a_3c2b_7d61_a005);

/// The canonical bytes of an accrual's content and occurrence: every field
/// length-prefixed (so no two contents share an encoding) and times as
/// Unix nanoseconds (so `Z` and `+00:00` spell the same accrual).
fn canonical_content(accrual: &Accrual, occurrence: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(accrual.member_id.as_bytes());
    field(accrual.point_type.as_bytes());
    field(&accrual.amount.to_be_bytes());
    match &accrual.reason {
        Some(reason) => field(format!("+{reason}").as_bytes()),
        None => field(b"-"),
    }
    for time in [accrual.apply_at, accrual.expires_at] {
        match time {
            Some(t) => field(&t.unix_timestamp_nanos().to_be_bytes()),
            None => field(b""),
        }
    }
    field(&occurrence.to_be_bytes());
    out
}

/// Bytes of one entry of an encoded occurrence table: the content's 16-byte
/// digest and its 4-byte count, big-endian.
pub const COUNT_ENTRY_BYTES: usize = 20;

/// An encoded occurrence table that is not a whole number of entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an occurrence table of {0} bytes is not a whole number of {COUNT_ENTRY_BYTES}-byte entries")]
pub struct CorruptCounts(pub usize);

/// The key of a content in the occurrence table: the first 16 bytes of the
/// SHA-256 of its canonical bytes. A byte array rather than a `u128` so an
/// entry takes 20 bytes, not 32 (a `u128` is 16-byte aligned).
type ContentKey = [u8; 16];

/// Derives the ids of one campaign's accruals, counting repeated content.
///
/// Memory: one 16-byte digest and a 4-byte counter per distinct content
/// seen, about 42 bytes each in the hash table at its fullest.
#[derive(Debug, Clone)]
pub struct ContentIds {
    campaign: Uuid,
    /// Digest of content (without occurrence) → occurrences seen so far.
    seen: HashMap<ContentKey, u32>,
}

impl ContentIds {
    /// Ids of the campaign `campaign` (the name the user gave it).
    pub fn new(campaign: &str) -> Self {
        ContentIds {
            campaign: Uuid::new_v5(&CAMPAIGN_NAMESPACE, campaign.as_bytes()),
            seen: HashMap::new(),
        }
    }

    /// The id of the next line with `accrual`'s content (its `accrual_id`
    /// is ignored): occurrence 1 the first time, 2 the second…
    pub fn next_id(&mut self, accrual: &Accrual) -> String {
        let count = self.seen.entry(content_key(accrual)).or_insert(0);
        *count = count.saturating_add(1);
        let occurrence = *count;
        self.id(accrual, occurrence)
    }

    /// [`ContentIds::next_id`], unless `accrual`'s content is new and the
    /// table already counts `limit` distinct contents: then `None`, and
    /// nothing is counted. Bounds the memory of a reader that cannot hold
    /// every content (a file's importer); the ids it does give are those
    /// of an unbounded table.
    pub fn next_id_within(&mut self, accrual: &Accrual, limit: usize) -> Option<String> {
        let key = content_key(accrual);
        if self.seen.len() >= limit && !self.seen.contains_key(&key) {
            return None;
        }
        let count = self.seen.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        let occurrence = *count;
        Some(self.id(accrual, occurrence))
    }

    /// Distinct contents counted so far.
    pub fn distinct(&self) -> usize {
        self.seen.len()
    }

    /// The occurrence table, for a reader that goes on where this one
    /// stopped: [`COUNT_ENTRY_BYTES`] per distinct content, in no
    /// particular order ([`ContentIds::add_counts`] does not need one).
    pub fn encode_counts(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.seen.len() * COUNT_ENTRY_BYTES);
        for (key, count) in &self.seen {
            out.extend_from_slice(key);
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    /// Adds counts encoded by [`ContentIds::encode_counts`]; a table may be
    /// fed in pieces, each a whole number of entries.
    pub fn add_counts(&mut self, entries: &[u8]) -> Result<(), CorruptCounts> {
        if entries.len() % COUNT_ENTRY_BYTES != 0 {
            return Err(CorruptCounts(entries.len()));
        }
        self.seen.reserve(entries.len() / COUNT_ENTRY_BYTES);
        for entry in entries.chunks_exact(COUNT_ENTRY_BYTES) {
            let mut key = [0u8; 16];
            key.copy_from_slice(&entry[..16]);
            let mut count = [0u8; 4];
            count.copy_from_slice(&entry[16..]);
            let slot = self.seen.entry(key).or_insert(0);
            *slot = slot.saturating_add(u32::from_be_bytes(count));
        }
        Ok(())
    }

    /// The id of occurrence `occurrence` (1-based) of `accrual`'s content.
    pub fn id(&self, accrual: &Accrual, occurrence: u32) -> String {
        let content = Uuid::new_v5(&self.campaign, &canonical_content(accrual, occurrence));
        format!("{SCHEME}:{}:{content}", self.campaign)
    }
}

/// The key of an accrual's content in the occurrence table.
fn content_key(accrual: &Accrual) -> ContentKey {
    let digest = Sha256::digest(canonical_content(accrual, 0));
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The campaign of a file dropped in the bucket: its `campaign` user
/// metadata (`x-amz-meta-campaign`), trimmed, when set; else its key,
/// prefix included (`imports/2026/spring.csv`), so files of the same name
/// in different folders are different campaigns. The bucket is left out:
/// the same file in another bucket of the stack is the same campaign.
pub fn campaign_of_object(key: &str, metadata: Option<&str>) -> String {
    match metadata.map(str::trim).filter(|c| !c.is_empty()) {
        Some(campaign) => campaign.to_owned(),
        None => key.to_owned(),
    }
}

/// The campaign a file names by default: its file name without folders,
/// up to the first `.` (`imports/spring-2026.fixed.csv` → `spring-2026`).
/// `None` when that leaves nothing (`-`, `.csv`).
pub fn campaign_from_file_name(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or("");
    (!stem.is_empty() && stem != "-").then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::check_accrual_id;
    use time::macros::datetime;

    fn accrual(member: &str, amount: u64) -> Accrual {
        Accrual {
            accrual_id: String::new(),
            member_id: member.into(),
            point_type: "P".into(),
            amount,
            reason: Some("spring".into()),
            apply_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn ids_follow_campaign_content_and_occurrence_only() {
        let mut a = ContentIds::new("spring");
        let first = a.next_id(&accrual("m-1", 10));
        let other = a.next_id(&accrual("m-2", 10));
        let second = a.next_id(&accrual("m-1", 10));
        assert_ne!(first, second, "identical lines are two accruals");
        assert_ne!(first, other);
        let mut b = ContentIds::new("spring");
        assert_eq!(b.next_id(&accrual("m-1", 10)), first, "position does not matter");
        assert_eq!(b.next_id(&accrual("m-1", 10)), second);
        assert_ne!(ContentIds::new("autumn").next_id(&accrual("m-1", 10)), first);
        let mut explicit_id = accrual("m-1", 10);
        explicit_id.accrual_id = "ignored".into();
        assert_eq!(ContentIds::new("spring").next_id(&explicit_id), first);
        assert!(first.starts_with("v2:"), "{first}");
        assert!(check_accrual_id(&first).is_ok(), "{first}");
    }

    #[test]
    fn every_field_of_the_content_counts_and_time_spelling_does_not() {
        let ids = ContentIds::new("c");
        let base = accrual("m-1", 10);
        let id = |a: &Accrual| ids.id(a, 1);
        let mut variants = vec![base.clone(); 6];
        variants[0].member_id = "m-2".into();
        variants[1].point_type = "Q".into();
        variants[2].amount = 11;
        variants[3].reason = None;
        variants[4].apply_at = Some(datetime!(2026-01-01 00:00 UTC));
        variants[5].expires_at = Some(datetime!(2026-01-01 00:00 UTC));
        for v in &variants {
            assert_ne!(id(v), id(&base), "{v:?}");
        }
        let mut empty_reason = base.clone();
        empty_reason.reason = Some(String::new());
        assert_ne!(
            id(&empty_reason),
            id(&variants[3]),
            "an empty reason is not an absent one"
        );
        let mut offset = variants[4].clone();
        offset.apply_at = Some(datetime!(2026-01-01 01:00 +01:00));
        assert_eq!(id(&offset), id(&variants[4]));
    }

    #[test]
    fn counts_carried_to_another_reader_continue_the_occurrences() {
        let mut one_pass = ContentIds::new("spring");
        let ids: Vec<String> = [1, 2, 1, 1, 2]
            .iter()
            .map(|m| one_pass.next_id(&accrual(&format!("m-{m}"), 5)))
            .collect();
        let mut first = ContentIds::new("spring");
        first.next_id(&accrual("m-1", 5));
        first.next_id(&accrual("m-2", 5));
        let table = first.encode_counts();
        assert_eq!(table.len(), 2 * COUNT_ENTRY_BYTES);
        let mut second = ContentIds::new("spring");
        second.add_counts(&table[..COUNT_ENTRY_BYTES]).unwrap();
        second.add_counts(&table[COUNT_ENTRY_BYTES..]).unwrap();
        assert_eq!(second.distinct(), 2);
        let rest: Vec<String> = [1, 1, 2]
            .iter()
            .map(|m| second.next_id(&accrual(&format!("m-{m}"), 5)))
            .collect();
        assert_eq!(rest, ids[2..]);
        assert_eq!(second.add_counts(&[0; 7]), Err(CorruptCounts(7)));
    }

    #[test]
    fn a_full_table_refuses_new_content_only() {
        let mut ids = ContentIds::new("c");
        let first = ids.next_id_within(&accrual("m-1", 1), 1).unwrap();
        assert_eq!(ids.next_id_within(&accrual("m-2", 1), 1), None);
        let second = ids.next_id_within(&accrual("m-1", 1), 1).unwrap();
        assert_ne!(first, second);
        assert_eq!(ids.distinct(), 1);
        let mut unbounded = ContentIds::new("c");
        assert_eq!(unbounded.next_id(&accrual("m-1", 1)), first);
        assert_eq!(unbounded.next_id(&accrual("m-1", 1)), second);
    }

    #[test]
    fn a_dropped_file_is_its_metadata_campaign_or_its_key() {
        assert_eq!(
            campaign_of_object("imports/a/spring.csv", Some(" spring-2026 ")),
            "spring-2026"
        );
        assert_eq!(
            campaign_of_object("imports/a/spring.csv", Some(" ")),
            "imports/a/spring.csv"
        );
        assert_eq!(campaign_of_object("imports/a/spring.csv", None), "imports/a/spring.csv");
    }

    #[test]
    fn a_file_names_its_campaign_by_its_stem() {
        assert_eq!(
            campaign_from_file_name("imports/spring-2026.csv").as_deref(),
            Some("spring-2026")
        );
        assert_eq!(
            campaign_from_file_name("spring-2026.fixed.csv").as_deref(),
            Some("spring-2026")
        );
        assert_eq!(
            campaign_from_file_name("C:\\data\\spring.ndjson").as_deref(),
            Some("spring")
        );
        assert_eq!(campaign_from_file_name("-"), None);
        assert_eq!(campaign_from_file_name("dir/.csv"), None);
    }
}
