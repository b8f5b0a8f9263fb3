//! `pointflow plan`: how long a campaign takes to drain on AWS and what it
//! costs, and which limit binds. The model is documented in
//! `docs/capacity-model.md`; its parameters (quotas, prices, latencies and
//! Pointflow's measured costs) are in `cli/plan/params.yaml`.
//!
//! Counts of messages, transactions and write units come from the same code
//! the services run (packing, transaction planning, the capacity model), not
//! from constants: change the packer and the plan changes with it.

use std::fmt;

use pointflow::domain::audit::{Audit, Caller, GatewayIdentity};
use pointflow::domain::capacity::{
    fold_units, indexed_write_units, job_create_units, ledger_entry_bytes, WriteKind, SMALL_WRITE_UNITS,
};
use pointflow::domain::packing::{pack_accruals, PackingLimits, MAX_ACCRUALS_PER_MESSAGE};
use pointflow::domain::submission::{derive_accrual_id, job_id_for_key};
use pointflow::domain::transaction_plan::CREDIT_CHECK_ACTIONS;
use pointflow::domain::{Accrual, MessageRef, NewJob};
use serde::{Deserialize, Serialize};

/// The parameters shipped with the command.
pub const DEFAULT_PARAMS: &str = include_str!("../plan/params.yaml");

/// Actions of one `TransactWriteItems` (DynamoDB's limit).
const TRANSACTION_ACTIONS: f64 = 100.0;

/// The planner's parameters file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Params {
    pub aws: AwsParams,
    pub measured: Measured,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AwsParams {
    pub region: String,
    pub gathered: String,
    pub dynamodb: DynamoParams,
    pub lambda: LambdaParams,
    pub sqs: SqsParams,
    pub api_gateway: ApiParams,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DynamoParams {
    pub new_table_write_units_per_s: f64,
    pub ramp_doubling_minutes: f64,
    pub table_max_write_units_per_s: f64,
    pub partition_write_units_per_s: f64,
    pub usd_per_million_write_units: f64,
    pub transaction_latency_ms: f64,
    pub single_write_latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LambdaParams {
    pub sqs_start_concurrency: f64,
    pub sqs_added_concurrency_per_minute: f64,
    pub account_concurrency: f64,
    pub full_vcpu_memory_mb: f64,
    pub usd_per_gb_second: f64,
    pub usd_per_million_requests: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SqsParams {
    pub max_in_flight: f64,
    pub billed_request_bytes: f64,
    pub usd_per_million_requests: f64,
    pub request_latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ApiParams {
    pub account_requests_per_s: f64,
    pub usd_per_million_requests: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Measured {
    pub date: String,
    pub worker_cpu_us_per_accrual: f64,
    pub ingest_cpu_us_per_accrual: f64,
}

/// The parameters file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("the planner's parameters are not valid: {0}")]
    Yaml(#[from] serde_norway::Error),
}

impl Params {
    pub fn from_yaml(text: &str) -> Result<Self, ParamsError> {
        Ok(serde_norway::from_str(text)?)
    }

    pub fn shipped() -> Result<Self, ParamsError> {
        Self::from_yaml(DEFAULT_PARAMS)
    }
}

/// The table's write throughput at the start of the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStart {
    /// A new on-demand table: the initial throughput, then the ramp.
    New,
    /// Warm throughput set (or a previous peak) of this many WRU/s.
    Warm(f64),
}

/// What to plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInput {
    pub accruals: u64,
    pub members: u64,
    /// Accruals of the most-credited member (default: accruals / members).
    pub hot_member_accruals: u64,
    /// Items per API request (the client's chunk).
    pub items_per_request: u64,
    /// API requests in flight.
    pub submitters: u64,
    /// The usage plan's steady rate (requests/s).
    pub api_rate_limit: f64,
    pub accruals_per_message: u64,
    pub batch_size: u64,
    pub max_concurrency: u64,
    pub message_concurrency: u64,
    pub memory_mb: u64,
    pub table: TableStart,
    /// Bytes of a member id (sizes messages and ledger entries).
    pub member_id_bytes: usize,
}

/// A limit on the drain rate and how it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    pub name: &'static str,
    /// Its rate at the end of the campaign (accruals/s), or the floor it puts
    /// on the drain time.
    pub detail: String,
    /// Seconds during which this limit set the pace.
    pub binding_s: f64,
}

/// Money and units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Costs {
    pub lambda_gb_seconds: f64,
    pub lambda_requests: f64,
    pub sqs_requests: f64,
    pub write_units: f64,
    pub api_requests: f64,
    pub usd_lambda: f64,
    pub usd_sqs: f64,
    pub usd_dynamodb: f64,
    pub usd_api: f64,
}

impl Costs {
    pub fn usd_total(&self) -> f64 {
        self.usd_lambda + self.usd_sqs + self.usd_dynamodb + self.usd_api
    }
}

/// The prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub input: PlanInput,
    pub messages: f64,
    pub transactions_per_message: f64,
    pub write_units_per_accrual: f64,
    /// One worker invocation (a full batch), seconds.
    pub invocation_s: f64,
    /// Time until every request was accepted.
    pub enqueue_s: f64,
    /// Time until the last accrual is applied.
    pub drain_s: f64,
    /// The limit that set the pace longest.
    pub binding: &'static str,
    pub limits: Vec<Limit>,
    pub costs: Costs,
    /// Table write capacity (WRU/s) when the campaign ends.
    pub final_table_write_units_per_s: f64,
    /// Concurrent worker invocations that keep up with that capacity: more
    /// only wait on throttled writes (and are billed for it).
    pub concurrency_for_table: f64,
}

/// Builds the plan.
pub fn plan(params: &Params, input: &PlanInput) -> Plan {
    let n = input.accruals.max(1) as f64;
    let a = input.accruals_per_message.max(1) as f64;
    let b = input.batch_size.max(1) as f64;
    let m = input.message_concurrency.max(1) as f64;
    let hot = input.hot_member_accruals.max(1) as f64;
    let per_member = (n / input.members.max(1) as f64).max(1.0);
    let cpu_share = (input.memory_mb as f64 / params.aws.lambda.full_vcpu_memory_mb).min(1.0);
    let dynamo = &params.aws.dynamodb;

    // What one message holds and costs, from the packer and the capacity model.
    let sample = sample_message(input, per_member);
    let message_bytes = sample.bytes as f64;
    let a_actual = (sample.accruals as f64).min(a).max(1.0);
    let messages = (n / a_actual).ceil();
    // Balances per accrual in a transaction: a member's accruals sit together.
    let distinct = 1.0 / per_member.min(TRANSACTION_ACTIONS - 1.0);
    // Each transaction also checks that the message's cancel has not begun:
    // one action, charged as a small transactional write.
    let check = CREDIT_CHECK_ACTIONS as f64;
    let transactions_per_message = (a_actual * (1.0 + distinct) / (TRANSACTION_ACTIONS - check)).ceil();
    let credit_units = sample.entry_units + 2.0 * distinct + 2.0 * check * transactions_per_message / a_actual;
    let requests = (n / input.items_per_request.max(1) as f64).ceil();
    // Per request: its job (item and `job_list` index entry), then its
    // enqueued flag.
    let request_job_units = (job_create_units(&sample_job(input)) + SMALL_WRITE_UNITS) as f64;
    let job_units = messages * (sample.fold_units + SMALL_WRITE_UNITS as f64) + requests * request_job_units;
    let total_units = n * credit_units + job_units;
    let units_per_accrual = total_units / n;

    // One message: its transactions one after another, then fold + completion check.
    let message_s = transactions_per_message * dynamo.transaction_latency_ms / 1e3
        + 2.0 * dynamo.single_write_latency_ms / 1e3
        + a_actual * params.measured.worker_cpu_us_per_accrual / 1e6 / cpu_share;
    let invocation_s = (b / m).ceil() * message_s;
    let per_invocation_rate = b * a_actual / invocation_s;

    // Ingest: a request's CPU, its SendMessageBatch calls and job writes.
    let items = (input.items_per_request as f64).min(n);
    let request_s = items * params.measured.ingest_cpu_us_per_accrual / 1e6 / cpu_share
        + (items / a_actual / 10.0).ceil() * params.aws.sqs.request_latency_ms / 1e3
        + 3.0 * dynamo.single_write_latency_ms / 1e3;
    let api_rps = (input.submitters.max(1) as f64 / request_s)
        .min(input.api_rate_limit)
        .min(params.aws.api_gateway.account_requests_per_s);
    let ingest_rate = api_rps * items;

    // SQS: at most this many messages in flight, hence invocations.
    let lambda = &params.aws.lambda;
    let in_flight_cap = (params.aws.sqs.max_in_flight / b).floor();
    let concurrency_cap = (input.max_concurrency as f64)
        .min(lambda.account_concurrency)
        .min(in_flight_cap);

    // The hottest balance item: its updates serialise (conflicting
    // transactions) and share one partition's write rate. Its member's
    // history index entries (half an indexed entry's units) all go to one
    // index partition too.
    let hot_updates = hot.min(requests) + hot / (TRANSACTION_ACTIONS - 1.0);
    let hot_index_units = hot * sample.entry_units / 2.0;
    let hot_floor_s = (hot_updates * 2.0 / dynamo.partition_write_units_per_s)
        .max(hot_index_units / dynamo.partition_write_units_per_s)
        .max(hot_updates * dynamo.transaction_latency_ms / 1e3);

    // Step through time: ingest fills the queue, workers drain it at the
    // smallest of their own rate and the table's, which ramps.
    let mut capacity = match input.table {
        TableStart::New => dynamo.new_table_write_units_per_s,
        TableStart::Warm(w) => w.max(dynamo.new_table_write_units_per_s),
    }
    .min(dynamo.table_max_write_units_per_s);
    let (mut t, mut enqueued, mut applied, mut saturated_s) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    // Invocation-seconds the workers run: every slot is busy while a backlog
    // waits (throttled writes make invocations longer, not fewer).
    let mut busy_s = 0.0f64;
    let mut enqueue_s = None;
    let mut binding_time = [0.0f64; 4]; // ingest, lambda, table, in-flight/concurrency caps
    let dt = (n / 200_000.0).clamp(0.05, 1.0);
    while applied < n && t < 30.0 * 86_400.0 {
        enqueued = (enqueued + ingest_rate * dt).min(n);
        if enqueued >= n && enqueue_s.is_none() {
            enqueue_s = Some(t + dt);
        }
        let ramped = lambda.sqs_start_concurrency + lambda.sqs_added_concurrency_per_minute * t / 60.0;
        let concurrency = ramped.min(concurrency_cap).max(1.0);
        let lambda_rate = concurrency * per_invocation_rate;
        let table_rate = capacity / units_per_accrual;
        let backlog_rate = (enqueued - applied) / dt;
        let rate = lambda_rate.min(table_rate).min(backlog_rate);
        let which = if rate >= backlog_rate && enqueued < n {
            0
        } else if table_rate <= lambda_rate {
            2
        } else if ramped < concurrency_cap {
            1
        } else {
            3
        };
        binding_time[which] += dt;
        if which == 2 {
            saturated_s += dt;
            if saturated_s >= dynamo.ramp_doubling_minutes * 60.0 {
                capacity = (capacity * 2.0).min(dynamo.table_max_write_units_per_s);
                saturated_s = 0.0;
            }
        }
        busy_s += if rate < backlog_rate {
            concurrency
        } else {
            rate / per_invocation_rate
        } * dt;
        applied += rate * dt;
        t += dt;
    }
    let drain_s = t.max(hot_floor_s);

    let limits = vec![
        Limit {
            name: "API ingest",
            detail: format!(
                "{:.0} accruals/s ({api_rps:.1} requests/s of {items:.0} items)",
                ingest_rate
            ),
            binding_s: binding_time[0],
        },
        Limit {
            name: "Lambda concurrency ramp",
            detail: format!(
                "{:.0} accruals/s per invocation, from {} to {concurrency_cap:.0} at once",
                per_invocation_rate, lambda.sqs_start_concurrency
            ),
            binding_s: binding_time[1],
        },
        Limit {
            name: "table write throughput",
            detail: format!(
                "{:.0} WRU/s at the end = {:.0} accruals/s at {units_per_accrual:.2} WRU each",
                capacity,
                capacity / units_per_accrual
            ),
            binding_s: binding_time[2],
        },
        Limit {
            name: "worker MaximumConcurrency",
            detail: format!(
                "{concurrency_cap:.0} invocations = {:.0} accruals/s{}",
                concurrency_cap * per_invocation_rate,
                if in_flight_cap < input.max_concurrency as f64 {
                    " (held down by SQS's in-flight limit)"
                } else {
                    ""
                }
            ),
            binding_s: binding_time[3],
        },
        Limit {
            name: "hot member partition",
            detail: format!(
                "{hot:.0} accruals of one member: ≥ {hot_floor_s:.1} s ({hot_updates:.0} updates of one item, {hot_index_units:.0} WRU to one history index partition)"
            ),
            binding_s: (hot_floor_s - t).max(0.0),
        },
    ];
    let binding = limits
        .iter()
        .max_by(|x, y| x.binding_s.total_cmp(&y.binding_s))
        .map_or("none", |l| l.name);

    // Costs.
    let worker_invocations = (messages / b).ceil();
    let gb = input.memory_mb as f64 / 1024.0;
    let lambda_gb_seconds = busy_s.max(worker_invocations * invocation_s) * gb + requests * request_s * gb;
    let lambda_requests = worker_invocations + requests;
    let billed_per_batch = (10.0 * message_bytes / params.aws.sqs.billed_request_bytes)
        .ceil()
        .max(1.0);
    let sends = (messages / 10.0).ceil() * billed_per_batch;
    // The event source's receives (a batch each) and deletes, plus its empty
    // long polls, which are not counted: they depend on idle time.
    let sqs_requests = sends + 2.0 * worker_invocations;
    let costs = Costs {
        lambda_gb_seconds,
        lambda_requests,
        sqs_requests,
        write_units: total_units,
        api_requests: requests,
        usd_lambda: lambda_gb_seconds * lambda.usd_per_gb_second
            + lambda_requests * lambda.usd_per_million_requests / 1e6,
        usd_sqs: sqs_requests * params.aws.sqs.usd_per_million_requests / 1e6,
        usd_dynamodb: total_units * dynamo.usd_per_million_write_units / 1e6,
        usd_api: requests * params.aws.api_gateway.usd_per_million_requests / 1e6,
    };
    Plan {
        input: input.clone(),
        messages,
        transactions_per_message,
        write_units_per_accrual: units_per_accrual,
        invocation_s,
        enqueue_s: enqueue_s.unwrap_or(t),
        drain_s,
        binding,
        limits,
        costs,
        final_table_write_units_per_s: capacity,
        concurrency_for_table: (capacity / units_per_accrual / per_invocation_rate).ceil(),
    }
}

/// The job one API request creates, as the ingest function records it: a
/// SHA-256 request hash, and the audit of an IAM caller of a typical role
/// session ARN (about 80 characters). A longer ARN can take the item past
/// 1 KiB: the capacity model charges it by its size.
fn sample_job(input: &PlanInput) -> NewJob {
    let identity = GatewayIdentity {
        user_arn: Some("arn:aws:sts::123456789012:assumed-role/PointflowSubmit/crm-campaign-loader".into()),
        account_id: Some("123456789012".into()),
        api_key_id: Some("k9x8w7v6u5".into()),
        source_ip: Some("203.0.113.10".into()),
        ..GatewayIdentity::default()
    };
    let items = input.items_per_request.max(1);
    NewJob {
        job_id: job_id_for_key("plan"),
        request_hash: "0".repeat(64),
        total: items,
        deduplicated: 0,
        messages: items.div_ceil(input.accruals_per_message.max(1)),
        source: None,
        reading: false,
        // A creation time with a full nanosecond fraction: the longest text.
        created_at: time::OffsetDateTime::UNIX_EPOCH + time::Duration::new(1_796_083_200, 123_456_789),
        audit: Some(Audit::new(
            Caller::from_gateway(&identity),
            Some("c6af9ac6-7b61-11e6-9a41-93e8deadbeef"),
        )),
    }
}

/// A representative message, packed by the real packer.
struct SampleMessage {
    accruals: usize,
    bytes: usize,
    /// Write units of one ledger entry in a transaction.
    entry_units: f64,
    /// Folding the message: its marker (with the accrual ids) and the job.
    fold_units: f64,
}

fn sample_message(input: &PlanInput, per_member: f64) -> SampleMessage {
    let wanted = input.accruals_per_message.clamp(1, MAX_ACCRUALS_PER_MESSAGE as u64) as usize;
    let repeats = per_member.round().max(1.0) as usize;
    let accruals: Vec<Accrual> = (0..wanted)
        .map(|i| Accrual {
            accrual_id: derive_accrual_id("plan", i),
            member_id: format!("{:0width$}", i / repeats, width = input.member_id_bytes.max(1)),
            point_type: "POINTS".into(),
            amount: 2000,
            reason: None,
            apply_at: None,
            expires_at: None,
        })
        .collect();
    let limits = PackingLimits {
        max_accruals: wanted,
        ..PackingLimits::default()
    };
    let job_id = job_id_for_key("plan");
    let messages = pack_accruals(job_id, accruals, limits);
    let first = messages.into_iter().next();
    let (count, bytes, units, fold) = first.map_or((1, 0, 2.0, 4.0), |message| {
        let by = MessageRef { job_id, seq: 0 };
        let units = message
            .accruals()
            .iter()
            .map(|a| indexed_write_units(ledger_entry_bytes(a, by), WriteKind::Transactional) as f64)
            .sum::<f64>()
            / message.accruals().len().max(1) as f64;
        let bytes = message.encode().len();
        let ids: usize = message.accruals().iter().map(|a| a.accrual_id.len() + 1).sum();
        (message.accruals().len(), bytes, units, fold_units(ids) as f64)
    });
    SampleMessage {
        accruals: count,
        bytes,
        entry_units: units,
        fold_units: fold,
    }
}

fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.input;
        writeln!(
            f,
            "campaign          {} accruals, {} members (hottest member: {} accruals)",
            i.accruals, i.members, i.hot_member_accruals
        )?;
        writeln!(
            f,
            "settings          {} accruals/message, batch {}, MaximumConcurrency {}, {} messages at once, {} MB; table: {}",
            i.accruals_per_message,
            i.batch_size,
            i.max_concurrency,
            i.message_concurrency,
            i.memory_mb,
            match i.table {
                TableStart::New => "new on-demand".to_owned(),
                TableStart::Warm(w) => format!("warm, {w:.0} WRU/s"),
            }
        )?;
        writeln!(
            f,
            "work              {:.0} messages, {:.0} transactions each, {:.2} WRU per accrual, {:.2} s per invocation",
            self.messages, self.transactions_per_message, self.write_units_per_accrual, self.invocation_s
        )?;
        writeln!(f, "all queued after  {}", duration(self.enqueue_s))?;
        writeln!(
            f,
            "drained after     {}  ({:.0} accruals/s on average)",
            duration(self.drain_s),
            i.accruals as f64 / self.drain_s.max(1e-9)
        )?;
        writeln!(f, "binding limit     {}", self.binding)?;
        writeln!(
            f,
            "workers needed    {:.0} concurrent invocations keep up with the table's {:.0} WRU/s",
            self.concurrency_for_table, self.final_table_write_units_per_s
        )?;
        writeln!(f, "limits:")?;
        for l in &self.limits {
            writeln!(
                f,
                "  {:<26} {:>10}  {}",
                l.name,
                if l.binding_s > 0.0 {
                    duration(l.binding_s)
                } else {
                    "–".to_owned()
                },
                l.detail
            )?;
        }
        let c = &self.costs;
        writeln!(f, "cost:")?;
        writeln!(
            f,
            "  Lambda        {:>12.0} GB-s, {:>10.0} requests   ${:.4}",
            c.lambda_gb_seconds, c.lambda_requests, c.usd_lambda
        )?;
        writeln!(
            f,
            "  SQS           {:>12.0} requests                  ${:.4}",
            c.sqs_requests, c.usd_sqs
        )?;
        writeln!(
            f,
            "  DynamoDB      {:>12.0} WRU                       ${:.4}",
            c.write_units, c.usd_dynamodb
        )?;
        writeln!(
            f,
            "  API Gateway   {:>12.0} requests                  ${:.4}",
            c.api_requests, c.usd_api
        )?;
        write!(
            f,
            "  total                                                ${:.4}",
            c.usd_total()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(accruals: u64, table: TableStart) -> PlanInput {
        PlanInput {
            accruals,
            members: accruals,
            hot_member_accruals: 1,
            items_per_request: 20_000,
            submitters: 4,
            api_rate_limit: 50.0,
            accruals_per_message: 500,
            batch_size: 10,
            max_concurrency: 50,
            message_concurrency: 4,
            memory_mb: 512,
            table,
            member_id_bytes: 10,
        }
    }

    #[test]
    fn shipped_parameters_parse() {
        let p = Params::shipped().unwrap();
        assert_eq!(p.aws.dynamodb.new_table_write_units_per_s, 4000.0);
        assert!(p.measured.worker_cpu_us_per_accrual > 0.0);
    }

    #[test]
    fn a_new_table_binds_and_warm_throughput_lifts_it() {
        let p = Params::shipped().unwrap();
        let new = plan(&p, &input(2_000_000, TableStart::New));
        assert_eq!(new.binding, "table write throughput");
        // Distinct members: 2 WRU per ledger entry, 2 for its history index
        // entry and 2 per balance, plus 2 per transaction (of 49 accruals)
        // for the message's cancel check.
        assert!(
            (6.0..6.2).contains(&new.write_units_per_accrual),
            "{}",
            new.write_units_per_accrual
        );
        // 12 million WRU at 4,000 WRU/s is over half an hour: the ramp doubles
        // it once (7.2 million in the first 30 minutes, the rest at 8,000/s).
        assert!(new.drain_s > 2300.0 && new.drain_s < 2500.0, "{}", new.drain_s);
        assert_eq!(new.final_table_write_units_per_s, 8000.0);
        let warm = plan(&p, &input(2_000_000, TableStart::Warm(40_000.0)));
        assert!(warm.drain_s < new.drain_s / 5.0, "{} vs {}", warm.drain_s, new.drain_s);
        // The same work costs the same whatever the table's start.
        assert_eq!(warm.costs.write_units, new.costs.write_units);
    }

    #[test]
    fn repeats_share_balance_updates_and_a_hot_member_sets_a_floor() {
        let p = Params::shipped().unwrap();
        let mut hot = input(1_000_000, TableStart::Warm(40_000.0));
        hot.members = 200;
        hot.hot_member_accruals = 5_000;
        let plan = plan(&p, &hot);
        // Entries and their index entries (4); balance updates shared by
        // 5,000; the message markers keeping the accrual ids (about 0.1).
        assert!(plan.write_units_per_accrual < 4.2, "{}", plan.write_units_per_accrual);
        let floor = plan.limits.iter().find(|l| l.name == "hot member partition").unwrap();
        assert!(floor.detail.contains("5000 accruals of one member"), "{}", floor.detail);
    }

    #[test]
    fn few_workers_make_lambda_the_limit_and_costs_add_up() {
        let p = Params::shipped().unwrap();
        let mut small = input(100_000, TableStart::Warm(40_000.0));
        small.max_concurrency = 1;
        let plan = plan(&p, &small);
        assert_eq!(plan.binding, "worker MaximumConcurrency");
        assert_eq!(plan.messages, 200.0);
        assert_eq!(plan.costs.api_requests, 5.0);
        let c = &plan.costs;
        assert!((c.usd_total() - (c.usd_lambda + c.usd_sqs + c.usd_dynamodb + c.usd_api)).abs() < 1e-12);
        assert!(plan.to_string().contains("binding limit     worker MaximumConcurrency"));
    }
}
