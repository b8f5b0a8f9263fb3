//! The local runner end to end: `serve` + pollers + demo on the embedded
//! backend (and, small, on the AWS adapters over moto).

use std::time::Duration;

use pointflow_cli::backend::{AwsResources, BackendChoice, LocalBackend};
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::poller::PollerSettings;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;

fn pollers(settings: &StackSettings) -> PollerSettings {
    PollerSettings {
        batch_size: settings.batch_size,
        batching_window: settings.batching_window,
        maximum_concurrency: settings.maximum_concurrency,
        wait: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_thousand_accrual_demo_is_credited_exactly_within_the_cap() {
    pointflow_tests::init_logging();
    let mut settings = StackSettings::from_template().unwrap();
    settings.maximum_concurrency = 3;
    let backend = LocalBackend::open(&BackendChoice::Embedded { db: ":memory:".into() }, &settings)
        .await
        .unwrap();
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
    let backend = LocalBackend::open(&BackendChoice::Embedded { db: ":memory:".into() }, &settings)
        .await
        .unwrap();
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
    if pointflow_tests::backend::emulator_config().await.is_none() {
        return;
    }
    let mut settings = StackSettings::from_template().unwrap();
    // moto is not safe against concurrent transactions on one table: one
    // invocation at a time, one message at a time.
    settings.maximum_concurrency = 1;
    settings.worker.message_concurrency = 1;
    let choice = BackendChoice::Aws(AwsResources {
        table: pointflow_tests::backend::unique_name("local-aws"),
        queue_url: None,
        dlq_url: None,
        create: true,
    });
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
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
