//! Output shared by several commands: the `--output` choice, pretty JSON, the
//! job table and the one-line cancel summary. A command's own table lives with
//! the command.

use clap::ValueEnum;
use std::fmt::Display;

use pointflow::domain::audit::Audit;
use pointflow::domain::CancelProgress;
use pointflow::services::api::JobView;

/// `--output`: for people or for scripts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Prints `value` as indented JSON on stdout.
pub fn print_pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints jobs as a table (`Human`) or as a JSON array.
pub fn print_jobs(views: &[JobView], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_pretty_json(views)?,
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
                if let Some(audit) = &v.audit {
                    println!("  asked by: {}", describe_audit(audit));
                }
                if let Some(cancel) = &v.cancel {
                    if let Some(audit) = &cancel.audit {
                        println!("  cancel asked by: {}", describe_audit(audit));
                    }
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

/// Who asked, for people: `iam arn:… from 203.0.113.10, request …,
/// reason "…"`.
pub fn describe_audit(audit: &Audit) -> String {
    let caller = &audit.caller;
    let kind = serde_json::to_value(caller.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut text = kind;
    if let Some(id) = &caller.id {
        text.push_str(&format!(" {id}"));
    }
    if let Some(ip) = &caller.source_ip {
        text.push_str(&format!(" from {ip}"));
    }
    if let Some(request) = &audit.request_id {
        text.push_str(&format!(", request {request}"));
    }
    if let Some(reason) = &audit.reason {
        text.push_str(&format!(", reason {reason:?}"));
    }
    text
}

/// The line `cancel` prints for people: what the cancel of `job` did so far,
/// over `messages` messages. `unfinished` ends the line while the cancel is
/// still running (the API's cancel says it is queued; the local one, which
/// runs to the end or fails, says nothing).
pub fn cancel_summary(job: impl Display, cancel: &CancelProgress, messages: u64, unfinished: &str) -> String {
    format!(
        "job {job}: {} reversed, {} already spent, {} not credited by this job ({} of {} messages{})",
        cancel.counts.reversed,
        cancel.counts.spent,
        cancel.counts.skipped,
        cancel.messages,
        messages,
        if cancel.completed_at.is_some() {
            ", complete"
        } else {
            unfinished
        }
    )
}
