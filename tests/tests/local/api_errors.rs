//! What the API refuses and how it says so (in-memory backend: these are
//! rules of the service, not of AWS).

use std::time::Duration;

use pointflow::services::api::{ApiService, ApiSettings};
use pointflow_tests::backend::{self, Backend};
use pointflow_tests::lambda::{api_event, call_api, post_job};
use serde_json::{json, Value};

fn service(settings: ApiSettings) -> (Backend, ApiService) {
    let b = backend::memory(Duration::from_secs(30), 3);
    let s = ApiService::new(b.jobs.clone(), b.ledger.clone(), b.queue.clone(), settings);
    (b, s)
}

fn valid() -> Value {
    json!({"accruals": [{"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 1}]})
}

async fn nothing_queued(b: &Backend) {
    assert_eq!(b.queue.receive_messages(10, Duration::ZERO).await.unwrap(), []);
}

#[tokio::test]
async fn malformed_json_is_a_400_naming_the_position() {
    let (b, s) = service(ApiSettings::default());
    let event = api_event(
        "POST",
        "/v1/jobs",
        &[("content-type", "application/json")],
        Some("{\"accruals\": [".into()),
    );
    let (status, body) = call_api(&s, event).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("line 1 column"),
        "{body}"
    );
    nothing_queued(&b).await;
}

#[tokio::test]
async fn wrong_shapes_are_400s() {
    let (_, s) = service(ApiSettings::default());
    for body in [
        json!([1, 2]),
        json!({"items": []}),
        json!({"accruals": {}}),
        json!({"accruals": [], "x": 1}),
    ] {
        let (status, reply) = call_api(&s, post_job(&body, None)).await;
        assert_eq!(status, 400, "{body} → {reply}");
    }
    let (status, reply) = call_api(&s, post_job(&json!({"accruals": []}), None)).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("empty_submission"))
    );
}

#[tokio::test]
async fn wrong_content_type_is_a_415() {
    let (_, s) = service(ApiSettings::default());
    let event = api_event(
        "POST",
        "/v1/jobs",
        &[("content-type", "text/csv")],
        Some(valid().to_string()),
    );
    let (status, body) = call_api(&s, event).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let event = api_event("POST", "/v1/jobs", &[], Some(valid().to_string()));
    assert_eq!(call_api(&s, event).await.0, 415);
    let event = api_event(
        "POST",
        "/v1/jobs",
        &[("content-type", "application/json; charset=utf-8")],
        Some(valid().to_string()),
    );
    assert_eq!(call_api(&s, event).await.0, 202);
}

#[tokio::test]
async fn oversize_bodies_and_lists_are_413s() {
    let (b, s) = service(ApiSettings {
        max_items: 3,
        max_body_bytes: 2_000,
        ..ApiSettings::default()
    });
    let items: Vec<Value> = (0..4)
        .map(|i| json!({"accrual_id": format!("a{i}"), "member_id": "m", "point_type": "P", "amount": 1}))
        .collect();
    let (status, body) = call_api(&s, post_job(&json!({ "accruals": items }), None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_many_accruals"))
    );
    let big = json!({"accruals": [{"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 1, "reason": "x".repeat(3000)}]});
    let (status, body) = call_api(&s, post_job(&big, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    nothing_queued(&b).await;
}

#[tokio::test]
async fn missing_ids_without_a_key_say_how_to_fix_it() {
    let (b, s) = service(ApiSettings::default());
    let body = json!({"accruals": [{"member_id": "m", "point_type": "P", "amount": 1}]});
    let (status, reply) = call_api(&s, post_job(&body, None)).await;
    assert_eq!(status, 400);
    let error = &reply["error"]["errors"][0];
    assert_eq!(
        (error["index"].as_u64(), error["field"].as_str()),
        (Some(0), Some("accrual_id"))
    );
    assert!(error["reason"].as_str().unwrap().contains("Idempotency-Key"));
    nothing_queued(&b).await;
}

#[tokio::test]
async fn conflicting_duplicate_ids_are_400_and_exact_ones_collapse() {
    let (_, s) = service(ApiSettings::default());
    let a = json!({"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 1});
    let (status, reply) = call_api(&s, post_job(&json!({"accruals": [a, a, a]}), None)).await;
    assert_eq!(status, 202);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["deduplicated"].as_u64()),
        (Some(1), Some(2))
    );
    let b = json!({"accrual_id": "a", "member_id": "m", "point_type": "P", "amount": 2});
    let (status, reply) = call_api(&s, post_job(&json!({"accruals": [a, b]}), None)).await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["errors"][0]["index"], 1);
}

#[tokio::test]
async fn many_bad_items_list_the_first_hundred_and_count_all() {
    let (_, s) = service(ApiSettings::default());
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"accrual_id": format!("a{i}"), "member_id": "m", "point_type": "P", "amount": -1}))
        .collect();
    let (status, reply) = call_api(&s, post_job(&json!({ "accruals": items }), None)).await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["errors"].as_array().unwrap().len(), 100);
    assert_eq!(reply["error"]["total_errors"], 300);
}

#[tokio::test]
async fn bad_idempotency_key_is_a_400() {
    let (_, s) = service(ApiSettings::default());
    let (status, reply) = call_api(&s, post_job(&valid(), Some("has space"))).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    // A key that is not visible ASCII is refused, not taken as absent
    // (Schemathesis found `POST /v1/uploads` ignoring one).
    let (status, reply) = call_api(&s, post_job(&valid(), Some("clé-1"))).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key")),
        "{reply}"
    );
}

#[tokio::test]
async fn unknown_things_are_404s_and_wrong_methods_405s() {
    let (_, s) = service(ApiSettings::default());
    for path in [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/5f0c8e7e-3d4e-4b8a-9a51-0b6f4f1f2a10",
        "/v1/members/nobody/balances",
        "/v2/x",
    ] {
        assert_eq!(call_api(&s, api_event("GET", path, &[], None)).await.0, 404, "{path}");
    }
    let (status, reply) = call_api(&s, api_event("GET", "/v1/members/bad%20id/balances", &[], None)).await;
    assert_eq!(status, 400, "{reply}");
    // GET lists the jobs; other methods than GET and POST are refused.
    assert_eq!(call_api(&s, api_event("PUT", "/v1/jobs", &[], None)).await.0, 405);
    assert_eq!(call_api(&s, api_event("DELETE", "/v1/jobs/x", &[], None)).await.0, 405);
}

#[tokio::test]
async fn base64_bodies_are_decoded() {
    let (_, s) = service(ApiSettings::default());
    use base64::Engine;
    let mut event = post_job(&valid(), None);
    event.body = Some(base64::engine::general_purpose::STANDARD.encode(valid().to_string()));
    event.is_base64_encoded = true;
    assert_eq!(call_api(&s, event.clone()).await.0, 202);
    event.body = Some("@@not base64@@".into());
    assert_eq!(call_api(&s, event).await.0, 400);
}

/// Credits accrual `a1`: 500 PT points to member `m1`.
async fn credit_500_to_m1(b: &Backend) {
    let credit = pointflow::domain::Accrual {
        accrual_id: "a1".into(),
        member_id: "m1".into(),
        point_type: "PT".into(),
        amount: 500,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    let by = pointflow::domain::MessageRef {
        job_id: pointflow::domain::JobId::random(),
        seq: 0,
    };
    b.ledger
        .apply_accruals(by, &[credit], time::OffsetDateTime::now_utc())
        .await
        .unwrap();
}

fn post_use(member: &str, body: &Value) -> aws_lambda_events::apigw::ApiGatewayProxyRequest {
    api_event(
        "POST",
        &format!("/v1/members/{member}/uses"),
        &[("content-type", "application/json")],
        Some(body.to_string()),
    )
}

/// `POST /v1/members/{id}/uses`: 201 once, 200 (replayed) on a retry, 409
/// with what is available when the balance is short, 409 for a reused id,
/// 400 naming each bad field; refusals change nothing.
#[tokio::test]
async fn uses_deduct_once_and_refusals_change_nothing() {
    let (b, s) = service(ApiSettings::default());
    credit_500_to_m1(&b).await;
    let balance = |reply: Value| reply["balances"]["PT"].as_u64();
    let get_balance = || api_event("GET", "/v1/members/m1/balances", &[], None);

    let order = json!({"use_id": "order-1", "point_type": "PT", "amount": 300, "reason": "checkout"});
    let (status, reply) = call_api(&s, post_use("m1", &order)).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        (
            reply["use_id"].as_str(),
            reply["amount"].as_u64(),
            reply["member_id"].as_str()
        ),
        (Some("order-1"), Some(300), Some("m1"))
    );
    let (status, replay) = call_api(&s, post_use("m1", &order)).await;
    assert_eq!((status, &replay["applied_at"]), (200, &reply["applied_at"]));
    assert_eq!(balance(call_api(&s, get_balance()).await.1), Some(200));

    let (status, reply) = call_api(
        &s,
        post_use("m1", &json!({"use_id": "order-2", "point_type": "PT", "amount": 201})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(reply["error"]["code"], "insufficient_balance");
    assert_eq!(
        (
            reply["error"]["available"].as_u64(),
            reply["error"]["requested"].as_u64()
        ),
        (Some(200), Some(201))
    );

    let (status, reply) = call_api(
        &s,
        post_use("m1", &json!({"use_id": "order-1", "point_type": "PT", "amount": 5})),
    )
    .await;
    assert_eq!((status, reply["error"]["code"].as_str()), (409, Some("use_id_reused")));

    let (status, reply) = call_api(&s, post_use("m1", &json!({"point_type": "PT", "amount": "7", "x": 1}))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("invalid_use")));
    let fields: Vec<&str> = reply["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["x", "use_id", "amount"]);
    assert_eq!(balance(call_api(&s, get_balance()).await.1), Some(200));

    let (_, reply) = call_api(&s, get_balance()).await;
    assert_eq!(
        reply["details"]["PT"],
        json!({"available": 200, "pending": 0, "expiring_soon": 0, "expired": 0,
               "lifetime_earned": 500, "lifetime_used": 300})
    );

    let (status, _) = call_api(&s, api_event("GET", "/v1/members/m1/uses", &[], None)).await;
    assert_eq!(status, 405);
}

/// `POST /v1/reversals`: 201 once and 200 (replayed) after, 404 for an
/// unknown id, 409 when the points were spent, 400 naming bad fields.
#[tokio::test]
async fn reversals_answer_once_and_refuse_what_cannot_be_undone() {
    let (b, s) = service(ApiSettings::default());
    credit_500_to_m1(&b).await;
    let post = |body: Value| {
        api_event(
            "POST",
            "/v1/reversals",
            &[("content-type", "application/json")],
            Some(body.to_string()),
        )
    };
    let (status, _) = call_api(
        &s,
        post_use("m1", &json!({"use_id": "order-1", "point_type": "PT", "amount": 300})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, reply) = call_api(&s, post(json!({"accrual_id": "a1"}))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (409, Some("already_spent")));
    assert_eq!(reply["error"]["remaining"], 200);

    let (status, reversed) = call_api(&s, post(json!({"use_id": "order-1", "reason": "refund"}))).await;
    assert_eq!(status, 201, "{reversed}");
    assert_eq!(
        (reversed["kind"].as_str(), reversed["amount"].as_u64()),
        (Some("use"), Some(300))
    );
    let (status, again) = call_api(&s, post(json!({"use_id": "order-1"}))).await;
    assert_eq!((status, &again), (200, &reversed));
    let (status, _) = call_api(&s, post(json!({"accrual_id": "a1"}))).await;
    assert_eq!(status, 201);
    let (_, balances) = call_api(&s, api_event("GET", "/v1/members/m1/balances", &[], None)).await;
    assert_eq!(balances["balances"]["PT"], 0);

    let (status, reply) = call_api(&s, post(json!({"accrual_id": "nope"}))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, reply) = call_api(&s, post(json!({"accrual_id": "a1", "use_id": "u"}))).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("invalid_reversal"))
    );
    assert_eq!(reply["error"]["errors"][0]["field"], "use_id");
}

/// The bad-request catalogue: each class of bad item gets a 400 naming the
/// item and field, and nothing is queued; the same bad values in a use are
/// refused the same way and deduct nothing.
#[tokio::test]
async fn every_class_of_bad_item_is_named_and_queues_nothing() {
    let (b, s) = service(ApiSettings::default());
    let item = |field: &str, value: Value| {
        let mut item = json!({"accrual_id": "a-1", "member_id": "m-1", "point_type": "P", "amount": 10});
        item[field] = value;
        item
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("amount as a string", item("amount", json!("10")), "amount"),
        ("negative amount", item("amount", json!(-5)), "amount"),
        ("zero amount", item("amount", json!(0)), "amount"),
        ("huge amount", item("amount", json!(1_000_000_001u64)), "amount"),
        ("beyond u64", item("amount", json!(1e30)), "amount"),
        ("fractional amount", item("amount", json!(1.5)), "amount"),
        ("amount as an object", item("amount", json!({"v": 1})), "amount"),
        ("member id as a number", item("member_id", json!(42)), "member_id"),
        (
            "over-long accrual id",
            item("accrual_id", json!("a".repeat(129))),
            "accrual_id",
        ),
        (
            "over-long member id",
            item("member_id", json!("m".repeat(65))),
            "member_id",
        ),
        ("control character", item("member_id", json!("m\u{0007}1")), "member_id"),
        ("newline in an id", item("accrual_id", json!("a\n1")), "accrual_id"),
        (
            "Cyrillic look-alike",
            item("member_id", json!("m-\u{0441}1")),
            "member_id",
        ),
        ("full-width digit", item("member_id", json!("m-\u{ff11}")), "member_id"),
        ("zero-width space", item("member_id", json!("m\u{200b}1")), "member_id"),
        ("space in a point type", item("point_type", json!("P 1")), "point_type"),
        ("empty member id", item("member_id", json!("")), "member_id"),
        ("over-long reason", item("reason", json!("r".repeat(257))), "reason"),
        ("unknown field", item("colour", json!("red")), "colour"),
        (
            "date that is not RFC 3339",
            item("apply_at", json!("2026-12-01")),
            "apply_at",
        ),
        (
            "expiry before the start",
            {
                let mut i = item("apply_at", json!("2027-01-01T00:00:00Z"));
                i["expires_at"] = json!("2026-01-01T00:00:00Z");
                i
            },
            "expires_at",
        ),
        ("item that is not an object", json!([1, 2]), "(item)"),
    ];
    for (what, bad, field) in cases {
        let body = json!({"accruals": [item("accrual_id", json!("ok-1")), bad]});
        let (status, reply) = call_api(&s, post_job(&body, None)).await;
        assert_eq!(status, 400, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_accruals", "{what}: {reply}");
        let first = &reply["error"]["errors"][0];
        assert_eq!(
            (first["index"].as_u64(), first["field"].as_str()),
            (Some(1), Some(field)),
            "{what}: {reply}"
        );
        nothing_queued(&b).await;
    }

    // Shapes no item can fix.
    let deep = format!("{{\"accruals\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let ten_mb = format!(
        "{{\"accruals\":[{{\"member_id\":\"{}\"}}]}}",
        "m".repeat(10 * 1024 * 1024)
    );
    let repeated = r#"{"accruals":[{"accrual_id":"a","member_id":"m","point_type":"P","amount":1,"amount":1000000}]}"#;
    for (what, body, status, code) in [
        ("a key repeated in one item", repeated.to_owned(), 400, "malformed_json"),
        ("nesting 200 deep", deep, 400, "malformed_json"),
        ("10 MB of one string", ten_mb, 413, "payload_too_large"),
        (
            "a stray non-UTF-8 byte (replaced, as API Gateway passes text)",
            String::from_utf8_lossy(b"{\"accruals\":[\xff]}").into_owned(),
            400,
            "malformed_json",
        ),
    ] {
        let event = api_event("POST", "/v1/jobs", &[("content-type", "application/json")], Some(body));
        let (got, reply) = call_api(&s, event).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {reply}"
        );
        nothing_queued(&b).await;
    }

    // The same rules guard uses: refused, nothing deducted.
    credit_500_to_m1(&b).await;
    for (bad, field) in [
        (
            json!({"use_id": "u\u{0441}", "point_type": "PT", "amount": 1}),
            "use_id",
        ),
        (json!({"use_id": "u", "point_type": "PT", "amount": 1.5}), "amount"),
        (json!({"use_id": "u", "point_type": "PT", "amount": 0}), "amount"),
        (json!({"use_id": "u", "point_type": "PT", "amount": "5"}), "amount"),
    ] {
        let (status, reply) = call_api(&s, post_use("m1", &bad)).await;
        assert_eq!(
            (status, reply["error"]["errors"][0]["field"].as_str()),
            (400, Some(field)),
            "{reply}"
        );
    }
    let twice = api_event(
        "POST",
        "/v1/members/m1/uses",
        &[("content-type", "application/json")],
        Some(r#"{"use_id": "u", "point_type": "PT", "amount": 1, "amount": 400}"#.into()),
    );
    let (status, reply) = call_api(&s, twice).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{reply}"
    );
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("appears twice"),
        "{reply}"
    );
    let (_, balances) = call_api(&s, api_event("GET", "/v1/members/m1/balances", &[], None)).await;
    assert_eq!(balances["balances"]["PT"], 500);
}

/// `GET /v1/members/{id}/ledger`: pages walk the whole history through
/// `next_cursor` (decoded from the query string as API Gateway sends it);
/// a bad parameter is a 400 naming it; an unknown member has no entries.
#[tokio::test]
async fn the_ledger_pages_through_history_and_names_bad_parameters() {
    let (b, s) = service(ApiSettings::default());
    credit_500_to_m1(&b).await;
    for n in 1..=3 {
        let body = json!({"use_id": format!("order-{n}"), "point_type": "PT", "amount": 10 * n});
        assert_eq!(call_api(&s, post_use("m1", &body)).await.0, 201);
    }
    let get = |query: &str| api_event("GET", &format!("/v1/members/m1/ledger{query}"), &[], None);
    let mut amounts = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let (status, page) = call_api(&s, get(&query)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["member_id"], "m1");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3);
        amounts.extend(entries.iter().map(|e| e["amount"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    // Newest first: the uses in reverse order, then the credit.
    assert_eq!(amounts, [-30, -20, -10, 500]);
    let (_, all) = call_api(&s, get("?point_type=PT")).await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 4);
    assert!(all["next_cursor"].is_null());
    let (_, none) = call_api(&s, get("?point_type=OTHER")).await;
    assert_eq!(none["entries"], json!([]));
    let (status, nobody) = call_api(&s, api_event("GET", "/v1/members/m2/ledger", &[], None)).await;
    assert_eq!((status, &nobody["entries"]), (200, &json!([])));

    for (query, name) in [
        ("?limit=0", "limit"),
        ("?limit=100000", "limit"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?point_type=a%20b", "point_type"),
        ("?pointtype=PT", "pointtype"),
        ("?limit=1&limit=2", "limit"),
    ] {
        let (status, reply) = call_api(&s, get(query)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("invalid_query_parameter")),
            "{query}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("query parameter {name} ")),
            "{query}: {message}"
        );
    }
    let (status, _) = call_api(&s, api_event("POST", "/v1/members/m1/ledger", &[], None)).await;
    assert_eq!(status, 405);
}
