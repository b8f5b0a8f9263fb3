//! `pointflow jobs`, `status`, `wait` and `cancel`: jobs, through the API
//! (and the filters `pointflow local jobs` shares).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use pointflow::domain::job_list::JobQuery;
use pointflow::domain::JobStatus;
use pointflow::services::api::JobList;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{wait_for_jobs, SubmitOptions};

use super::ApiArgs;
use crate::render::{cancel_summary, print_job_page, print_jobs, Output};

/// Which jobs `pointflow jobs` and `pointflow local jobs` list, and how
/// many pages.
#[derive(Args, Clone)]
pub struct ListFilters {
    /// Only jobs in this status: importing, queued, running, completed, completed_with_errors or failed.
    #[arg(long)]
    status: Option<String>,
    /// Only jobs from this source: api (POST /v1/jobs), file (dropped files), or an s3://bucket/prefix.
    #[arg(long)]
    source: Option<String>,
    /// Only jobs created after this RFC 3339 time (e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    created_after: Option<String>,
    /// Jobs per page (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Start after this cursor (a page's next_cursor).
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow the cursors to the oldest job.
    #[arg(long)]
    all: bool,
}

impl ListFilters {
    /// The query parameters of `GET /v1/jobs` for the page at `cursor`.
    fn parameters(&self, cursor: Option<&str>) -> Vec<(String, String)> {
        let mut parameters = Vec::new();
        let mut add = |name: &str, value: Option<&str>| {
            if let Some(value) = value {
                parameters.push((name.to_owned(), value.to_owned()));
            }
        };
        add("status", self.status.as_deref());
        add("source", self.source.as_deref());
        add("created_after", self.created_after.as_deref());
        add("limit", Some(&self.limit.to_string()));
        add("cursor", cursor);
        parameters
    }

    /// The query the API would read from these filters, checked here by
    /// the API's own rules, with the option's name in the error.
    pub fn query(&self, cursor: Option<&str>) -> anyhow::Result<JobQuery> {
        JobQuery::from_parameters(&self.parameters(cursor)).map_err(|e| {
            anyhow::anyhow!(
                "--{}: {}",
                e.name.replace('_', "-"),
                e.reason.replace("created_after", "--created-after")
            )
        })
    }

    /// The filter options as given, for the command that lists the next page.
    fn flags(&self) -> String {
        let quoted = |value: &str| {
            let plain = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/+@".contains(c));
            if plain {
                value.to_owned()
            } else {
                format!("'{}'", value.replace('\'', r"'\''"))
            }
        };
        let mut flags = String::new();
        for (flag, value) in [
            ("status", &self.status),
            ("source", &self.source),
            ("created-after", &self.created_after),
        ] {
            if let Some(value) = value {
                flags.push_str(&format!(" --{flag} {}", quoted(value)));
            }
        }
        flags.push_str(&format!(" --limit {}", self.limit));
        flags
    }

    /// Prints every page `next_page` gives (one, or with `--all` every one),
    /// `command` being how to ask for the next page.
    pub async fn print_pages<F, Fut>(&self, output: Output, command: &str, mut next_page: F) -> anyhow::Result<()>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<JobList>>,
    {
        self.query(self.cursor.as_deref())?;
        let mut cursor = self.cursor.clone();
        let mut first = true;
        loop {
            let page = next_page(cursor.take()).await?;
            print_job_page(&page, output, first)?;
            first = false;
            match (&page.next_cursor, self.all) {
                (Some(next), true) => cursor = Some(next.clone()),
                (Some(next), false) => {
                    if output == Output::Human {
                        println!("more: {command}{} --cursor {next}", self.flags());
                    }
                    return Ok(());
                }
                (None, _) => return Ok(()),
            }
        }
    }
}

/// `pointflow jobs`'s arguments.
#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    filters: ListFilters,
}

/// Lists jobs through the API, newest first.
pub async fn list(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let JobsArgs { api, filters } = args;
    let client = api.client().await?;
    filters
        .print_pages(api.output, "pointflow jobs", |cursor| {
            let parameters = filters.parameters(cursor.as_deref());
            let client = &client;
            async move { Ok(client.jobs(&parameters).await?) }
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

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
        encoding: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The next page's command repeats the filters, quoted for a shell
    /// where they need it, so a copied line lists the same jobs.
    #[test]
    fn the_next_page_command_repeats_the_filters_quoted() {
        let filters = ListFilters {
            status: Some("running".into()),
            source: Some("s3://b/it's here/".into()),
            created_after: Some("2026-12-01T00:00:00+09:00".into()),
            limit: 7,
            cursor: None,
            all: false,
        };
        assert_eq!(
            filters.flags(),
            r" --status running --source 's3://b/it'\''s here/' --created-after 2026-12-01T00:00:00+09:00 --limit 7"
        );
        let error = filters_with_status("done").query(None).unwrap_err().to_string();
        assert!(error.starts_with("--status: must be one of importing,"), "{error}");
    }

    fn filters_with_status(status: &str) -> ListFilters {
        ListFilters {
            status: Some(status.into()),
            source: None,
            created_after: None,
            limit: 50,
            cursor: None,
            all: false,
        }
    }
}
