//! `pointflow status`, `wait` and `cancel`: jobs, through the API.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use pointflow::domain::JobStatus;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{wait_for_jobs, SubmitOptions};

use super::ApiArgs;
use crate::render::{cancel_summary, print_jobs, Output};

/// `pointflow status`'s arguments.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Job ids.
    #[arg(required = true)]
    jobs: Vec<String>,
}

/// `pointflow wait`'s arguments.
#[derive(Args)]
pub struct WaitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Job ids.
    #[arg(required = true)]
    jobs: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// `pointflow cancel`'s arguments (the API's cancel; `local cancel` is the store's).
#[derive(Args)]
pub struct CancelArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The job id.
    job: String,
    /// Why the job is cancelled: kept with the cancel, for the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// Wait until every message of the job is cancelled.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// Prints the jobs as they are now.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client().await?;
    let mut views = Vec::new();
    for job in &args.jobs {
        views.push(client.job(job).await?);
    }
    print_jobs(&views, args.api.output)?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for the jobs to complete; exit status 3 when any did with errors.
pub async fn wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client().await?;
    // Only the waiting half of the options matters here; the rest are
    // `submit`'s defaults.
    let options = SubmitOptions {
        format: Format::Ndjson,
        sheet: None,
        limits: ChunkLimits::default(),
        campaign: String::new(),
        parallel: 4,
        wait: false,
        poll_interval: Duration::from_secs(1),
        wait_timeout: Duration::from_secs(args.timeout),
        progress: args.api.output == Output::Human,
    };
    let views = wait_for_jobs(&client, &args.jobs, &options).await?;
    print_jobs(&views, args.api.output)?;
    let clean = views.iter().all(|v| v.status == JobStatus::Completed);
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// Asks the API to cancel the job and, with `--wait`, follows it to the end.
/// Exit status 3 when some credits were already spent.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let CancelArgs {
        api,
        job,
        reason,
        wait,
        timeout,
    } = args;
    let client = api.client().await?;
    let started = Instant::now();
    let mut view = client.cancel_job(&job, reason.as_deref()).await?;
    while wait && view.cancel.as_ref().is_some_and(|c| c.completed_at.is_none()) {
        if started.elapsed() > Duration::from_secs(timeout) {
            anyhow::bail!("job {job}'s cancel did not finish within {timeout} s; run the same command to resume");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        view = client.job(&job).await?;
    }
    let cancel = view.cancel.clone().context("the API did not record the cancel")?;
    match api.output {
        Output::Json => println!("{}", serde_json::to_string(&view)?),
        Output::Human => println!("{}", cancel_summary(&job, &cancel, view.messages, ", queued")),
    }
    Ok(if cancel.counts.spent > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
