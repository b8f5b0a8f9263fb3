//! `pointflow simulate`: the deterministic simulation of the pipeline under
//! faults, over many seeds or one replayed with its trace.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use pointflow::testkit::simulation::{run_seed, run_seeds, SimBackend, SimOptions};

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
        return Ok(replay(seed, &options));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let summary = run_seeds(args.from, args.seeds, &options, threads, false);
    println!("{summary}");
    let Some(first) = summary.failures.first() else {
        return Ok(ExitCode::SUCCESS);
    };
    let failing: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    println!("failing seeds: {failing:?}");
    // Replayed with its trace: the same seed makes the same run.
    println!(
        "{}",
        run_seed(first.seed, &SimOptions { trace: true, ..options }).report()
    );
    Ok(ExitCode::FAILURE)
}

/// Runs one seed and prints its trace (when asked for), faults and verdict.
fn replay(seed: u64, options: &SimOptions) -> ExitCode {
    let started = Instant::now();
    let outcome = run_seed(seed, options);
    for line in &outcome.trace {
        println!("{line}");
    }
    println!(
        "seed {seed}: {} in {:.3} s",
        if outcome.passed() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    println!("faults injected {}:\n{}", outcome.faults.total(), outcome.faults);
    if outcome.passed() {
        return ExitCode::SUCCESS;
    }
    println!("{}", outcome.report());
    ExitCode::FAILURE
}
