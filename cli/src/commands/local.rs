//! `pointflow local serve`, `demo`, `import`, `cancel` and `jobs`: the whole pipeline
//! in this process (the API, the pollers standing in for the event source
//! mappings, the workers) over the embedded or the AWS backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use pointflow::domain::audit::Audit;
use pointflow::domain::job_list::JobCursor;
use pointflow::domain::JobId;
use pointflow::services::api::{JobList, JobView};
use pointflow::services::job_list::job_page;
use pointflow_cli::backend::{AwsResources, BackendChoice, LocalBackend, DEFAULT_BUCKET_DIR, DEFAULT_DB};
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::exposure::{check_bind, Exposure, ALLOW_REMOTE_FLAG};
use pointflow_cli::import::{default_key, run_import_sheet};
use pointflow_cli::poller::PollerSettings;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use time::OffsetDateTime;

use pointflow_cli::stack::StackOutputs;

use super::jobs::ListFilters;
use super::{template_settings, BackendKind, StackArg};

/// The table of `--backend aws` when neither --table nor --stack names one (an emulator's).
const DEFAULT_TABLE: &str = "pointflow-local";
use crate::render::{cancel_summary, Output};

/// `pointflow local`'s arguments: the backend (global, so they may follow the subcommand), and the subcommand.
#[derive(Args)]
pub struct LocalArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Args)]
struct BackendArgs {
    /// Where accruals are stored and queued [default: embedded, or aws with --stack].
    #[arg(long, value_enum, global = true)]
    backend: Option<BackendKind>,
    #[command(flatten)]
    stack: StackArg,
    /// Embedded database file (`:memory:` for a throw-away run).
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    db: PathBuf,
    /// DynamoDB table (aws backend) [default: the stack's TableName, or pointflow-local].
    #[arg(long, env = "TABLE_NAME", global = true)]
    table: Option<String>,
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
    /// Worker invocations in flight at most (the event source's MaximumConcurrency) [default: template.yaml's, at most 8 on the embedded backend].
    #[arg(long, global = true)]
    concurrency: Option<usize>,
    /// Most accruals one job may hold, a request's or a file's (the stack's MaxAccrualsPerJob; default from
    /// template.yaml), to try a stack deployed with another ceiling.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    max_accruals_per_job: Option<u64>,
}

impl BackendArgs {
    /// The backend these arguments name.
    async fn choice(self) -> anyhow::Result<BackendChoice> {
        Ok(match self.stack.backend(self.backend)? {
            BackendKind::Embedded => BackendChoice::Embedded {
                db: self.db,
                bucket_dir: self.bucket_dir,
            },
            BackendKind::Aws => {
                let outputs = self.stack.outputs().await?;
                BackendChoice::Aws(AwsResources {
                    table: StackOutputs::or_output(self.table, &outputs.table)
                        .unwrap_or_else(|| DEFAULT_TABLE.to_owned()),
                    queue_url: StackOutputs::or_output(self.queue_url, &outputs.queue_url),
                    dlq_url: StackOutputs::or_output(self.dlq_url, &outputs.dlq_url),
                    bucket: StackOutputs::or_output(self.bucket, &outputs.bucket),
                    import_queue_url: StackOutputs::or_output(self.import_queue_url, &outputs.import_queue_url),
                    create: self.create,
                })
            }
        })
    }
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Serve the API on loopback (like `sam local start-api`) with pollers applying the queue.
    ///
    /// It takes unsigned requests, so it listens on loopback only and answers only requests whose Host header is
    /// localhost, 127.0.0.1 or [::1] with its port (against DNS rebinding), unless --allow-remote is given.
    Serve {
        /// Address to listen on (loopback unless --allow-remote).
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// Listen on a non-loopback address and answer any Host header: anyone who reaches the port can
        /// credit, use and cancel points on this backend without credentials.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Generate a campaign, submit it through the local API, wait, verify, report.
    Demo(DemoArgs),
    /// Drop a CSV file, NDJSON file (.ndjson, .jsonl) or Excel workbook (.xlsx) into the import bucket and wait for its job: the S3 file-drop path, locally.
    ///
    /// Exit status: 0 all rows credited, 3 some rows rejected (see the report) or accruals failed, 1 the file could
    /// not be imported.
    Import(ImportArgs),
    /// Cancel a completed job: reverse every accrual it credited, once (run it again to resume).
    ///
    /// Points already spent are not taken back (counted "spent"); ids the job did not credit itself are left
    /// alone ("skipped"). Exit status: 0 every credit reversed, 3 some were already spent, 1 could not finish.
    Cancel(CancelArgs),
    /// List jobs newest first, read from the store itself (as `GET /v1/jobs` would list them).
    Jobs(JobsArgs),
}

#[derive(Args)]
struct DemoArgs {
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
}

#[derive(Args)]
struct ImportArgs {
    /// The CSV file (header row: member_id, point_type, amount; optional accrual_id, reason, apply_at, expires_at), NDJSON file (.ndjson/.jsonl: one JSON accrual per line) or Excel workbook (.xlsx).
    file: PathBuf,
    /// Object key to drop it at (default: imports/<file name>).
    #[arg(long)]
    key: Option<String>,
    /// The campaign of its rows without accrual_id, set as the object's
    /// `campaign` metadata (default: none, so the key is the campaign). The
    /// same rows in the same campaign are credited once, whatever the file.
    #[arg(long)]
    campaign: Option<String>,
    /// The file's text encoding (cp949, euc-kr, shift_jis, gb18030,
    /// windows-1252, utf-8, …), set as the object's `encoding` metadata
    /// (default: detected from the file's first 64 KiB). A byte-order mark
    /// (UTF-8, UTF-16LE, UTF-16BE) wins over it.
    #[arg(long)]
    encoding: Option<String>,
    /// The sheet of a workbook (.xlsx) to read, set as the object's `sheet`
    /// metadata (default: the workbook's first visible worksheet).
    #[arg(long)]
    sheet: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// No progress spinner.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct JobsArgs {
    #[command(flatten)]
    filters: ListFilters,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Args)]
struct CancelArgs {
    /// The job id.
    job_id: String,
    /// Messages of the job worked on at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Opens the backend (every subcommand needs it) and runs the subcommand.
pub async fn run(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let LocalArgs { backend, command } = args;
    if let LocalCommand::Serve { addr, allow_remote } = &command {
        // Refused before the backend is opened (or, with --create, created).
        check_bind(*addr, exposure(*allow_remote))?;
    }
    let mut settings = template_settings()?;
    let concurrency = backend.concurrency;
    if let Some(ceiling) = backend.max_accruals_per_job {
        settings.ingest.ceilings.max_accruals_per_job = ceiling;
        settings.import.ceilings.max_accruals_per_job = ceiling;
    }
    let choice = backend.choice().await?;
    settings.cap_worker_concurrency(concurrency, matches!(choice, BackendChoice::Embedded { .. }));
    let backend = LocalBackend::open(&choice, &settings).await?;
    let pollers = settings.worker_pollers(Duration::from_secs(1));
    match command {
        LocalCommand::Cancel(args) => cancel(&backend, args).await,
        LocalCommand::Jobs(args) => jobs(&backend, args).await,
        LocalCommand::Serve { addr, allow_remote } => {
            serve(&backend, &settings, pollers, addr, exposure(allow_remote)).await
        }
        LocalCommand::Demo(args) => demo(&backend, &settings, pollers, args).await,
        LocalCommand::Import(args) => import(&backend, &settings, pollers, args).await,
    }
}

fn exposure(allow_remote: bool) -> Exposure {
    if allow_remote {
        Exposure::Remote
    } else {
        Exposure::LoopbackOnly
    }
}

/// Cancels the job directly on the store (no API, no pollers).
async fn cancel(backend: &LocalBackend, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let job_id: JobId = args.job_id.parse().context("the job id is not a UUID")?;
    // An operator's in-process cancel: recorded as `local`.
    let audit = Audit::local(None);
    let job = pointflow::services::cancel::cancel_job(
        backend.ledger.as_ref(),
        backend.jobs.as_ref(),
        job_id,
        Some(&audit),
        args.parallel,
    )
    .await?;
    let cancel = job.cancel.clone().context("the store did not record the cancel")?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&JobView::from(&job))?),
        Output::Human => println!("{}", cancel_summary(job_id, &cancel, job.messages, "")),
    }
    Ok(if cancel.counts.spent > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Lists jobs from the store (no API, no pollers), paged as the API pages them.
async fn jobs(backend: &LocalBackend, args: JobsArgs) -> anyhow::Result<ExitCode> {
    let JobsArgs { filters, output } = args;
    filters
        .print_pages(output, "pointflow local jobs", |cursor| {
            let query = filters.query(cursor.as_deref());
            let store = backend.jobs.clone();
            async move {
                let page = job_page(store.as_ref(), &query?, OffsetDateTime::now_utc()).await?;
                Ok(JobList {
                    jobs: page.jobs.iter().map(JobView::from).collect(),
                    next_cursor: page.next_cursor.as_ref().map(JobCursor::encode),
                })
            }
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the API until Ctrl-C, then lets in-flight batches finish.
async fn serve(
    backend: &LocalBackend,
    settings: &StackSettings,
    pollers: PollerSettings,
    addr: SocketAddr,
    exposure: Exposure,
) -> anyhow::Result<ExitCode> {
    if exposure == Exposure::Remote {
        eprintln!(
            "warning: {ALLOW_REMOTE_FLAG}: anyone who can reach {addr} can credit, use and cancel points on {} \
             without credentials",
            backend.description
        );
    }
    let runner = Runner::start_serving(backend, settings, addr, pollers, exposure, true).await?;
    if let Some(notice) = runner.takeover.notice(settings.visibility_timeout) {
        eprintln!("{notice}");
    }
    eprintln!(
        "Pointflow API on {} ({}); up to {} worker invocations at once. Ctrl-C stops.",
        runner.base_url(),
        backend.description,
        settings.maximum_concurrency
    );
    eprintln!("Operator console: {}/console/", runner.base_url());
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    eprintln!("stopping: finishing in-flight batches…");
    runner.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the demo campaign through a runner on a free loopback port; exit
/// status 1 unless every balance came out exact.
async fn demo(
    backend: &LocalBackend,
    settings: &StackSettings,
    pollers: PollerSettings,
    args: DemoArgs,
) -> anyhow::Result<ExitCode> {
    let DemoArgs {
        members,
        point_types,
        repeats,
        seed,
        submitters,
        chunk,
        timeout,
        quiet,
    } = args;
    let campaign = Campaign {
        members,
        point_types,
        repeats,
        seed,
        chunk: chunk
            .unwrap_or(settings.ingest.max_items)
            .min(settings.ingest.max_items),
    };
    let runner = Runner::start(backend, settings, "127.0.0.1:0".parse()?, pollers).await?;
    if let Some(notice) = runner.takeover.notice(settings.visibility_timeout) {
        eprintln!("{notice}");
    }
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
        backend,
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

/// Drops the file into the (local or AWS) import bucket with a runner's
/// pollers applying it; the exit status is the import's.
async fn import(
    backend: &LocalBackend,
    settings: &StackSettings,
    pollers: PollerSettings,
    args: ImportArgs,
) -> anyhow::Result<ExitCode> {
    let ImportArgs {
        file,
        key,
        campaign,
        encoding,
        sheet,
        timeout,
        quiet,
    } = args;
    let key = match key {
        Some(key) => key,
        None => default_key(&file)?,
    };
    let runner = Runner::start(backend, settings, "127.0.0.1:0".parse()?, pollers).await?;
    if let Some(notice) = runner.takeover.notice(settings.visibility_timeout) {
        eprintln!("{notice}");
    }
    eprintln!("import: {} → {key} on {}", file.display(), backend.description);
    let summary = tokio::select! {
        summary = run_import_sheet(
            backend,
            &file,
            &key,
            campaign.as_deref(),
            encoding.as_deref(),
            sheet.as_deref(),
            !quiet,
            Duration::from_secs(timeout),
        ) => summary,
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
