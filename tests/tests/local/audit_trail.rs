//! The audit trail over HTTP: `pointflow local serve` records each change
//! as asked for by `local` from the peer's address, under a request id of
//! its own, and the `GET` views show it.

use std::collections::HashSet;
use std::time::Duration;

use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use serde_json::{json, Value};

/// The caller the local server records: `local`, from a loopback peer.
fn assert_local(audit: &Value, what: &str) -> String {
    assert_eq!(audit["caller"]["kind"], "local", "{what}: {audit}");
    assert_eq!(audit["caller"]["id"], "local", "{what}: {audit}");
    let peer = audit["caller"]["source_ip"].as_str().unwrap_or_default();
    assert!(
        peer.starts_with("127.0.0.1:"),
        "{what}: the peer's address, got {audit}"
    );
    let request_id = audit["request_id"].as_str().unwrap_or_default().to_owned();
    assert!(request_id.starts_with("local-"), "{what}: {audit}");
    request_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_records_who_asked_for_each_change_and_the_views_show_it() {
    pointflow_tests::init_logging();
    let settings = StackSettings::from_template().unwrap();
    let dir = TempDir::new("pointflow-audit");
    let choice = BackendChoice::Embedded {
        db: ":memory:".into(),
        bucket_dir: dir.0.join("bucket"),
    };
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let pollers = settings.worker_pollers(Duration::from_millis(50));
    let runner = Runner::start(&backend, &settings, "127.0.0.1:0".parse().unwrap(), pollers)
        .await
        .unwrap();
    let base = runner.base_url();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Option<Value>| {
        let request = http.post(format!("{base}{path}"));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    };
    let answer = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let mut request_ids = HashSet::new();

    // A job: its view names who created it.
    let body =
        json!({"accruals": [{"accrual_id": "audit-a1", "member_id": "m-audit", "point_type": "PT", "amount": 100}]});
    let (status, accepted) = answer(post("/v1/jobs", Some(body)).send().await.unwrap()).await;
    assert_eq!(status, 202, "{accepted}");
    let job_url = format!("{base}/v1/jobs/{}", accepted["job_id"].as_str().unwrap());
    let mut job = Value::Null;
    for _ in 0..600 {
        job = http.get(&job_url).send().await.unwrap().json().await.unwrap();
        if job["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "completed", "{job}");
    request_ids.insert(assert_local(&job["audit"], "the job"));

    // A use and its reversal, with the reason given.
    let use_body = json!({"use_id": "audit-u1", "point_type": "PT", "amount": 30});
    let (status, used) = answer(post("/v1/members/m-audit/uses", Some(use_body)).send().await.unwrap()).await;
    assert_eq!(status, 201, "{used}");
    request_ids.insert(assert_local(&used["audit"], "the use"));
    let reversal = json!({"use_id": "audit-u1", "reason": "order refunded"});
    let (status, reversed) = answer(post("/v1/reversals", Some(reversal)).send().await.unwrap()).await;
    assert_eq!(status, 201, "{reversed}");
    request_ids.insert(assert_local(&reversed["audit"], "the reversal"));
    assert_eq!(reversed["audit"]["reason"], "order refunded", "{reversed}");

    // The history shows who asked for the use and the reversal.
    let ledger: Value = http
        .get(format!("{base}/v1/members/m-audit/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reversal", "use", "accrual"], "{ledger}");
    assert_eq!(entries[0]["audit"], reversed["audit"], "{ledger}");
    assert_eq!(entries[1]["audit"], used["audit"], "{ledger}");
    assert_eq!(
        entries[2]["job_id"], accepted["job_id"],
        "an accrual's caller is its job's"
    );

    // A cancel's body may give a reason; a bad one is refused naming it.
    let (status, refused) = answer(
        post(
            &format!("/v1/jobs/{}/cancel", accepted["job_id"].as_str().unwrap()),
            Some(json!({"reason": 5})),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!("invalid_cancel")),
        "{refused}"
    );
    assert_eq!(refused["error"]["errors"][0]["field"], "reason", "{refused}");
    let cancel_url = format!("/v1/jobs/{}/cancel", accepted["job_id"].as_str().unwrap());
    let (status, cancelled) = answer(
        post(&cancel_url, Some(json!({"reason": "sent twice"})))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 202 || status == 200, "{cancelled}");
    request_ids.insert(assert_local(&cancelled["cancel"]["audit"], "the cancel"));
    assert_eq!(cancelled["cancel"]["audit"]["reason"], "sent twice", "{cancelled}");
    // Asking again (without a body) resumes it and keeps who asked first.
    let (_, again) = answer(post(&cancel_url, None).send().await.unwrap()).await;
    assert_eq!(again["cancel"]["audit"], cancelled["cancel"]["audit"], "{again}");

    assert_eq!(
        request_ids.len(),
        4,
        "each request has an id of its own: {request_ids:?}"
    );
    runner.stop().await.unwrap();
}
