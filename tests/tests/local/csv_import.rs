//! The CSV file import on the embedded backend (SQLite, a local folder as
//! the bucket), through the real import and worker handlers.

use std::sync::Arc;
use std::time::Duration;

use pointflow::domain::packing::PackingLimits;
use pointflow::domain::{Balance, JobStatus};
use pointflow::ports::WorkQueue;
use pointflow::services::import::ImportSettings;
use pointflow_tests::import::ImportRig;

fn rig(settings: ImportSettings) -> ImportRig {
    rig_with_import_dlq(settings).0
}

/// The rig, and the import queue's dead-letter queue.
fn rig_with_import_dlq(settings: ImportSettings) -> (ImportRig, Arc<dyn WorkQueue>) {
    ImportRig::sqlite_with_import_dlq(settings)
}

async fn balances(rig: &ImportRig, member: &str) -> Vec<(String, u64)> {
    rig.backend
        .ledger
        .balances(member)
        .await
        .unwrap()
        .into_iter()
        .map(|Balance { point_type, balance }| (point_type, balance))
        .collect()
}

fn small_chunks(chunk_bytes: u64) -> ImportSettings {
    ImportSettings {
        chunk_bytes,
        // Small messages too, so a file makes several.
        packing: PackingLimits {
            max_accruals: 2,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    }
}

/// Valid and invalid rows, with the expected report.
const MIXED: &str = "member_id,point_type,amount,reason
m-1,WELCOME,2000,welcome
m-2,WELCOME,0,
m-1,BONUS,150,
bad id,BONUS,5,
m-3,WELCOME,2000,
m-3,BONUS,12x,
m-4,WELCOME,2000
m-2,WELCOME,700,late joiner
";

const MIXED_REPORT: &str = "line,column,reason,raw
3,amount,must be at least 1,\"m-2,WELCOME,0,\"
5,member_id,\"contains ' '; only ASCII letters, digits and - _ . : @ are allowed\",\"bad id,BONUS,5,\"
7,amount,\"must be a whole number from 1 to 1000000000, found \"\"12x\"\"\",\"m-3,BONUS,12x,\"
8,(row),has 3 fields; the header has 4,\"m-4,WELCOME,2000\"
";

#[tokio::test]
async fn valid_rows_are_credited_and_bad_rows_reported_exactly() {
    let rig = rig(ImportSettings::default());
    let task = rig.drop_file("imports/spring.csv", MIXED.as_bytes()).await;
    rig.notify(&task).await;
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);

    assert_eq!(
        balances(&rig, "m-1").await,
        [("BONUS".into(), 150), ("WELCOME".into(), 2000)]
    );
    assert_eq!(balances(&rig, "m-2").await, [("WELCOME".into(), 700)]);
    assert_eq!(balances(&rig, "m-3").await, [("WELCOME".into(), 2000)]);
    assert_eq!(balances(&rig, "m-4").await, []);
    let report = rig.report("imports/spring.csv").await.expect("a report");
    assert_eq!(report, MIXED_REPORT);

    let job = rig.job(&task).await;
    assert_eq!(
        (job.total, job.applied, job.rejected, job.duplicate, job.failed),
        (4, 4, 4, 0, 0)
    );
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
    assert_eq!(job.source.as_deref(), Some("s3://local-bucket/imports/spring.csv"));
    assert!(job.completed_at.is_some() && !job.reading && job.error.is_none());
    let pointer: serde_json::Value =
        serde_json::from_str(&rig.read("reports/imports/spring.csv.job.json").await.unwrap()).unwrap();
    assert_eq!(pointer["job_id"], job.job_id.to_string());
    assert_eq!(pointer["status_url"], format!("/v1/jobs/{}", job.job_id));
}

#[tokio::test]
async fn the_same_event_twice_or_the_same_file_again_credits_nothing_twice() {
    let rig = rig(ImportSettings::default());
    let content = "member_id,point_type,amount\nm-1,P,10\nm-2,P,20\n";
    let task = rig.drop_file("imports/twice.csv", content.as_bytes()).await;
    // Two deliveries of the event, before and after the first is processed.
    rig.notify(&task).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let again = rig.drop_file("imports/twice.csv", content.as_bytes()).await;
    assert_eq!(again, task, "same content, same ETag, same task");
    rig.notify(&again).await;
    rig.run_until_quiet().await;

    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 10)]);
    assert_eq!(balances(&rig, "m-2").await, [("P".into(), 20)]);
    let job = rig.job(&task).await;
    assert_eq!(
        (job.total, job.applied, job.duplicate, job.status()),
        (2, 2, 0, JobStatus::Completed)
    );
    assert_eq!(rig.report("imports/twice.csv").await, None, "no bad row, no report");

    // Changed content under the same key is a new file: a new job, new ids.
    let changed = rig
        .drop_file("imports/twice.csv", b"member_id,point_type,amount\nm-1,P,5\n")
        .await;
    rig.notify(&changed).await;
    rig.run_until_quiet().await;
    assert_ne!(changed.object.job_id(), task.object.job_id());
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 15)]);
}

#[tokio::test]
async fn bom_crlf_quotes_and_blank_lines() {
    let rig = rig(ImportSettings::default());
    // A quoted field may span lines (a reason may not hold a line break, so
    // that row is reported, at the line it starts on); no trailing newline.
    let content = "\u{feff}reason,amount,member_id,point_type,accrual_id\r\n\"spring, 2026\",100,m-1,P,a-1\r\n\r\n\"said \"\"hi\"\"\",50,m-2,P,a-2\r\n,7,m-1,P,\r\n\"multi\r\nline\",3,m-2,P,a-3\r\n\"\",1,m-2,P,a-4";
    let task = rig.drop_file("imports/excel.csv", content.as_bytes()).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 107)]);
    assert_eq!(balances(&rig, "m-2").await, [("P".into(), 51)]);
    let job = rig.job(&task).await;
    assert_eq!((job.total, job.applied, job.rejected), (4, 4, 1));
    let report = rig.report("imports/excel.csv").await.unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        report.matches("\n6,").count() + report.matches("\n7,").count(),
        1,
        "{report}"
    );
    assert!(
        lines[1].starts_with("6,reason,must not contain control characters,"),
        "{report}"
    );
}

#[tokio::test]
async fn a_file_split_across_invocations_gives_the_same_result() {
    // About two rows per chunk, two accruals per message.
    let rig = rig(small_chunks(40));
    let task = rig.drop_file("imports/split.csv", MIXED.as_bytes()).await;
    rig.notify(&task).await;
    let quiet = rig.run_until_quiet().await;
    assert!(quiet.import_invocations >= 3, "{quiet:?}");
    assert_eq!(
        balances(&rig, "m-1").await,
        [("BONUS".into(), 150), ("WELCOME".into(), 2000)]
    );
    assert_eq!(balances(&rig, "m-2").await, [("WELCOME".into(), 700)]);
    assert_eq!(balances(&rig, "m-3").await, [("WELCOME".into(), 2000)]);
    let report = rig.report("imports/split.csv").await.expect("a report");
    assert_eq!(report, MIXED_REPORT, "assembled from the chunks' parts");
    let job = rig.job(&task).await;
    assert_eq!((job.total, job.applied, job.rejected), (4, 4, 4));
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
}

#[tokio::test]
async fn every_chunk_delivered_twice_still_credits_once() {
    let rig = rig(small_chunks(30));
    let content: String = std::iter::once("member_id,point_type,amount\n".to_owned())
        .chain((0..40).map(|i| format!("m-{},P,{}\n", i % 7, i + 1)))
        .collect();
    let task = rig.drop_file("imports/redelivered.csv", content.as_bytes()).await;
    rig.notify(&task).await;
    // Each import message is processed, then (as if its deletion were lost)
    // processed again: every chunk runs twice.
    let mut invocations = 0;
    loop {
        let messages = rig.tasks.receive_messages(1, Duration::from_millis(200)).await.unwrap();
        if messages.is_empty() {
            break;
        }
        let event = worker::to_sqs_event(&messages);
        let first = csv_import::handle_sqs(&rig.importer, event.clone()).await;
        let second = csv_import::handle_sqs(&rig.importer, event).await;
        assert!(first.batch_item_failures.is_empty() && second.batch_item_failures.is_empty());
        rig.tasks
            .delete_messages(&[messages[0].receipt_handle.clone()])
            .await
            .unwrap();
        invocations += 2;
    }
    assert!(invocations > 10);
    rig.run_until_quiet().await;
    let mut expected = [0u64; 7];
    for i in 0..40u64 {
        expected[(i % 7) as usize] += i + 1;
    }
    for (member, sum) in expected.iter().enumerate() {
        assert_eq!(balances(&rig, &format!("m-{member}")).await, [("P".into(), *sum)]);
    }
    let job = rig.job(&task).await;
    assert_eq!(
        (job.total, job.applied, job.duplicate, job.status()),
        (40, 40, 0, JobStatus::Completed)
    );
}

#[tokio::test]
async fn an_unusable_file_fails_its_job_with_a_reason_and_a_report() {
    let rig = rig(ImportSettings::default());
    let task = rig.drop_file("imports/wrong.csv", b"member,points\nm-1,10\n").await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(job.status(), JobStatus::Failed);
    let error = job.error.expect("a reason");
    assert!(error.contains("unknown column \"member\""), "{error}");
    assert!(job.completed_at.is_some());
    let report = rig.report("imports/wrong.csv").await.expect("a report");
    assert!(
        report.starts_with("line,column,reason,raw\n1,(header),\"unknown column \"\"member\"\""),
        "{report}"
    );

    let binary = rig
        .drop_file("imports/photo.csv", &[0xff, 0xd8, 0xff, 0xe0, b'\n', 1, 2])
        .await;
    rig.notify(&binary).await;
    rig.run_until_quiet().await;
    let job = rig.job(&binary).await;
    assert_eq!(
        (job.status(), job.error.as_deref()),
        (
            JobStatus::Failed,
            Some("the file is not text: byte 5 is the control character 0x01, which no CSV text holds")
        )
    );
}

#[tokio::test]
async fn repeated_accrual_ids_are_collapsed_or_rejected_or_counted_duplicate() {
    // Windows of 4 accruals (2 per message × 10 messages would be 20; use 1).
    let rig = rig(ImportSettings {
        packing: PackingLimits {
            max_accruals: 1,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    });
    let mut content = String::from("accrual_id,member_id,point_type,amount\n");
    content.push_str("a-1,m-1,P,10\n"); // line 2
    content.push_str("a-1,m-1,P,10\n"); // 3: exact repeat in the window → collapsed
    content.push_str("a-1,m-1,P,99\n"); // 4: same id, other content → rejected
    for i in 0..10 {
        content.push_str(&format!("f-{i},m-2,P,1\n")); // 5..14: fill the window
    }
    content.push_str("a-1,m-1,P,10\n"); // 15: a later window → the ledger's duplicate
    let task = rig.drop_file("imports/repeats.csv", content.as_bytes()).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 10)]);
    assert_eq!(balances(&rig, "m-2").await, [("P".into(), 10)]);
    let job = rig.job(&task).await;
    assert_eq!(
        (job.total, job.deduplicated, job.rejected, job.applied, job.duplicate),
        (12, 1, 1, 11, 1)
    );
    let report = rig.report("imports/repeats.csv").await.unwrap();
    assert_eq!(
        report,
        "line,column,reason,raw\n4,accrual_id,repeats the accrual_id of line 2 with different content,\"a-1,m-1,P,99\"\n"
    );
}

/// What a file from the bad-file catalogue must give.
struct Case {
    name: &'static str,
    content: &'static [u8],
    status: JobStatus,
    /// The job's failure reason, for a file that cannot be read.
    error: Option<&'static str>,
    /// The error report, whole (header line included), if there is one.
    report: Option<&'static str>,
    /// Balances afterwards, per member (all of point type P).
    balances: &'static [(&'static str, u64)],
    /// (total, applied, rejected) on the job.
    counts: (u64, u64, u64),
}

/// The issue's bad-file catalogue for CSV: each file gives a precise report
/// line or a clear failure reason on its job, and nothing partial.
#[tokio::test]
async fn the_bad_file_catalogue_gives_precise_reports_or_reasons_and_no_partial_effect() {
    const HEADER_REASON: &str = "unknown column \"am\u{e9}ount\" in the header; allowed columns are accrual_id, member_id, point_type, amount, reason, apply_at, expires_at";
    let cases = [
        Case {
            name: "header-only",
            content: b"member_id,point_type,amount\n",
            status: JobStatus::Completed,
            error: None,
            report: None,
            balances: &[],
            counts: (0, 0, 0),
        },
        Case {
            name: "header-only-without-newline",
            content: b"\xef\xbb\xbfmember_id,point_type,amount",
            status: JobStatus::Completed,
            error: None,
            report: None,
            balances: &[],
            counts: (0, 0, 0),
        },
        Case {
            name: "empty",
            content: b"",
            status: JobStatus::Failed,
            error: Some(
                "the file is empty: a header row naming the columns member_id, point_type, amount is required",
            ),
            report: Some(
                "line,column,reason,raw\n1,(header),\"the file is empty: a header row naming the columns member_id, point_type, amount is required\",\n",
            ),
            balances: &[],
            counts: (0, 0, 1),
        },
        Case {
            name: "missing-column",
            content: b"member_id,amount\nm-1,5\n",
            status: JobStatus::Failed,
            error: Some("the header lacks the required column \"point_type\""),
            report: Some("line,column,reason,raw\n1,(header),\"the header lacks the required column \"\"point_type\"\"\",\n"),
            balances: &[("m-1", 0)],
            counts: (0, 0, 1),
        },
        Case {
            // Not UTF-8: detected as Windows-1252 (docs/file-import.md,
            // Encodings), so the header is read, and its column unknown.
            name: "latin1-header",
            content: b"member_id,point_type,am\xe9ount\nm-1,P,5\n",
            status: JobStatus::Failed,
            error: Some(HEADER_REASON),
            report: Some(
                "line,column,reason,raw\n1,(header),\"unknown column \"\"am\u{e9}ount\"\" in the header; allowed columns are accrual_id, member_id, point_type, amount, reason, apply_at, expires_at\",\n",
            ),
            balances: &[("m-1", 0)],
            counts: (0, 0, 1),
        },
        Case {
            name: "latin1-rows",
            // A Latin-1 reason and a Latin-1 member id between good rows:
            // detected as Windows-1252, the reason is text, the id is not
            // one (a row that is not UTF-8 in a UTF-8 file: encodings.rs).
            content: b"member_id,point_type,amount,reason\nm-1,P,5,\nm-2,P,6,caf\xe9\nm-\xe9,P,7,\nm-3,P,8,ok\n",
            status: JobStatus::CompletedWithErrors,
            error: None,
            report: Some(
                "line,column,reason,raw\n4,member_id,\"contains '\u{e9}'; only ASCII letters, digits and - _ . : @ are allowed\",\"m-\u{e9},P,7,\"\n",
            ),
            balances: &[("m-1", 5), ("m-2", 6), ("m-3", 8)],
            counts: (3, 3, 1),
        },
        Case {
            name: "bom-and-mixed-line-endings",
            content: b"\xef\xbb\xbfmember_id,point_type,amount\r\nm-1,P,1\nm-2,P,2\r\n\r\n\nm-1,P,3\r\nm-2,P,4",
            status: JobStatus::Completed,
            error: None,
            report: None,
            balances: &[("m-1", 4), ("m-2", 6)],
            counts: (4, 4, 0),
        },
        Case {
            name: "mixed-line-endings-with-a-bad-row",
            // Line numbers count LF and CRLF alike.
            content: b"member_id,point_type,amount\nm-1,P,1\r\nm-2,P,x\nm-3,P,3\r\n",
            status: JobStatus::CompletedWithErrors,
            error: None,
            report: Some(
                "line,column,reason,raw\n3,amount,\"must be a whole number from 1 to 1000000000, found \"\"x\"\"\",\"m-2,P,x\"\n",
            ),
            balances: &[("m-1", 1), ("m-2", 0), ("m-3", 3)],
            counts: (2, 2, 1),
        },
        Case {
            name: "cr-only-line-endings",
            // Classic Mac line ends are not line ends: the header is one
            // line whose third column is "amount\rm-1".
            content: b"member_id,point_type,amount\rm-1,P,5\r",
            status: JobStatus::Failed,
            error: Some(
                "unknown column \"amount\\rm-1\" in the header; allowed columns are accrual_id, member_id, point_type, amount, reason, apply_at, expires_at",
            ),
            report: Some(
                "line,column,reason,raw\n1,(header),\"unknown column \"\"amount\\rm-1\"\" in the header; allowed columns are accrual_id, member_id, point_type, amount, reason, apply_at, expires_at\",\n",
            ),
            balances: &[("m-1", 0)],
            counts: (0, 0, 1),
        },
        Case {
            name: "rows-missing-columns",
            content: b"member_id,point_type,amount\nm-1,P\nm-2,P,2\n",
            status: JobStatus::CompletedWithErrors,
            error: None,
            report: Some(
                "line,column,reason,raw\n2,(row),has 2 fields; the header has 3,\"m-1,P\"\n2,amount,\"must be a whole number from 1 to 1000000000, found \"\"\"\"\",\"m-1,P\"\n",
            ),
            balances: &[("m-1", 0), ("m-2", 2)],
            counts: (1, 1, 1),
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        // A fresh backend per file: balances are the file's alone.
        let rig = rig(ImportSettings::default());
        let key = format!("imports/{}.csv", case.name);
        let task = rig.drop_file(&key, case.content).await;
        rig.notify(&task).await;
        let quiet = rig.run_until_quiet().await;
        let job = rig.job(&task).await;
        let report = rig.report(&key).await;
        let mut balances = Vec::new();
        for (member, _) in case.balances {
            let got = rig.backend.ledger.balances(member).await.unwrap();
            balances.push(got.iter().map(|b| b.balance).sum::<u64>());
        }
        let got = (
            job.status(),
            job.error.as_deref(),
            report.as_deref(),
            balances,
            (job.total, job.applied, job.rejected),
            quiet.import_failures,
        );
        let want = (
            case.status,
            case.error,
            case.report,
            case.balances.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
            case.counts,
            0,
        );
        if got != want {
            failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", case.name));
        }
        assert!(job.completed_at.is_some(), "{}: the job ends", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_reused_file_name_keeps_each_files_report() {
    let rig = rig(ImportSettings::default());
    let mut reports = Vec::new();
    for content in [
        "member_id,point_type,amount\nm-1,P,0\n",
        "member_id,point_type,amount\nm-2,P,1\nm-3,P,0\n",
    ] {
        let task = rig.drop_file("imports/reused.csv", content.as_bytes()).await;
        rig.notify(&task).await;
        rig.run_until_quiet().await;
        let pointer: serde_json::Value =
            serde_json::from_str(&rig.read("reports/imports/reused.csv.job.json").await.unwrap()).unwrap();
        assert_eq!(pointer["job_id"], task.object.job_id().to_string());
        let report = pointer["report"]
            .as_str()
            .expect("the job pointer names the file's report")
            .to_owned();
        reports.push(report);
    }
    assert_ne!(reports[0], reports[1], "each file has its own report");
    let first = rig.read(&reports[0]).await.unwrap();
    assert!(first.contains("\"m-1,P,0\""), "{first}");
    let second = rig.read(&reports[1]).await.unwrap();
    assert!(second.contains("\"m-3,P,0\"") && !second.contains("m-1"), "{second}");
}

/// 60 rows in which every content appears twice, 30 rows apart (so the
/// copies sit in different chunks of a small-chunk import), except row 5,
/// `m-fix`, whose amount is 0 (rejected) unless `fixed`.
fn repeating_csv(fixed: bool) -> String {
    let mut csv = String::from("member_id,point_type,amount,reason\n");
    for i in 0..60u64 {
        match i {
            5 if fixed => csv.push_str("m-fix,P,9,spring\n"),
            5 => csv.push_str("m-fix,P,0,spring\n"),
            _ => csv.push_str(&format!("m-{},P,{},spring\n", i % 10, i % 3 + 1)),
        }
    }
    csv
}

/// Each member's balance of `P` after `repeating_csv(true)` credited once.
fn repeating_balances() -> Vec<(String, u64)> {
    let mut sums = std::collections::BTreeMap::new();
    for i in 0..60u64 {
        if i != 5 {
            *sums.entry(format!("m-{}", i % 10)).or_insert(0) += i % 3 + 1;
        }
    }
    sums.insert("m-fix".to_owned(), 9);
    sums.into_iter().collect()
}

async fn all_balances(rig: &ImportRig, members: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (member, _) in members {
        let p = balances(rig, member).await;
        out.push((member.clone(), p.first().map_or(0, |(_, b)| *b)));
    }
    out
}

#[tokio::test]
async fn the_same_rows_at_another_key_in_the_same_campaign_credit_nothing_new() {
    let rig = rig(ImportSettings::default());
    let content = "member_id,point_type,amount,reason\nm-1,P,10,spring\nm-1,P,10,spring\nm-2,P,20,spring\n";
    let first = rig
        .drop_file_in_campaign("imports/spring.csv", content.as_bytes(), "spring-2026")
        .await;
    rig.notify(&first).await;
    rig.run_until_quiet().await;
    assert_eq!(
        balances(&rig, "m-1").await,
        [("P".into(), 20)],
        "identical rows are two credits"
    );

    let moved = rig
        .drop_file_in_campaign("imports/archive/spring-copy.csv", content.as_bytes(), "spring-2026")
        .await;
    rig.notify(&moved).await;
    rig.run_until_quiet().await;
    let job = rig.job(&moved).await;
    assert_eq!((job.total, job.applied, job.duplicate), (3, 0, 3));
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 20)]);
    assert_eq!(balances(&rig, "m-2").await, [("P".into(), 20)]);

    // Without the metadata the key is the campaign: another key, another campaign.
    let other = rig.drop_file("imports/autumn.csv", content.as_bytes()).await;
    rig.notify(&other).await;
    rig.run_until_quiet().await;
    assert_eq!(rig.job(&other).await.applied, 3);
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 40)]);
}

#[tokio::test]
async fn the_same_file_uploaded_with_another_etag_credits_nothing_new() {
    let rig = rig(ImportSettings::default());
    let content = "member_id,point_type,amount\nm-1,P,10\nm-1,P,10\nm-2,P,20\n";
    let task = rig.drop_file("imports/big.csv", content.as_bytes()).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    // The same bytes uploaded in parts (or with SSE-KMS): another ETag.
    let mut multipart = task.clone();
    multipart.object.etag = Some("9b2cf535f27731c974343645a3985328-2".into());
    rig.notify(&multipart).await;
    rig.run_until_quiet().await;
    assert_ne!(
        multipart.object.job_id(),
        task.object.job_id(),
        "another object, another job"
    );
    let job = rig.job(&multipart).await;
    assert_eq!((job.total, job.applied, job.duplicate), (3, 0, 3));
    assert_eq!(balances(&rig, "m-1").await, [("P".into(), 20)]);
    assert_eq!(balances(&rig, "m-2").await, [("P".into(), 20)]);
}

#[tokio::test]
async fn fixing_a_bad_line_and_dropping_the_file_again_credits_only_that_line() {
    // Two or three rows a chunk: every repeated row's copies are chunks apart.
    let mut rig = rig(small_chunks(40));
    let first = rig
        .drop_file_in_campaign("imports/spring.csv", repeating_csv(false).as_bytes(), "spring")
        .await;
    rig.notify(&first).await;
    let quiet = rig.run_until_quiet().await;
    assert!(quiet.import_invocations > 10, "{quiet:?}");
    let job = rig.job(&first).await;
    assert_eq!((job.total, job.applied, job.rejected), (59, 59, 1));

    let fixed = rig
        .drop_file_in_campaign("imports/spring.csv", repeating_csv(true).as_bytes(), "spring")
        .await;
    rig.notify(&fixed).await;
    rig.run_until_quiet().await;
    let job = rig.job(&fixed).await;
    assert_eq!((job.total, job.applied, job.duplicate, job.rejected), (60, 1, 59, 0));

    // Read again in one chunk, from another key of the campaign: nothing new.
    rig.importer = pointflow::services::import::Importer::new(
        rig.objects.clone(),
        rig.backend.jobs.clone(),
        rig.backend.queue.clone(),
        rig.tasks.clone(),
        ImportSettings::default(),
    );
    let again = rig
        .drop_file_in_campaign("imports/spring-again.csv", repeating_csv(true).as_bytes(), "spring")
        .await;
    rig.notify(&again).await;
    rig.run_until_quiet().await;
    let job = rig.job(&again).await;
    assert_eq!((job.total, job.applied, job.duplicate), (60, 0, 60));
    let expected = repeating_balances();
    assert_eq!(all_balances(&rig, &expected).await, expected);
}

/// The occurrence counts a chunk hands on are read by the next chunk and
/// then deleted: none is left once a file is read. A chunk that finds them
/// gone fails the job with the reason, instead of counting from zero (which
/// would give later repeats the ids of earlier rows).
#[tokio::test]
async fn occurrence_counts_are_removed_once_read_and_their_loss_fails_the_job() {
    let rig = rig(small_chunks(30));
    let content: String = std::iter::once("member_id,point_type,amount\n".to_owned())
        .chain((0..40).map(|i| format!("m-{},P,{}\n", i % 7, i % 2 + 1)))
        .collect();
    let tables = |job: pointflow::domain::JobId| {
        let folder = rig
            ._dir
            .as_ref()
            .unwrap()
            .0
            .join(&rig.bucket)
            .join(format!("reports/.parts/{job}"));
        std::fs::read_dir(folder).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "occurrences"))
                .count()
        })
    };
    let whole = rig.drop_file("imports/whole.csv", content.as_bytes()).await;
    rig.notify(&whole).await;
    let quiet = rig.run_until_quiet().await;
    assert!(quiet.import_invocations > 5, "{quiet:?}");
    assert_eq!(rig.job(&whole).await.status(), JobStatus::Completed);
    assert_eq!(tables(whole.object.job_id()), 0, "every table read was deleted");

    let broken = rig.drop_file("imports/broken.csv", content.as_bytes()).await;
    rig.notify(&broken).await;
    let first = rig.tasks.receive_messages(1, Duration::from_millis(500)).await.unwrap();
    assert_eq!(rig.invoke_import(&first).await, 0);
    let job_id = broken.object.job_id();
    assert_eq!(tables(job_id), 1, "the first chunk handed its counts on");
    let key = pointflow::services::import::report::occurrences_key("reports/", job_id, 1);
    rig.objects.delete(&rig.bucket, &key).await.unwrap();
    rig.run_until_quiet().await;
    let job = rig.job(&broken).await;
    let error = job.error.clone().expect("a reason");
    assert!(error.contains("occurrence counts of the earlier chunks"), "{error}");
    assert!(job.completed_at.is_some(), "{job:?}");
}

/// A file's continuation dead-letters (its chunk failed `MaxReceiveCount`
/// times), is archived from the import DLQ and redriven from the archive
/// to the import queue: the file finishes, every row credited once and the
/// report whole; redriving the archive again credits nothing twice; and
/// once its file's report parts may have expired, the redrive refuses it.
#[tokio::test]
async fn a_dead_lettered_continuation_archived_then_redriven_finishes_its_file_once() {
    use pointflow::services::dlq::{self, QueueKind, RedriveTargets};
    let (rig, import_dlq) = rig_with_import_dlq(small_chunks(40));
    let task = rig.drop_file("imports/dead.csv", MIXED.as_bytes()).await;
    rig.notify(&task).await;
    let first = rig.tasks.receive_messages(1, Duration::ZERO).await.unwrap();
    assert_eq!(rig.invoke_import(&first).await, 0, "the first chunk runs");
    // Its continuation fails three deliveries (an outage), then dead-letters.
    for _ in 0..3 {
        let delivery = rig.tasks.receive_messages(1, Duration::ZERO).await.unwrap();
        assert_eq!(delivery.len(), 1);
        rig.tasks
            .release_messages(&[delivery[0].receipt_handle.clone()])
            .await
            .unwrap();
    }
    assert!(rig.tasks.receive_messages(1, Duration::ZERO).await.unwrap().is_empty());
    rig.run_until_quiet().await;
    assert_eq!(
        rig.job(&task).await.status(),
        JobStatus::Importing,
        "the file is half read"
    );

    let listed = dlq::list(import_dlq.as_ref(), QueueKind::Imports, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].job_id, listed[0].seq),
        (Some(rig.job(&task).await.job_id), Some(1))
    );
    let folder = pointflow_tests::import::TempDir::new("pointflow-import-archive");
    let objects = pointflow::adapters::local_dir::DirObjects::new(&folder.0);
    let now = time::OffsetDateTime::now_utc();
    let archived = dlq::archive(import_dlq.as_ref(), QueueKind::Imports, &objects, "", "", 10, now)
        .await
        .unwrap();
    assert_eq!((archived.messages, archived.files.len()), (1, 1));
    assert!(dlq::list(import_dlq.as_ref(), QueueKind::Imports, 10)
        .await
        .unwrap()
        .is_empty());
    let letters = dlq::decode_archive(&std::fs::read(folder.0.join(&archived.files[0])).unwrap()).unwrap();

    let targets = RedriveTargets {
        accruals: rig.backend.queue.as_ref(),
        imports: Some(rig.tasks.as_ref()),
    };
    for _ in 0..2 {
        let moved = dlq::redrive_archived(&letters, targets, now).await.unwrap();
        assert_eq!((moved.messages, moved.import_tasks, moved.refused.len()), (1, 1, 0));
        rig.run_until_quiet().await;
        assert_eq!(
            balances(&rig, "m-1").await,
            [("BONUS".into(), 150), ("WELCOME".into(), 2000)]
        );
        assert_eq!(balances(&rig, "m-2").await, [("WELCOME".into(), 700)]);
        assert_eq!(balances(&rig, "m-3").await, [("WELCOME".into(), 2000)]);
        assert_eq!(rig.report("imports/dead.csv").await.as_deref(), Some(MIXED_REPORT));
        let job = rig.job(&task).await;
        assert_eq!(
            (job.total, job.applied, job.duplicate, job.rejected, job.status()),
            (4, 4, 0, 4, JobStatus::CompletedWithErrors)
        );
    }

    let too_late = now + time::Duration::days(pointflow::domain::retention::IMPORT_REDRIVE_MAX_AGE_DAYS);
    let moved = dlq::redrive_archived(&letters, targets, too_late).await.unwrap();
    assert_eq!((moved.messages, moved.refused.len()), (0, 1));
    assert!(
        moved.refused[0].reason.contains("report parts expire"),
        "{:?}",
        moved.refused
    );
}
