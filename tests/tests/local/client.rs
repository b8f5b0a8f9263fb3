//! `pointflow submit` / `wait` / `status` / `balance` against the local
//! runner (`pointflow local serve`'s stack) on the embedded backend (`submit`
//! over the emulator: `tests/emulator/local_runner.rs`). The client talks to
//! the runner through a proxy that checks every answer against
//! `docs/openapi.yaml` (`pointflow_tests::openapi_proxy`).

use std::io::Read;
use std::time::Duration;

use pointflow::domain::JobStatus;
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::input::{ChunkLimits, Format};
use pointflow_cli::client::submit::{submit, SubmitError, SubmitOptions, SubmitReport};
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use pointflow_tests::openapi_proxy::CheckingProxy;

struct Stack {
    backend: LocalBackend,
    runner: Runner,
    client: ApiClient,
    /// Fails the test when dropped if an answer broke the document.
    proxy: CheckingProxy,
    _dir: TempDir,
}

async fn stack() -> Stack {
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new("pointflow-client");
    let choice = BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: dir.0.join("bucket"),
    };
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let pollers = settings.worker_pollers(Duration::from_millis(100));
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers)
        .await
        .unwrap();
    let proxy = CheckingProxy::start(&runner.base_url()).await;
    let client = ApiClient::new(proxy.base_url(), None, Duration::from_secs(30)).unwrap();
    Stack {
        backend,
        runner,
        client,
        proxy,
        _dir: dir,
    }
}

/// Submits `text` (no size hint) with [`options`]; the run must finish.
async fn submit_text(client: &ApiClient, text: &str, format: Format, chunk: usize) -> SubmitReport {
    submit(
        client,
        Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        None,
        &options(format, chunk),
    )
    .await
    .unwrap()
}

fn options(format: Format, chunk: usize) -> SubmitOptions {
    SubmitOptions {
        format,
        sheet: None,
        encoding: None,
        limits: ChunkLimits {
            max_items: chunk,
            ..ChunkLimits::default()
        },
        campaign: "test".into(),
        parallel: 4,
        wait: true,
        poll_interval: Duration::from_millis(100),
        wait_timeout: Duration::from_secs(300),
        progress: false,
    }
}

/// `members` members × 2 point types; member m's amounts are m+1 and 2m+1.
fn ndjson(members: u64) -> String {
    let mut out = String::new();
    for m in 0..members {
        out.push_str(&format!(
            "{{\"member_id\":\"m-{m}\",\"point_type\":\"A\",\"amount\":{}}}\n{{\"member_id\":\"m-{m}\",\"point_type\":\"B\",\"amount\":{}}}\n",
            m + 1,
            2 * m + 1
        ));
    }
    out
}

async fn balance(stack: &Stack, member: &str) -> Vec<(String, u64)> {
    stack
        .backend
        .ledger
        .balances(member)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.point_type, b.balance))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_line_ndjson_is_credited_exactly() {
    let stack = stack().await;
    let text = ndjson(50_000);
    let report = submit(
        &stack.client,
        Box::new(std::io::Cursor::new(text.clone().into_bytes())),
        Some(text.len() as u64),
        &options(Format::Ndjson, 10_000),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.requests, report.accepted, report.rejected_lines),
        (10, 100_000, 0)
    );
    assert_eq!((report.applied, report.duplicate, report.failed), (100_000, 0, 0));
    assert_eq!(report.jobs.len(), 10);
    assert!(report.jobs.iter().all(|j| j.status == JobStatus::Completed));
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.input_bytes, text.len() as u64);
    for m in [0u64, 12_345, 49_999] {
        assert_eq!(
            balance(&stack, &format!("m-{m}")).await,
            [("A".to_owned(), m + 1), ("B".to_owned(), 2 * m + 1)]
        );
    }

    // The same command again: every request is a replay, nothing is credited.
    let again = submit_text(&stack.client, &text, Format::Ndjson, 10_000).await;
    assert_eq!((again.requests, again.replayed), (10, 10));
    assert_eq!(
        balance(&stack, "m-7").await,
        [("A".to_owned(), 8), ("B".to_owned(), 15)]
    );
    stack.runner.stop().await.unwrap();
}

/// Fails with an I/O error after `limit` bytes, as a crash would stop a run.
struct FailsAfter {
    inner: std::io::Cursor<Vec<u8>>,
    limit: u64,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.position() >= self.limit {
            return Err(std::io::Error::other("the submitting machine crashed"));
        }
        let room = (self.limit - self.inner.position()) as usize;
        let n = room.min(buf.len());
        self.inner.read(&mut buf[..n])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_csv_submit_resumes_without_double_credit() {
    let stack = stack().await;
    let mut csv = String::from("member_id,point_type,amount\n");
    for i in 0..20_000u64 {
        csv.push_str(&format!("m-{},P,{}\n", i % 1000, i % 7 + 1));
    }
    let interrupted = submit(
        &stack.client,
        Box::new(FailsAfter {
            inner: std::io::Cursor::new(csv.clone().into_bytes()),
            limit: csv.len() as u64 / 2,
        }),
        None,
        &options(Format::Csv, 1_000),
    )
    .await;
    assert!(matches!(interrupted, Err(SubmitError::Input(_))), "{interrupted:?}");

    let resumed = submit(
        &stack.client,
        Box::new(std::io::Cursor::new(csv.into_bytes())),
        None,
        &options(Format::Csv, 1_000),
    )
    .await
    .unwrap();
    assert_eq!(resumed.requests, 20);
    assert!(
        resumed.replayed >= 5 && resumed.replayed < 20,
        "about half was sent before the crash: {} replayed",
        resumed.replayed
    );
    assert_eq!((resumed.applied, resumed.duplicate, resumed.failed), (20_000, 0, 0));
    for member in [0u64, 999] {
        let expected: u64 = (0..20_000u64).filter(|i| i % 1000 == member).map(|i| i % 7 + 1).sum();
        assert_eq!(
            balance(&stack, &format!("m-{member}")).await,
            [("P".to_owned(), expected)]
        );
    }
    stack.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_by_line_and_field_and_good_ones_credited() {
    let stack = stack().await;
    let text = [
        r#"{"member_id":"m-1","point_type":"P","amount":10}"#,
        r#"{"member_id":"m-2","point_type":"P","amount":-5}"#,
        r#"{"member_id":"m 3","point_type":"P","amount":7,"colour":"red"}"#,
        "{oops",
        r#"{"accrual_id":"x-1","member_id":"m-1","point_type":"P","amount":5}"#,
    ]
    .join("\n");
    let report = submit_text(&stack.client, &text, Format::Ndjson, 100).await;
    let errors: Vec<(u64, &str)> = report.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(errors, [(2, "amount"), (3, "colour"), (3, "member_id"), (4, "(row)")]);
    assert_eq!((report.rejected_lines, report.accepted, report.applied), (3, 2, 2));
    assert_eq!(report.exit_code(), 3);
    assert_eq!(balance(&stack, "m-1").await, [("P".to_owned(), 15)]);

    let view = stack
        .client
        .job(report.chunks[0].job_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(view.status, JobStatus::Completed);
    let balances = stack.client.balances("m-1").await.unwrap();
    assert_eq!(balances["balances"]["P"], 15);
    stack.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_file_is_streamed_item_by_item() {
    let stack = stack().await;
    let items: Vec<String> = (0..2_500)
        .map(|i| format!(r#"{{"member_id":"m-{}","point_type":"P","amount":1}}"#, i % 10))
        .collect();
    let text = format!("[{}]", items.join(",\n"));
    let report = submit_text(&stack.client, &text, Format::Json, 1_000).await;
    assert_eq!((report.requests, report.applied), (3, 2_500));
    assert_eq!(balance(&stack, "m-3").await, [("P".to_owned(), 250)]);
    stack.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_messages_are_listed_and_redriven_then_applied() {
    dead_letters_redriven(false).await;
}

/// The same, through an archive: `dlq archive` empties the DLQ into files,
/// `dlq redrive --from` sends them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_messages_archived_then_redriven_from_the_archive_are_applied() {
    dead_letters_redriven(true).await;
}

async fn dead_letters_redriven(via_archive: bool) {
    let stack = stack().await;
    // A job whose two messages were dead-lettered (say, during an outage).
    let job_id = pointflow::domain::JobId::random();
    stack
        .backend
        .jobs
        .create_job(&pointflow::domain::NewJob {
            job_id,
            request_hash: "dlq".into(),
            total: 4,
            deduplicated: 0,
            messages: 2,
            source: None,
            reading: false,
            created_at: time::OffsetDateTime::now_utc(),
            audit: None,
        })
        .await
        .unwrap();
    let bodies: Vec<String> = (0..2u32)
        .map(|seq| {
            pointflow::domain::message::QueueMessage::new(
                job_id,
                seq,
                pointflow::domain::message::Payload::Accruals(
                    (0..2)
                        .map(|i| pointflow::domain::Accrual {
                            accrual_id: format!("dlq-{seq}-{i}"),
                            member_id: "m-dlq".into(),
                            point_type: "P".into(),
                            amount: 5,
                            reason: None,
                            apply_at: None,
                            expires_at: None,
                        })
                        .collect(),
                ),
            )
            .encode()
        })
        .collect();
    stack.backend.dlq.send_messages(&bodies).await.unwrap();
    // Their last deliveries counted their accruals failed.
    for seq in 0..2 {
        let failed = pointflow::domain::MessageCounts {
            failed: 2,
            ..Default::default()
        };
        let now = time::OffsetDateTime::now_utc();
        stack
            .backend
            .jobs
            .fold_message(job_id, seq, failed, &[], now)
            .await
            .unwrap();
    }
    let before = stack.client.job(&job_id.to_string()).await.unwrap();
    assert_eq!((before.failed, before.status), (4, JobStatus::CompletedWithErrors));

    let listed = pointflow::services::dlq::list(
        stack.backend.dlq.as_ref(),
        pointflow::services::dlq::QueueKind::Accruals,
        100,
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|l| l.job_id == Some(job_id) && l.accruals == 2));
    let now = time::OffsetDateTime::now_utc();
    let moved = if via_archive {
        let folder = stack._dir.0.join("dlq-archive");
        let objects = pointflow::adapters::local_dir::DirObjects::new(&folder);
        let archived = pointflow::services::dlq::archive(
            stack.backend.dlq.as_ref(),
            pointflow::services::dlq::QueueKind::Accruals,
            &objects,
            "",
            "",
            100,
            now,
        )
        .await
        .unwrap();
        assert_eq!((archived.messages, archived.files.len()), (2, 1));
        let left = pointflow::services::dlq::list(
            stack.backend.dlq.as_ref(),
            pointflow::services::dlq::QueueKind::Accruals,
            100,
        )
        .await
        .unwrap();
        assert!(left.is_empty(), "archived messages leave the DLQ");
        let file = std::fs::read(folder.join(&archived.files[0])).unwrap();
        let letters = pointflow::services::dlq::decode_archive(&file).unwrap();
        pointflow::services::dlq::redrive_archived(
            &letters,
            pointflow::services::dlq::RedriveTargets {
                accruals: stack.backend.queue.as_ref(),
                imports: None,
            },
            now,
        )
        .await
        .unwrap()
    } else {
        pointflow::services::dlq::redrive(
            stack.backend.dlq.as_ref(),
            stack.backend.queue.as_ref(),
            pointflow::services::dlq::QueueKind::Accruals,
            usize::MAX,
            now,
        )
        .await
        .unwrap()
    };
    assert_eq!((moved.messages, moved.accruals), (2, 4));

    let options = SubmitOptions {
        progress: false,
        ..options(Format::Ndjson, 1)
    };
    let views = pointflow_cli::client::submit::wait_for_jobs(&stack.client, &[job_id.to_string()], &options)
        .await
        .unwrap();
    // Wait for the redriven messages' counts to move from failed to applied.
    let mut view = views[0].clone();
    for _ in 0..100 {
        if view.failed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = stack.client.job(&job_id.to_string()).await.unwrap();
    }
    assert_eq!((view.applied, view.failed, view.status), (4, 0, JobStatus::Completed));
    assert_eq!(balance(&stack, "m-dlq").await, [("P".to_owned(), 20)]);
    assert!(pointflow::services::dlq::list(
        stack.backend.dlq.as_ref(),
        pointflow::services::dlq::QueueKind::Accruals,
        100
    )
    .await
    .unwrap()
    .is_empty());
    stack.runner.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_api_leaves_the_run_unfinished_with_status_1() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApiClient::new(&format!("http://127.0.0.1:{port}"), None, Duration::from_secs(2))
        .unwrap()
        .with_backoff(pointflow::adapters::retry::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            max_attempts: 3,
        });
    let text = ndjson(10);
    let report = submit(
        &client,
        Box::new(std::io::Cursor::new(text.into_bytes())),
        None,
        &options(Format::Ndjson, 5),
    )
    .await
    .unwrap();
    assert_eq!(report.requests, 4);
    assert!(report.chunks.iter().all(|c| c.unfinished && c.job_id.is_none()));
    assert!(!report.waited);
    assert_eq!(report.exit_code(), 1);
}

/// `pointflow use`: credited points are deducted once per use id through the
/// runner's API; a retry is a replay, and a use larger than the balance is a
/// refusal (409) that changes nothing; `pointflow history` lists it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_deduct_once_through_the_api() {
    let stack = stack().await;
    let text = r#"{"member_id":"m-1","point_type":"P","amount":100}"#;
    let report = submit_text(&stack.client, text, Format::Ndjson, 100).await;
    assert_eq!(report.applied, 1);
    let order = serde_json::json!({"use_id": "order-1", "point_type": "P", "amount": 70});
    let (record, replayed) = stack.client.use_points("m-1", &order).await.unwrap();
    assert_eq!((record["amount"].as_u64(), replayed), (Some(70), false));
    let (again, replayed) = stack.client.use_points("m-1", &order).await.unwrap();
    assert_eq!((&again, replayed), (&record, true));
    let too_much = serde_json::json!({"use_id": "order-2", "point_type": "P", "amount": 31});
    let refusal = stack.client.use_points("m-1", &too_much).await.unwrap_err();
    assert_eq!(refusal.refused_status(), Some(409));
    assert!(refusal.to_string().contains("insufficient_balance"), "{refusal}");
    assert_eq!(balance(&stack, "m-1").await, [("P".to_owned(), 30)]);

    let (reversed, replayed) = stack
        .client
        .reverse(&serde_json::json!({"use_id": "order-1"}))
        .await
        .unwrap();
    assert_eq!((reversed["amount"].as_u64(), replayed), (Some(70), false));
    let (_, replayed) = stack
        .client
        .reverse(&serde_json::json!({"use_id": "order-1"}))
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(balance(&stack, "m-1").await, [("P".to_owned(), 100)]);

    // `pointflow history`: the same through the runner's HTTP server, a page
    // at a time (the cursor travels in the query string).
    let mut kinds = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = stack
            .client
            .history("m-1", Some("P"), Some(1), cursor.as_deref())
            .await
            .unwrap();
        let entries = page["entries"].as_array().unwrap();
        kinds.extend(
            entries
                .iter()
                .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["amount"].as_i64().unwrap())),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected = [("reversal", 70), ("use", -70), ("accrual", 100)];
    assert_eq!(kinds, expected.map(|(k, a)| (k.to_owned(), a)));
    let refusal = stack.client.history("m-1", None, Some(0), None).await.unwrap_err();
    assert_eq!(refusal.refused_status(), Some(400));
    stack.runner.stop().await.unwrap();
}

/// Scheduled and expiring accruals through the API and the worker: the
/// balance shows them pending and expiring soon, and only available points
/// can be used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_points_are_pending_until_their_time() {
    let stack = stack().await;
    let text = [
        r#"{"member_id":"m-1","point_type":"P","amount":100}"#,
        r#"{"member_id":"m-1","point_type":"P","amount":50,"apply_at":"2999-01-01T00:00:00Z"}"#,
        r#"{"member_id":"m-1","point_type":"P","amount":30,"expires_at":"2999-01-01T00:00:00Z"}"#,
    ]
    .join("\n");
    let report = submit_text(&stack.client, &text, Format::Ndjson, 100).await;
    assert_eq!(report.applied, 3);
    let balances = stack.client.balances("m-1").await.unwrap();
    assert_eq!(balances["balances"]["P"], 130);
    assert_eq!(
        (
            balances["details"]["P"]["pending"].as_u64(),
            balances["details"]["P"]["lifetime_earned"].as_u64()
        ),
        (Some(50), Some(130))
    );
    // 30 expiring points go first, then 100 plain; the pending 50 are not usable.
    let (record, _) = stack
        .client
        .use_points(
            "m-1",
            &serde_json::json!({"use_id": "u1", "point_type": "P", "amount": 110}),
        )
        .await
        .unwrap();
    assert_eq!(record["amount"], 110);
    let refusal = stack
        .client
        .use_points(
            "m-1",
            &serde_json::json!({"use_id": "u2", "point_type": "P", "amount": 21}),
        )
        .await
        .unwrap_err();
    assert_eq!(refusal.refused_status(), Some(409));
    let balances = stack.client.balances("m-1").await.unwrap();
    assert_eq!(balances["balances"]["P"], 20);
    stack.runner.stop().await.unwrap();
}

/// `pointflow cancel`: through the runner's API the workers reverse what a
/// finished job credited; asking again once done changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_cancelled_through_the_api() {
    let stack = stack().await;
    let report = submit_text(&stack.client, &ndjson(3), Format::Ndjson, 100).await;
    assert_eq!(report.applied, 6);
    let job = report.jobs[0].job_id.to_string();
    let mut view = stack.client.cancel_job(&job, Some("sent twice")).await.unwrap();
    for _ in 0..200 {
        if view.cancel.as_ref().is_some_and(|c| c.completed_at.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        view = stack.client.job(&job).await.unwrap();
    }
    let cancel = view.cancel.expect("a cancel");
    assert_eq!((cancel.counts.reversed, cancel.counts.spent), (6, 0));
    assert!(cancel.completed_at.is_some());
    // The reason the client gave is kept with who asked.
    let audit = cancel.audit.expect("the cancel's audit record");
    assert_eq!(audit.reason.as_deref(), Some("sent twice"));
    assert_eq!(audit.caller.kind, pointflow::domain::audit::CallerKind::Local);
    assert_eq!(balance(&stack, "m-2").await, [("A".to_owned(), 0), ("B".to_owned(), 0)]);
    let again = stack.client.cancel_job(&job, None).await.unwrap();
    assert_eq!(again.cancel.as_ref().map(|c| c.counts.reversed), Some(6));
    assert_eq!(
        again.cancel.and_then(|c| c.audit).and_then(|a| a.reason).as_deref(),
        Some("sent twice")
    );
    stack.runner.stop().await.unwrap();
}

/// Accruals applied and found duplicate by the jobs a run created (not
/// those it replayed, whose counts are an earlier run's).
fn fresh(report: &SubmitReport) -> (u64, u64) {
    let fresh: Vec<&str> = report
        .chunks
        .iter()
        .filter(|c| !c.replayed)
        .filter_map(|c| c.job_id.as_deref())
        .collect();
    let jobs = report
        .jobs
        .iter()
        .filter(|j| fresh.contains(&j.job_id.to_string().as_str()));
    jobs.fold((0, 0), |(a, d), j| (a + j.applied, d + j.duplicate))
}

/// A campaign CSV of 30 lines; lines 2 and 3 are identical (two credits),
/// and the line of member `m-fix` has amount 0 (rejected) unless `fixed`.
fn campaign_csv(fixed: bool) -> String {
    let mut csv = String::from("member_id,point_type,amount,reason\n");
    for i in 0..30u64 {
        let row = match i {
            0 | 1 => "m-0,P,5,spring".to_owned(),
            5 if fixed => "m-fix,P,9,spring".to_owned(),
            5 => "m-fix,P,0,spring".to_owned(),
            _ => format!("m-{},P,{},spring", i % 10, i % 3 + 1),
        };
        csv.push_str(&row);
        csv.push('\n');
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_fixing_a_line_or_rechunking_credits_only_what_is_new() {
    let stack = stack().await;
    let first = submit_text(&stack.client, &campaign_csv(false), Format::Csv, 4).await;
    assert_eq!((first.rejected_lines, first.applied, first.duplicate), (1, 29, 0));
    let m0 = balance(&stack, "m-0").await;

    // The bad line fixed: every later chunk shifts, yet only that line is new
    // (the first chunk is unchanged: a replay, its job the first run's).
    let fixed = submit_text(&stack.client, &campaign_csv(true), Format::Csv, 4).await;
    assert_eq!(fixed.rejected_lines, 0);
    assert_eq!(fresh(&fixed), (1, 29 - 4), "applied and duplicate in the new jobs");
    assert_eq!(balance(&stack, "m-fix").await, [("P".to_owned(), 9)]);

    // Other chunk sizes: nothing is new.
    for chunk in [7, 1_000] {
        let rechunked = submit_text(&stack.client, &campaign_csv(true), Format::Csv, chunk).await;
        assert_eq!(fresh(&rechunked), (0, 30), "chunks of {chunk}");
    }
    assert_eq!(
        balance(&stack, "m-0").await,
        m0,
        "the identical lines were credited twice, once each"
    );
    assert_eq!(m0, [("P".to_owned(), 5 + 5 + 2 + 3)]);
    stack.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_campaign_dropped_as_a_file_of_the_same_campaign_credits_nothing_new() {
    let stack = stack().await;
    let csv = campaign_csv(true);
    let submitted = submit_text(&stack.client, &csv, Format::Csv, 7).await;
    assert_eq!((submitted.applied, submitted.duplicate), (30, 0));

    // The same file dropped in the bucket with `--metadata campaign=test`
    // (`options` submits as campaign "test").
    let import = stack.backend.import.clone().expect("the embedded backend imports");
    let file = stack._dir.0.join("spring-2026.csv");
    std::fs::write(&file, &csv).unwrap();
    let key = "imports/2026/spring-2026.csv";
    let object = import.drop_file(&file, key, Some("test"), None).await.unwrap();
    let mut job = None;
    for _ in 0..600 {
        let found = stack.backend.jobs.get_job(object.job_id()).await.unwrap();
        if let Some(found) = found.filter(|j| j.completed_at.is_some()) {
            job = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.expect("the import finishes");
    assert_eq!((job.total, job.applied, job.duplicate), (30, 0, 30));
    stack.runner.stop().await.unwrap();
}

/// The local server takes signed requests as it takes unsigned ones: it
/// checks no signature (it is for loopback only), so a client signing as it
/// would for a deployed stack, even with keys AWS would refuse, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_ignores_a_signature() {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use pointflow_cli::client::signing::Signer;

    let stack = stack().await;
    let credentials = Credentials::new("AKIDNOTREAL", "not-a-real-secret", None, None, "test");
    let signer = Signer::new(SharedCredentialsProvider::new(credentials), "eu-west-1");
    let client = ApiClient::new(stack.proxy.base_url(), Some("any-key".into()), Duration::from_secs(30))
        .unwrap()
        .with_signer(signer);
    assert!(client.signs());
    let report = submit_text(&client, &ndjson(3), Format::Ndjson, 100).await;
    assert_eq!(report.accepted, 6, "{report:?}");
    let balances = client.balances("m-2").await.unwrap();
    assert_eq!(balances["balances"], serde_json::json!({"A": 3, "B": 5}), "{balances}");
    assert_eq!(balance(&stack, "m-2").await, [("A".into(), 3), ("B".into(), 5)]);
    stack.runner.stop().await.unwrap();
}
