//! `pointflow submit`: a campaign file to the API in chunks, resumably; the
//! client itself is `pointflow_cli::client::submit`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pointflow::domain::accrual_ids::campaign_from_file_name;
use pointflow::domain::text_encoding::declared;
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{submit, SubmitOptions, SubmitReport, MAX_LISTED_ERRORS};
use pointflow_cli::client::upload::{submit_upload, upload_format, UploadOptions, Via, AUTO_UPLOAD_BYTES};

use super::ApiArgs;
use crate::render::{print_pretty_json, Output};

/// `pointflow submit`'s arguments.
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The file; `-` reads stdin.
    file: PathBuf,
    /// The file's format (default: from its extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The sheet of a workbook (.xlsx) to read (default: its first visible worksheet).
    #[arg(long)]
    sheet: Option<String>,
    /// The text encoding of a CSV or NDJSON file (cp949, euc-kr, shift_jis, gb18030, windows-1252, utf-8, …;
    /// default: detected from its first 64 KiB). A byte-order mark (UTF-8, UTF-16LE, UTF-16BE) wins over it.
    /// With an upload it is the object's `encoding` metadata, read by the import.
    #[arg(long)]
    encoding: Option<String>,
    /// Names the campaign (default: the file's name up to its first `.`; required for stdin). Lines without
    /// `accrual_id` get ids from the campaign and their content, so re-running, fixing a line, re-chunking or
    /// renaming the file within the campaign credits nothing twice; another campaign name credits the lines again.
    #[arg(long)]
    campaign: Option<String>,
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
    /// How to send the file: `upload` sends it whole in one PUT to the URL `POST /v1/uploads` answers
    /// (CSV, NDJSON, XLSX; any size); `requests` in `POST /v1/jobs` requests of `--chunk` accruals; `auto`
    /// uploads a file over 5 MB when the endpoint offers uploads, else sends requests.
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    via: Via,
}

/// Submits the file and reports; the exit status is the report's (130 when
/// interrupted, which a re-run resumes).
pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client().await?;
    let name = args.file.to_string_lossy().into_owned();
    let format = match args.format.or_else(|| Format::from_name(&name)) {
        Some(format) => format,
        None => anyhow::bail!("cannot tell the format of {name} from its name; pass --format json|ndjson|csv|xlsx"),
    };
    let campaign = match args.campaign.clone().or_else(|| campaign_from_file_name(&name)) {
        Some(campaign) => campaign,
        None => anyhow::bail!("cannot name the campaign of {name}; pass --campaign NAME"),
    };
    // Checked here, before anything is sent: a label the decoder does not
    // know fails the command naming it.
    let encoding = match &args.encoding {
        Some(label) => Some(declared(label).with_context(|| format!("--encoding {label}"))?),
        None => None,
    };
    match try_upload(&client, &args, &name, format, &campaign).await? {
        Uploaded::Report(report) => return finish(*report, args.api.output == Output::Human),
        Uploaded::Interrupted => return Ok(ExitCode::from(130)),
        Uploaded::Skipped => {}
    }
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
        sheet: args.sheet.clone(),
        encoding,
        limits: ChunkLimits {
            max_items: args.chunk.max(1),
            ..ChunkLimits::default()
        },
        campaign,
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
    finish(report, human)
}

fn finish(report: SubmitReport, human: bool) -> anyhow::Result<ExitCode> {
    if human {
        print_problems(&report);
        println!("{report}");
    } else {
        print_pretty_json(&report)?;
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// What [`try_upload`] did.
enum Uploaded {
    Report(Box<SubmitReport>),
    /// Ctrl-C: a rerun resumes.
    Interrupted,
    /// Send requests instead.
    Skipped,
}

/// Sends the file in one upload when `--via` says so (or `auto` finds it
/// large and the endpoint offering uploads).
async fn try_upload(
    client: &ApiClient,
    args: &SubmitArgs,
    name: &str,
    format: Format,
    campaign: &str,
) -> anyhow::Result<Uploaded> {
    let size = if name == "-" {
        None
    } else {
        std::fs::metadata(&args.file).ok().map(|m| m.len())
    };
    let fall_back = match args.via {
        Via::Requests => return Ok(Uploaded::Skipped),
        Via::Auto => {
            if size.is_none_or(|size| size <= AUTO_UPLOAD_BYTES) || upload_format(format).is_none() {
                return Ok(Uploaded::Skipped);
            }
            true
        }
        Via::Upload => false,
    };
    if size.is_none() {
        anyhow::bail!("--via upload sends a file, not stdin: name the file");
    }
    let Some(upload_format) = upload_format(format) else {
        anyhow::bail!("--via upload sends CSV, NDJSON or XLSX files; {name} is JSON: use --via requests");
    };
    let options = UploadOptions {
        path: args.file.clone(),
        format: upload_format,
        campaign: campaign.to_owned(),
        sheet: args.sheet.clone(),
        encoding: args.encoding.clone(),
        wait: args.wait,
        poll_interval: Duration::from_secs_f64(args.poll_interval.max(0.05)),
        wait_timeout: Duration::from_secs(args.timeout),
    };
    let report = tokio::select! {
        report = submit_upload(client, &options, fall_back) => report?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: run the same command again to resume (nothing is credited twice)");
            return Ok(Uploaded::Interrupted);
        }
    };
    Ok(match report {
        Some(report) => Uploaded::Report(Box::new(report)),
        None => {
            eprintln!(
                "{} offers no uploads (POST /v1/uploads): sending requests",
                client.endpoint()
            );
            Uploaded::Skipped
        }
    })
}

/// Lists on stderr the lines rejected and the chunks the API did not accept.
fn print_problems(report: &SubmitReport) {
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
}
