//! `pointflow`: one command for running Pointflow locally (and, as issues add
//! them, for clients, planning and benchmarks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pointflow_cli::backend::{open_queues, AwsResources, BackendChoice, LocalBackend, DEFAULT_BUCKET_DIR, DEFAULT_DB};
use pointflow_cli::bench::bench_csv_parse;
use pointflow_cli::bench_e2e::{
    append_csv, plot_sweep, run_one, run_sweep, BenchBackend, Comparison, Knob, RunSpec, Variant,
};
use pointflow_cli::client::api::{ApiClient, ClientError, DEFAULT_ENDPOINT};
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{submit, wait_for_jobs, SubmitOptions, MAX_LISTED_ERRORS};
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::import::{default_key, run_import};
use pointflow_cli::plan::{plan, Params, PlanInput, TableStart};
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;

// The runner allocates and frees millions of small strings across many
// threads; glibc's malloc spent about a quarter of a demo's CPU time there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pointflow", version, about = "Bulk loyalty-point accruals, exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: API, queue, workers, store.
    Local(Box<LocalArgs>),
    /// Measure parts of Pointflow on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Submit a campaign file (JSON array, NDJSON or CSV) to the API in chunks, resumably.
    ///
    /// Exit status: 0 all sent (and with --wait, credited); 3 lines rejected, requests refused or accruals failed;
    /// 1 could not finish (network, timeout; run the same command again to resume).
    Submit(SubmitArgs),
    /// Show jobs.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Job ids.
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Wait until jobs complete, with progress. Exit status 3 if any completed with errors.
    Wait {
        #[command(flatten)]
        api: ApiArgs,
        /// Job ids.
        #[arg(required = true)]
        jobs: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Look into the dead-letter queue, or move its messages back to be applied.
    Dlq(DlqArgs),
    /// Predict drain time and cost of a campaign on AWS, and the limit that binds.
    Plan(PlanArgs),
    /// Run the deterministic simulation of the pipeline under faults (docs/simulation.md).
    ///
    /// Exit status: 0 every seed passed; 1 a seed failed (its report, replay command and trace are printed).
    Simulate(SimulateArgs),
    /// Show a member's balances.
    Balance {
        #[command(flatten)]
        api: ApiArgs,
        member: String,
    },
    /// Cancel a completed job through the API: the workers reverse every accrual it credited, once.
    ///
    /// Asking again resumes a cancel. With --wait, waits until it is done. Exit status: 0 done (or queued, without
    /// --wait), 3 some credits were already spent and stay, 1 could not finish (e.g. the job is still running).
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The job id.
        job: String,
        /// Wait until every message of the job is cancelled.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Show a member's history: every credit, use, reversal and expiry, newest first.
    History {
        #[command(flatten)]
        api: ApiArgs,
        member: String,
        /// Only this point type.
        #[arg(long)]
        point_type: Option<String>,
        /// Entries per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this cursor (a page's next_cursor).
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the cursors to the oldest entry.
        #[arg(long)]
        all: bool,
    },
    /// Cancel one accrual or one use, once (safe to retry).
    ///
    /// Exit status: 0 reversed (or reversed before); 3 refused (the accrual's points were spent) or not found;
    /// 1 could not finish.
    Reverse {
        #[command(flatten)]
        api: ApiArgs,
        /// The accrual to cancel.
        #[arg(long, conflicts_with = "use_id", required_unless_present = "use_id")]
        accrual_id: Option<String>,
        /// The use to cancel (its points go back).
        #[arg(long)]
        use_id: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deduct points from a member's balance, once per --use-id (safe to retry).
    ///
    /// Exit status: 0 deducted (or deducted before by the same use); 3 refused (insufficient balance, or the use id
    /// was used for a different deduction); 1 could not finish.
    Use {
        #[command(flatten)]
        api: ApiArgs,
        member: String,
        /// Idempotency id of this deduction, e.g. the order number.
        #[arg(long)]
        use_id: String,
        #[arg(long)]
        point_type: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
struct SimulateArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Replay this one seed (with --trace, print its events).
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    seed: Option<u64>,
    /// Print the events of the run (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// The store under the fault-injecting adapters.
    #[arg(long, value_enum, default_value = "memory")]
    store: SimStore,
    /// Threads sharing out the seeds (each seed runs alone on one thread). Default: the machine's cores.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SimStore {
    Memory,
    Sqlite,
}

#[derive(Args)]
struct DlqArgs {
    /// Where the queues are.
    #[arg(long, value_enum, default_value = "embedded", global = true)]
    backend: BackendKind,
    /// Embedded database file.
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    db: PathBuf,
    /// Accrual queue URL (aws backend; the QueueUrl output).
    #[arg(long, env = "QUEUE_URL", global = true)]
    queue_url: Option<String>,
    /// Dead-letter queue URL (aws backend; the DeadLetterQueueUrl output).
    #[arg(long, env = "DLQ_URL", global = true)]
    dlq_url: Option<String>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human", global = true)]
    output: Output,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered messages (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
    /// Move dead-lettered messages back to the accrual queue; the worker applies them (nothing twice).
    Redrive {
        /// At most this many.
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
    },
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// The API: a deployed stage URL (the ApiUrl output) or `pointflow local serve`.
    #[arg(long, env = "POINTFLOW_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// API key (sent as x-api-key), as the template's usage plan requires.
    #[arg(long, env = "POINTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
    /// Seconds before one HTTP request times out (it is then retried).
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The file; `-` reads stdin.
    file: PathBuf,
    /// The file's format (default: from its extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Names the submission. Re-running with the same file and campaign resumes (nothing is credited twice); a
    /// different campaign name submits the same content again.
    #[arg(long, default_value = "")]
    campaign: String,
    /// Accruals per request.
    #[arg(long, default_value_t = ChunkLimits::default().max_items)]
    chunk: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Follow the jobs until every accrual is settled.
    #[arg(long)]
    wait: bool,
    /// Seconds between job polls with --wait.
    #[arg(long, default_value_t = 1.0)]
    poll_interval: f64,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Parse and validate a CSV file on one thread (the import's parsing half): rows/s and peak RSS.
    Csv {
        /// The CSV file, in the file-drop format.
        file: PathBuf,
    },
    /// Run a generated campaign end to end, Pointflow and the naive baseline on the same backend, side by side.
    ///
    /// Exit status: 0 every run credited every balance exactly; 1 otherwise.
    E2e(E2eArgs),
    /// Run the end-to-end benchmark over a grid, one setting varied at a time; write CSV and an SVG plot.
    Sweep {
        #[command(flatten)]
        run: E2eArgs,
        /// Settings to vary (repeatable), each over its default grid unless --values follows it.
        #[arg(long = "vary", value_enum, default_values = ["accruals-per-message", "batch-size", "concurrency", "repeats"])]
        knobs: Vec<Knob>,
        /// Grid for each --vary, in order, comma-separated (e.g. --values 1,10,100).
        #[arg(long = "values")]
        values: Vec<String>,
        /// SVG plot of throughput and wall time against each setting.
        #[arg(long, default_value = "sweep.svg")]
        plot: PathBuf,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// Accruals in the campaign.
    #[arg(long)]
    accruals: u64,
    /// Distinct members (default: one per accrual).
    #[arg(long)]
    members: Option<u64>,
    /// Accruals of the most-credited member (default: accruals / members).
    #[arg(long)]
    hot_member_accruals: Option<u64>,
    /// Worker MaximumConcurrency (default: the template's).
    #[arg(long)]
    max_concurrency: Option<u64>,
    /// Messages per worker invocation (default: the template's).
    #[arg(long)]
    batch_size: Option<u64>,
    /// Accruals per message (default: the template's).
    #[arg(long)]
    accruals_per_message: Option<u64>,
    /// Messages one invocation applies at once (default: the template's).
    #[arg(long)]
    message_concurrency: Option<u64>,
    /// Function memory in MB (default: the template's).
    #[arg(long)]
    memory: Option<u64>,
    /// Items per API request (the client's chunk).
    #[arg(long, default_value_t = 20_000)]
    items_per_request: u64,
    /// API requests in flight (`submit --parallel`).
    #[arg(long, default_value_t = 4)]
    submitters: u64,
    /// The table's write throughput at the start, WRU/s: warm throughput or a previous peak (default: a new
    /// on-demand table).
    #[arg(long)]
    warm_write_units: Option<f64>,
    /// Bytes of a member id.
    #[arg(long, default_value_t = 12)]
    member_id_bytes: usize,
    /// Parameters file (default: the shipped cli/plan/params.yaml).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Args, Clone)]
struct E2eArgs {
    /// Accruals in the campaign.
    #[arg(long, default_value_t = 100_000)]
    accruals: usize,
    /// Accruals per member (1 = every accrual a different member; more = hot keys).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Worker MaximumConcurrency (default: the template's).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Messages per worker invocation (default: the template's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Accruals packed per message, Pointflow only (default: the template's).
    #[arg(long)]
    accruals_per_message: Option<usize>,
    /// Messages of a batch one worker processes at once (default: the template's; 1 on moto, which is not safe
    /// against concurrent transactions).
    #[arg(long)]
    message_concurrency: Option<usize>,
    /// Requests submitted to the API at once.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Designs to run (repeatable).
    #[arg(long = "variant", value_enum, default_values = ["pointflow", "baseline"])]
    variants: Vec<Variant>,
    /// Embedded (a fresh SQLite file per run) or aws (a fresh table and queues per run, e.g. on moto).
    #[arg(long, value_enum, default_value = "embedded")]
    backend: BackendKind,
    /// Folder for the embedded runs' databases (each removed after its run).
    #[arg(long, default_value = ".pointflow/bench")]
    work_dir: PathBuf,
    /// Name prefix of the tables and queues the aws backend creates.
    #[arg(long, default_value = "pointflow-bench")]
    prefix: String,
    /// Append each run's figures to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

impl E2eArgs {
    fn backend(&self) -> BenchBackend {
        match self.backend {
            BackendKind::Embedded => BenchBackend::Embedded {
                dir: self.work_dir.clone(),
            },
            BackendKind::Aws => BenchBackend::Aws {
                prefix: self.prefix.clone(),
            },
        }
    }

    fn spec(&self) -> RunSpec {
        RunSpec {
            variant: Variant::Pointflow,
            accruals: self.accruals,
            repeats: self.repeats,
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            accruals_per_message: self.accruals_per_message,
            message_concurrency: self.message_concurrency,
            submitters: self.submitters,
            timeout: Duration::from_secs(self.timeout),
        }
    }
}

#[derive(Args)]
struct LocalArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// SQLite in one file: no AWS account, no Docker.
    Embedded,
    /// The AWS adapters, configured like the AWS SDK (AWS_ENDPOINT_URL for moto or LocalStack).
    Aws,
}

#[derive(Args)]
struct BackendArgs {
    /// Where accruals are stored and queued.
    #[arg(long, value_enum, default_value = "embedded", global = true)]
    backend: BackendKind,
    /// Embedded database file (`:memory:` for a throw-away run).
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    db: PathBuf,
    /// DynamoDB table (aws backend).
    #[arg(long, env = "TABLE_NAME", default_value = "pointflow-local", global = true)]
    table: String,
    /// Accrual queue URL (aws backend).
    #[arg(long, env = "QUEUE_URL", global = true)]
    queue_url: Option<String>,
    /// Dead-letter queue URL (aws backend).
    #[arg(long, env = "DLQ_URL", global = true)]
    dlq_url: Option<String>,
    /// Folder standing in for the import bucket (embedded backend).
    #[arg(long, default_value = DEFAULT_BUCKET_DIR, global = true)]
    bucket_dir: PathBuf,
    /// Import bucket (aws backend).
    #[arg(long, env = "IMPORT_BUCKET", global = true)]
    bucket: Option<String>,
    /// Import queue URL (aws backend).
    #[arg(long, env = "IMPORT_QUEUE_URL", global = true)]
    import_queue_url: Option<String>,
    /// Create the table, queues and bucket first (aws backend, for an emulator).
    #[arg(long, global = true)]
    create: bool,
    /// Worker invocations in flight at most (the event source's MaximumConcurrency; default from template.yaml).
    #[arg(long, global = true)]
    concurrency: Option<usize>,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Serve the API on loopback (like `sam local start-api`) with pollers applying the queue.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
    },
    /// Generate a campaign, submit it through the local API, wait, verify, report.
    Demo {
        /// Members in the campaign.
        #[arg(long, default_value_t = 500_000)]
        members: usize,
        /// Point types credited to each member.
        #[arg(long, default_value_t = 2)]
        point_types: usize,
        /// Accruals per member and point type.
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// Names the campaign: the same seed is the same campaign (a re-run credits nothing).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Requests submitted in parallel.
        #[arg(long, default_value_t = 4)]
        submitters: usize,
        /// Accruals per request (default: the API's limit from template.yaml).
        #[arg(long)]
        chunk: Option<usize>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Drop a CSV file into the import bucket and wait for its job: the S3 file-drop path, locally.
    ///
    /// Exit status: 0 all rows credited, 3 some rows rejected (see the report) or accruals failed, 1 the file could
    /// not be imported.
    Import {
        /// The CSV file (header row: member_id, point_type, amount, optional accrual_id, reason).
        file: PathBuf,
        /// Object key to drop it at (default: imports/<file name>).
        #[arg(long)]
        key: Option<String>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// No progress spinner.
        #[arg(long)]
        quiet: bool,
    },
    /// Cancel a completed job: reverse every accrual it credited, once (run it again to resume).
    ///
    /// Points already spent are not taken back (counted "spent"); ids the job did not credit itself are left
    /// alone ("skipped"). Exit status: 0 every credit reversed, 3 some were already spent, 1 could not finish.
    Cancel {
        /// The job id.
        job_id: String,
        /// Messages of the job worked on at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Output for people or for scripts.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A refusal (4xx) is exit status 3 with the API's words; anything else an error.
fn refusal_exit(error: ClientError, output: Output) -> anyhow::Result<ExitCode> {
    match &error {
        ClientError::Refused { body, .. } => {
            match output {
                Output::Json => println!("{body}"),
                Output::Human => eprintln!("refused: {error}"),
            }
            Ok(ExitCode::from(3))
        }
        _ => Err(error.into()),
    }
}

fn api_client(api: &ApiArgs) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::new(
        &api.endpoint,
        api.api_key.clone(),
        Duration::from_secs(api.request_timeout.max(1)),
    )?)
}

fn submit_defaults() -> SubmitOptions {
    SubmitOptions {
        format: Format::Ndjson,
        limits: ChunkLimits::default(),
        campaign: String::new(),
        parallel: 4,
        wait: false,
        poll_interval: Duration::from_secs(1),
        wait_timeout: Duration::from_secs(3600),
        progress: true,
    }
}

fn run_simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    use pointflow::testkit::simulation::{run_seed, run_seeds, SimBackend, SimOptions};

    let options = SimOptions {
        backend: match args.store {
            SimStore::Memory => SimBackend::Memory,
            SimStore::Sqlite => SimBackend::Sqlite,
        },
        flaw: None,
        trace: args.trace,
    };
    if let Some(seed) = args.seed {
        let started = std::time::Instant::now();
        let outcome = run_seed(seed, &options);
        for line in &outcome.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} in {:.3} s",
            if outcome.passed() { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        println!("faults injected {}:\n{}", outcome.faults.total(), outcome.faults);
        if outcome.passed() {
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}", outcome.report());
        return Ok(ExitCode::FAILURE);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let summary = run_seeds(args.from, args.seeds, &options, threads, false);
    println!("{summary}");
    let Some(first) = summary.failures.first() else {
        return Ok(ExitCode::SUCCESS);
    };
    let failing: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    println!("failing seeds: {failing:?}");
    // Replayed with its trace: the same seed makes the same run.
    println!(
        "{}",
        run_seed(first.seed, &SimOptions { trace: true, ..options }).report()
    );
    Ok(ExitCode::FAILURE)
}

fn run_plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let params = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Params::from_yaml(&text).with_context(|| path.display().to_string())?
        }
        None => Params::shipped()?,
    };
    let settings = StackSettings::from_template().context("reading template.yaml")?;
    let template_u64 = |name: &'static str| -> anyhow::Result<u64> {
        pointflow_cli::settings::template_parameter(name).with_context(|| format!("template parameter {name}"))
    };
    let members = args.members.unwrap_or(args.accruals).clamp(1, args.accruals.max(1));
    let input = PlanInput {
        accruals: args.accruals,
        members,
        hot_member_accruals: args
            .hot_member_accruals
            .unwrap_or_else(|| args.accruals.div_ceil(members)),
        items_per_request: args.items_per_request.min(settings.ingest.max_items as u64),
        submitters: args.submitters,
        api_rate_limit: template_u64("ApiRateLimit")? as f64,
        accruals_per_message: args
            .accruals_per_message
            .unwrap_or(settings.ingest.packing.max_accruals as u64),
        batch_size: args.batch_size.unwrap_or(settings.batch_size as u64),
        max_concurrency: args.max_concurrency.unwrap_or(settings.maximum_concurrency as u64),
        message_concurrency: args
            .message_concurrency
            .unwrap_or(settings.worker.message_concurrency as u64),
        memory_mb: match args.memory {
            Some(mb) => mb,
            None => template_u64("FunctionMemorySize")?,
        },
        table: args.warm_write_units.map_or(TableStart::New, TableStart::Warm),
        member_id_bytes: args.member_id_bytes,
    };
    let plan = plan(&params, &input);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Human => println!("{plan}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_bench_e2e(args: E2eArgs) -> anyhow::Result<ExitCode> {
    let settings = StackSettings::from_template().context("reading template.yaml")?;
    let backend = args.backend();
    let mut results = Vec::new();
    for &variant in &args.variants {
        let spec = RunSpec { variant, ..args.spec() };
        if args.output == Output::Human {
            eprintln!(
                "running {variant}: {} accruals, {} per member…",
                spec.accruals, spec.repeats
            );
        }
        let result = run_one(&backend, &settings, &spec).await?;
        if let Some(csv) = &args.csv {
            append_csv(csv, std::slice::from_ref(&result))?;
        }
        results.push(result);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Human => {
            let find = |v: Variant| results.iter().find(|r| r.variant == v);
            match (find(Variant::Pointflow), find(Variant::Baseline)) {
                (Some(pointflow), Some(baseline)) => println!("{}", Comparison { pointflow, baseline }),
                _ => println!("{}", serde_json::to_string_pretty(&results)?),
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_bench_sweep(
    args: E2eArgs,
    knobs: Vec<Knob>,
    values: Vec<String>,
    plot: PathBuf,
) -> anyhow::Result<ExitCode> {
    if values.len() > knobs.len() {
        anyhow::bail!("--values given {} times for {} --vary", values.len(), knobs.len());
    }
    let mut axes = Vec::new();
    for (i, knob) in knobs.iter().enumerate() {
        let grid = match values.get(i) {
            Some(list) => list
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--values: {v:?} is not a count"))
                })
                .collect::<anyhow::Result<Vec<usize>>>()?,
            None => knob.default_values(),
        };
        axes.push((*knob, grid));
    }
    let settings = StackSettings::from_template().context("reading template.yaml")?;
    let csv = args.csv.clone().unwrap_or_else(|| PathBuf::from("sweep.csv"));
    let human = args.output == Output::Human;
    let points = run_sweep(
        &args.backend(),
        &settings,
        &args.spec(),
        &args.variants,
        &axes,
        |point| {
            append_csv(&csv, std::slice::from_ref(&point.result))?;
            if human {
                let r = &point.result;
                eprintln!(
                    "{:<22} {:>6}  {:<9} {:>9.0} accruals/s  {:>8.2} s  {:.4} requests/accrual{}",
                    point.knob.label(),
                    point.value,
                    r.variant.to_string(),
                    r.accruals_per_s,
                    r.wall_s,
                    r.requests_per_accrual,
                    if r.ok { "" } else { "  FAILED" }
                );
            }
            Ok(())
        },
    )
    .await?;
    plot_sweep(&plot, &points)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&points)?),
        Output::Human => println!(
            "{} runs; figures in {}, plot in {}",
            points.len(),
            csv.display(),
            plot.display()
        ),
    }
    Ok(if points.iter().all(|p| p.result.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_jobs(views: &[pointflow::services::api::JobView], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(views)?),
        Output::Human => {
            println!(
                "{:<36}  {:<21}  {:>9}  {:>9}  {:>9}  {:>7}  {:>8}",
                "job", "status", "total", "applied", "duplicate", "failed", "rejected"
            );
            for v in views {
                let status = serde_json::to_value(v.status)?;
                println!(
                    "{:<36}  {:<21}  {:>9}  {:>9}  {:>9}  {:>7}  {:>8}",
                    v.job_id,
                    status.as_str().unwrap_or("?"),
                    v.total,
                    v.applied,
                    v.duplicate,
                    v.failed,
                    v.rejected
                );
                if let Some(error) = &v.error {
                    println!("  error: {error}");
                }
                if v.refused > 0 {
                    println!("  refused uses: {}", v.refused);
                }
                if let Some(cancel) = &v.cancel {
                    println!(
                        "  cancel: {} reversed, {} already spent, {} not credited by this job; {} of {} messages{}",
                        cancel.counts.reversed,
                        cancel.counts.spent,
                        cancel.counts.skipped,
                        cancel.messages,
                        v.messages,
                        if cancel.completed_at.is_some() {
                            ", complete"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

async fn run_dlq(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let settings = StackSettings::from_template().context("reading template.yaml")?;
    let (queue, dlq) = match args.backend {
        BackendKind::Embedded => open_queues(Some(&args.db), None, &settings).await?,
        BackendKind::Aws => {
            let (Some(queue_url), Some(dlq_url)) = (args.queue_url.as_deref(), args.dlq_url.as_deref()) else {
                anyhow::bail!("--backend aws needs --queue-url and --dlq-url");
            };
            open_queues(None, Some((queue_url, dlq_url)), &settings).await?
        }
    };
    let json = args.output == Output::Json;
    match args.command {
        DlqCommand::List { max } => {
            let letters = pointflow::services::dlq::list(dlq.as_ref(), max).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!(
                    "{:<40}  {:>8}  {:<36}  {:>6}  {:>8}",
                    "message", "receives", "job", "seq", "accruals"
                );
                for l in &letters {
                    let job = l.job_id.map(|j| j.to_string()).unwrap_or_else(|| "-".into());
                    let seq = l.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<40}  {:>8}  {job:<36}  {seq:>6}  {:>8}",
                        l.message_id, l.receive_count, l.accruals
                    );
                    if let Some(problem) = &l.problem {
                        println!("  not an accrual message: {problem}");
                    }
                }
                let accruals: usize = letters.iter().map(|l| l.accruals).sum();
                println!("{} messages, {accruals} accruals", letters.len());
            }
        }
        DlqCommand::Redrive { max } => {
            let moved = pointflow::services::dlq::redrive(dlq.as_ref(), queue.as_ref(), max).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&moved)?);
            } else {
                for (job, (messages, accruals)) in &moved.by_job {
                    println!("{job}  {messages} messages, {accruals} accruals");
                }
                println!(
                    "moved {} messages ({} accruals) back to the accrual queue{}",
                    moved.messages,
                    moved.accruals,
                    if moved.undecodable > 0 {
                        format!("; {} are not accrual messages and will fail again", moved.undecodable)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = api_client(&args.api)?;
    let name = args.file.to_string_lossy().into_owned();
    let format = match args.format.or_else(|| Format::from_name(&name)) {
        Some(format) => format,
        None => anyhow::bail!("cannot tell the format of {name} from its name; pass --format json|ndjson|csv"),
    };
    let (input, size): (Box<dyn std::io::Read + Send>, Option<u64>) = if name == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {name}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let human = args.api.output == Output::Human;
    let options = SubmitOptions {
        format,
        limits: ChunkLimits {
            max_items: args.chunk.max(1),
            ..ChunkLimits::default()
        },
        campaign: args.campaign,
        parallel: args.parallel.max(1),
        wait: args.wait,
        poll_interval: Duration::from_secs_f64(args.poll_interval.max(0.05)),
        wait_timeout: Duration::from_secs(args.timeout),
        progress: human && !args.quiet,
    };
    let report = tokio::select! {
        report = submit(&client, input, size, &options) => report?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: run the same command again to resume (nothing is credited twice)");
            return Ok(ExitCode::from(130));
        }
    };
    if human {
        for e in &report.errors {
            eprintln!("line {}: {}: {}", e.line, e.field, e.reason);
        }
        if report.errors.len() >= MAX_LISTED_ERRORS {
            eprintln!(
                "… only the first {MAX_LISTED_ERRORS} problems are listed ({} lines rejected in all)",
                report.rejected_lines
            );
        }
        for chunk in report.chunks.iter().filter(|c| c.error.is_some()) {
            eprintln!(
                "lines {}–{} not accepted: {}",
                chunk.first_line,
                chunk.last_line,
                chunk.error.as_deref().unwrap_or("")
            );
        }
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::from(report.exit_code()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulation makes the worker fail on purpose thousands of times:
    // its warnings would drown the report.
    if !matches!(cli.command, Command::Simulate(_)) {
        init_logging();
    }
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let local = match cli.command {
        Command::Local(local) => *local,
        Command::Bench(BenchCommand::Csv { file }) => {
            let report = tokio::task::spawn_blocking(move || bench_csv_parse(&file)).await??;
            println!("{report}");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Bench(BenchCommand::E2e(args)) => return run_bench_e2e(args).await,
        Command::Bench(BenchCommand::Sweep {
            run,
            knobs,
            values,
            plot,
        }) => return run_bench_sweep(run, knobs, values, plot).await,
        Command::Submit(args) => return run_submit(args).await,
        Command::Plan(args) => return run_plan(args),
        Command::Simulate(args) => return tokio::task::spawn_blocking(move || run_simulate(&args)).await?,
        Command::Dlq(args) => return run_dlq(args).await,
        Command::Status { api, jobs } => {
            let client = api_client(&api)?;
            let mut views = Vec::new();
            for job in &jobs {
                views.push(client.job(job).await?);
            }
            print_jobs(&views, api.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Wait { api, jobs, timeout } => {
            let client = api_client(&api)?;
            let options = SubmitOptions {
                wait_timeout: Duration::from_secs(timeout),
                progress: api.output == Output::Human,
                ..submit_defaults()
            };
            let views = wait_for_jobs(&client, &jobs, &options).await?;
            print_jobs(&views, api.output)?;
            let clean = views
                .iter()
                .all(|v| v.status == pointflow::domain::JobStatus::Completed);
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(3) });
        }
        Command::Reverse {
            api,
            accrual_id,
            use_id,
            reason,
        } => {
            let client = api_client(&api)?;
            let mut body = match (&accrual_id, &use_id) {
                (Some(id), _) => serde_json::json!({ "accrual_id": id }),
                (None, Some(id)) => serde_json::json!({ "use_id": id }),
                (None, None) => anyhow::bail!("give --accrual-id or --use-id"),
            };
            if let Some(reason) = reason {
                body["reason"] = reason.into();
            }
            return match client.reverse(&body).await {
                Ok((record, replayed)) => {
                    match api.output {
                        Output::Json => println!("{record}"),
                        Output::Human => println!(
                            "{} {} {} ({} {} points of member {})",
                            if replayed { "already reversed:" } else { "reversed" },
                            record["kind"].as_str().unwrap_or_default(),
                            record["id"].as_str().unwrap_or_default(),
                            record["amount"],
                            record["point_type"].as_str().unwrap_or_default(),
                            record["member_id"].as_str().unwrap_or_default()
                        ),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => refusal_exit(error, api.output),
            };
        }
        Command::Use {
            api,
            member,
            use_id,
            point_type,
            amount,
            reason,
        } => {
            let client = api_client(&api)?;
            let mut body = serde_json::json!({ "use_id": use_id, "point_type": point_type, "amount": amount });
            if let Some(reason) = reason {
                body["reason"] = reason.into();
            }
            return match client.use_points(&member, &body).await {
                Ok((record, replayed)) => {
                    match api.output {
                        Output::Json => println!("{record}"),
                        Output::Human => println!(
                            "{} {} {} points of member {member} (use {use_id}, at {})",
                            if replayed { "already deducted:" } else { "deducted" },
                            record["amount"],
                            record["point_type"].as_str().unwrap_or_default(),
                            record["applied_at"].as_str().unwrap_or_default()
                        ),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => refusal_exit(error, api.output),
            };
        }
        Command::Cancel {
            api,
            job,
            wait,
            timeout,
        } => {
            let client = api_client(&api)?;
            let started = std::time::Instant::now();
            let mut view = client.cancel_job(&job).await?;
            while wait && view.cancel.as_ref().is_some_and(|c| c.completed_at.is_none()) {
                if started.elapsed() > Duration::from_secs(timeout) {
                    anyhow::bail!(
                        "job {job}'s cancel did not finish within {timeout} s; run the same command to resume"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                view = client.job(&job).await?;
            }
            let cancel = view.cancel.clone().context("the API did not record the cancel")?;
            match api.output {
                Output::Json => println!("{}", serde_json::to_string(&view)?),
                Output::Human => println!(
                    "job {job}: {} reversed, {} already spent, {} not credited by this job ({} of {} messages{})",
                    cancel.counts.reversed,
                    cancel.counts.spent,
                    cancel.counts.skipped,
                    cancel.messages,
                    view.messages,
                    if cancel.completed_at.is_some() {
                        ", complete"
                    } else {
                        ", queued"
                    }
                ),
            }
            return Ok(if cancel.counts.spent > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::History {
            api,
            member,
            point_type,
            limit,
            cursor,
            all,
        } => {
            let client = api_client(&api)?;
            let mut cursor = cursor;
            loop {
                let page = client
                    .history(&member, point_type.as_deref(), Some(limit), cursor.as_deref())
                    .await?;
                let next = page["next_cursor"].as_str().map(str::to_owned);
                match api.output {
                    Output::Json => println!("{page}"),
                    Output::Human => {
                        for entry in page["entries"].as_array().into_iter().flatten() {
                            let text = |name: &str| entry[name].as_str().unwrap_or_default();
                            let kind = match text("reverses") {
                                "" => text("kind").to_owned(),
                                target => format!("reversal of {target}"),
                            };
                            println!(
                                "{:<30} {kind:<20} {:>12} {:<16} {}{}",
                                text("at"),
                                entry["amount"].as_i64().unwrap_or(0),
                                text("point_type"),
                                text("id"),
                                match text("job_id") {
                                    "" => String::new(),
                                    job => format!("  (job {job})"),
                                }
                            );
                        }
                        if let (Some(next), false) = (&next, all) {
                            println!("more: pointflow history {member} --cursor {next}");
                        }
                    }
                }
                match next {
                    Some(next) if all => cursor = Some(next),
                    _ => break,
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Balance { api, member } => {
            let client = api_client(&api)?;
            let balances = client.balances(&member).await?;
            match api.output {
                Output::Json => println!("{balances}"),
                Output::Human => {
                    if let Some(map) = balances.get("balances").and_then(|b| b.as_object()) {
                        for (point_type, balance) in map {
                            let detail = &balances["details"][point_type];
                            let figure = |name: &str| detail[name].as_u64().unwrap_or(0);
                            println!(
                                "{point_type:<32} {balance:>12} available  {:>10} pending  {:>10} expiring soon  {:>10} expired",
                                figure("pending"),
                                figure("expiring_soon"),
                                figure("expired")
                            );
                        }
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut settings = StackSettings::from_template().context("reading template.yaml")?;
    if let Some(cap) = local.backend.concurrency {
        settings.maximum_concurrency = cap.max(1);
    }
    let choice = match local.backend.backend {
        BackendKind::Embedded => BackendChoice::Embedded {
            db: local.backend.db,
            bucket_dir: local.backend.bucket_dir,
        },
        BackendKind::Aws => BackendChoice::Aws(AwsResources {
            table: local.backend.table,
            queue_url: local.backend.queue_url,
            dlq_url: local.backend.dlq_url,
            bucket: local.backend.bucket,
            import_queue_url: local.backend.import_queue_url,
            create: local.backend.create,
        }),
    };
    let backend = LocalBackend::open(&choice, &settings).await?;
    let pollers = settings.worker_pollers(Duration::from_secs(1));
    match local.command {
        LocalCommand::Cancel {
            job_id,
            parallel,
            output,
        } => {
            let job_id: pointflow::domain::JobId = job_id.parse().context("the job id is not a UUID")?;
            let job = pointflow::services::cancel::cancel_job(
                backend.ledger.as_ref(),
                backend.jobs.as_ref(),
                job_id,
                parallel,
            )
            .await?;
            let cancel = job.cancel.clone().context("the store did not record the cancel")?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string(&pointflow::services::api::JobView::from(&job))?
                ),
                Output::Human => {
                    println!(
                    "job {job_id}: {} reversed, {} already spent, {} not credited by this job ({} of {} messages{})",
                    cancel.counts.reversed,
                    cancel.counts.spent,
                    cancel.counts.skipped,
                    cancel.messages,
                    job.messages,
                    if cancel.completed_at.is_some() { ", complete" } else { "" }
                )
                }
            }
            Ok(if cancel.counts.spent > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        LocalCommand::Serve { addr } => {
            let runner = Runner::start(&backend, &settings, addr, pollers).await?;
            eprintln!(
                "Pointflow API on {} ({}); up to {} worker invocations at once. Ctrl-C stops.",
                runner.base_url(),
                backend.description,
                settings.maximum_concurrency
            );
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            eprintln!("stopping: finishing in-flight batches…");
            runner.stop().await?;
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Demo {
            members,
            point_types,
            repeats,
            seed,
            submitters,
            chunk,
            timeout,
            quiet,
        } => {
            let campaign = Campaign {
                members,
                point_types,
                repeats,
                seed,
                chunk: chunk
                    .unwrap_or(settings.ingest.max_items)
                    .min(settings.ingest.max_items),
            };
            let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse()?, pollers).await?;
            eprintln!(
                "demo: {} accruals ({members} members × {point_types} point types × {repeats}), seed {seed}, \
                 on {}; worker cap {}",
                campaign.len(),
                backend.description,
                settings.maximum_concurrency
            );
            let base_url = runner.base_url();
            let demo = run_demo(
                &base_url,
                &backend,
                &runner.stats,
                campaign,
                submitters,
                !quiet,
                Duration::from_secs(timeout),
            );
            let report = tokio::select! {
                report = demo => report,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: stopping cleanly; run the same demo again to resume");
                    runner.stop().await?;
                    return Ok(ExitCode::from(130));
                }
            };
            runner.stop().await?;
            let report = report?;
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LocalCommand::Import {
            file,
            key,
            timeout,
            quiet,
        } => {
            let key = match key {
                Some(key) => key,
                None => default_key(&file)?,
            };
            let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse()?, pollers).await?;
            eprintln!("import: {} → {key} on {}", file.display(), backend.description);
            let summary = tokio::select! {
                summary = run_import(&backend, &file, &key, !quiet, Duration::from_secs(timeout)) => summary,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: stopping cleanly; run the same import again to resume");
                    runner.stop().await?;
                    return Ok(ExitCode::from(130));
                }
            };
            runner.stop().await?;
            let summary = summary?;
            println!("{summary}");
            Ok(ExitCode::from(summary.exit_code()))
        }
    }
}
