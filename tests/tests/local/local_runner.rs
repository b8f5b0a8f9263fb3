//! The local runner end to end: `serve` + pollers + demo on the embedded
//! backend (and, small, on the AWS adapters over moto).

use std::time::Duration;

use pointflow::domain::JobStatus;
use pointflow_cli::backend::{AwsResources, BackendChoice, LocalBackend};
use pointflow_cli::bench_e2e::{run_one, BenchBackend, RunSpec, Variant};
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{submit, SubmitOptions};
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::import::run_import;
use pointflow_cli::poller::PollerSettings;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;

/// The embedded backend in memory, with `bucket` as the import bucket.
fn embedded(bucket: &TempDir) -> BackendChoice {
    BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: bucket.0.join("bucket"),
    }
}

/// The runner on the AWS backend over the emulator, its resources created
/// (`--backend aws --create`), or `None` without an emulator. moto is not
/// safe against concurrent transactions on one table: one invocation at a
/// time, one message at a time.
async fn aws_runner(prefix: &str) -> Option<(LocalBackend, Runner)> {
    pointflow_tests::backend::emulator_config().await?;
    let mut settings = StackSettings::from_template().unwrap();
    settings.maximum_concurrency = 1;
    settings.worker.message_concurrency = 1;
    let choice = BackendChoice::Aws(AwsResources {
        table: pointflow_tests::backend::unique_name(prefix),
        queue_url: None,
        dlq_url: None,
        bucket: None,
        import_queue_url: None,
        create: true,
    });
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    Some((backend, runner))
}

fn pollers(settings: &StackSettings) -> PollerSettings {
    settings.worker_pollers(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_thousand_accrual_demo_is_credited_exactly_within_the_cap() {
    pointflow_tests::init_logging();
    let mut settings = StackSettings::from_template().unwrap();
    settings.maximum_concurrency = 3;
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    // 5,000 members × 2 point types × 2 repeats, in 4 requests of 5,000.
    let campaign = Campaign {
        members: 5_000,
        point_types: 2,
        repeats: 2,
        seed: 7,
        chunk: 5_000,
    };
    let report = run_demo(
        &runner.base_url(),
        &backend,
        &runner.stats,
        campaign,
        2,
        false,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(report.accruals, 20_000);
    assert_eq!(report.requests, 4);
    assert_eq!((report.applied, report.duplicate, report.failed), (20_000, 0, 0));
    assert_eq!((report.balances_checked, report.balance_mismatches), (10_000, 0));
    assert!(
        report.max_in_flight >= 1 && report.max_in_flight <= 3,
        "{}",
        report.max_in_flight
    );
    assert!(report.ok());

    // The same seed again: every request is a replay, nothing is credited twice.
    let again = run_demo(
        &runner.base_url(),
        &backend,
        &runner.stats,
        campaign,
        2,
        false,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(again.replayed_requests, 4);
    assert_eq!(again.balance_mismatches, 0);
    runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_worker_keeps_failing_ends_in_the_dead_letter_queue() {
    pointflow_tests::init_logging();
    let mut settings = StackSettings::from_template().unwrap();
    settings.visibility_timeout = Duration::from_millis(200);
    settings.max_receive_count = 2;
    settings.worker.max_receive_count = 2;
    settings.maximum_concurrency = 2;
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    backend
        .queue
        .send_messages(&["{\"poison\":true}".to_owned()])
        .await
        .unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead = backend
            .dlq
            .receive_messages(10, Duration::from_millis(100))
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
    }
    runner.stop().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "{\"poison\":true}");
    assert_eq!(runner_failures(&backend).await, 0, "nothing left in the main queue");
}

async fn runner_failures(backend: &LocalBackend) -> usize {
    backend
        .queue
        .receive_messages(10, Duration::from_millis(300))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_demo_runs_on_the_aws_backend() {
    let Some((backend, runner)) = aws_runner("local-aws").await else {
        return;
    };
    let campaign = Campaign {
        members: 40,
        point_types: 2,
        repeats: 1,
        seed: 3,
        chunk: 40,
    };
    let report = run_demo(
        &runner.base_url(),
        &backend,
        &runner.stats,
        campaign,
        1,
        false,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    runner.stop().await.unwrap();
    assert_eq!((report.applied, report.failed), (80, 0));
    assert_eq!(report.balance_mismatches, 0);
    assert!(report.balances_checked >= 80);
}

/// `pointflow local import`: a 5,000-row file with bad rows, read in many
/// small chunks by the import pollers, credited exactly, its report written;
/// dropping it again credits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_import_credits_a_file_in_chunks_and_reports_its_bad_rows() {
    pointflow_tests::init_logging();
    let mut settings = StackSettings::from_template().unwrap();
    settings.import.chunk_bytes = 16 * 1024;
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let mut csv = String::from("member_id,point_type,amount\n");
    for i in 0..5_000u64 {
        if i % 1000 == 999 {
            csv.push_str(&format!("m-{},P,-1\n", i % 100));
        } else {
            csv.push_str(&format!("m-{},P,{}\n", i % 100, i + 1));
        }
    }
    let file = bucket.0.join("campaign.csv");
    std::fs::write(&file, &csv).unwrap();

    let summary = run_import(&backend, &file, "imports/campaign.csv", false, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        (summary.job.total, summary.job.rejected, summary.job.applied),
        (4_995, 5, 4_995)
    );
    assert_eq!(summary.job.status(), JobStatus::CompletedWithErrors);
    assert_eq!(summary.exit_code(), 3);
    assert!(!summary.already_imported);
    let report_path = summary.report.clone().expect("a report");
    let report = std::fs::read_to_string(&report_path).unwrap();
    assert_eq!(report.lines().count(), 6, "{report}");
    assert!(report.contains("\n1001,amount,"), "{report}");
    assert!(
        runner
            .import_stats
            .invocations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    for member in [0u64, 42, 99] {
        let expected: u64 = (0..5_000u64)
            .filter(|i| i % 100 == member && i % 1000 != 999)
            .map(|i| i + 1)
            .sum();
        let balances = backend.ledger.balances(&format!("m-{member}")).await.unwrap();
        assert_eq!(balances[0].balance, expected);
    }

    let again = run_import(&backend, &file, "imports/campaign.csv", false, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(again.already_imported);
    assert_eq!(again.job, summary.job);
    runner.stop().await.unwrap();
}

/// `pointflow local --backend aws --create import`: the file goes to an
/// emulated bucket whose notification feeds the import queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_import_over_the_emulator_goes_through_the_bucket_notification() {
    let Some((backend, runner)) = aws_runner("local-import").await else {
        return;
    };
    let dir = TempDir::new("pointflow-files");
    let file = dir.0.join("small.csv");
    std::fs::write(&file, "member_id,point_type,amount\nm-1,P,10\nm-2,P,20\nm-1,P,5\n").unwrap();
    let summary = run_import(&backend, &file, "imports/small.csv", false, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((summary.job.total, summary.job.applied, summary.exit_code()), (3, 3, 0));
    assert_eq!(backend.ledger.balances("m-1").await.unwrap()[0].balance, 15);
    runner.stop().await.unwrap();
}

/// `pointflow submit --wait` against the runner on the AWS adapters over the
/// emulator: a small NDJSON file, then a CSV file, in several requests each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_over_the_emulator_credits_small_ndjson_and_csv_files() {
    let Some((backend, runner)) = aws_runner("local-submit").await else {
        return;
    };
    let client = ApiClient::new(&runner.base_url(), None, Duration::from_secs(30)).unwrap();
    let text: String = (0..120)
        .map(|i| {
            format!(
                "{{\"member_id\":\"m-{}\",\"point_type\":\"P\",\"amount\":{}}}\n",
                i % 4,
                i + 1
            )
        })
        .collect();
    let options = SubmitOptions {
        format: Format::Ndjson,
        limits: ChunkLimits {
            max_items: 40,
            ..ChunkLimits::default()
        },
        campaign: "emulator".into(),
        parallel: 2,
        wait: true,
        poll_interval: Duration::from_millis(200),
        wait_timeout: Duration::from_secs(120),
        progress: false,
    };
    let report = submit(
        &client,
        Box::new(std::io::Cursor::new(text.into_bytes())),
        None,
        &options,
    )
    .await
    .unwrap();
    assert_eq!((report.requests, report.applied, report.exit_code()), (3, 120, 0));
    let expected: u64 = (0..120u64).filter(|i| i % 4 == 1).map(|i| i + 1).sum();
    assert_eq!(backend.ledger.balances("m-1").await.unwrap()[0].balance, expected);

    // The same accruals as CSV, as another campaign: credited once more.
    let csv: String = std::iter::once("member_id,point_type,amount\n".to_owned())
        .chain((0..120).map(|i| format!("m-{},P,{}\n", i % 4, i + 1)))
        .collect();
    let options = SubmitOptions {
        format: Format::Csv,
        campaign: "emulator-csv".into(),
        ..options
    };
    let report = submit(
        &client,
        Box::new(std::io::Cursor::new(csv.into_bytes())),
        None,
        &options,
    )
    .await
    .unwrap();
    assert_eq!((report.requests, report.applied, report.exit_code()), (3, 120, 0));
    assert_eq!(backend.ledger.balances("m-1").await.unwrap()[0].balance, 2 * expected);
    runner.stop().await.unwrap();
}

/// `pointflow bench e2e` on the embedded backend: both designs credit every
/// balance exactly, and the counted requests and write units are the ones
/// each design makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_runs_pointflow_and_the_baseline_side_by_side() {
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let work = TempDir::new("pointflow-bench");
    let backend = BenchBackend::Embedded { dir: work.0.clone() };
    let spec = |variant| RunSpec {
        variant,
        accruals: 3_000,
        repeats: 3,
        concurrency: Some(2),
        batch_size: None,
        accruals_per_message: None,
        message_concurrency: None,
        submitters: 2,
        timeout: Duration::from_secs(120),
    };
    let pointflow = run_one(&backend, &settings, &spec(Variant::Pointflow)).await.unwrap();
    let baseline = run_one(&backend, &settings, &spec(Variant::Baseline)).await.unwrap();
    assert!(pointflow.ok && baseline.ok, "{pointflow:?}\n{baseline:?}");
    assert_eq!((pointflow.members, baseline.members), (1_000, 1_000));
    // The baseline: a message, a put (with its history index entry) and an
    // update per accrual.
    assert_eq!(baseline.messages, 3_000);
    assert_eq!(baseline.writes.ledger_requests, 6_000);
    assert_eq!(baseline.writes.ledger_units, 9_000);
    assert!(baseline.queue_requests >= 3_000);
    // Pointflow: packed messages, ≤ 100-action transactions (2 WRU per entry,
    // 2 per its history index entry and 2 per balance; a member's repeats
    // share its balance update).
    assert!(pointflow.messages <= 30, "{}", pointflow.messages);
    assert!(pointflow.writes.ledger_requests <= 60, "{:?}", pointflow.writes);
    assert!(
        (14_000..=14_200).contains(&pointflow.writes.ledger_units),
        "{:?}",
        pointflow.writes
    );
    assert!(
        pointflow.requests_per_accrual < 0.2,
        "{}",
        pointflow.requests_per_accrual
    );
    assert!(baseline.requests_per_accrual > 4.0, "{}", baseline.requests_per_accrual);
    // Each run's database is removed after it.
    assert_eq!(std::fs::read_dir(&work.0).unwrap().count(), 0);
}

/// The same benchmark on the AWS adapters over the emulator, where every
/// request is a real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_counts_real_requests_over_the_emulator() {
    if pointflow_tests::backend::emulator_config().await.is_none() {
        return;
    }
    let settings = StackSettings::from_template().unwrap();
    let backend = BenchBackend::Aws {
        prefix: pointflow_tests::backend::unique_name("bench"),
    };
    let spec = |variant| RunSpec {
        variant,
        accruals: 30,
        repeats: 1,
        concurrency: Some(1),
        batch_size: None,
        accruals_per_message: None,
        message_concurrency: Some(1),
        submitters: 1,
        timeout: Duration::from_secs(120),
    };
    let pointflow = run_one(&backend, &settings, &spec(Variant::Pointflow)).await.unwrap();
    let baseline = run_one(&backend, &settings, &spec(Variant::Baseline)).await.unwrap();
    assert!(pointflow.ok && baseline.ok, "{pointflow:?}\n{baseline:?}");
    // One message, one 60-action transaction: 2 WRU per entry, 2 per its
    // history index entry, 2 per balance.
    assert_eq!((pointflow.messages, pointflow.writes.ledger_requests), (1, 1));
    assert_eq!(pointflow.writes.ledger_units, 180);
    // A standard put (1), its index entry (1) and an update (1) per accrual.
    assert_eq!((baseline.messages, baseline.writes.ledger_requests), (30, 60));
    assert_eq!(baseline.writes.ledger_units, 90);
    // A message sent per request, plus receives and deletes.
    assert!(baseline.queue_requests >= 31, "{}", baseline.queue_requests);
    assert!(baseline.requests_per_accrual > 10.0 * pointflow.requests_per_accrual);
}
