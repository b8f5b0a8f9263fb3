//! `pointflow reconcile member`: a member's balances against its ledger,
//! on the embedded or the AWS backend (the store itself, not the API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pointflow_cli::backend::DEFAULT_DB;
use pointflow_cli::reconcile::{exit_status, human, open_ledger, reconcile_members, ReconcileStore};

use super::BackendKind;
use crate::render::{print_pretty_json, Output};

/// `pointflow reconcile`'s arguments: where the store is, and the subcommand.
#[derive(Args)]
pub struct ReconcileArgs {
    /// Where the ledger is.
    #[arg(long, value_enum, default_value = "embedded", global = true)]
    backend: BackendKind,
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
}

/// Reconciles members.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let store = match args.backend {
        BackendKind::Embedded => ReconcileStore::Embedded { db: &args.db },
        BackendKind::Aws => ReconcileStore::Aws {
            table: args
                .table
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--backend aws needs --table (or TABLE_NAME)"))?,
        },
    };
    let (ledger, settle) = open_ledger(store).await?;
    match args.command {
        ReconcileCommand::Member { members, repair } => {
            let reports = reconcile_members(ledger.as_ref(), &members, repair, settle).await?;
            match args.output {
                Output::Json => print_pretty_json(&reports)?,
                Output::Human => print!("{}", human(&reports)),
            }
            Ok(ExitCode::from(exit_status(&reports)))
        }
    }
}
