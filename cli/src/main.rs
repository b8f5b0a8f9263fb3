//! `pointflow`: one command for running Pointflow locally (and, as issues add
//! them, for clients, planning and benchmarks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pointflow_cli::backend::{AwsResources, BackendChoice, LocalBackend, DEFAULT_BUCKET_DIR, DEFAULT_DB};
use pointflow_cli::bench::bench_csv_parse;
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::import::{default_key, run_import};
use pointflow_cli::poller::PollerSettings;
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
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Parse and validate a CSV file on one thread (the import's parsing half): rows/s and peak RSS.
    Csv {
        /// The CSV file, in the file-drop format.
        file: PathBuf,
    },
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
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()).await {
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
    let pollers = PollerSettings {
        batch_size: settings.batch_size,
        batching_window: settings.batching_window,
        maximum_concurrency: settings.maximum_concurrency,
        wait: Duration::from_secs(1),
    };
    match local.command {
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
