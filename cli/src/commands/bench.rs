//! `pointflow bench csv`, `bench e2e` and `bench sweep`: measurements on this
//! machine; the benchmarks themselves are `pointflow_cli::bench` and
//! `pointflow_cli::bench_e2e`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use pointflow_cli::bench::bench_csv_parse;
use pointflow_cli::bench_e2e::{
    append_csv, plot_sweep, run_one, run_sweep, BenchBackend, Comparison, Knob, RunSpec, Variant,
};

use super::{template_settings, BackendKind};
use crate::render::{print_pretty_json, Output};

/// `pointflow bench`'s subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Parse and validate a CSV file on one thread (the import's parsing half): rows/s and peak RSS.
    Csv {
        /// The CSV file, in the file-drop format.
        file: PathBuf,
    },
    /// Run a generated campaign end to end, Pointflow and the naive baseline on the same backend, side by side.
    ///
    /// Exit status: 0 every run credited every balance exactly; 1 otherwise.
    E2e(E2eArgs),
    /// Run the end-to-end benchmark over a grid, one setting varied at a time; write CSV and an SVG plot.
    Sweep(SweepArgs),
}

/// One end-to-end run's campaign, settings and backend (`bench e2e`, and each point of `bench sweep`).
#[derive(Args, Clone)]
pub struct E2eArgs {
    /// Accruals in the campaign.
    #[arg(long, default_value_t = 100_000)]
    accruals: usize,
    /// Accruals per member (1 = every accrual a different member; more = hot keys).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Worker MaximumConcurrency (default: the template's).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Messages per worker invocation (default: the template's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Accruals packed per message, Pointflow only (default: the template's).
    #[arg(long)]
    accruals_per_message: Option<usize>,
    /// Messages of a batch one worker processes at once (default: the template's; 1 on moto, which is not safe
    /// against concurrent transactions).
    #[arg(long)]
    message_concurrency: Option<usize>,
    /// Requests submitted to the API at once.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Designs to run (repeatable).
    #[arg(long = "variant", value_enum, default_values = ["pointflow", "baseline"])]
    variants: Vec<Variant>,
    /// Embedded (a fresh SQLite file per run) or aws (a fresh table and queues per run, e.g. on moto).
    #[arg(long, value_enum, default_value = "embedded")]
    backend: BackendKind,
    /// Folder for the embedded runs' databases (each removed after its run).
    #[arg(long, default_value = ".pointflow/bench")]
    work_dir: PathBuf,
    /// Name prefix of the tables and queues the aws backend creates.
    #[arg(long, default_value = "pointflow-bench")]
    prefix: String,
    /// Append each run's figures to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

impl E2eArgs {
    fn backend(&self) -> BenchBackend {
        match self.backend {
            BackendKind::Embedded => BenchBackend::Embedded {
                dir: self.work_dir.clone(),
            },
            BackendKind::Aws => BenchBackend::Aws {
                prefix: self.prefix.clone(),
            },
        }
    }

    fn spec(&self) -> RunSpec {
        RunSpec {
            variant: Variant::Pointflow,
            accruals: self.accruals,
            repeats: self.repeats,
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            accruals_per_message: self.accruals_per_message,
            message_concurrency: self.message_concurrency,
            submitters: self.submitters,
            timeout: Duration::from_secs(self.timeout),
        }
    }
}

/// `pointflow bench sweep`'s arguments: a run, and the grid to vary it over.
#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    run: E2eArgs,
    /// Settings to vary (repeatable), each over its default grid unless --values follows it.
    #[arg(long = "vary", value_enum, default_values = ["accruals-per-message", "batch-size", "concurrency", "repeats"])]
    knobs: Vec<Knob>,
    /// Grid for each --vary, in order, comma-separated (e.g. --values 1,10,100).
    #[arg(long = "values")]
    values: Vec<String>,
    /// SVG plot of throughput and wall time against each setting.
    #[arg(long, default_value = "sweep.svg")]
    plot: PathBuf,
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Csv { file } => {
            let report = tokio::task::spawn_blocking(move || bench_csv_parse(&file)).await??;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::E2e(args) => e2e(args).await,
        BenchCommand::Sweep(args) => sweep(args).await,
    }
}

/// Each variant once; exit status 1 unless every run credited exactly.
async fn e2e(args: E2eArgs) -> anyhow::Result<ExitCode> {
    let settings = template_settings()?;
    let backend = args.backend();
    let mut results = Vec::new();
    for &variant in &args.variants {
        let spec = RunSpec { variant, ..args.spec() };
        if args.output == Output::Human {
            eprintln!(
                "running {variant}: {} accruals, {} per member…",
                spec.accruals, spec.repeats
            );
        }
        let result = run_one(&backend, &settings, &spec).await?;
        if let Some(csv) = &args.csv {
            append_csv(csv, std::slice::from_ref(&result))?;
        }
        results.push(result);
    }
    match args.output {
        Output::Json => print_pretty_json(&results)?,
        Output::Human => {
            let find = |v: Variant| results.iter().find(|r| r.variant == v);
            match (find(Variant::Pointflow), find(Variant::Baseline)) {
                (Some(pointflow), Some(baseline)) => println!("{}", Comparison { pointflow, baseline }),
                _ => print_pretty_json(&results)?,
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The grid, one run per point, each appended to the CSV as it finishes;
/// then the plot.
async fn sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let SweepArgs {
        run: args,
        knobs,
        values,
        plot,
    } = args;
    if values.len() > knobs.len() {
        anyhow::bail!("--values given {} times for {} --vary", values.len(), knobs.len());
    }
    let mut axes = Vec::new();
    for (i, knob) in knobs.iter().enumerate() {
        let grid = match values.get(i) {
            Some(list) => list
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--values: {v:?} is not a count"))
                })
                .collect::<anyhow::Result<Vec<usize>>>()?,
            None => knob.default_values(),
        };
        axes.push((*knob, grid));
    }
    let settings = template_settings()?;
    let csv = args.csv.clone().unwrap_or_else(|| PathBuf::from("sweep.csv"));
    let human = args.output == Output::Human;
    let points = run_sweep(
        &args.backend(),
        &settings,
        &args.spec(),
        &args.variants,
        &axes,
        |point| {
            append_csv(&csv, std::slice::from_ref(&point.result))?;
            if human {
                let r = &point.result;
                eprintln!(
                    "{:<22} {:>6}  {:<9} {:>9.0} accruals/s  {:>8.2} s  {:.4} requests/accrual{}",
                    point.knob.label(),
                    point.value,
                    r.variant.to_string(),
                    r.accruals_per_s,
                    r.wall_s,
                    r.requests_per_accrual,
                    if r.ok { "" } else { "  FAILED" }
                );
            }
            Ok(())
        },
    )
    .await?;
    plot_sweep(&plot, &points)?;
    match args.output {
        Output::Json => print_pretty_json(&points)?,
        Output::Human => println!(
            "{} runs; figures in {}, plot in {}",
            points.len(),
            csv.display(),
            plot.display()
        ),
    }
    Ok(if points.iter().all(|p| p.result.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
