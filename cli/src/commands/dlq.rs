//! `pointflow dlq list` and `dlq redrive`: the dead-letter queue, read
//! directly (not through the API), on the embedded or the AWS backend.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pointflow::services::dlq::{DeadLetter, Redriven};
use pointflow_cli::backend::{open_queues, DEFAULT_DB};

use super::{template_settings, BackendKind};
use crate::render::{print_pretty_json, Output};

/// `pointflow dlq`'s arguments: where the queues are, and the subcommand.
#[derive(Args)]
pub struct DlqArgs {
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

/// Lists or redrives dead letters.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let settings = template_settings()?;
    let (queue, dlq) = match args.backend {
        BackendKind::Embedded => open_queues(Some(&args.db), None, &settings).await?,
        BackendKind::Aws => {
            let (Some(queue_url), Some(dlq_url)) = (args.queue_url.as_deref(), args.dlq_url.as_deref()) else {
                anyhow::bail!("--backend aws needs --queue-url and --dlq-url");
            };
            open_queues(None, Some((queue_url, dlq_url)), &settings).await?
        }
    };
    match args.command {
        DlqCommand::List { max } => {
            let letters = pointflow::services::dlq::list(dlq.as_ref(), max).await?;
            match args.output {
                Output::Json => print_pretty_json(&letters)?,
                Output::Human => print_letters(&letters),
            }
        }
        DlqCommand::Redrive { max } => {
            let moved = pointflow::services::dlq::redrive(dlq.as_ref(), queue.as_ref(), max).await?;
            match args.output {
                Output::Json => print_pretty_json(&moved)?,
                Output::Human => print_redriven(&moved),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per dead letter, and the totals.
fn print_letters(letters: &[DeadLetter]) {
    println!(
        "{:<40}  {:>8}  {:<36}  {:>6}  {:>8}",
        "message", "receives", "job", "seq", "accruals"
    );
    for l in letters {
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

/// What a redrive moved, by job, and the totals.
fn print_redriven(moved: &Redriven) {
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
