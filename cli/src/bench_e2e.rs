//! `pointflow bench e2e` and `pointflow bench sweep`: the whole pipeline (API,
//! queue, worker pollers, store) run end to end in this process, Pointflow and
//! the naive baseline ([`pointflow::testkit::baseline`]) on the same backend, each on
//! fresh resources, with every request and write unit counted.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use pointflow::domain::capacity::WriteCost;

use crate::backend::{AwsResources, BackendChoice, LocalBackend};
use crate::demo::{peak_rss_kib, run_demo, Campaign};
use crate::runner::Runner;
use crate::settings::StackSettings;

/// Which design runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Pointflow: packed messages, SendMessageBatch, multi-item transactions.
    Pointflow,
    /// One message per accrual sent alone; PutItem + UpdateItem per accrual.
    Baseline,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Pointflow => "pointflow",
            Variant::Baseline => "baseline",
        })
    }
}

/// Where the runs happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchBackend {
    /// A fresh SQLite file per run, under this folder.
    Embedded { dir: PathBuf },
    /// A fresh table and queues per run, created through the AWS SDK's
    /// configuration (an emulator, or a sandbox account), named with this prefix.
    Aws { prefix: String },
}

/// One run's knobs. `None` keeps the template's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub variant: Variant,
    pub accruals: usize,
    /// Accruals per member: 1 spreads the campaign over as many members as
    /// accruals; more makes hot keys (one balance item credited many times).
    pub repeats: usize,
    /// The worker's `MaximumConcurrency`.
    pub concurrency: Option<usize>,
    /// The worker's batch size (messages per invocation).
    pub batch_size: Option<usize>,
    /// Accruals packed per message (Pointflow only: the baseline sends one).
    pub accruals_per_message: Option<usize>,
    /// Messages of one batch a worker processes at once.
    pub message_concurrency: Option<usize>,
    /// Requests submitted to the API at once.
    pub submitters: usize,
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    pub variant: Variant,
    pub backend: &'static str,
    pub accruals: u64,
    pub members: u64,
    pub repeats: u64,
    pub accruals_per_message: u64,
    pub batch_size: u64,
    pub concurrency: u64,
    /// Submission start to the last job's completion.
    pub wall_s: f64,
    /// Until the API had accepted and queued every request.
    pub submit_s: f64,
    pub accruals_per_s: f64,
    pub messages: u64,
    /// Queue requests: sends, receives (empty ones too), deletes.
    pub queue_requests: u64,
    /// DynamoDB write requests and write units, as DynamoDB bills them
    /// ([`pointflow::domain::capacity`]). Reads are left out: how often a client
    /// polls its jobs is its own choice.
    pub writes: WriteCost,
    /// Queue requests and DynamoDB write requests per accrual.
    pub requests_per_accrual: f64,
    pub write_units_per_accrual: f64,
    pub worker_invocations: u64,
    pub peak_rss_mib: Option<f64>,
    /// Every balance right and every accrual settled as applied or duplicate.
    pub ok: bool,
}

/// Runs one design end to end on fresh resources and measures it.
pub async fn run_one(backend: &BenchBackend, base: &StackSettings, spec: &RunSpec) -> anyhow::Result<RunResult> {
    if spec.accruals == 0 || spec.repeats == 0 {
        bail!("--accruals and --repeats must be at least 1");
    }
    let members = spec.accruals.div_ceil(spec.repeats);
    let mut settings = base.clone();
    if let Some(c) = spec.concurrency {
        settings.maximum_concurrency = c.max(1);
    }
    if let Some(b) = spec.batch_size {
        settings.batch_size = b.max(1);
    }
    if let Some(m) = spec.message_concurrency {
        settings.worker.message_concurrency = m.max(1);
    }
    match spec.variant {
        Variant::Pointflow => {
            if let Some(n) = spec.accruals_per_message {
                settings.ingest.packing.max_accruals = n.max(1);
            }
        }
        Variant::Baseline => settings.ingest.packing.max_accruals = 1,
    }
    settings.ingest.packing = settings.ingest.packing.validate().context("--accruals-per-message")?;

    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let (choice, label) = match backend {
        BenchBackend::Embedded { dir } => {
            let run_dir = dir.join(format!("{}-{unique}", spec.variant));
            (
                BackendChoice::Embedded {
                    db: run_dir.join("bench.db"),
                    bucket_dir: run_dir.join("bucket"),
                },
                "embedded",
            )
        }
        BenchBackend::Aws { prefix } => (
            BackendChoice::Aws(AwsResources {
                table: format!("{prefix}-{}-{unique}", spec.variant),
                queue_url: None,
                dlq_url: None,
                bucket: None,
                import_queue_url: None,
                create: true,
            }),
            "aws",
        ),
    };
    let opened = LocalBackend::open(&choice, &settings).await?;
    let local = match spec.variant {
        Variant::Pointflow => opened,
        Variant::Baseline => opened.baseline(),
    };
    let campaign = Campaign {
        members,
        point_types: 1,
        repeats: spec.repeats,
        seed: 1,
        chunk: settings.ingest.max_items,
    };
    // Idle pollers wait briefly: a long poll would only add to the wall time
    // of the last batch.
    let pollers = settings.worker_pollers(Duration::from_millis(200));
    let runner = Runner::start(&local, &settings, "127.0.0.1:0".parse()?, pollers).await?;
    let writes_before = (local.store_write_cost)();
    reset_peak_rss();
    let report = run_demo(
        &runner.base_url(),
        &local,
        &runner.stats,
        campaign,
        spec.submitters,
        false,
        spec.timeout,
    )
    .await;
    runner.stop().await?;
    let report = report?;
    let writes = (local.store_write_cost)() - writes_before;
    if let BackendChoice::Embedded { db, .. } = &choice {
        drop(local);
        if let Some(dir) = db.parent() {
            // Best effort: a benchmark's database is not worth an error.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let accruals = report.accruals;
    let per = |n: u64| n as f64 / accruals.max(1) as f64;
    Ok(RunResult {
        variant: spec.variant,
        backend: label,
        accruals,
        members: members as u64,
        repeats: spec.repeats as u64,
        accruals_per_message: settings.ingest.packing.max_accruals as u64,
        batch_size: settings.batch_size as u64,
        concurrency: settings.maximum_concurrency as u64,
        wall_s: report.wall.as_secs_f64(),
        submit_s: report.submitted_after.as_secs_f64(),
        accruals_per_s: accruals as f64 / report.wall.as_secs_f64().max(1e-9),
        messages: report.messages,
        queue_requests: report.queue_requests,
        writes,
        requests_per_accrual: per(report.queue_requests + writes.requests()),
        write_units_per_accrual: per(writes.units()),
        worker_invocations: report.invocations,
        peak_rss_mib: report.peak_rss_kib.map(|k| k as f64 / 1024.0),
        ok: report.ok(),
    })
}

/// Resets the process's peak RSS (Linux `clear_refs`), so each run's peak is
/// its own. Elsewhere a no-op, and the peaks are cumulative.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let _ = peak_rss_kib();
}

/// Pointflow and the baseline side by side, with the baseline's multiple of
/// each figure.
pub struct Comparison<'a> {
    pub pointflow: &'a RunResult,
    pub baseline: &'a RunResult,
}

impl fmt::Display for Comparison<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, b) = (self.pointflow, self.baseline);
        // How many times better Pointflow is: for figures where less is
        // better (time, requests, units, memory) the baseline's over
        // Pointflow's, for throughput the other way round. Below 1× the
        // baseline is ahead.
        let advantage = |pv: f64, bv: f64, higher_is_better: bool| {
            let (num, den) = if higher_is_better { (pv, bv) } else { (bv, pv) };
            if den > 0.0 {
                format!("{:.1}×", num / den)
            } else {
                "–".to_owned()
            }
        };
        writeln!(
            f,
            "{:<26} {:>14} {:>14} {:>12}",
            "", "pointflow", "baseline", "advantage"
        )?;
        let mut row = |name: &str, pv: f64, bv: f64, text: &dyn Fn(f64) -> String| {
            let higher_is_better = name == "accruals/s";
            let ratio = if name == "accruals" || name == "result" {
                String::new()
            } else {
                advantage(pv, bv, higher_is_better)
            };
            writeln!(f, "{name:<26} {:>14} {:>14} {ratio:>12}", text(pv), text(bv))
        };
        let int = |v: f64| format!("{v:.0}");
        row("accruals", p.accruals as f64, b.accruals as f64, &int)?;
        row("wall time (s)", p.wall_s, b.wall_s, &|v| format!("{v:.2}"))?;
        row("accruals/s", p.accruals_per_s, b.accruals_per_s, &int)?;
        row("messages", p.messages as f64, b.messages as f64, &int)?;
        row("queue requests", p.queue_requests as f64, b.queue_requests as f64, &int)?;
        row(
            "DynamoDB writes, credit",
            p.writes.ledger_requests as f64,
            b.writes.ledger_requests as f64,
            &int,
        )?;
        row(
            "DynamoDB writes, jobs",
            p.writes.job_requests as f64,
            b.writes.job_requests as f64,
            &int,
        )?;
        row(
            "requests per accrual",
            p.requests_per_accrual,
            b.requests_per_accrual,
            &|v| format!("{v:.4}"),
        )?;
        row(
            "WRU, credit",
            p.writes.ledger_units as f64,
            b.writes.ledger_units as f64,
            &int,
        )?;
        row("WRU, jobs", p.writes.job_units as f64, b.writes.job_units as f64, &int)?;
        row(
            "WRU per accrual",
            p.write_units_per_accrual,
            b.write_units_per_accrual,
            &|v| format!("{v:.2}"),
        )?;
        row(
            "worker invocations",
            p.worker_invocations as f64,
            b.worker_invocations as f64,
            &int,
        )?;
        if let (Some(pm), Some(bm)) = (p.peak_rss_mib, b.peak_rss_mib) {
            row("peak RSS (MiB)", pm, bm, &|v| format!("{v:.1}"))?;
        }
        write!(
            f,
            "{:<26} {:>14} {:>14}",
            "result",
            if p.ok { "OK" } else { "FAILED" },
            if b.ok { "OK" } else { "FAILED" }
        )
    }
}

/// The columns of [`RunResult`] in CSV order.
pub const CSV_HEADER: &str = "variant,backend,accruals,members,repeats,accruals_per_message,batch_size,concurrency,\
wall_s,submit_s,accruals_per_s,messages,queue_requests,ledger_writes,ledger_write_units,job_writes,job_write_units,\
requests_per_accrual,write_units_per_accrual,worker_invocations,peak_rss_mib,ok";

/// Appends results to a CSV file (writing the header to a new one).
pub fn append_csv(path: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    let new = !path.exists() || std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(file, "{CSV_HEADER}")?;
    }
    for r in results {
        writeln!(
            file,
            "{},{},{},{},{},{},{},{},{:.3},{:.3},{:.0},{},{},{},{},{},{},{:.5},{:.3},{},{},{}",
            r.variant,
            r.backend,
            r.accruals,
            r.members,
            r.repeats,
            r.accruals_per_message,
            r.batch_size,
            r.concurrency,
            r.wall_s,
            r.submit_s,
            r.accruals_per_s,
            r.messages,
            r.queue_requests,
            r.writes.ledger_requests,
            r.writes.ledger_units,
            r.writes.job_requests,
            r.writes.job_units,
            r.requests_per_accrual,
            r.write_units_per_accrual,
            r.worker_invocations,
            r.peak_rss_mib.map_or(String::new(), |m| format!("{m:.1}")),
            r.ok
        )?;
    }
    Ok(())
}

/// A setting the sweep varies, one at a time, from the run's own values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// Accruals packed per message (Pointflow only).
    AccrualsPerMessage,
    /// Messages per worker invocation.
    BatchSize,
    /// The worker's MaximumConcurrency.
    Concurrency,
    /// Accruals per member (hot keys).
    Repeats,
}

impl Knob {
    /// The value grid used when none is given.
    pub fn default_values(self) -> Vec<usize> {
        match self {
            Knob::AccrualsPerMessage => vec![1, 10, 50, 200, 500],
            Knob::BatchSize => vec![1, 2, 5, 10],
            Knob::Concurrency => vec![1, 2, 4, 8, 16],
            Knob::Repeats => vec![1, 10, 100, 1000, 5000],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Knob::AccrualsPerMessage => "accruals per message",
            Knob::BatchSize => "worker batch size",
            Knob::Concurrency => "max concurrency",
            Knob::Repeats => "accruals per member",
        }
    }

    fn apply(self, spec: &mut RunSpec, value: usize) {
        match self {
            Knob::AccrualsPerMessage => spec.accruals_per_message = Some(value),
            Knob::BatchSize => spec.batch_size = Some(value),
            Knob::Concurrency => spec.concurrency = Some(value),
            Knob::Repeats => spec.repeats = value,
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    pub knob: Knob,
    pub value: usize,
    pub result: RunResult,
}

/// Runs `base` once per value of each knob (one knob varied at a time) for
/// each variant; the baseline is skipped on the accruals-per-message axis
/// (it always sends one). `on_point` sees each point as it is measured.
pub async fn run_sweep(
    backend: &BenchBackend,
    settings: &StackSettings,
    base: &RunSpec,
    variants: &[Variant],
    axes: &[(Knob, Vec<usize>)],
    mut on_point: impl FnMut(&SweepPoint) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    for (knob, values) in axes {
        for &value in values {
            for &variant in variants {
                if variant == Variant::Baseline && *knob == Knob::AccrualsPerMessage {
                    continue;
                }
                let mut spec = base.clone();
                spec.variant = variant;
                knob.apply(&mut spec, value);
                let result = run_one(backend, settings, &spec).await?;
                let point = SweepPoint {
                    knob: *knob,
                    value,
                    result,
                };
                on_point(&point)?;
                points.push(point);
            }
        }
    }
    Ok(points)
}

/// Draws throughput and wall time against each knob swept, one row of two
/// panels per knob, a line per variant, as SVG.
pub fn plot_sweep(path: &Path, points: &[SweepPoint]) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let mut knobs: Vec<Knob> = Vec::new();
    for p in points {
        if !knobs.contains(&p.knob) {
            knobs.push(p.knob);
        }
    }
    if knobs.is_empty() {
        bail!("nothing to plot");
    }
    let root = SVGBackend::new(path, (1100, 330 * knobs.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let panels = root.split_evenly((knobs.len(), 2));
    for (row, knob) in knobs.iter().enumerate() {
        let on_axis: Vec<&SweepPoint> = points.iter().filter(|p| p.knob == *knob).collect();
        let x_max = on_axis.iter().map(|p| p.value).max().unwrap_or(1).max(2) as f64;
        for (column, (what, metric)) in [
            (
                "accruals/s",
                (|r: &RunResult| r.accruals_per_s) as fn(&RunResult) -> f64,
            ),
            ("wall time (s)", |r: &RunResult| r.wall_s),
        ]
        .into_iter()
        .enumerate()
        {
            let area = &panels[row * 2 + column];
            let y_max = on_axis.iter().map(|p| metric(&p.result)).fold(0.0, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{what} vs {}", knob.label()), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d((0.8..x_max * 1.25).log_scale(), 0.0..y_max.max(1e-9))
                .map_err(plot_error)?;
            let y_format = |y: &f64| {
                if *y >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            };
            chart
                .configure_mesh()
                .max_light_lines(2)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&y_format)
                .x_desc(knob.label())
                .y_desc(what)
                .draw()
                .map_err(plot_error)?;
            for (variant, colour) in [(Variant::Pointflow, BLUE), (Variant::Baseline, RED)] {
                let series: Vec<(f64, f64)> = on_axis
                    .iter()
                    .filter(|p| p.result.variant == variant)
                    .map(|p| (p.value as f64, metric(&p.result)))
                    .collect();
                if series.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(series.clone(), colour.stroke_width(2)))
                    .map_err(plot_error)?
                    .label(variant.to_string())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
                chart
                    .draw_series(series.into_iter().map(|xy| Circle::new(xy, 3, colour.filled())))
                    .map_err(plot_error)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
        }
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(variant: Variant, accruals_per_s: f64) -> RunResult {
        RunResult {
            variant,
            backend: "embedded",
            accruals: 1000,
            members: 1000,
            repeats: 1,
            accruals_per_message: 500,
            batch_size: 10,
            concurrency: 4,
            wall_s: 1000.0 / accruals_per_s,
            submit_s: 0.1,
            accruals_per_s,
            messages: 2,
            queue_requests: 4,
            writes: WriteCost {
                ledger_requests: 20,
                ledger_units: if variant == Variant::Pointflow { 4000 } else { 2000 },
                job_requests: 4,
                job_units: 10,
            },
            requests_per_accrual: 0.014,
            write_units_per_accrual: 4.0,
            worker_invocations: 1,
            peak_rss_mib: Some(20.0),
            ok: true,
        }
    }

    #[test]
    fn comparison_shows_the_baselines_multiple() {
        let (p, b) = (result(Variant::Pointflow, 10_000.0), result(Variant::Baseline, 1_000.0));
        let text = Comparison {
            pointflow: &p,
            baseline: &b,
        }
        .to_string();
        assert!(text.contains("wall time (s)"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("wall time") && l.ends_with("10.0×")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("accruals/s") && l.ends_with("10.0×")),
            "{text}"
        );
        // Pointflow's transactions cost more write units per ledger entry.
        assert!(
            text.lines()
                .any(|l| l.starts_with("WRU, credit") && l.ends_with("0.5×")),
            "{text}"
        );
    }

    #[test]
    fn csv_rows_follow_the_header_and_plots_draw() {
        let dir = std::env::temp_dir().join(format!("pointflow-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("sweep.csv");
        let _ = std::fs::remove_file(&csv);
        let rows = [result(Variant::Pointflow, 5_000.0), result(Variant::Baseline, 500.0)];
        append_csv(&csv, &rows).unwrap();
        append_csv(&csv, &rows[..1]).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], CSV_HEADER);
        let columns = CSV_HEADER.split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == columns), "{text}");

        let points: Vec<SweepPoint> = [1, 10, 100]
            .into_iter()
            .flat_map(|value| {
                [Variant::Pointflow, Variant::Baseline].map(|v| SweepPoint {
                    knob: Knob::Concurrency,
                    value,
                    result: result(v, 1000.0 * value as f64),
                })
            })
            .collect();
        let svg = dir.join("sweep.svg");
        plot_sweep(&svg, &points).unwrap();
        let drawn = std::fs::read_to_string(&svg).unwrap();
        assert!(drawn.starts_with("<svg") && drawn.contains("max concurrency"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
