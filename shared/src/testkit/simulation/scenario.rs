//! The campaign one seed submits, and what it must end as.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::domain::lots::{lot_times, LotKey};
use crate::domain::packing::PackingLimits;
use crate::services::api::ApiRequest;

use super::FaultRates;

/// What one accrual credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credit {
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    /// Unix seconds.
    pub apply_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl Credit {
    pub(crate) fn lot(&self) -> LotKey {
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).ok();
        // The API rounds the times it is given (`lot_times`); so does the model.
        let (from, until) = lot_times(self.apply_at.and_then(at), self.expires_at.and_then(at));
        LotKey::new(from, until)
    }

    fn to_json(&self, accrual_id: Option<&str>) -> Value {
        let mut item = Map::new();
        if let Some(id) = accrual_id {
            item.insert("accrual_id".into(), json!(id));
        }
        item.insert("member_id".into(), json!(self.member_id));
        item.insert("point_type".into(), json!(self.point_type));
        item.insert("amount".into(), json!(self.amount));
        let rfc3339 = |s: i64| {
            OffsetDateTime::from_unix_timestamp(s)
                .map(crate::services::api::rfc3339)
                .unwrap_or_default()
        };
        if let Some(s) = self.apply_at {
            item.insert("apply_at".into(), json!(rfc3339(s)));
        }
        if let Some(s) = self.expires_at {
            item.insert("expires_at".into(), json!(rfc3339(s)));
        }
        Value::Object(item)
    }
}

/// One item of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// Accrual `i` of the pool, with its explicit id `a<i>` (the same id
    /// always carries the same credit, so repeats are exact).
    Pooled(usize),
    /// An item without `accrual_id`: its id is derived from the request's
    /// `Idempotency-Key` and its position, so it is a credit of its own.
    Derived(Credit),
}

/// One client request (`POST /v1/jobs` with an `Idempotency-Key`).
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub key: String,
    pub items: Vec<Item>,
}

/// One seed's campaign and settings.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub pool: Vec<Credit>,
    pub submissions: Vec<Submission>,
    /// Items of a request that reuses submission 0's key with different
    /// content, sent once submission 0 is accepted: it must be refused
    /// (`409 idempotency_key_reused`) and queue nothing.
    pub conflicting: Option<Vec<Item>>,
    pub packing: PackingLimits,
    pub max_receive_count: u32,
    pub message_concurrency: usize,
    pub batch_size: usize,
    pub maximum_concurrency: usize,
    pub visibility_ms: u64,
    pub rates: FaultRates,
}

const POINT_TYPES: [&str; 3] = ["WELCOME", "BONUS", "PROMO"];
/// 2030-01-01T00:00:00Z: scheduled lots start after it.
const BASE_TIME: i64 = 1_893_456_000;
const DAY: i64 = 86_400;

fn credit(rng: &mut fastrand::Rng, members: usize, point_types: usize) -> Credit {
    let apply_at = (rng.u8(..4) == 0).then(|| BASE_TIME + rng.i64(0..30) * DAY);
    let expires_at = (rng.u8(..4) == 0).then(|| apply_at.unwrap_or(BASE_TIME) + rng.i64(1..60) * DAY);
    Credit {
        member_id: format!("m{}", rng.usize(..members)),
        point_type: POINT_TYPES[rng.usize(..point_types)].into(),
        amount: rng.u64(1..=1_000),
        apply_at,
        expires_at,
    }
}

impl Scenario {
    /// The scenario of `seed`: drawn from its own generator, so changing
    /// how the scheduler draws leaves the campaign as it was.
    pub(crate) fn generate(seed: u64) -> Scenario {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_5ce4_a710_0001);
        let members = rng.usize(1..=5);
        let point_types = rng.usize(1..=POINT_TYPES.len());
        let pool: Vec<Credit> = (0..rng.usize(3..=20))
            .map(|_| credit(&mut rng, members, point_types))
            .collect();
        let submissions = (0..rng.usize(1..=3))
            .map(|s| Submission {
                key: format!("sim-{seed}-{s}"),
                items: (0..rng.usize(1..=12))
                    .map(|_| {
                        if rng.u8(..5) == 0 {
                            Item::Derived(credit(&mut rng, members, point_types))
                        } else {
                            Item::Pooled(rng.usize(..pool.len()))
                        }
                    })
                    .collect(),
            })
            .collect::<Vec<Submission>>();
        let conflicting = (rng.u8(..4) == 0).then(|| {
            let mut items = submissions[0].items.clone();
            items.push(Item::Derived(credit(&mut rng, members, point_types)));
            items
        });
        let intensity = [0.02, 0.08, 0.15, 0.3][rng.usize(..4)];
        Scenario {
            pool,
            submissions,
            conflicting,
            packing: PackingLimits {
                max_accruals: rng.usize(1..=6),
                max_bytes: 262_144,
            },
            max_receive_count: rng.u32(2..=5),
            message_concurrency: rng.usize(1..=3),
            batch_size: rng.usize(1..=4),
            maximum_concurrency: rng.usize(1..=3),
            visibility_ms: 30_000,
            rates: FaultRates {
                store_error: intensity,
                crash: intensity / 2.0,
                expire: intensity,
                duplicate_delivery: intensity / 2.0,
                lost_delete: intensity / 3.0,
            },
        }
    }

    /// The HTTP request of submission `s`.
    pub(crate) fn request(&self, s: usize) -> ApiRequest {
        let submission = &self.submissions[s];
        self.request_of(&submission.key, &submission.items)
    }

    /// The request that reuses submission 0's key with other content.
    pub(crate) fn conflicting_request(&self) -> Option<ApiRequest> {
        let items = self.conflicting.as_ref()?;
        Some(self.request_of(&self.submissions[0].key, items))
    }

    fn request_of(&self, key: &str, items: &[Item]) -> ApiRequest {
        let items: Vec<Value> = items
            .iter()
            .map(|item| match item {
                Item::Pooled(i) => self.pool[*i].to_json(Some(&format!("a{i}"))),
                Item::Derived(c) => c.to_json(None),
            })
            .collect();
        ApiRequest {
            method: "POST".into(),
            path: "/v1/jobs".into(),
            query: Vec::new(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Idempotency-Key".into(), key.to_owned()),
            ],
            body: json!({ "accruals": items }).to_string().into_bytes(),
        }
    }

    /// Distinct accruals of submission `s` and its exact repeats.
    pub(crate) fn expected_counts(&self, s: usize) -> (u64, u64) {
        let items = &self.submissions[s].items;
        let pooled: BTreeSet<usize> = items
            .iter()
            .filter_map(|i| match i {
                Item::Pooled(p) => Some(*p),
                Item::Derived(_) => None,
            })
            .collect();
        let derived = items.iter().filter(|i| matches!(i, Item::Derived(_))).count();
        let distinct = (pooled.len() + derived) as u64;
        (distinct, items.len() as u64 - distinct)
    }

    /// Accruals of submission `s` that no other submission carries: its job
    /// must be the one that credits them.
    pub(crate) fn only_in(&self, s: usize) -> u64 {
        let elsewhere: BTreeSet<usize> = self
            .submissions
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != s)
            .flat_map(|(_, sub)| sub.items.iter())
            .filter_map(|i| match i {
                Item::Pooled(p) => Some(*p),
                Item::Derived(_) => None,
            })
            .collect();
        let mut mine = BTreeSet::new();
        let mut derived = 0;
        for item in &self.submissions[s].items {
            match item {
                Item::Pooled(p) if !elsewhere.contains(p) => {
                    mine.insert(*p);
                }
                Item::Pooled(_) => {}
                Item::Derived(_) => derived += 1,
            }
        }
        (mine.len() + derived) as u64
    }

    /// Every distinct credit of the campaign.
    pub(crate) fn distinct_credits(&self) -> Vec<&Credit> {
        let mut pooled = BTreeSet::new();
        let mut credits = Vec::new();
        for item in self.submissions.iter().flat_map(|s| s.items.iter()) {
            match item {
                Item::Pooled(p) => {
                    if pooled.insert(*p) {
                        credits.push(&self.pool[*p]);
                    }
                }
                Item::Derived(c) => credits.push(c),
            }
        }
        credits
    }

    /// What every balance must hold at the end: member → point type → lot →
    /// points, the sum of the distinct accruals.
    pub(crate) fn expected_balances(&self) -> BTreeMap<String, BTreeMap<String, BTreeMap<LotKey, u64>>> {
        let mut expected: BTreeMap<String, BTreeMap<String, BTreeMap<LotKey, u64>>> = BTreeMap::new();
        for c in self.distinct_credits() {
            *expected
                .entry(c.member_id.clone())
                .or_default()
                .entry(c.point_type.clone())
                .or_default()
                .entry(c.lot())
                .or_default() += c.amount;
        }
        expected
    }

    /// Members to look at: every member a credit could go to.
    pub(crate) fn members(&self) -> BTreeSet<String> {
        self.pool
            .iter()
            .map(|c| c.member_id.clone())
            .chain(self.submissions.iter().flat_map(|s| {
                s.items.iter().filter_map(|i| match i {
                    Item::Derived(c) => Some(c.member_id.clone()),
                    Item::Pooled(_) => None,
                })
            }))
            .collect()
    }
}
