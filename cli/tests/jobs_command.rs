//! `pointflow jobs` and `pointflow local jobs`, run as the built command:
//! the table, the JSON pages, the cursor hint, `--all`, and a bad option.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use pointflow::adapters::sqlite::SqliteStore;
use pointflow::domain::{JobId, NewJob};
use pointflow::ports::JobStore;
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use serde_json::Value;
use time::OffsetDateTime;

/// A folder of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("pointflow-jobs-{}", JobId::random()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Job `i` of a test: created `i` minutes after a fixed time, a file job
/// when `file`.
fn job(i: i64, file: bool) -> NewJob {
    NewJob {
        job_id: JobId::random(),
        request_hash: String::new(),
        total: 4,
        deduplicated: 0,
        messages: 1,
        source: file.then(|| format!("s3://bucket/imports/{i}.csv")),
        reading: false,
        created_at: OffsetDateTime::from_unix_timestamp(1_796_000_000 + 60 * i).unwrap(),
        audit: None,
    }
}

fn pointflow(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_pointflow"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    if !output.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&output.stderr));
    }
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The job ids of JSON pages, one page per line.
fn listed_ids(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            let page: Value = serde_json::from_str(line).unwrap();
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["job_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// `pointflow local jobs` on an embedded database: `--all --output json`
/// prints every page newest first, one per line; the table prints a page
/// with its next page's command, which lists the rest; a filter filters;
/// a bad status is refused naming the option.
#[tokio::test]
async fn local_jobs_lists_the_embedded_store_in_pages() {
    let dir = TempDir::new();
    let db = dir.0.join("pointflow.db");
    let jobs: Vec<NewJob> = (0..5).map(|i| job(i, i == 1)).collect();
    {
        let store = SqliteStore::open(&db).unwrap();
        for job in &jobs {
            store.create_job(job).await.unwrap();
        }
    }
    let newest_first: Vec<String> = jobs.iter().rev().map(|j| j.job_id.to_string()).collect();
    let (db, bucket) = (db.to_str().unwrap(), dir.0.join("bucket"));
    let local = |more: &[&str]| {
        let mut args = vec!["local", "--db", db, "--bucket-dir", bucket.to_str().unwrap(), "jobs"];
        args.extend_from_slice(more);
        pointflow(&args)
    };

    let all = local(&["--limit", "2", "--all", "--output", "json"]);
    assert!(all.status.success());
    let pages = listed_ids(&stdout(&all));
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), newest_first);

    let first = local(&["--limit", "3"]);
    assert!(first.status.success());
    let table = stdout(&first);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("job ") && lines[0].contains("progress"), "{table}");
    assert!(lines[1].starts_with(&newest_first[0]), "{table}");
    assert!(
        lines[1].contains("queued") && lines[1].contains("0 %") && lines[1].ends_with("api"),
        "{table}"
    );
    assert!(
        lines[4].starts_with("more: pointflow local jobs --limit 3 --cursor "),
        "{table}"
    );
    let cursor = lines[4].rsplit(' ').next().unwrap();
    let rest = local(&["--limit", "3", "--cursor", cursor, "--output", "json"]);
    assert_eq!(listed_ids(&stdout(&rest)).concat(), newest_first[3..]);

    let files = local(&["--source", "file", "--output", "json"]);
    assert_eq!(listed_ids(&stdout(&files)), [[jobs[1].job_id.to_string()]]);

    let bad = local(&["--status", "done"]);
    assert_eq!(bad.status.code(), Some(1));
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(
        error.contains("--status") && error.contains("completed_with_errors"),
        "{error}"
    );
}

/// `pointflow jobs` against the API (the local runner's HTTP server):
/// the same listing, through `GET /v1/jobs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lists_through_the_api() {
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new();
    let choice = BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: dir.0.join("bucket"),
    };
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let jobs: Vec<NewJob> = (0..3).map(|i| job(i, i == 0)).collect();
    for job in &jobs {
        backend.jobs.create_job(job).await.unwrap();
    }
    let pollers = settings.worker_pollers(Duration::from_millis(100));
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers)
        .await
        .unwrap();
    let endpoint = runner.base_url();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || pointflow(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let args = |more: &[&str]| {
        let mut args = vec!["jobs".to_owned(), "--endpoint".to_owned(), endpoint.clone()];
        args.extend(more.iter().map(|a| (*a).to_owned()));
        args
    };
    let api_jobs = run(args(&["--source", "api", "--limit", "1", "--all", "--output", "json"]))
        .await
        .unwrap();
    assert!(api_jobs.status.success());
    assert_eq!(
        listed_ids(&stdout(&api_jobs)),
        [[jobs[2].job_id.to_string()], [jobs[1].job_id.to_string()]]
    );
    let table = run(args(&[])).await.unwrap();
    let text = stdout(&table);
    assert_eq!(text.lines().count(), 4, "a header and three jobs: {text}");
    assert!(
        text.lines().nth(3).unwrap().ends_with("s3://bucket/imports/0.csv"),
        "{text}"
    );
    let refused = run(args(&["--created-after", "yesterday"])).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--created-after"));
    runner.stop().await.unwrap();
}
