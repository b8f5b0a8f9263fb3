//! Deterministic simulation of the pipeline under faults (docs/simulation.md):
//! every seed must end with each balance equal to the sum of its distinct
//! accruals and every job's counts exact.
//!
//! - `POINTFLOW_SIM_SEEDS=<n>` runs `n` seeds instead of 10,000 (from
//!   `POINTFLOW_SIM_FROM`, default 0);
//! - `POINTFLOW_SIM_SEED=<s>` replays one seed and prints its trace.

use pointflow::testkit::simulation::{
    run_listed_seeds, run_seed, run_seeds, seed_drops_a_file, Flaw, SimBackend, SimOptions, Summary,
};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Fails with every failing seed's violations, replay command and trace.
fn assert_no_failures(summary: &Summary, options: &SimOptions) {
    if let Some(first) = summary.failures.first() {
        let replayed = run_seed(
            first.seed,
            &SimOptions {
                trace: true,
                ..*options
            },
        );
        let others: Vec<u64> = summary.failures.iter().skip(1).map(|f| f.seed).collect();
        panic!(
            "{} of {} seeds failed (others: {others:?})\n{}",
            summary.failures.len(),
            summary.seeds_run,
            replayed.report()
        );
    }
}

#[test]
fn every_seed_applies_each_accrual_exactly_once_under_faults() {
    let options = SimOptions::default();
    if let Some(seed) = env_u64("POINTFLOW_SIM_SEED") {
        let outcome = run_seed(seed, &SimOptions { trace: true, ..options });
        for line in &outcome.trace {
            println!("{line}");
        }
        println!("faults:\n{}", outcome.faults);
        assert!(outcome.passed(), "{}", outcome.report());
        return;
    }
    let count = env_u64("POINTFLOW_SIM_SEEDS").unwrap_or(10_000);
    let from = env_u64("POINTFLOW_SIM_FROM").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = run_seeds(from, count, &options, threads, false);
    println!("in-memory store:\n{summary}");
    assert_no_failures(&summary, &options);
    assert_eq!(summary.seeds_run, count);
}

#[test]
fn seeds_replay_identically() {
    let options = SimOptions {
        trace: true,
        ..SimOptions::default()
    };
    // Seed 8 drops a file: the importer replays identically too.
    let seeds = [0, 7, 8, 4242];
    assert!(seeds.iter().any(|s| seed_drops_a_file(*s)));
    for seed in seeds {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        assert!(!a.trace.is_empty());
        assert_eq!(a.trace, b.trace, "seed {seed} replays event by event");
        assert_eq!(a.faults, b.faults);
    }
}

#[test]
fn seeds_pass_on_the_embedded_sqlite_store() {
    let options = SimOptions {
        backend: SimBackend::Sqlite,
        ..SimOptions::default()
    };
    let count = env_u64("POINTFLOW_SIM_SQLITE_SEEDS").unwrap_or(300);
    let summary = run_seeds(1_000_000, count, &options, 2, false);
    println!("SQLite store:\n{summary}");
    assert_no_failures(&summary, &options);
}

/// The checks have teeth: a defect is caught, and by many seeds, not by one
/// lucky seed. Runs 200 seeds (all of them, so the output also says how often
/// it is caught) and returns how many caught it. Seeds are deterministic, so
/// the count is too: it changes only when the simulation or the code does.
fn seeds_catching(flaw: Flaw) -> usize {
    let options = SimOptions {
        flaw: Some(flaw),
        ..SimOptions::default()
    };
    report_catching(flaw, run_seeds(0, 200, &options, 2, false))
}

/// [`seeds_catching`] over the first 400 seeds that drop a file (an eighth
/// of the seeds do): only they can catch a flaw of the importer, and only
/// when a fault strikes the right call.
fn file_seeds_catching(flaw: Flaw) -> usize {
    let options = SimOptions {
        flaw: Some(flaw),
        ..SimOptions::default()
    };
    let seeds: Vec<u64> = (0..).filter(|s| seed_drops_a_file(*s)).take(400).collect();
    report_catching(flaw, run_listed_seeds(&seeds, &options, 2, false))
}

fn report_catching(flaw: Flaw, summary: Summary) -> usize {
    let first = summary
        .failures
        .first()
        .unwrap_or_else(|| panic!("{flaw:?} went unnoticed in {} seeds", summary.seeds_run));
    println!(
        "{flaw:?}: caught by {} of {} seeds, first by seed {}: {:?}",
        summary.failures.len(),
        summary.seeds_run,
        first.seed,
        first.violations
    );
    summary.failures.len()
}

/// At least one seed in five must catch each flaw: a check that only a rare
/// schedule trips is not a check. Each flaw is a branch in the production
/// code (`pointflow::flaws`), not a wrapper around a port.
const MIN_CATCHING: usize = 40;

#[test]
fn a_store_credit_without_its_condition_is_caught() {
    assert!(seeds_catching(Flaw::DoubleCredit) >= MIN_CATCHING);
}

#[test]
fn a_worker_that_counts_its_own_replay_as_a_duplicate_is_caught() {
    assert!(seeds_catching(Flaw::ReplayCountedDuplicate) >= MIN_CATCHING);
}

#[test]
fn an_ingest_that_marks_jobs_enqueued_before_sending_is_caught() {
    assert!(seeds_catching(Flaw::EnqueuedBeforeSending) >= MIN_CATCHING);
}

#[test]
fn a_token_naming_the_message_not_the_transaction_is_caught() {
    assert!(seeds_catching(Flaw::TokenPerMessage) >= MIN_CATCHING);
}

#[test]
fn a_fold_that_treats_a_replay_as_new_is_caught() {
    assert!(seeds_catching(Flaw::FoldWithoutMarker) >= MIN_CATCHING);
}

/// Only a seed with a file can catch a flaw of the importer: it runs the
/// first 400 of those, for the same bar.
#[test]
fn an_importer_that_records_a_chunk_before_handing_it_on_is_caught() {
    assert!(file_seeds_catching(Flaw::ChunkRecordedEarly) >= MIN_CATCHING);
}
