//! `pointflow reconcile member` and `reconcile job`: a member's balances
//! against its ledger, a job's counts against its messages, on the embedded
//! or the AWS backend (the store itself, not the API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pointflow::domain::JobId;
use pointflow_cli::backend::DEFAULT_DB;
use pointflow_cli::reconcile::{
    exit_status, human, human_jobs, jobs_exit_status, open_store, reconcile_jobs, reconcile_members, ReconcileStore,
};

use pointflow_cli::stack::StackOutputs;

use super::{BackendKind, StackArg};
use crate::render::{print_pretty_json, Output};

/// `pointflow reconcile`'s arguments: where the store is, and the subcommand.
#[derive(Args)]
pub struct ReconcileArgs {
    /// Where the ledger is [default: embedded, or aws with --stack].
    #[arg(long, value_enum, global = true)]
    backend: Option<BackendKind>,
    #[command(flatten)]
    stack: StackArg,
    /// Embedded database file.
    #[arg(long, default_value = DEFAULT_DB, global = true)]
    db: PathBuf,
    /// DynamoDB table (aws backend; the TableName output).
    #[arg(long, env = "TABLE_NAME", global = true)]
    table: Option<String>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human", global = true)]
    output: Output,
    #[command(subcommand)]
    command: ReconcileCommand,
}

#[derive(Subcommand)]
enum ReconcileCommand {
    /// Recompute members' balances from their ledger entries and report every value that differs.
    ///
    /// Exit status: 0 nothing differs (or, with --repair, every difference was rewritten); 3 differences remain;
    /// 1 could not finish.
    Member {
        /// Member ids.
        #[arg(required = true)]
        members: Vec<String>,
        /// Rewrite each differing balance item to what the ledger says (a conditional write: a balance that
        /// changes meanwhile is read again).
        #[arg(long)]
        repair: bool,
    },
    /// Recompute jobs' counts (applied, duplicate, failed, refused) from what each folded message recorded.
    ///
    /// Exit status: 0 nothing differs (or, with --repair, every difference was rewritten); 3 differences remain;
    /// 1 could not finish (e.g. no such job).
    Job {
        /// Job ids.
        #[arg(required = true)]
        jobs: Vec<JobId>,
        /// Rewrite each differing job's counts to the sums of its messages (a conditional write: a job that
        /// changes meanwhile is read again).
        #[arg(long)]
        repair: bool,
    },
}

/// Reconciles members.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let backend = args.stack.backend(args.backend)?;
    let table = StackOutputs::or_output(args.table, &args.stack.outputs().await?.table);
    let store = match backend {
        BackendKind::Embedded => ReconcileStore::Embedded { db: &args.db },
        BackendKind::Aws => ReconcileStore::Aws {
            table: table
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--backend aws needs --table (or TABLE_NAME, or --stack)"))?,
        },
    };
    let opened = open_store(store).await?;
    match args.command {
        ReconcileCommand::Member { members, repair } => {
            let reports = reconcile_members(opened.ledger.as_ref(), &members, repair, opened.settle).await?;
            match args.output {
                Output::Json => print_pretty_json(&reports)?,
                Output::Human => print!("{}", human(&reports)),
            }
            Ok(ExitCode::from(exit_status(&reports)))
        }
        ReconcileCommand::Job { jobs, repair } => {
            let reports = reconcile_jobs(opened.jobs.as_ref(), &jobs, repair).await?;
            match args.output {
                Output::Json => print_pretty_json(&reports)?,
                Output::Human => print!("{}", human_jobs(&reports)),
            }
            Ok(ExitCode::from(jobs_exit_status(&reports)))
        }
    }
}
