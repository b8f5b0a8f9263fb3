//! Property: whatever the order of deliveries, redeliveries, crashes halfway
//! through a message and overlapping jobs, every balance ends equal to the
//! sum of the distinct accruals, and every job's counts add up.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pointflow::domain::{Accrual, JobId, JobStatus, NewJob};
use pointflow::packing::{pack_accruals, PackingLimits};
use pointflow::submission::fingerprint;
use pointflow::worker::{IncomingMessage, Worker, WorkerSettings};
use pointflow_tests::backend;
use proptest::prelude::*;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
enum Step {
    /// Deliver message `i` (modulo the message count) to the worker.
    Deliver(usize),
    /// Apply the first `k` accruals of message `i`, then "crash" before the
    /// message is folded into its job.
    Crash(usize, usize),
}

fn universe() -> impl Strategy<Value = Vec<Accrual>> {
    proptest::collection::vec((0usize..6, 0usize..2, 1u64..100), 1..40).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (member, point_type, amount))| Accrual {
                accrual_id: format!("acc-{i}"),
                member_id: format!("m{member}"),
                point_type: ["WELCOME", "BONUS"][point_type].into(),
                amount,
                reason: None,
                apply_at: None,
                expires_at: None,
            })
            .collect()
    })
}

fn scenario() -> impl Strategy<Value = (Vec<Accrual>, Vec<Vec<bool>>, usize, Vec<Step>)> {
    universe().prop_flat_map(|accruals| {
        let n = accruals.len();
        (
            Just(accruals),
            // Which accruals each of two jobs carries (they may overlap).
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), 2),
            1usize..6,
            proptest::collection::vec(
                prop_oneof![
                    (0usize..64).prop_map(Step::Deliver),
                    (0usize..64, 0usize..6).prop_map(|(i, k)| Step::Crash(i, k)),
                ],
                0..30,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_history_applies_each_accrual_exactly_once(
        (accruals, membership, per_message, steps) in scenario()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let b = backend::memory(Duration::from_secs(30), 3);
            let worker = Worker::new(b.ledger.clone(), b.jobs.clone(), WorkerSettings::default());
            let limits = PackingLimits { max_accruals: per_message, max_bytes: 262_144 };

            let mut messages = Vec::new();
            let mut jobs = Vec::new();
            for picks in &membership {
                let mine: Vec<Accrual> = accruals.iter().zip(picks).filter(|(_, p)| **p).map(|(a, _)| a.clone()).collect();
                if mine.is_empty() {
                    continue;
                }
                let job_id = JobId::random();
                let packed = pack_accruals(job_id, mine.clone(), limits);
                b.jobs.create_job(&NewJob {
                    job_id,
                    request_hash: fingerprint(&mine),
                    total: mine.len() as u64,
                    deduplicated: 0,
                    messages: packed.len() as u64,
                    source: None,
                    reading: false,
                    created_at: OffsetDateTime::now_utc(),
                }).await.unwrap();
                jobs.push((job_id, mine.len() as u64));
                messages.extend(packed);
            }
            if messages.is_empty() {
                return;
            }
            let deliver = |i: usize, count: u32| IncomingMessage {
                message_id: format!("msg-{i}"),
                body: messages[i].encode(),
                receive_count: count,
            };
            for step in &steps {
                match step {
                    Step::Deliver(i) => {
                        let i = i % messages.len();
                        worker.process_message(&deliver(i, 1)).await.unwrap();
                    }
                    Step::Crash(i, k) => {
                        let m = &messages[i % messages.len()];
                        let k = (*k).min(m.accruals.len());
                        b.ledger.apply_accruals(pointflow::domain::MessageRef { job_id: m.job_id, seq: m.seq }, &m.accruals[..k], OffsetDateTime::now_utc()).await.unwrap();
                    }
                }
            }
            // SQS keeps redelivering until a delivery succeeds.
            for i in 0..messages.len() {
                worker.process_message(&deliver(i, 2)).await.unwrap();
            }

            let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
            let mut distinct = HashSet::new();
            for (a, picks) in accruals.iter().enumerate().map(|(i, a)| (a, membership.iter().map(move |m| m[i]))) {
                if picks.into_iter().any(|p| p) && distinct.insert(a.accrual_id.clone()) {
                    *expected.entry((a.member_id.clone(), a.point_type.clone())).or_default() += a.amount;
                }
            }
            for member in 0..6 {
                let member = format!("m{member}");
                let actual: BTreeMap<(String, String), u64> = b.ledger.balances(&member).await.unwrap()
                    .into_iter().map(|bal| ((member.clone(), bal.point_type), bal.balance)).collect();
                let wanted: BTreeMap<(String, String), u64> = expected.iter()
                    .filter(|((m, _), _)| *m == member).map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(actual, wanted, "balances of {member}");
            }
            let mut applied_total = 0;
            for (job_id, total) in jobs {
                let job = b.jobs.get_job(job_id).await.unwrap().unwrap();
                assert_eq!(job.applied + job.duplicate, total, "job counts add up");
                assert_eq!(job.failed, 0);
                assert_eq!(job.status(), JobStatus::Completed);
                applied_total += job.applied;
            }
            assert_eq!(applied_total, distinct.len() as u64, "each distinct accrual applied by exactly one job");
        });
    }
}
