//! `pointflow dlq list`, `dlq archive` and `dlq redrive`: the dead-letter
//! queues (the accrual queue's, or with `--queue imports` the import
//! queue's), read directly (not through the API), on the embedded or the
//! AWS backend; archives in a local folder or under an S3 prefix.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::SqsQueue;
use pointflow::adapters::local_dir::DirObjects;
use pointflow::ports::objects::{ObjectRef, ObjectStore};
use pointflow::ports::WorkQueue;
use pointflow::services::dlq::{decode_archive, ArchivedLetter, DeadLetter, QueueKind, RedriveTargets, Redriven};
use pointflow_cli::backend::{open_import_queues, open_queues, DEFAULT_DB};
use time::OffsetDateTime;

use pointflow_cli::stack::StackOutputs;

use super::{template_settings, BackendKind, StackArg};
use crate::render::{print_pretty_json, Output};

/// `pointflow dlq`'s arguments: where the queues are, and the subcommand.
#[derive(Args)]
pub struct DlqArgs {
    /// Where the queues are [default: embedded, or aws with --stack].
    #[arg(long, value_enum, global = true)]
    backend: Option<BackendKind>,
    #[command(flatten)]
    stack: StackArg,
    /// Embedded database file.
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    db: PathBuf,
    /// Accrual queue URL (aws backend; the QueueUrl output).
    #[arg(long, env = "QUEUE_URL", global = true)]
    queue_url: Option<String>,
    /// Dead-letter queue URL (aws backend; the DeadLetterQueueUrl output).
    #[arg(long, env = "DLQ_URL", global = true)]
    dlq_url: Option<String>,
    /// Which dead-letter queue `list`, `archive` and `redrive` (without `--from`) read: the accrual
    /// queue's, or the import queue's (S3 notifications and chunk continuations of CSV imports).
    #[arg(long, value_enum, default_value = "accruals", global = true)]
    queue: QueueArg,
    /// Import queue URL (aws backend; the ImportQueueUrl output): needed by `--queue imports`, and by
    /// `redrive --from` for the import tasks of an archive.
    #[arg(long, env = "IMPORT_QUEUE_URL", global = true)]
    import_queue_url: Option<String>,
    /// Import dead-letter queue URL (aws backend; the ImportDeadLetterQueueUrl output).
    #[arg(long, env = "IMPORT_DLQ_URL", global = true)]
    import_dlq_url: Option<String>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human", global = true)]
    output: Output,
    #[command(subcommand)]
    command: DlqCommand,
}

/// `--queue`: which dead-letter queue.
#[derive(Clone, Copy, clap::ValueEnum)]
enum QueueArg {
    /// The accrual queue's DLQ.
    Accruals,
    /// The import queue's DLQ.
    Imports,
}

impl From<QueueArg> for QueueKind {
    fn from(arg: QueueArg) -> Self {
        match arg {
            QueueArg::Accruals => QueueKind::Accruals,
            QueueArg::Imports => QueueKind::Imports,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered messages (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
    /// Move dead-lettered messages back to their queue (or, with --from, archived ones, each to the queue it
    /// came from); they are applied nothing twice. Messages too old for their job's records (import tasks: for
    /// their file's report parts) are refused and left where they are.
    Redrive {
        /// At most this many (from the DLQ; default all).
        #[arg(long)]
        max: Option<usize>,
        /// Archive files to send back instead of the DLQ: files or folders of `dlq archive`, or s3://bucket/key.
        #[arg(long, num_args = 1..)]
        from: Vec<String>,
    },
    /// Move dead-lettered messages into archive files before SQS drops them (14 days after they were sent).
    Archive {
        /// A folder, or s3://bucket/prefix.
        #[arg(long)]
        to: String,
        /// At most this many (default all).
        #[arg(long)]
        max: Option<usize>,
    },
}

/// Where archives are: a local folder, or a bucket and prefix.
async fn archive_store(location: &str) -> (Arc<dyn ObjectStore>, String, String) {
    match location.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let sdk = pointflow::adapters::aws::load_config().await;
            let objects = Arc::new(S3Objects::new(pointflow::adapters::aws::s3_client(&sdk)));
            (objects, bucket.to_owned(), prefix.to_owned())
        }
        // The folder is the "bucket": keys are file names in it.
        None => (Arc::new(DirObjects::new(location)), String::new(), String::new()),
    }
}

/// The archived messages of `sources`: files, folders (their `.jsonl`
/// files, in name order) or S3 objects.
async fn read_archives(sources: &[String]) -> anyhow::Result<Vec<ArchivedLetter>> {
    let mut letters = Vec::new();
    for source in sources {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(rest) = source.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .with_context(|| format!("{source}: name an object, s3://bucket/key"))?;
            let (objects, _, _) = archive_store(source).await;
            let object = ObjectRef {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: 0,
                etag: None,
                version_id: None,
            };
            let mut reader = objects
                .open(&object, 0)
                .await
                .with_context(|| format!("reading {source}"))?;
            let body = tokio::task::spawn_blocking(move || {
                let mut body = Vec::new();
                reader.read_to_end(&mut body).map(|_| body)
            })
            .await?
            .with_context(|| format!("reading {source}"))?;
            files.push((source.clone(), body));
        } else if Path::new(source).is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(source)
                .with_context(|| format!("listing {source}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            paths.sort();
            for path in paths {
                let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                files.push((path.display().to_string(), body));
            }
        } else {
            let body = std::fs::read(source).with_context(|| format!("reading {source}"))?;
            files.push((source.clone(), body));
        }
        for (name, body) in files {
            letters.extend(decode_archive(&body).with_context(|| format!("reading {name}"))?);
        }
    }
    Ok(letters)
}

/// Lists or redrives dead letters.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let settings = template_settings()?;
    let kind = QueueKind::from(args.queue);
    // Each queue opened when it is named (aws) or always (embedded); a
    // command then takes what it needs, or says which option is missing.
    let outputs = args.stack.outputs().await?;
    let queue_url = StackOutputs::or_output(args.queue_url, &outputs.queue_url);
    let dlq_url = StackOutputs::or_output(args.dlq_url, &outputs.dlq_url);
    let import_queue_url = StackOutputs::or_output(args.import_queue_url, &outputs.import_queue_url);
    let import_dlq_url = StackOutputs::or_output(args.import_dlq_url, &outputs.import_dlq_url);
    let (accruals, import_queue, import_dlq) = match args.stack.backend(args.backend)? {
        BackendKind::Embedded => {
            let (import_queue, import_dlq) = open_import_queues(Some(&args.db), None, &settings).await?;
            (
                Some(open_queues(Some(&args.db), None, &settings).await?),
                Some(import_queue),
                Some(import_dlq),
            )
        }
        BackendKind::Aws => {
            let accruals = match (queue_url.as_deref(), dlq_url.as_deref()) {
                (Some(queue_url), Some(dlq_url)) => {
                    Some(open_queues(None, Some((queue_url, dlq_url)), &settings).await?)
                }
                _ => None,
            };
            let (import_queue, import_dlq) = match (&import_queue_url, &import_dlq_url) {
                (None, None) => (None, None),
                (queue_url, dlq_url) => {
                    let sqs = aws_sdk_sqs::Client::new(&pointflow::adapters::aws::load_config().await);
                    let open = |url: &Option<String>| {
                        url.as_deref()
                            .map(|url| Arc::new(SqsQueue::new(sqs.clone(), url)) as Arc<dyn WorkQueue>)
                    };
                    (open(queue_url), open(dlq_url))
                }
            };
            (accruals, import_queue, import_dlq)
        }
    };
    let dlq_pair = || -> anyhow::Result<(Arc<dyn WorkQueue>, Arc<dyn WorkQueue>)> {
        match kind {
            QueueKind::Accruals => accruals
                .clone()
                .context("--backend aws needs --queue-url and --dlq-url (or --stack)"),
            QueueKind::Imports => match (&import_queue, &import_dlq) {
                (Some(queue), Some(dlq)) => Ok((queue.clone(), dlq.clone())),
                _ => anyhow::bail!(
                    "--queue imports with --backend aws needs --import-queue-url and --import-dlq-url (or --stack)"
                ),
            },
        }
    };
    match args.command {
        DlqCommand::List { max } => {
            let (_, dlq) = dlq_pair()?;
            let letters = pointflow::services::dlq::list(dlq.as_ref(), kind, max).await?;
            match args.output {
                Output::Json => print_pretty_json(&letters)?,
                Output::Human => print_letters(kind, &letters),
            }
        }
        DlqCommand::Redrive { max, from } => {
            let now = OffsetDateTime::now_utc();
            let moved = if from.is_empty() {
                let (queue, dlq) = dlq_pair()?;
                pointflow::services::dlq::redrive(dlq.as_ref(), queue.as_ref(), kind, max.unwrap_or(usize::MAX), now)
                    .await?
            } else {
                let letters = read_archives(&from).await?;
                let (accruals, _) = accruals.context("--backend aws needs --queue-url and --dlq-url (or --stack)")?;
                let targets = RedriveTargets {
                    accruals: accruals.as_ref(),
                    // Without it, the archive's import tasks are refused and listed.
                    imports: import_queue.as_deref(),
                };
                pointflow::services::dlq::redrive_archived(&letters, targets, now).await?
            };
            match args.output {
                Output::Json => print_pretty_json(&moved)?,
                Output::Human => print_redriven(&moved),
            }
        }
        DlqCommand::Archive { to, max } => {
            let (_, dlq) = dlq_pair()?;
            let (objects, bucket, prefix) = archive_store(&to).await;
            let archived = pointflow::services::dlq::archive(
                dlq.as_ref(),
                kind,
                objects.as_ref(),
                &bucket,
                &prefix,
                max.unwrap_or(usize::MAX),
                OffsetDateTime::now_utc(),
            )
            .await?;
            match args.output {
                Output::Json => print_pretty_json(&archived)?,
                Output::Human => {
                    let base = to.trim_end_matches('/');
                    for file in &archived.files {
                        if to.starts_with("s3://") {
                            println!("s3://{bucket}/{file}");
                        } else {
                            println!("{base}/{file}");
                        }
                    }
                    println!(
                        "archived {} messages in {} files",
                        archived.messages,
                        archived.files.len()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per dead letter, and the totals.
fn print_letters(kind: QueueKind, letters: &[DeadLetter]) {
    let seq = match kind {
        QueueKind::Accruals => "seq",
        QueueKind::Imports => "chunk",
    };
    println!(
        "{:<40}  {:>8}  {:<36}  {seq:>6}  {:>8}",
        "message", "receives", "job", "accruals"
    );
    for l in letters {
        let job = l.job_id.map(|j| j.to_string()).unwrap_or_else(|| "-".into());
        let seq = l.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<40}  {:>8}  {job:<36}  {seq:>6}  {:>8}",
            l.message_id, l.receive_count, l.accruals
        );
        if let Some(problem) = &l.problem {
            println!("  not a message of the {kind} queue: {problem}");
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
    for refused in &moved.refused {
        let job = refused.job_id.map(|j| j.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "not moved: message {} of job {job}: {}",
            refused.message_id, refused.reason
        );
    }
    println!(
        "moved {} messages ({} accruals, {} import tasks) back to their queues{}",
        moved.messages,
        moved.accruals,
        moved.import_tasks,
        if moved.undecodable > 0 {
            format!(
                "; {} are not messages of their queue and will fail again",
                moved.undecodable
            )
        } else {
            String::new()
        }
    );
}
