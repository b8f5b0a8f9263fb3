//! The local runner end to end on the AWS adapters over moto, small: the
//! demo, `local import` through the bucket notification, `submit` and
//! `bench e2e`. The embedded backend's cases: `tests/local/local_runner.rs`.

use std::time::Duration;

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
use pointflow_tests::openapi_proxy::CheckingProxy;

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
async fn a_small_demo_runs_on_the_aws_backend() {
    let Some((backend, runner)) = aws_runner("local-aws").await else {
        return;
    };
    // Every answer is checked against docs/openapi.yaml on its way.
    let proxy = CheckingProxy::start(&runner.base_url()).await;
    let campaign = Campaign {
        members: 40,
        point_types: 2,
        repeats: 1,
        seed: 3,
        chunk: 40,
    };
    let report = run_demo(
        proxy.base_url(),
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
    let summary = run_import(
        &backend,
        &file,
        "imports/small.csv",
        None,
        None,
        false,
        Duration::from_secs(60),
    )
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
    let proxy = CheckingProxy::start(&runner.base_url()).await;
    let client = ApiClient::new(proxy.base_url(), None, Duration::from_secs(30)).unwrap();
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
        sheet: None,
        encoding: None,
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
        sheet: None,
        encoding: None,
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

/// `pointflow bench e2e` (the embedded case: `tests/local/local_runner.rs`)
/// on the AWS adapters over the emulator, where every request is a real one.
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
    // One message, one 61-action transaction: 2 WRU per entry, 2 per its
    // history index entry, 2 per balance, 2 for the message's cancel check.
    assert_eq!((pointflow.messages, pointflow.writes.ledger_requests), (1, 1));
    assert_eq!(pointflow.writes.ledger_units, 182);
    // A standard put (1), its index entry (1) and an update (1) per accrual.
    assert_eq!((baseline.messages, baseline.writes.ledger_requests), (30, 60));
    assert_eq!(baseline.writes.ledger_units, 90);
    // A message sent per request, plus receives and deletes.
    assert!(baseline.queue_requests >= 31, "{}", baseline.queue_requests);
    assert!(baseline.requests_per_accrual > 10.0 * pointflow.requests_per_accrual);
}
