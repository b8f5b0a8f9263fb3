//! The capacity model's item sizes ([`crate::domain::capacity`]) checked
//! against the items this adapter writes, measured by [`item_bytes`]: the
//! model has no size rule of its own that could drift from what is sent.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::items::{item_bytes, job_to_item, ledger_entry, n, reversal_entry, rfc3339, use_entry, use_from_item};
use super::job_list::{list_entry, list_entry_units};
use crate::domain::accrual::sample as accrual;
use crate::domain::audit::{iam_sample, MAX_FIELD_CHARS};
use crate::domain::capacity;
use crate::domain::history::key_time;
use crate::domain::reversal::{ReversalKind, ReversalRecord};
use crate::domain::uses::Use;
use crate::domain::{JobId, MessageRef, NewJob};

#[test]
fn the_capacity_model_sizes_ledger_entries_as_written() {
    let by = MessageRef {
        job_id: JobId(uuid::Uuid::from_u128(99)),
        seq: 12_345,
    };
    let mut a = accrual(1, 2, "PT1");
    a.reason = Some("spring campaign".into());
    let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
    assert_eq!(item_bytes(&item), capacity::ledger_entry_bytes(&a, by));
    a.reason = None;
    let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
    assert_eq!(item_bytes(&item), capacity::ledger_entry_bytes(&a, by));
    a.apply_at =
        Some(OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap() + time::Duration::nanoseconds(123_456_789));
    a.expires_at = Some(OffsetDateTime::from_unix_timestamp(1_827_619_200).unwrap() + time::Duration::nanoseconds(1));
    let item = ledger_entry(by, &a, "2026-11-26T02:12:31.123456789Z", "2026-11-26T02:12:31.123Z");
    assert_eq!(item_bytes(&item), capacity::ledger_entry_bytes(&a, by));
}

#[test]
fn the_capacity_model_sizes_use_entries_as_written() {
    let mut u = Use {
        use_id: "order-42".into(),
        member_id: "m0000001".into(),
        point_type: "PT".into(),
        amount: 1500,
        reason: Some("checkout".into()),
    };
    let plain = HashMap::from([("balance".to_owned(), n(u.amount))]);
    let item = use_entry(
        &u,
        None,
        None,
        &plain,
        "2026-11-26T02:12:31.123456789Z",
        "2026-11-26T02:12:31.123Z",
    );
    assert_eq!(item_bytes(&item), capacity::use_entry_bytes(&u, None, None));
    let by = MessageRef {
        job_id: JobId::random(),
        seq: 1234,
    };
    let item = use_entry(
        &u,
        Some(by),
        None,
        &plain,
        "2026-11-26T02:12:31.123456789Z",
        "2026-11-26T02:12:31.123Z",
    );
    assert_eq!(item_bytes(&item), capacity::use_entry_bytes(&u, Some(by), None));
    u.reason = None;
    let item = use_entry(
        &u,
        None,
        None,
        &plain,
        "2026-11-26T02:12:31.123456789Z",
        "2026-11-26T02:12:31.123Z",
    );
    assert_eq!(item_bytes(&item), capacity::use_entry_bytes(&u, None, None));
    let record = use_from_item(&item).unwrap();
    assert!(record.matches(&u));
}

/// A single use's audit is part of its entry, as the model counts it, for
/// a short and the longest ARN.
#[test]
fn the_capacity_model_sizes_audited_use_entries_as_written() {
    let u = Use {
        use_id: "order-42".into(),
        member_id: "m0000001".into(),
        point_type: "PT".into(),
        amount: 1500,
        reason: Some("checkout".into()),
    };
    let plain = HashMap::from([("balance".to_owned(), n(u.amount))]);
    for arn in [60, 200, MAX_FIELD_CHARS] {
        let audit = iam_sample(arn);
        let item = use_entry(
            &u,
            None,
            Some(&audit),
            &plain,
            "2026-11-26T02:12:31.123456789Z",
            "2026-11-26T02:12:31.123Z",
        );
        assert_eq!(
            item_bytes(&item),
            capacity::use_entry_bytes(&u, None, Some(&audit)),
            "ARN of {arn}"
        );
        assert_eq!(use_from_item(&item).unwrap().audit, Some(audit));
    }
}

/// A job item (its source and audit included) and its keys-only
/// `job_list` index entry, as the model sizes them.
#[test]
fn the_capacity_model_sizes_job_items_and_their_list_entries_as_written() {
    let mut job = NewJob {
        job_id: JobId(uuid::Uuid::from_u128(12_345)),
        request_hash: "f".repeat(64),
        total: 123_456,
        deduplicated: 7,
        messages: 247,
        source: None,
        reading: false,
        created_at: OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap()
            + time::Duration::nanoseconds(120_000_000),
        audit: None,
    };
    for audit in [None, Some(iam_sample(200)), Some(iam_sample(MAX_FIELD_CHARS))] {
        job.audit = audit;
        let item = job_to_item(&job);
        assert_eq!(item_bytes(&item), capacity::job_item_bytes(&job));
        assert_eq!(item_bytes(&list_entry(&item)), capacity::job_list_entry_bytes(&job));
        assert_eq!(list_entry_units(&item), capacity::job_list_entry_units(&job));
    }
    job.source = Some("s3://pointflow-imports/imports/spring.csv".into());
    job.reading = true;
    job.created_at = OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap();
    let item = job_to_item(&job);
    assert_eq!(item_bytes(&item), capacity::job_item_bytes(&job));
    assert_eq!(item_bytes(&list_entry(&item)), capacity::job_list_entry_bytes(&job));
}

/// A reversal's history entry with its audit, and what its mark adds to
/// the entry it reverses, as the model sizes them.
#[test]
fn the_capacity_model_sizes_reversal_entries_as_written() {
    let now = OffsetDateTime::from_unix_timestamp(1_796_083_200).unwrap() + time::Duration::nanoseconds(123_456_789);
    for (kind, audit) in [
        (ReversalKind::Accrual, None),
        (ReversalKind::Use, Some(iam_sample(200))),
        (ReversalKind::Accrual, Some(iam_sample(MAX_FIELD_CHARS))),
    ] {
        let record = ReversalRecord {
            kind,
            id: "order-2026-0001".into(),
            member_id: "m0000001".into(),
            point_type: "POINTS".into(),
            amount: 600,
            reversed_at: now,
            audit,
        };
        let item = reversal_entry(&record, &rfc3339(now), &key_time(now));
        assert_eq!(item_bytes(&item), capacity::reversal_entry_bytes(&record), "{kind:?}");
        let added = HashMap::from([("reversed_at".to_owned(), super::items::s(rfc3339(now)))]);
        let audit_bytes = capacity::audit_bytes("reversal_audit", record.audit.as_ref());
        assert_eq!(
            item_bytes(&added) + audit_bytes,
            capacity::reversal_mark_bytes(now, record.audit.as_ref())
        );
    }
}
