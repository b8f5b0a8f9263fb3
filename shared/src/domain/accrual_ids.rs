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
//! Scheme v1 (before this module) derived the ids from each request's
//! `Idempotency-Key`, itself a hash of the chunk's body and position: a v1
//! run resumed with v2 credits its lines again, since the ids differ.

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

/// Derives the ids of one campaign's accruals, counting repeated content.
///
/// Memory: one 16-byte digest and a counter per distinct content seen.
pub struct ContentIds {
    campaign: Uuid,
    /// Digest of content (without occurrence) → occurrences seen so far.
    seen: HashMap<u128, u32>,
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
        let digest = Sha256::digest(canonical_content(accrual, 0));
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let count = self.seen.entry(u128::from_be_bytes(key)).or_insert(0);
        *count = count.saturating_add(1);
        let occurrence = *count;
        self.id(accrual, occurrence)
    }

    /// The id of occurrence `occurrence` (1-based) of `accrual`'s content.
    pub fn id(&self, accrual: &Accrual, occurrence: u32) -> String {
        let content = Uuid::new_v5(&self.campaign, &canonical_content(accrual, occurrence));
        format!("{SCHEME}:{}:{content}", self.campaign)
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
