//! `pointflow simulate`: the deterministic simulation of the pipeline under
//! faults, over many seeds or one replayed with its trace.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use pointflow::testkit::simulation::{run_seed, run_seeds, FaultCounts, FaultKind, SimBackend, SimOptions, Summary};
use serde_json::{json, Value};

use crate::render::{print_pretty_json, Output};

/// `pointflow simulate`'s arguments.
#[derive(Args)]
pub struct SimulateArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Replay this one seed (with --trace, print its events).
    #[arg(long, conflicts_with_all = ["seeds", "from"])]
    seed: Option<u64>,
    /// Print the events of the run (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// The store under the fault-injecting adapters.
    #[arg(long, value_enum, default_value = "memory")]
    store: SimStore,
    /// Threads sharing out the seeds (each seed runs alone on one thread). Default: the machine's cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Output for people or for scripts (JSON: the counts, faults by kind, failing seeds and the first failure's
    /// report).
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SimStore {
    Memory,
    Sqlite,
}

/// Runs the seeds (blocking: call it off the async runtime). Exit status 0
/// when every seed passed; 1 with the first failure's report otherwise.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let options = SimOptions {
        backend: match args.store {
            SimStore::Memory => SimBackend::Memory,
            SimStore::Sqlite => SimBackend::Sqlite,
        },
        flaw: None,
        trace: args.trace,
    };
    if let Some(seed) = args.seed {
        return replay(seed, &options, args.output);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let summary = run_seeds(args.from, args.seeds, &options, threads, false);
    let failing: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    // Replayed with its trace: the same seed makes the same run.
    let first_report = summary
        .failures
        .first()
        .map(|first| run_seed(first.seed, &SimOptions { trace: true, ..options }).report());
    match args.output {
        Output::Json => print_pretty_json(&summary_json(&summary, &failing, first_report.as_deref()))?,
        Output::Human => {
            println!("{summary}");
            if let Some(report) = &first_report {
                println!("failing seeds: {failing:?}");
                println!("{report}");
            }
        }
    }
    Ok(if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Faults injected, by kind name.
fn faults_json(faults: &FaultCounts) -> Value {
    FaultKind::ALL
        .iter()
        .map(|kind| (kind.name().to_owned(), json!(faults.get(*kind))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A run of many seeds, for scripts.
fn summary_json(summary: &Summary, failing: &[u64], first_report: Option<&str>) -> Value {
    json!({
        "seeds_run": summary.seeds_run,
        "passed": failing.is_empty(),
        "failing_seeds": failing,
        "first_failure_report": first_report,
        "steps": summary.steps,
        "items": summary.items,
        "invocations": summary.invocations,
        "import_invocations": summary.import_invocations,
        "requests": summary.requests,
        "dead_lettered": summary.dead_lettered,
        "jobs_failed_before_redrive": summary.jobs_failed_before_redrive,
        "faults": faults_json(&summary.faults),
        "elapsed_seconds": summary.elapsed.as_secs_f64(),
    })
}

/// Runs one seed and prints its trace (when asked for), faults and verdict.
fn replay(seed: u64, options: &SimOptions, output: Output) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let outcome = run_seed(seed, options);
    let code = if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if output == Output::Json {
        print_pretty_json(&json!({
            "seed": seed,
            "passed": outcome.passed(),
            "faults": faults_json(&outcome.faults),
            "trace": outcome.trace,
            "report": (!outcome.passed()).then(|| outcome.report()),
            "elapsed_seconds": started.elapsed().as_secs_f64(),
        }))?;
        return Ok(code);
    }
    for line in &outcome.trace {
        println!("{line}");
    }
    println!(
        "seed {seed}: {} in {:.3} s",
        if outcome.passed() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    println!("faults injected {}:\n{}", outcome.faults.total(), outcome.faults);
    if !outcome.passed() {
        println!("{}", outcome.report());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_summary_names_every_fault_kind_and_the_failing_seeds() {
        let mut summary = Summary {
            seeds_run: 3,
            ..Summary::default()
        };
        summary.faults.add(FaultKind::ALL[0], 2);
        let passed = summary_json(&summary, &[], None);
        assert_eq!(passed["passed"], json!(true));
        assert_eq!(passed["seeds_run"], json!(3));
        let faults = passed["faults"].as_object().unwrap();
        assert_eq!(faults.len(), FaultKind::ALL.len());
        assert_eq!(faults[FaultKind::ALL[0].name()], json!(2));
        let failed = summary_json(&summary, &[7, 9], Some("seed 7: …"));
        assert_eq!(failed["passed"], json!(false));
        assert_eq!(failed["failing_seeds"], json!([7, 9]));
        assert_eq!(failed["first_failure_report"], json!("seed 7: …"));
    }
}
