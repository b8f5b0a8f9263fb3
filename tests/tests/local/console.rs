//! The operator console on `pointflow local serve` (embedded backend): its
//! page's files with their content types and Content-Security-Policy, the
//! `Host` guard on its routes, and every `/console/api/...` endpoint over
//! the running stack (a file drop that the server imports, its error
//! report, the DLQ listed and redriven).

use std::time::Duration;

use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::{Accrual, JobId, MessageCounts, NewJob};
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::console::CONTENT_SECURITY_POLICY;
use pointflow_cli::exposure::Exposure;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use serde_json::{json, Value};

struct Console {
    backend: LocalBackend,
    runner: Runner,
    http: reqwest::Client,
    base: String,
    _dir: TempDir,
}

async fn console() -> Console {
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new("pointflow-console");
    let choice = BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: dir.0.join("bucket"),
    };
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let pollers = settings.worker_pollers(Duration::from_millis(100));
    let runner = Runner::start_serving(
        &backend,
        &settings,
        "127.0.0.1:0".parse().unwrap(),
        pollers,
        Exposure::LoopbackOnly,
        true,
    )
    .await
    .unwrap();
    let base = runner.base_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Console {
        backend,
        runner,
        http,
        base,
        _dir: dir,
    }
}

impl Console {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The job, once it has completed (or failed).
    async fn finished(&self, job_id: &str) -> Value {
        for _ in 0..300 {
            let (status, job) = self.get(&format!("/v1/jobs/{job_id}")).await;
            if status == 200 && !job["completed_at"].is_null() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {job_id} did not finish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_content_types_and_a_self_only_policy() {
    let c = console().await;
    for (path, content_type, marker) in [
        ("/console/", "text/html; charset=utf-8", "id=\"confirm-cancel\""),
        ("/console/app.js", "text/javascript; charset=utf-8", "\"jobs-table\""),
        ("/console/app.css", "text/css; charset=utf-8", "#error-banner"),
    ] {
        let response = c.http.get(format!("{}{path}", c.base)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path} lacks {marker}");
        // Nothing is fetched from elsewhere.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names another origin"
        );
    }
    assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    for path in ["/", "/console"] {
        let response = c.http.get(format!("{}{path}", c.base)).send().await.unwrap();
        assert!(response.status().is_redirection(), "{path}");
        assert_eq!(response.headers()["location"], "/console/", "{path}");
    }
    let (status, body) = c.get("/console/no-such-page").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    // The API is still answered beside the console.
    let (status, body) = c.get("/v1/jobs").await;
    assert_eq!(status, 200, "{body}");
    c.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_loopback_hosts_only() {
    let c = console().await;
    let port = c.runner.addr.port();
    for path in ["/console/", "/console/app.js", "/console/api/info", "/console/api/dlq"] {
        let url = format!("{}{path}", c.base);
        let refused = c
            .http
            .get(&url)
            .header(reqwest::header::HOST, format!("rebound.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 421, "{path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "host_not_allowed", "{path}: {body}");
        let answered = c
            .http
            .get(&url)
            .header(reqwest::header::HOST, format!("localhost:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status().as_u16(), 200, "{path}");
    }
    c.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_the_embedded_backend() {
    let c = console().await;
    let (status, info) = c.get("/console/api/info").await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({"backend": "embedded", "stack": null, "api": "local", "version": env!("CARGO_PKG_VERSION")})
    );
    c.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_is_imported_by_the_server_and_its_report_is_served() {
    let c = console().await;
    let csv = "member_id,point_type,amount\nm-1,P,10\nm-2,P,x\nm-3,P,5\n,P,7\n";
    let (status, dropped) = c
        .post(
            "/console/api/imports?name=spring-2026.csv&campaign=spring",
            csv.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 202, "{dropped}");
    let key = dropped["key"].as_str().unwrap();
    assert!(
        key.starts_with("imports/console/") && key.ends_with("-spring-2026.csv"),
        "{key}"
    );
    assert_eq!(dropped["campaign"], "spring");
    let job_id = dropped["job_id"].as_str().unwrap().to_owned();
    let job = c.finished(&job_id).await;
    assert_eq!(job["status"], "completed_with_errors", "{job}");
    assert_eq!((job["applied"].as_u64(), job["rejected"].as_u64()), (Some(2), Some(2)));
    assert!(job["source"].as_str().unwrap().ends_with(key), "{job}");

    let (status, report) = c.get(&format!("/console/api/jobs/{job_id}/report")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["job_id"], job_id.as_str());
    assert_eq!(report["truncated"], false);
    let lines = report["lines"].as_array().unwrap();
    let numbered: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["field"].as_str().unwrap()))
        .collect();
    // Lines as the operator's editor numbers them (the header is line 1).
    assert_eq!(numbered, [(3, "amount"), (5, "member_id")]);
    assert_eq!(lines[0]["raw"], "m-2,P,x");
    assert!(
        lines[0]["message"].as_str().unwrap().contains("whole number"),
        "{report}"
    );

    // The same rows again, in the same campaign (the default one, from the
    // name): a new key, a new job, nothing credited twice.
    let (status, again) = c
        .post("/console/api/imports?name=spring.csv", csv.as_bytes().to_vec())
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["campaign"], "spring");
    assert_ne!(again["job_id"], dropped["job_id"]);
    let job = c.finished(again["job_id"].as_str().unwrap()).await;
    assert_eq!(
        (job["applied"].as_u64(), job["duplicate"].as_u64()),
        (Some(0), Some(2)),
        "{job}"
    );
    c.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_reports_refuse_what_they_cannot_use() {
    let c = console().await;
    for (query, code) in [
        ("", "invalid_name"),
        ("?name=../x.csv", "invalid_name"),
        ("?name=a/b.csv", "invalid_name"),
        ("?name=x.csv&name=y.csv", "invalid_query_parameter"),
        ("?name=x.csv&bucket=other", "invalid_query_parameter"),
    ] {
        let (status, body) = c.post(&format!("/console/api/imports{query}"), b"a,b\n".to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, body) = c.post("/console/api/imports?name=x.csv", Vec::new()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("empty_file")));
    // A file is not held to the API's 10 MB request limit (the console's
    // own limit is 100 MiB): this one is taken, and fails as a file
    // (no usable header), not as a request.
    let mut big = b"not,a,header\n".to_vec();
    big.resize(11 * 1024 * 1024, b'x');
    let (status, body) = c.post("/console/api/imports?name=big.csv", big).await;
    assert_eq!(status, 202, "{body}");
    let job = c.finished(body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");

    let (status, body) = c.get("/console/api/jobs/not-a-uuid/report").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_job_id")));
    let unknown = JobId::random();
    let (status, body) = c.get(&format!("/console/api/jobs/{unknown}/report")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("job_not_found")));
    // A job of the API has no file, so no report.
    let submitted = c
        .http
        .post(format!("{}/v1/jobs", c.base))
        .header("content-type", "application/json")
        .header("idempotency-key", "console-api-job")
        .body(r#"{"accruals":[{"accrual_id":"c-1","member_id":"m-1","point_type":"P","amount":3}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 202);
    let accepted: Value = submitted.json().await.unwrap();
    let job_id = accepted["job_id"].as_str().unwrap();
    c.finished(job_id).await;
    let (status, body) = c.get(&format!("/console/api/jobs/{job_id}/report")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no_report")));
    // A file with no bad line has no report either.
    let (_, dropped) = c
        .post(
            "/console/api/imports?name=clean.csv",
            b"member_id,point_type,amount\nm-9,P,1\n".to_vec(),
        )
        .await;
    let job_id = dropped["job_id"].as_str().unwrap();
    assert_eq!(c.finished(job_id).await["status"], "completed");
    let (status, body) = c.get(&format!("/console/api/jobs/{job_id}/report")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no_report")));

    let (status, body) = c.get("/console/api/dlq?queue=everything").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_queue")));
    c.runner.stop().await.unwrap();
}

/// A page of another site cannot make the operator's browser drop a file,
/// redrive or look into the DLQ (cross-site request forgery; the Host guard
/// does not stop it):
/// the browser names the page's origin, and the console refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_asked_for_by_another_site_are_refused() {
    let c = console().await;
    let own = format!("http://127.0.0.1:{}", c.runner.addr.port());
    for (header, value) in [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")] {
        for path in ["/console/api/imports?name=x.csv", "/console/api/dlq/redrive"] {
            let refused = c
                .http
                .post(format!("{}{path}", c.base))
                .header(header, value)
                .body("member_id,point_type,amount\nm-x,P,1\n")
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status().as_u16(), 403, "{path} {header}");
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["error"]["code"], "cross_site_request", "{body}");
        }
    }
    let (_, jobs) = c.get("/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "nothing was dropped");
    // A look at the DLQ receives its messages: not for another site either;
    // the page itself may be opened from a link there.
    let cross = |path: &str| {
        c.http
            .get(format!("{}{path}", c.base))
            .header("sec-fetch-site", "cross-site")
            .send()
    };
    assert_eq!(cross("/console/api/dlq").await.unwrap().status().as_u16(), 403);
    assert_eq!(cross("/console/").await.unwrap().status().as_u16(), 200);
    // The console's own page is same-origin.
    let allowed = c
        .http
        .post(format!("{}/console/api/dlq/redrive", c.base))
        .header("origin", own)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);
    c.runner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_by_job_and_a_redrive_applies_them() {
    let c = console().await;
    // A job whose two messages were dead-lettered, their accruals counted failed.
    let job_id = JobId::random();
    c.backend
        .jobs
        .create_job(&NewJob {
            job_id,
            request_hash: "console-dlq".into(),
            total: 3,
            deduplicated: 0,
            messages: 2,
            source: None,
            reading: false,
            created_at: time::OffsetDateTime::now_utc(),
            audit: None,
        })
        .await
        .unwrap();
    let accrual = |id: &str| Accrual {
        accrual_id: id.into(),
        member_id: "m-dlq".into(),
        point_type: "P".into(),
        amount: 5,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    let bodies = [
        QueueMessage::new(job_id, 0, Payload::Accruals(vec![accrual("d-1"), accrual("d-2")])).encode(),
        QueueMessage::new(job_id, 1, Payload::Accruals(vec![accrual("d-3")])).encode(),
    ];
    c.backend.dlq.send_messages(&bodies).await.unwrap();
    for (seq, failed) in [(0, 2), (1, 1)] {
        let counts = MessageCounts {
            failed,
            ..Default::default()
        };
        let now = time::OffsetDateTime::now_utc();
        c.backend
            .jobs
            .fold_message(job_id, seq, counts, &[], now)
            .await
            .unwrap();
    }

    let (status, listed) = c.get("/console/api/dlq?queue=accruals").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["queue"], "accruals");
    assert_eq!(listed["count"], 2);
    assert_eq!(
        listed["jobs"],
        json!([{"job_id": job_id.to_string(), "messages": 2, "accruals": 3}])
    );
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m["job_id"] == job_id.to_string()
        && m["message_id"].is_string()
        && m.get("receive_count").is_some()
        && m.get("first_received_at").is_some()));
    // Listing leaves the messages where they were.
    let (_, again) = c.get("/console/api/dlq").await;
    assert_eq!(again["count"], 2, "{again}");
    let (_, imports) = c.get("/console/api/dlq?queue=imports").await;
    assert_eq!(
        (imports["queue"].as_str(), imports["count"].as_u64()),
        (Some("imports"), Some(0))
    );

    let (status, moved) = c.post("/console/api/dlq/redrive?queue=accruals", Vec::new()).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["redriven"].as_u64(), moved["accruals"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(moved["refused"], json!([]));
    let (_, after) = c.get("/console/api/dlq").await;
    assert_eq!(after["count"], 0, "{after}");
    // The pollers apply what came back: the failed accruals become applied.
    let mut job = Value::Null;
    for _ in 0..100 {
        job = c.get(&format!("/v1/jobs/{job_id}")).await.1;
        if job["failed"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (job["applied"].as_u64(), job["failed"].as_u64()),
        (Some(3), Some(0)),
        "{job}"
    );
    let (_, balances) = c.get("/v1/members/m-dlq/balances").await;
    assert_eq!(balances["balances"]["P"], 15, "{balances}");
    c.runner.stop().await.unwrap();
}

/// The page's script, as served, parses as an ES module (`node --check`):
/// run where Node.js is installed, skipped (and said so) where it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_script_parses_as_a_module() {
    let c = console().await;
    let script = c
        .http
        .get(format!("{}/console/app.js", c.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    c.runner.stop().await.unwrap();
    let file = c._dir.0.join("app.mjs");
    std::fs::write(&file, script).unwrap();
    match std::process::Command::new("node").arg("--check").arg(&file).output() {
        Ok(out) => assert!(
            out.status.success(),
            "app.js does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("node is not installed: the script's syntax check is skipped");
        }
        Err(e) => panic!("running node: {e}"),
    }
}
