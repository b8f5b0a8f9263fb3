//! Property: whatever the order of deliveries, redeliveries, crashes halfway
//! through a message and overlapping jobs, every balance ends equal to the
//! sum of the distinct accruals, and every job's counts add up.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pointflow::domain::history::{EntryKind, HistoryQuery};
use pointflow::domain::packing::{pack_accruals, PackingLimits};
use pointflow::domain::submission::fingerprint;
use pointflow::domain::{Accrual, JobId, JobStatus, NewJob};
use pointflow::services::history::history_page;
use pointflow::services::worker::{IncomingMessage, Worker, WorkerSettings};
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
                    audit: None,
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
                        let k = (*k).min(m.accruals().len());
                        b.ledger.apply_accruals(pointflow::domain::MessageRef { job_id: m.job_id, seq: m.seq }, &m.accruals()[..k], OffsetDateTime::now_utc()).await.unwrap();
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

/// One step of a ledger history.
#[derive(Debug, Clone)]
enum LedgerStep {
    /// Credit accrual `i` of the pool (again, if it was: a redelivery).
    Credit(usize),
    /// Use `amount` points of member `m` under use id `id` (ids repeat: retries).
    Use { m: usize, amount: u64, id: usize },
    /// Let `days` pass.
    Advance(i64),
    /// Reverse accrual `i` of the pool.
    ReverseAccrual(usize),
    /// Reverse use id `id`.
    ReverseUse(usize),
}

/// An accrual of the pool: member, amount, `apply_at` in days from the
/// start, `expires_at` in days after that.
type PoolAccrual = (usize, u64, Option<i64>, Option<i64>);

fn lot_pool() -> impl Strategy<Value = Vec<PoolAccrual>> {
    proptest::collection::vec(
        (
            0usize..2,
            1u64..100,
            proptest::option::of(0i64..20),
            proptest::option::of(1i64..30),
        ),
        1..12,
    )
}

fn ledger_history() -> impl Strategy<Value = (Vec<PoolAccrual>, Vec<LedgerStep>)> {
    lot_pool().prop_flat_map(|pool| {
        let n = pool.len();
        (
            Just(pool),
            proptest::collection::vec(
                prop_oneof![
                    3 => (0..n).prop_map(LedgerStep::Credit),
                    2 => (0usize..2, 1u64..150, 0usize..6).prop_map(|(m, amount, id)| LedgerStep::Use { m, amount, id }),
                    1 => (1i64..15).prop_map(LedgerStep::Advance),
                    1 => (0..n).prop_map(LedgerStep::ReverseAccrual),
                    1 => (0usize..6).prop_map(LedgerStep::ReverseUse),
                ],
                1..40,
            ),
        )
    })
}

/// The model's use plan, written from the rule rather than taken from the
/// production planner it checks: of the lots that hold points and are
/// available at `now` (started: `from <= now`; not expired: no `until`, or
/// `now < until`), take from the one that expires soonest (never-expiring
/// last, ties by the earlier start) until `amount` is covered.
/// `Err(available)` when they hold less. (Pools here have at most 12 lots,
/// below the 50 one use may take.)
fn model_use_plan(
    lots: &BTreeMap<pointflow::domain::lots::LotKey, u64>,
    amount: u64,
    now: i64,
) -> Result<Vec<pointflow::domain::lots::Lot>, u64> {
    let mut open: Vec<(pointflow::domain::lots::LotKey, u64)> = lots
        .iter()
        .filter(|(key, held)| **held > 0 && key.from <= now && key.until.is_none_or(|until| now < until))
        .map(|(key, held)| (*key, *held))
        .collect();
    let available: u64 = open.iter().map(|(_, held)| held).sum();
    if available < amount {
        return Err(available);
    }
    let mut plan = Vec::new();
    let mut left = amount;
    while left > 0 {
        // The soonest-expiring open lot, by a plain scan.
        let mut best = 0;
        for (i, (key, _)) in open.iter().enumerate() {
            let (best_key, _) = open[best];
            let sooner = match (key.until, best_key.until) {
                (Some(a), Some(b)) => a < b || (a == b && key.from < best_key.from),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => key.from < best_key.from,
            };
            if sooner {
                best = i;
            }
        }
        let (key, held) = open.remove(best);
        let take = held.min(left);
        plan.push(pointflow::domain::lots::Lot { key, amount: take });
        left -= take;
    }
    Ok(plan)
}

/// Checks one store against a model of its lots through a whole history.
async fn check_ledger_history(b: &backend::Backend, pool: &[PoolAccrual], steps: &[LedgerStep]) {
    use pointflow::domain::lots::Lot;
    use pointflow::domain::reversal::{ReversalOutcome, ReversalTarget};
    use pointflow::domain::uses::{Use, UseOutcome};

    let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let tag = JobId::random();
    let member = |m: usize| format!("p{m}-{tag}");
    let accruals: Vec<Accrual> = pool
        .iter()
        .enumerate()
        .map(|(i, (m, amount, from, until))| Accrual {
            accrual_id: format!("{tag}-a{i}"),
            member_id: member(*m),
            point_type: "PT".into(),
            amount: *amount,
            reason: None,
            apply_at: from.map(|d| t0 + time::Duration::days(d)),
            expires_at: until.map(|d| t0 + time::Duration::days(from.unwrap_or(0) + d)),
        })
        .collect();
    // The model: each member's lots, its used total, and the uses applied.
    let mut lots: Vec<BTreeMap<pointflow::domain::lots::LotKey, u64>> = vec![BTreeMap::new(); 2];
    let mut used = [0u64; 2];
    let mut earned = [0u64; 2];
    // Points of expired lots that uses pruned.
    let mut pruned = [0u64; 2];
    let mut credited = HashSet::new();
    let mut reversed_accruals = HashSet::new();
    // use id → (member, amount, what it took, reversed)
    let mut uses: BTreeMap<usize, (usize, u64, Vec<Lot>, bool)> = BTreeMap::new();
    let mut now = t0;
    let by = pointflow::domain::MessageRef { job_id: tag, seq: 0 };
    for step in steps {
        match step {
            LedgerStep::Credit(i) => {
                let a = &accruals[*i];
                b.ledger.apply_accruals(by, std::slice::from_ref(a), now).await.unwrap();
                if credited.insert(*i) {
                    *lots[pool[*i].0].entry(a.lot()).or_default() += a.amount;
                    earned[pool[*i].0] += a.amount;
                }
            }
            LedgerStep::Use { m, amount, id } => {
                let u = Use {
                    use_id: format!("{tag}-u{id}"),
                    member_id: member(*m),
                    point_type: "PT".into(),
                    amount: *amount,
                    reason: None,
                };
                let outcome = b.ledger.apply_use(&u, now).await.unwrap();
                match uses.get(id) {
                    Some(&(um, ua, _, _)) if um == *m && ua == *amount => {
                        assert!(matches!(outcome, UseOutcome::Replayed(_)), "{outcome:?}");
                    }
                    Some(_) => assert!(matches!(outcome, UseOutcome::IdReused(_)), "{outcome:?}"),
                    None => match model_use_plan(&lots[*m], *amount, now.unix_timestamp()) {
                        Ok(plan) => {
                            assert!(matches!(outcome, UseOutcome::Applied(_)), "{outcome:?}");
                            for take in &plan {
                                *lots[*m].get_mut(&take.key).unwrap() -= take.amount;
                            }
                            // The use's write prunes every expired lot that
                            // still holds points (pools stay below the 25
                            // one use may prune).
                            let t = now.unix_timestamp();
                            for (key, held) in lots[*m].iter_mut() {
                                if key.until.is_some_and(|until| until <= t) {
                                    pruned[*m] += std::mem::take(held);
                                }
                            }
                            used[*m] += amount;
                            uses.insert(*id, (*m, *amount, plan, false));
                        }
                        Err(available) => assert_eq!(outcome, UseOutcome::Insufficient { available }),
                    },
                }
            }
            LedgerStep::Advance(days) => now += time::Duration::days(*days),
            LedgerStep::ReverseAccrual(i) => {
                let a = &accruals[*i];
                let outcome = b
                    .ledger
                    .reverse(&ReversalTarget::Accrual(a.accrual_id.clone()), now)
                    .await
                    .unwrap();
                let m = pool[*i].0;
                if !credited.contains(i) {
                    assert_eq!(outcome, ReversalOutcome::NotFound);
                } else if reversed_accruals.contains(i) {
                    assert!(matches!(outcome, ReversalOutcome::Replayed(_)), "{outcome:?}");
                } else {
                    let held = lots[m].get(&a.lot()).copied().unwrap_or(0);
                    if held < a.amount {
                        assert_eq!(outcome, ReversalOutcome::AlreadySpent { remaining: held });
                    } else {
                        assert!(matches!(outcome, ReversalOutcome::Reversed(_)), "{outcome:?}");
                        *lots[m].get_mut(&a.lot()).unwrap() -= a.amount;
                        earned[m] -= a.amount;
                        reversed_accruals.insert(*i);
                    }
                }
            }
            LedgerStep::ReverseUse(id) => {
                let outcome = b
                    .ledger
                    .reverse(&ReversalTarget::Use(format!("{tag}-u{id}")), now)
                    .await
                    .unwrap();
                match uses.get_mut(id) {
                    None => assert_eq!(outcome, ReversalOutcome::NotFound),
                    Some((_, _, _, true)) => assert!(matches!(outcome, ReversalOutcome::Replayed(_)), "{outcome:?}"),
                    Some((um, amount, plan, reversed)) => {
                        assert!(matches!(outcome, ReversalOutcome::Reversed(_)), "{outcome:?}");
                        for take in plan.iter() {
                            *lots[*um].entry(take.key).or_default() += take.amount;
                        }
                        used[*um] -= *amount;
                        *reversed = true;
                    }
                }
            }
        }
        for m in 0..2 {
            let sheets = b.ledger.balance_sheets(&member(m)).await.unwrap();
            let Some(sheet) = sheets.first() else {
                assert!(lots[m].values().all(|v| *v == 0) && used[m] == 0);
                continue;
            };
            let model: Vec<(pointflow::domain::lots::LotKey, u64)> =
                lots[m].iter().filter(|(_, v)| **v > 0).map(|(k, v)| (*k, *v)).collect();
            let stored: Vec<(pointflow::domain::lots::LotKey, u64)> =
                sheet.lots.iter().map(|l| (l.key, l.amount)).collect();
            assert_eq!(stored, model, "lots of member {m}");
            let v = sheet.view(now);
            // Every point earned so far is available, used or expired.
            assert_eq!(v.lifetime_earned, v.available + v.lifetime_used + v.expired, "{v:?}");
            assert_eq!(v.lifetime_used, used[m]);
            let t = now.unix_timestamp();
            let expired_lots: u64 = lots[m]
                .iter()
                .filter(|(key, _)| key.until.is_some_and(|until| until <= t))
                .map(|(_, held)| held)
                .sum();
            assert_eq!(v.expired, expired_lots + pruned[m], "expired of member {m}");
            // The history, read in pages, adds up to what the member holds.
            let mut query = HistoryQuery {
                point_type: None,
                cursor: None,
                limit: 7,
            };
            let mut entries = Vec::new();
            loop {
                let page = history_page(b.ledger.as_ref(), &member(m), &query, now).await.unwrap();
                entries.extend(page.entries);
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
            let sum: i64 = entries.iter().map(|e| e.amount).sum();
            assert_eq!(
                sum,
                (v.available + v.pending) as i64,
                "history of member {m}: {entries:?}"
            );
            let count = |kind: EntryKind| entries.iter().filter(|e| e.kind == kind).count();
            let credits = credited.iter().filter(|i| pool[**i].0 == m).count();
            assert_eq!(count(EntryKind::Accrual), credits);
            assert_eq!(count(EntryKind::Use), uses.values().filter(|u| u.0 == m).count());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// For any sequence of credits (with redeliveries), uses (with retries
    /// and reused ids), reversals (repeated, of spent points, of unknown ids)
    /// and the passing of time, on the in-memory and the embedded store:
    /// every lot matches the model (so none is ever below zero), a use
    /// succeeds exactly when the available points cover it, and
    /// earned = available + used + expired at every step.
    #[test]
    fn uses_credits_and_time_keep_the_ledger_consistent((pool, steps) in ledger_history()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            check_ledger_history(&backend::memory(Duration::from_secs(30), 3), &pool, &steps).await;
            check_ledger_history(&backend::sqlite(Duration::from_secs(30), 3), &pool, &steps).await;
        });
    }
}
