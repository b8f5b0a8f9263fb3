//! `pointflow submit`: a campaign file to the API in chunks, resumably; the
//! client itself is `pointflow_cli::client::submit`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pointflow::domain::accrual_ids::campaign_from_file_name;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{submit, SubmitOptions, SubmitReport, MAX_LISTED_ERRORS};

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
    let (input, size): (Box<dyn std::io::Read + Send>, Option<u64>) = if name == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {name}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let campaign = match args.campaign.or_else(|| campaign_from_file_name(&name)) {
        Some(campaign) => campaign,
        None => anyhow::bail!("cannot name the campaign of {name}; pass --campaign NAME"),
    };
    let human = args.api.output == Output::Human;
    let options = SubmitOptions {
        format,
        sheet: args.sheet.clone(),
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
    if human {
        print_problems(&report);
        println!("{report}");
    } else {
        print_pretty_json(&report)?;
    }
    Ok(ExitCode::from(report.exit_code()))
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
