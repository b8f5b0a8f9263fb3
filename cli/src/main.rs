//! `pointflow`: one command for running Pointflow locally, for the API's
//! clients, for planning and for benchmarks. Each area's arguments and code
//! are in `commands/`; this file parses and dispatches.

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod commands;
mod render;

use commands::bench::BenchCommand;
use commands::console::ConsoleArgs;
use commands::dlq::DlqArgs;
use commands::jobs::{CancelArgs, JobsArgs, StatusArgs, WaitArgs};
use commands::local::LocalArgs;
use commands::members::{BalanceArgs, HistoryArgs, ReverseArgs, UseArgs};
use commands::plan::PlanArgs;
use commands::reconcile::ReconcileArgs;
use commands::shell::{CompletionsArgs, ManArgs};
use commands::simulate::SimulateArgs;
use commands::submit::SubmitArgs;

// The runner allocates and frees millions of small strings across many
// threads; glibc's malloc spent about a quarter of a demo's CPU time there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its index in the `mi_option_t` enum of
/// `mimalloc.h` (the same in v2 and v3), which the binding does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS at once instead of after mimalloc's
/// default 1 s: the runner frees request-sized buffers (a 50,000-item request
/// is ~4.5 MB of JSON, several times that parsed) all the time, and a delay
/// kept them resident. Measured on the default demo: peak RSS 586–632 MiB
/// with the default, 444–470 MiB with 0, throughput unchanged within noise
/// (docs/performance.md). `MIMALLOC_PURGE_DELAY` still overrides it.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's global options, which it reads
        // atomically; any value is valid for this one.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(name = "pointflow", version, about = "Bulk loyalty-point accruals, exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: API, queue, workers, store.
    Local(Box<LocalArgs>),
    /// Measure parts of Pointflow on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Submit a campaign file (JSON array, NDJSON or CSV) to the API in chunks, resumably.
    ///
    /// Exit status: 0 all sent (and with --wait, credited); 3 lines rejected, requests refused or accruals failed;
    /// 1 could not finish (network, timeout; run the same command again to resume).
    Submit(SubmitArgs),
    /// List jobs newest first, filtered by status, source or creation time.
    Jobs(JobsArgs),
    /// Show jobs.
    Status(StatusArgs),
    /// Wait until jobs complete, with progress. Exit status 3 if any completed with errors.
    Wait(WaitArgs),
    /// Look into the dead-letter queue, or move its messages back to be applied.
    Dlq(DlqArgs),
    /// Serve the operator console (a web page on loopback) for a deployed stack, calling it with your AWS
    /// credentials.
    ///
    /// Open the printed URL: jobs with live progress, a job's error report and cancel, file drops, the dead-letter
    /// queues and member lookup. `pointflow local serve` serves the same page for the embedded backend.
    Console(ConsoleArgs),
    /// Recompute balances from the ledger, or job counts from their messages, on the store itself; report differences,
    /// and with --repair rewrite them.
    Reconcile(ReconcileArgs),
    /// Predict drain time and cost of a campaign on AWS, and the limit that binds.
    Plan(PlanArgs),
    /// Run the deterministic simulation of the pipeline under faults (docs/simulation.md).
    ///
    /// Exit status: 0 every seed passed; 1 a seed failed (its report, replay command and trace are printed).
    Simulate(SimulateArgs),
    /// Show a member's balances.
    Balance(BalanceArgs),
    /// Cancel a completed job through the API: the workers reverse every accrual it credited, once.
    ///
    /// Asking again resumes a cancel. With --wait, waits until it is done. Exit status: 0 done (or queued, without
    /// --wait), 3 some credits were already spent and stay, 1 could not finish (e.g. the job is still running).
    Cancel(CancelArgs),
    /// Show a member's history: every credit, use, reversal and expiry, newest first.
    History(HistoryArgs),
    /// Cancel one accrual or one use, once (safe to retry).
    ///
    /// Exit status: 0 reversed (or reversed before); 3 refused (the accrual's points were spent) or not found;
    /// 1 could not finish.
    Reverse(ReverseArgs),
    /// Deduct points from a member's balance, once per --use-id (safe to retry).
    ///
    /// Exit status: 0 deducted (or deducted before by the same use); 3 refused (insufficient balance, or the use id
    /// was used for a different deduction); 1 could not finish.
    Use(UseArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    ///
    /// For example `pointflow completions bash > ~/.local/share/bash-completion/completions/pointflow`.
    Completions(CompletionsArgs),
    /// Print the manual page, or write one page per command with --out DIR.
    Man(ManArgs),
}

/// The top-level help lists commands by what they are for, campaign work
/// first and the measuring tools last. Clap has no subcommand groups, so the
/// list is built from the commands' own definitions (names and about lines).
const COMMAND_GROUPS: &[(&str, &[&str])] = &[
    ("Campaigns", &["submit", "jobs", "status", "wait", "cancel"]),
    ("Members", &["balance", "history", "use", "reverse"]),
    ("Operations", &["console", "dlq", "reconcile"]),
    ("Running locally", &["local"]),
    ("Planning and measuring", &["plan", "bench", "simulate"]),
    ("Setting up", &["completions", "man"]),
];

/// The command with its help's command list grouped by [`COMMAND_GROUPS`].
fn grouped_command() -> clap::Command {
    let command = Cli::command();
    let width = COMMAND_GROUPS
        .iter()
        .flat_map(|(_, names)| names.iter().map(|n| n.len()))
        .max()
        .unwrap_or(0);
    let mut groups = String::new();
    for (heading, names) in COMMAND_GROUPS {
        groups.push_str(&format!("{heading}:\n"));
        for name in *names {
            let about = command
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            groups.push_str(&format!("  {name:<width$}  {about}\n"));
        }
        groups.push('\n');
    }
    // Braces in the command text must not read as template variables.
    let groups = groups.replace('{', "{{").replace('}', "}}");
    command.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}\
         Run `pointflow help <COMMAND>` for a command's options.\n\nOptions:\n{{options}}{{after-help}}"
    ))
}

/// Colour only for a person at a terminal: never when stderr is a file or a
/// pipe, nor when `NO_COLOR` is set to anything (https://no-color.org).
fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = match Cli::from_arg_matches(&grouped_command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // The simulation makes the worker fail on purpose thousands of times:
    // its warnings would drown the report.
    if !matches!(cli.command, Command::Simulate(_)) {
        init_logging();
    }
    match run(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Local(args) => commands::local::run(*args).await,
        Command::Bench(command) => commands::bench::run(command).await,
        Command::Submit(args) => commands::submit::run(args).await,
        Command::Jobs(args) => commands::jobs::list(args).await,
        Command::Status(args) => commands::jobs::status(args).await,
        Command::Wait(args) => commands::jobs::wait(args).await,
        Command::Cancel(args) => commands::jobs::cancel(args).await,
        Command::Dlq(args) => commands::dlq::run(args).await,
        Command::Console(args) => commands::console::run(args).await,
        Command::Reconcile(args) => commands::reconcile::run(args).await,
        Command::Plan(args) => commands::plan::run(args),
        // The simulation is CPU-bound and blocking: off the runtime's threads.
        Command::Simulate(args) => tokio::task::spawn_blocking(move || commands::simulate::run(&args)).await?,
        Command::Balance(args) => commands::members::balance(args).await,
        Command::History(args) => commands::members::history(args).await,
        Command::Reverse(args) => commands::members::reverse(args).await,
        Command::Use(args) => commands::members::use_points(args).await,
        // Generated from the same definitions as the help, grouping included.
        Command::Completions(args) => commands::shell::completions(&args, grouped_command()),
        Command::Man(args) => commands::shell::man(&args, grouped_command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads and sets mimalloc's global options.
        let (before, after) = unsafe {
            let before = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
            purge_freed_memory_at_once();
            (before, libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY))
        };
        // 1000 ms is mimalloc v3's default purge delay and no other option's
        // default near this index: the index names the right option.
        assert!(
            before == 1000 || before == 0,
            "option {MI_OPTION_PURGE_DELAY} was {before}"
        );
        assert_eq!(after, 0);
    }

    #[test]
    fn every_command_is_in_exactly_one_help_group() {
        let command = Cli::command();
        let mut listed: Vec<&str> = COMMAND_GROUPS
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        listed.sort_unstable();
        let mut defined: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }

    #[test]
    fn help_has_no_blank_argument_help_and_no_huge_defaults() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help");
                for default in arg.get_default_values() {
                    let default = default.to_string_lossy();
                    // A number this long is a type's maximum standing in for "all".
                    let huge = default.len() >= 12 && default.chars().all(|c| c.is_ascii_digit());
                    assert!(!huge, "{path} {id} shows default {default}");
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "pointflow");
    }

    #[test]
    fn grouped_help_names_every_command() {
        let help = grouped_command().render_help().to_string();
        assert!(help.starts_with("Bulk loyalty-point accruals"), "{help}");
        for (heading, names) in COMMAND_GROUPS {
            assert!(help.contains(&format!("{heading}:")), "{help}");
            for name in *names {
                assert!(help.contains(&format!("  {name} ")), "{help}");
            }
        }
    }
}
