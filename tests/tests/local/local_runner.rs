//! The local runner end to end: `serve` + pollers + demo on the embedded
//! backend (small, on the AWS adapters over moto:
//! `tests/emulator/local_runner.rs`).

use std::time::Duration;

use pointflow::domain::audit::CallerKind;
use pointflow::domain::JobStatus;
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::bench_e2e::{run_one, BenchBackend, RunSpec, Variant};
use pointflow_cli::demo::{run_demo, Campaign};
use pointflow_cli::import::{run_import, run_import_sheet};
use pointflow_cli::poller::PollerSettings;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use pointflow_tests::openapi_proxy::CheckingProxy;

/// The embedded backend in memory, with `bucket` as the import bucket.
fn embedded(bucket: &TempDir) -> BackendChoice {
    BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: bucket.0.join("bucket"),
    }
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
    // Every answer the demo gets is checked against docs/openapi.yaml.
    let proxy = CheckingProxy::start(&runner.base_url()).await;
    // 5,000 members × 2 point types × 2 repeats, in 4 requests of 5,000.
    let campaign = Campaign {
        members: 5_000,
        point_types: 2,
        repeats: 2,
        seed: 7,
        chunk: 5_000,
    };
    let report = run_demo(
        proxy.base_url(),
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
        proxy.base_url(),
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
    // The demo's 8 submissions went through the checking proxy.
    assert!(proxy.answers() >= 8, "{}", proxy.answers());
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

    let summary = run_import(
        &backend,
        &file,
        "imports/campaign.csv",
        None,
        None,
        false,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.job.total, summary.job.rejected, summary.job.applied),
        (4_995, 5, 4_995)
    );
    assert_eq!(summary.job.status(), JobStatus::CompletedWithErrors);
    assert_eq!(summary.exit_code(), 3);
    assert!(!summary.already_imported);
    // A file dropped locally is recorded as dropped by `local`.
    let dropped_by = summary
        .job
        .audit
        .as_ref()
        .map(|a| (a.caller.kind, a.caller.id.as_deref()));
    assert_eq!(dropped_by, Some((CallerKind::S3, Some("local"))));
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

    let again = run_import(
        &backend,
        &file,
        "imports/campaign.csv",
        None,
        None,
        false,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(again.already_imported);
    assert_eq!(again.job, summary.job);
    runner.stop().await.unwrap();
}

/// `pointflow local import book.xlsx --sheet NAME`: the named sheet of a
/// workbook credited through the local runner, its bad row reported by the
/// row number Excel shows, the summary naming no encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_import_credits_the_named_sheet_of_a_workbook() {
    use pointflow_tests::workbooks::{n, t, workbook, Sheet};
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let header = || vec![t("member_id"), t("point_type"), t("amount")];
    let mut rows = vec![header()];
    for i in 0..300u32 {
        rows.push(vec![t(&format!("m-{}", i % 10)), t("P"), n(f64::from(i + 1))]);
    }
    rows.push(vec![t("m-0"), t("P"), n(0.5)]);
    let book = workbook(&[
        Sheet::new("Notes", vec![header(), vec![t("m-0"), t("P"), n(1_000.0)]]),
        Sheet::new("Campaign", rows),
    ]);
    let file = bucket.0.join("book.xlsx");
    std::fs::write(&file, &book).unwrap();

    let summary = run_import_sheet(
        &backend,
        &file,
        "imports/book.xlsx",
        None,
        None,
        Some("Campaign"),
        false,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.job.total, summary.job.rejected, summary.job.applied),
        (300, 1, 300)
    );
    assert_eq!(summary.exit_code(), 3);
    assert_eq!(summary.encoding, None, "a workbook has no text encoding");
    assert_eq!(
        (summary.format.as_deref(), summary.sheet.as_deref()),
        (Some("xlsx"), Some("Campaign"))
    );
    assert!(
        summary.to_string().contains("\nformat    xlsx (sheet \"Campaign\")\n"),
        "{summary}"
    );
    let report = std::fs::read_to_string(summary.report.clone().expect("a report")).unwrap();
    assert!(report.contains("\n302,amount,"), "{report}");
    let expected: u32 = (0..300u32).filter(|i| i % 10 == 0).map(|i| i + 1).sum();
    let balances = backend.ledger.balances("m-0").await.unwrap();
    assert_eq!(balances[0].balance, u64::from(expected), "the Notes sheet is not read");
    runner.stop().await.unwrap();
}

/// `pointflow local import lines.jsonl`: an NDJSON file saved as UTF-16LE
/// with a byte-order mark, read in chunks by the import pollers, its bad
/// line reported by its number, the summary naming the format and the
/// encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_import_credits_a_utf16_ndjson_file_in_chunks() {
    pointflow_tests::init_logging();
    let mut settings = StackSettings::from_template().unwrap();
    settings.import.chunk_bytes = 4 * 1024;
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let mut text = String::new();
    for i in 0..300u64 {
        if i == 150 {
            text.push_str("{\"member_id\":\"m-0\",\"point_type\":\"P\",\"amount\":\"7\"}\r\n");
        } else {
            text.push_str(&format!(
                "{{\"member_id\":\"m-{}\",\"point_type\":\"P\",\"amount\":{},\"reason\":\"신규 가입 적립 😀\"}}\r\n",
                i % 10,
                i + 1
            ));
        }
    }
    let bytes = pointflow::domain::readers::source::utf16_with_bom(&text, false);
    let file = bucket.0.join("lines.jsonl");
    std::fs::write(&file, &bytes).unwrap();

    let summary = run_import(
        &backend,
        &file,
        "imports/lines.jsonl",
        None,
        None,
        false,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.job.total, summary.job.rejected, summary.job.applied),
        (299, 1, 299)
    );
    assert_eq!(summary.format.as_deref(), Some("ndjson"));
    let shown = summary.to_string();
    assert!(shown.contains("\nencoding  UTF-16LE (byte-order mark)\n"), "{shown}");
    assert!(shown.contains("\nformat    ndjson\n"), "{shown}");
    let report = std::fs::read_to_string(summary.report.clone().expect("a report")).unwrap();
    assert!(
        report.contains("\n151,amount,\"must be a number, found a string\","),
        "{report}"
    );
    assert!(
        runner
            .import_stats
            .invocations
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    let expected: u64 = (0..300u64).filter(|i| i % 10 == 0 && *i != 150).map(|i| i + 1).sum();
    let balances = backend.ledger.balances("m-0").await.unwrap();
    assert_eq!(balances[0].balance, expected);
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

/// `local serve` against DNS rebinding: a request whose `Host` names another
/// site is refused with 421 and a JSON error before the API sees it; the same
/// request with a loopback `Host` is answered. A non-loopback listen address
/// is refused unless `--allow-remote` (`Exposure::Remote`) is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_answers_loopback_hosts_only() {
    use pointflow_cli::exposure::{Exposure, ALLOW_REMOTE_FLAG};
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let refused = Runner::start(&backend, &settings, "0.0.0.0:0".parse().unwrap(), pollers(&settings)).await;
    let err = refused.err().expect("a non-loopback address is refused").to_string();
    assert!(err.contains(ALLOW_REMOTE_FLAG), "{err}");

    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let port = runner.addr.port();
    let url = format!("{}/v1/jobs/00000000-0000-4000-8000-000000000000", runner.base_url());
    let client = reqwest::Client::new();
    let get = |host: String| client.get(&url).header(reqwest::header::HOST, host).send();

    let foreign = get(format!("rebound.example:{port}")).await.unwrap();
    assert_eq!(foreign.status().as_u16(), 421);
    let body: serde_json::Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rebound.example") && message.contains(ALLOW_REMOTE_FLAG),
        "{message}"
    );
    let wrong_port = get(format!("localhost:{}", port.wrapping_add(1))).await.unwrap();
    assert_eq!(wrong_port.status().as_u16(), 421);

    // The API itself answers loopback hosts: an unknown job is its 404.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let answered = get(host.clone()).await.unwrap();
        assert_eq!(answered.status().as_u16(), 404, "{host}");
    }
    runner.stop().await.unwrap();

    // With the flag, other names are served (the operator chose it).
    let runner = Runner::start_exposed(
        &backend,
        &settings,
        "127.0.0.1:0".parse().unwrap(),
        pollers(&settings),
        Exposure::Remote,
    )
    .await
    .unwrap();
    let url = format!("{}/v1/jobs/00000000-0000-4000-8000-000000000000", runner.base_url());
    let answered = client
        .get(&url)
        .header(reqwest::header::HOST, "pointflow.internal")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status().as_u16(), 404);
    runner.stop().await.unwrap();
}

/// `kill -9` leaves the messages a runner held in flight invisible for the
/// whole visibility timeout (360 s). A runner that starts as the database's
/// only user releases them: they are delivered and applied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_after_a_hard_kill_delivers_the_left_leases_at_once() {
    use pointflow_cli::runner::Takeover;

    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new("pointflow-kill");
    let choice = BackendChoice::Embedded {
        db: dir.0.join("local.db"),
        bucket_dir: dir.0.join("bucket"),
    };
    let job_id;
    {
        // A run that queued a job's messages and received them, then died.
        let backend = LocalBackend::open(&choice, &settings).await.unwrap();
        let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
            .await
            .unwrap();
        runner.stop().await.unwrap();
        let service = pointflow::services::api::ApiService::new(
            backend.jobs.clone(),
            backend.ledger.clone(),
            backend.queue.clone(),
            settings.ingest,
        );
        let body = serde_json::json!({"accruals": (0..3).map(|i| serde_json::json!(
            {"member_id": format!("m-{i}"), "point_type": "WELCOME", "amount": 10}
        )).collect::<Vec<_>>()});
        let response = service
            .handle(&pointflow::services::api::ApiRequest {
                method: "POST".into(),
                path: "/v1/jobs".into(),
                query: vec![],
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("idempotency-key".into(), "kill-test".into()),
                ],
                body: serde_json::to_vec(&body).unwrap(),
                ..Default::default()
            })
            .await;
        assert_eq!(response.status, 202, "{}", response.body);
        job_id = response.body["job_id"]
            .as_str()
            .unwrap()
            .parse::<pointflow::domain::JobId>()
            .unwrap();
        let leased = backend.queue.receive_messages(10, Duration::ZERO).await.unwrap();
        assert!(!leased.is_empty());
        assert_eq!(backend.queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
    }
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    assert!(
        matches!(runner.takeover, Takeover::Owner { released, .. } if released > 0),
        "{:?}",
        runner.takeover
    );
    // A second runner on the same file does not take over (and says why).
    let second = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    assert!(matches!(second.takeover, Takeover::Shared { .. }));
    assert!(second.takeover.notice(settings.visibility_timeout).is_some());
    second.stop().await.unwrap();
    // Guard against hanging for the 360 s visibility timeout; not a speed check.
    let job = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let job = backend.jobs.get_job(job_id).await.unwrap().unwrap();
            if job.completed_at.is_some() {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the left leases were not delivered");
    assert_eq!((job.applied, job.status()), (3, JobStatus::Completed));
    runner.stop().await.unwrap();
}

/// A page of another site cannot make the operator's browser change
/// anything through the local server's API (cross-site request forgery:
/// the `Host` guard does not stop a page posting to `127.0.0.1`); a client
/// that is not a browser (curl, the CLI, the fuzzer) sends neither header and
/// is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_a_page_of_another_site_asks_for() {
    let settings = StackSettings::from_template().unwrap();
    let bucket = TempDir::new("pointflow-bucket");
    let backend = LocalBackend::open(&embedded(&bucket), &settings).await.unwrap();
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers(&settings))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = runner.base_url();
    let body = r#"{"accruals":[{"accrual_id":"x-1","member_id":"m-1","point_type":"P","amount":5}]}"#;
    for (header, value) in [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")] {
        for path in [
            "/v1/jobs",
            "/v1/members/m-1/uses",
            "/v1/jobs/00000000-0000-4000-8000-000000000000/cancel",
        ] {
            let refused = http
                .post(format!("{base}{path}"))
                .header(header, value)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status().as_u16(), 403, "{path} {header}: {value}");
            let answer: serde_json::Value = refused.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "cross_site_request", "{answer}");
        }
    }
    let listed: serde_json::Value = http
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"], serde_json::json!([]), "nothing was submitted: {listed}");
    let own = http
        .post(format!("{base}/v1/jobs"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 202, "a client that is not a browser");
    runner.stop().await.unwrap();
}
