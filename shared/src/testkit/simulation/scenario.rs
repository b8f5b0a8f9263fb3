//! The campaign one seed submits, and what it must end as.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::domain::lots::{lot_times, LotKey};
use crate::domain::packing::PackingLimits;
use crate::domain::submission::job_id_for_key;
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

/// A JSON `POST` to `path`, with an `Idempotency-Key` if given.
fn post(path: &str, key: Option<&str>, body: Value) -> ApiRequest {
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(key) = key {
        headers.push(("Idempotency-Key".into(), key.to_owned()));
    }
    ApiRequest {
        method: "POST".into(),
        path: path.into(),
        query: Vec::new(),
        headers,
        body: body.to_string().into_bytes(),
        ..ApiRequest::default()
    }
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
    /// Uses, reversals, a cancel: the ledger's other writes, racing the credits.
    pub extras: Extras,
}

/// One deduction a client asks for (`POST /v1/members/{id}/uses`, or an
/// item of a bulk-use job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UseSpec {
    pub use_id: String,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
}

impl UseSpec {
    fn to_json(&self, with_member: bool) -> Value {
        let mut item = Map::new();
        item.insert("use_id".into(), json!(self.use_id));
        if with_member {
            item.insert("member_id".into(), json!(self.member_id));
        }
        item.insert("point_type".into(), json!(self.point_type));
        item.insert("amount".into(), json!(self.amount));
        Value::Object(item)
    }
}

/// A bulk-use job (`POST /v1/jobs` with `{"uses": [...]}`).
#[derive(Debug, Clone)]
pub(crate) struct UseJob {
    pub key: String,
    pub uses: Vec<UseSpec>,
}

/// What a `POST /v1/reversals` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReversalSpec {
    /// Accrual `a<i>` of the pool.
    Accrual(usize),
    /// A use, single or bulk, by its id.
    Use(String),
}

/// The campaign's writes other than credits, and its hot spots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    /// Single uses, each sent at its virtual time (ms).
    pub uses: Vec<(UseSpec, u64)>,
    pub use_jobs: Vec<(UseJob, u64)>,
    /// Reversals, each sent at its virtual time (ms).
    pub reversals: Vec<(ReversalSpec, u64)>,
    /// The submission whose job a client cancels once it is accepted (and
    /// again until the API takes the cancel: it refuses a running job).
    pub cancel: Option<usize>,
    /// Submissions crediting one member many times over (a whale), each
    /// many messages (a hot job).
    pub hot: bool,
}

impl Extras {
    /// Whether the seed writes nothing but credits.
    pub(crate) fn is_empty(&self) -> bool {
        self.uses.is_empty() && self.use_jobs.is_empty() && self.reversals.is_empty() && self.cancel.is_none()
    }
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
        let mut scenario = Scenario {
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
            extras: Extras::default(),
        };
        scenario.draw_extras(seed, members, point_types);
        scenario
    }

    /// Draws the uses, reversals, cancel and hot spots from a generator of
    /// their own, so the rest of the campaign stays what it was.
    fn draw_extras(&mut self, seed: u64, members: usize, point_types: usize) {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_5ce4_a710_0002);
        if rng.u8(..8) == 0 {
            // A whale: one member credited by two jobs of many small
            // messages each, all folding into their job at once.
            self.extras.hot = true;
            self.packing.max_accruals = rng.usize(1..=3);
            for h in 0..2 {
                let items = (0..rng.usize(8..=16))
                    .map(|_| {
                        let mut c = credit(&mut rng, members, point_types);
                        c.member_id = "m0".into();
                        Item::Derived(c)
                    })
                    .collect();
                self.submissions.push(Submission {
                    key: format!("sim-{seed}-hot{h}"),
                    items,
                });
            }
        }
        let some_member = |rng: &mut fastrand::Rng| {
            if rng.bool() {
                "m0".to_owned()
            } else {
                format!("m{}", rng.usize(..members))
            }
        };
        let mut use_ids = Vec::new();
        if rng.u8(..3) == 0 {
            for u in 0..rng.usize(1..=4) {
                let spec = UseSpec {
                    use_id: format!("u{u}"),
                    member_id: some_member(&mut rng),
                    point_type: POINT_TYPES[rng.usize(..point_types)].into(),
                    amount: rng.u64(1..=800),
                };
                use_ids.push(spec.use_id.clone());
                self.extras.uses.push((spec, rng.u64(0..=20_000)));
            }
        }
        if rng.u8(..4) == 0 {
            let uses = (0..rng.usize(1..=8))
                .map(|u| {
                    let spec = UseSpec {
                        use_id: format!("bu{u}"),
                        member_id: some_member(&mut rng),
                        point_type: POINT_TYPES[rng.usize(..point_types)].into(),
                        amount: rng.u64(1..=600),
                    };
                    use_ids.push(spec.use_id.clone());
                    spec
                })
                .collect();
            let job = UseJob {
                key: format!("sim-{seed}-uses"),
                uses,
            };
            self.extras.use_jobs.push((job, rng.u64(0..=20_000)));
        }
        if rng.u8(..4) == 0 {
            for _ in 0..rng.usize(1..=4) {
                let target = if !use_ids.is_empty() && rng.bool() {
                    ReversalSpec::Use(use_ids[rng.usize(..use_ids.len())].clone())
                } else {
                    ReversalSpec::Accrual(rng.usize(..self.pool.len()))
                };
                self.extras.reversals.push((target, rng.u64(0..=30_000)));
            }
        }
        if rng.u8(..4) == 0 {
            self.extras.cancel = Some(rng.usize(..self.submissions.len()));
        }
    }

    /// The request of single use `i`.
    pub(crate) fn use_request(&self, i: usize) -> ApiRequest {
        let (spec, _) = &self.extras.uses[i];
        post(
            &format!("/v1/members/{}/uses", spec.member_id),
            None,
            spec.to_json(false),
        )
    }

    /// The request of bulk-use job `i`.
    pub(crate) fn use_job_request(&self, i: usize) -> ApiRequest {
        let (job, _) = &self.extras.use_jobs[i];
        let uses: Vec<Value> = job.uses.iter().map(|u| u.to_json(true)).collect();
        post("/v1/jobs", Some(&job.key), json!({ "uses": uses }))
    }

    /// The request of reversal `i`.
    pub(crate) fn reversal_request(&self, i: usize) -> ApiRequest {
        let body = match &self.extras.reversals[i].0 {
            ReversalSpec::Accrual(p) => json!({ "accrual_id": format!("a{p}") }),
            ReversalSpec::Use(id) => json!({ "use_id": id }),
        };
        post("/v1/reversals", None, body)
    }

    /// The cancel of submission `s`'s job.
    pub(crate) fn cancel_request(&self, s: usize) -> ApiRequest {
        let job = job_id_for_key(&self.submissions[s].key);
        ApiRequest {
            method: "POST".into(),
            path: format!("/v1/jobs/{job}/cancel"),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            ..ApiRequest::default()
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
            ..ApiRequest::default()
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

    /// Members to look at: every member a credit or a use could go to.
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
            .chain(self.extras.uses.iter().map(|(u, _)| u.member_id.clone()))
            .chain(
                self.extras
                    .use_jobs
                    .iter()
                    .flat_map(|(j, _)| j.uses.iter().map(|u| u.member_id.clone())),
            )
            .collect()
    }
}
