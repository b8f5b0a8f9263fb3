//! Packing accruals into queue messages.
//!
//! Fewer, fuller messages mean fewer SQS requests and fewer worker
//! invocations; keeping a member's accruals in one message lets the worker
//! sum them into a single balance update.

use crate::domain::accrual::MAX_ACCRUAL_ID_LEN;
use crate::domain::message::{Payload, QueueMessage};
use crate::domain::uses::Use;
use crate::domain::{Accrual, JobId};

/// SQS's largest message (1 MiB since 2025; a queue's `MaximumMessageSize`
/// ranges 1,024–1,048,576 bytes).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Smallest byte limit accepted: one maximal accrual (ids, point type and a
/// 256-character reason of 4-byte characters) plus the envelope fits.
pub const MIN_MESSAGE_BYTES: usize = 4_096;
/// The most accruals one message may carry: the message's marker keeps their
/// ids for a job cancel (up to [`MAX_ACCRUAL_ID_LEN`] bytes and a separator
/// each), and the marker is one DynamoDB item, at most 400 KB. 2,000 ids of
/// 129 bytes are 258,000 bytes, leaving room for the marker's other
/// attributes (docs/capacity-model.md).
pub const MAX_ACCRUALS_PER_MESSAGE: usize = 2_000;

// The marker's ids at the limit stay under two thirds of a 400 KB item.
const _: () = assert!(MAX_ACCRUALS_PER_MESSAGE * (MAX_ACCRUAL_ID_LEN + 1) < 400 * 1024 * 2 / 3);

/// Bytes of a message that are not accruals:
/// `{"job_id":"<36>","seq":<=10>,"accruals":[],"queued_at":"<RFC 3339, ms>"}`
/// (79 + 40), rounded up.
const ENVELOPE_BYTES: usize = 128;

/// How full a message may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackingLimits {
    /// At most this many accruals per message.
    pub max_accruals: usize,
    /// At most this many bytes of body per message.
    pub max_bytes: usize,
}

impl Default for PackingLimits {
    /// 500 accruals or 256 KiB, whichever comes first: a quarter of SQS's
    /// maximum, so a full SendMessageBatch (≤ 1 MiB in total) carries four
    /// messages, and one message is a few DynamoDB transactions of work.
    fn default() -> Self {
        PackingLimits {
            max_accruals: 500,
            max_bytes: 262_144,
        }
    }
}

/// A limit outside what SQS and the packer support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackingLimitsError {
    #[error("max_accruals must be at least 1")]
    NoAccruals,
    #[error("max_accruals must be at most {MAX_ACCRUALS_PER_MESSAGE} (a message's marker keeps its accrual ids within DynamoDB's 400 KB item size), got {0}")]
    TooManyAccruals(usize),
    #[error("max_bytes must be between {MIN_MESSAGE_BYTES} and {SQS_MAX_MESSAGE_BYTES}, got {0}")]
    Bytes(usize),
}

impl PackingLimits {
    /// Checks the limits against SQS's message size.
    pub fn validate(self) -> Result<Self, PackingLimitsError> {
        if self.max_accruals == 0 {
            return Err(PackingLimitsError::NoAccruals);
        }
        if self.max_accruals > MAX_ACCRUALS_PER_MESSAGE {
            return Err(PackingLimitsError::TooManyAccruals(self.max_accruals));
        }
        if !(MIN_MESSAGE_BYTES..=SQS_MAX_MESSAGE_BYTES).contains(&self.max_bytes) {
            return Err(PackingLimitsError::Bytes(self.max_bytes));
        }
        Ok(self)
    }
}

fn encoded_len(accrual: &Accrual) -> usize {
    // Serialising plain strings and integers cannot fail; +1 for the comma.
    serde_json::to_vec(accrual).map_or(0, |v| v.len()) + 1
}

/// Packs `accruals` into messages of `job_id` numbered from 0, within `limits`.
///
/// Accruals are grouped by member (stable within a member), and a member's
/// group moves whole to the next message when it would not fit in the current
/// one, so a member is split across messages only when its accruals alone
/// exceed a message.
pub fn pack_accruals(job_id: JobId, mut accruals: Vec<Accrual>, limits: PackingLimits) -> Vec<QueueMessage> {
    accruals.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let budget = limits.max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut messages: Vec<QueueMessage> = Vec::new();
    let mut current: Vec<Accrual> = Vec::new();
    let mut current_bytes = 0usize;

    let mut seal = |current: &mut Vec<Accrual>, current_bytes: &mut usize| {
        if !current.is_empty() {
            messages.push(QueueMessage::new(
                job_id,
                // A request holds at most a few hundred thousand accruals, so
                // the message count is far below u32::MAX.
                u32::try_from(messages.len()).unwrap_or(u32::MAX),
                Payload::Accruals(std::mem::take(current)),
            ));
            *current_bytes = 0;
        }
    };

    let mut rest = accruals.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while rest.peek().is_some_and(|next| next.member_id == group[0].member_id) {
            group.extend(rest.next());
        }
        let sizes: Vec<usize> = group.iter().map(encoded_len).collect();
        let group_bytes: usize = sizes.iter().sum();
        let fits = |count: usize, bytes: usize| count <= limits.max_accruals && bytes <= budget;
        if !fits(current.len() + group.len(), current_bytes + group_bytes) && fits(group.len(), group_bytes) {
            seal(&mut current, &mut current_bytes);
        }
        for (accrual, size) in group.into_iter().zip(sizes) {
            if !fits(current.len() + 1, current_bytes + size) {
                seal(&mut current, &mut current_bytes);
            }
            current_bytes += size;
            current.push(accrual);
        }
    }
    seal(&mut current, &mut current_bytes);
    messages
}

/// At most this many uses per message: each use is a transaction of its
/// own (its balance condition cannot be shared), so a message of uses takes
/// the worker one round trip per use.
pub const MAX_USES_PER_MESSAGE: usize = 100;

/// Packs a bulk-use job's `uses` into messages of `job_id` numbered from 0,
/// in submission order (so a member's uses compete for points in the order
/// they were sent), within `limits` and [`MAX_USES_PER_MESSAGE`].
pub fn pack_uses(job_id: JobId, uses: Vec<Use>, limits: PackingLimits) -> Vec<QueueMessage> {
    let max = limits.max_accruals.clamp(1, MAX_USES_PER_MESSAGE);
    let budget = limits.max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut messages: Vec<QueueMessage> = Vec::new();
    let mut current: Vec<Use> = Vec::new();
    let mut current_bytes = 0usize;
    for u in uses {
        // Serialising plain strings and integers cannot fail; +1 for the comma.
        let size = serde_json::to_vec(&u).map_or(0, |v| v.len()) + 1;
        if !current.is_empty() && (current.len() == max || current_bytes + size > budget) {
            messages.push(uses_message(job_id, messages.len(), std::mem::take(&mut current)));
            current_bytes = 0;
        }
        current_bytes += size;
        current.push(u);
    }
    if !current.is_empty() {
        messages.push(uses_message(job_id, messages.len(), current));
    }
    messages
}

fn uses_message(job_id: JobId, seq: usize, uses: Vec<Use>) -> QueueMessage {
    // A request holds at most a few hundred thousand uses.
    QueueMessage::new(job_id, u32::try_from(seq).unwrap_or(u32::MAX), Payload::Uses(uses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn accrual(id: usize, member: usize) -> Accrual {
        Accrual {
            accrual_id: format!("acc-{id}"),
            member_id: format!("m-{member}"),
            point_type: "WELCOME".into(),
            amount: 10,
            reason: Some("welcome campaign".into()),
            apply_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn respects_count_limit_and_numbers_messages() {
        let accruals: Vec<Accrual> = (0..25).map(|i| accrual(i, i)).collect();
        let limits = PackingLimits {
            max_accruals: 10,
            max_bytes: 262_144,
        };
        let msgs = pack_accruals(JobId::random(), accruals, limits);
        assert_eq!(msgs.iter().map(|m| m.accruals().len()).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn keeps_a_member_in_one_message_when_it_fits() {
        // members 0..3 with 4 accruals each; 10 per message → groups move whole.
        let accruals: Vec<Accrual> = (0..12).map(|i| accrual(i, i % 3)).collect();
        let limits = PackingLimits {
            max_accruals: 10,
            max_bytes: 262_144,
        };
        let msgs = pack_accruals(JobId::random(), accruals, limits);
        assert_eq!(msgs.iter().map(|m| m.accruals().len()).collect::<Vec<_>>(), [8, 4]);
        for m in &msgs {
            let members: HashSet<_> = m.accruals().iter().map(|a| &a.member_id).collect();
            for member in members {
                let elsewhere = msgs
                    .iter()
                    .filter(|o| o.seq != m.seq)
                    .any(|o| o.accruals().iter().any(|a| &a.member_id == member));
                assert!(!elsewhere, "{member} split across messages");
            }
        }
    }

    #[test]
    fn splits_a_member_larger_than_a_message() {
        let accruals: Vec<Accrual> = (0..25).map(|i| accrual(i, 7)).collect();
        let limits = PackingLimits {
            max_accruals: 10,
            max_bytes: 262_144,
        };
        let msgs = pack_accruals(JobId::random(), accruals, limits);
        assert_eq!(msgs.iter().map(|m| m.accruals().len()).collect::<Vec<_>>(), [10, 10, 5]);
    }

    #[test]
    fn limits_are_checked_against_sqs() {
        assert!(PackingLimits::default().validate().is_ok());
        assert!(PackingLimits {
            max_accruals: 0,
            max_bytes: 8192
        }
        .validate()
        .is_err());
        assert!(PackingLimits {
            max_accruals: 1,
            max_bytes: SQS_MAX_MESSAGE_BYTES + 1
        }
        .validate()
        .is_err());
    }

    /// The template allowed 10,000 accruals per message: their marker, which
    /// keeps every id, would pass DynamoDB's 400 KB item size and fail every
    /// fold of such a message.
    #[test]
    fn a_full_message_marker_fits_an_item() {
        use crate::domain::capacity::{MAX_ITEM_BYTES, MESSAGE_MARKER_BYTES};
        let limits = |max_accruals| PackingLimits {
            max_accruals,
            max_bytes: SQS_MAX_MESSAGE_BYTES,
        };
        let marker = |accruals: usize| MESSAGE_MARKER_BYTES + accruals * (MAX_ACCRUAL_ID_LEN + 1);
        assert!(limits(MAX_ACCRUALS_PER_MESSAGE).validate().is_ok());
        assert!(marker(MAX_ACCRUALS_PER_MESSAGE) < MAX_ITEM_BYTES * 2 / 3);
        assert!(marker(10_000) > MAX_ITEM_BYTES);
        assert_eq!(
            limits(10_000).validate(),
            Err(PackingLimitsError::TooManyAccruals(10_000))
        );
    }

    proptest! {
        #[test]
        fn every_accrual_lands_in_exactly_one_message_within_limits(
            members in proptest::collection::vec(0usize..40, 1..400),
            max_accruals in 1usize..60,
            max_bytes in MIN_MESSAGE_BYTES..20_000,
        ) {
            let accruals: Vec<Accrual> = members.iter().enumerate().map(|(i, m)| accrual(i, *m)).collect();
            let limits = PackingLimits { max_accruals, max_bytes };
            let msgs = pack_accruals(JobId::random(), accruals.clone(), limits);
            let mut seen: Vec<String> = msgs.iter().flat_map(|m| m.accruals().iter().map(|a| a.accrual_id.clone())).collect();
            seen.sort();
            let mut expected: Vec<String> = accruals.iter().map(|a| a.accrual_id.clone()).collect();
            expected.sort();
            prop_assert_eq!(seen, expected);
            for m in &msgs {
                prop_assert!(!m.accruals().is_empty());
                prop_assert!(m.accruals().len() <= max_accruals);
                prop_assert!(m.encode().len() <= max_bytes, "{} > {}", m.encode().len(), max_bytes);
            }
        }
    }

    #[test]
    fn uses_keep_their_order_and_the_per_message_cap() {
        let job = JobId::random();
        let uses: Vec<Use> = (0..250)
            .map(|i| Use {
                use_id: format!("u{i}"),
                member_id: format!("m{}", i % 7),
                point_type: "P".into(),
                amount: 1,
                reason: None,
            })
            .collect();
        let messages = pack_uses(job, uses.clone(), PackingLimits::default());
        assert_eq!(
            messages.iter().map(|m| m.uses().len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(messages
            .iter()
            .enumerate()
            .all(|(i, m)| m.seq as usize == i && m.accruals().is_empty()));
        let flat: Vec<Use> = messages.into_iter().flat_map(|m| m.uses().to_vec()).collect();
        assert_eq!(flat, uses);
        let small = PackingLimits {
            max_accruals: 500,
            max_bytes: MIN_MESSAGE_BYTES,
        };
        for m in pack_uses(job, flat, small) {
            assert!(m.encode().len() <= MIN_MESSAGE_BYTES, "{}", m.encode().len());
        }
    }
}
