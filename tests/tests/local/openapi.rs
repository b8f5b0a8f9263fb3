//! `docs/openapi.yaml` kept true: its examples validate against their
//! schemas, its error codes are the error table of `docs/http-api.md`, and
//! the checker every API test goes through (`pointflow_tests::openapi`,
//! called by `lambda::call_api`) refuses what the document does not allow.
//! The template's routes are checked against it in the CLI's
//! `template_checks`.

use std::collections::BTreeSet;

use pointflow_tests::openapi::{contract, document, errors, escape, resolve, validator_at};
use serde_json::{json, Value};

/// Every `example` and `examples` of a media type, parameter or header,
/// found anywhere in the document, validates against its `schema`.
#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    let mut checked = 0;
    let mut problems = Vec::new();
    walk(doc, String::new(), &mut |object, pointer| {
        if object.get("schema").is_none() {
            return;
        }
        let mut examples: Vec<(String, &Value)> = Vec::new();
        if let Some(example) = object.get("example") {
            examples.push((format!("{pointer}/example"), example));
        }
        for (name, example) in object.get("examples").and_then(Value::as_object).into_iter().flatten() {
            let (example, at) = resolve(doc, example, format!("{pointer}/examples/{}", escape(name)));
            examples.push((at, &example["value"]));
        }
        if examples.is_empty() {
            return;
        }
        let schema = validator_at(&format!("{pointer}/schema")).unwrap();
        for (at, value) in examples {
            checked += 1;
            problems.extend(errors(&schema, value).into_iter().map(|e| format!("{at}: {e}")));
        }
    });
    assert!(
        problems.is_empty(),
        "examples that break their schema:\n{}",
        problems.join("\n")
    );
    assert!(checked >= 25, "only {checked} examples found");
}

/// Calls `visit` on every object of `value` with its JSON pointer.
fn walk<'a>(value: &'a Value, pointer: String, visit: &mut impl FnMut(&'a serde_json::Map<String, Value>, &str)) {
    match value {
        Value::Object(object) => {
            visit(object, &pointer);
            for (key, child) in object {
                walk(child, format!("{pointer}/{}", escape(key)), visit);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, format!("{pointer}/{i}"), visit);
            }
        }
        _ => {}
    }
}

/// The error codes a response's schema allows: the `code` enum or const of
/// the schemas it combines with `allOf`.
fn codes_of(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let (schema, _) = resolve(doc, schema, String::new());
    let mut codes = BTreeSet::new();
    let code = &schema["properties"]["error"]["properties"]["code"];
    if let Some(value) = code["const"].as_str() {
        codes.insert(value.to_owned());
    }
    for value in code["enum"].as_array().into_iter().flatten() {
        codes.insert(value.as_str().unwrap().to_owned());
    }
    let parts = schema["allOf"].as_array().into_iter().chain(schema["anyOf"].as_array());
    for part in parts.flatten() {
        let (part, pointer) = resolve(doc, part, String::new());
        // The general error shape lists every code; a route narrows it.
        if pointer != "/components/schemas/Error" {
            codes.extend(codes_of(doc, part));
        }
    }
    codes
}

/// The `(status, code)` pairs of the error table in `docs/http-api.md`
/// ("| 400 | `malformed_json` | …", two codes as "`a` / `b`").
fn error_table() -> BTreeSet<(u16, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/http-api.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text.split("\n## Errors\n").nth(1).expect("an Errors section");
    let table = section.split("\n## ").next().unwrap_or(section);
    let mut pairs = BTreeSet::new();
    for line in table.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(status) = cells[1].parse::<u16>() else { continue };
        for code in cells[2].split('/') {
            pairs.insert((status, code.trim().trim_matches('`').to_owned()));
        }
    }
    pairs
}

/// The document and the prose reference agree on every error: each
/// `(status, code)` a route of the document may answer is a row of the
/// table in `docs/http-api.md` and the other way round, and the `Error`
/// schema's list of codes is exactly the table's.
#[test]
fn the_documents_error_codes_are_the_error_table_of_http_api_md() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let (response, _) = resolve(doc, response, format!("/paths/{}/{method}", escape(template)));
                let Some(schema) = response.pointer("/content/application~1json/schema") else {
                    continue;
                };
                for code in codes_of(doc, schema) {
                    documented.insert((status.parse::<u16>().unwrap(), code));
                }
            }
        }
    }
    // Answers to requests no operation describes.
    for (status, name) in [(404, "NoSuchRouteCode"), (405, "MethodNotAllowedCode")] {
        for code in codes_of(doc, &doc["components"]["schemas"][name]) {
            documented.insert((status, code));
        }
    }
    let table = error_table();
    assert!(table.len() >= 25, "{table:?}");
    let missing: Vec<_> = table.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "in docs/http-api.md only: {missing:?}\nin docs/openapi.yaml only: {extra:?}"
    );
    let all: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let tabled: BTreeSet<String> = table.into_iter().map(|(_, code)| code).collect();
    assert_eq!(all, tabled);
}

const JOB_ID: &str = "0b6c1f1e-5a4d-5e2f-9a2d-3c4b5a6d7e8f";

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/json".into())]
}

fn error(code: &str) -> Value {
    json!({"error": {"code": code, "message": "m"}})
}

fn job() -> Value {
    json!({"job_id": JOB_ID, "status": "completed", "total": 1, "applied": 1, "duplicate": 0, "failed": 0,
           "refused": 0, "rejected": 0, "deduplicated": 0, "messages": 1,
           "created_at": "2026-11-25T21:39:32.123Z", "completed_at": "2026-11-25T21:39:33Z"})
}

/// Fails with a problem containing `expected`.
fn refused(result: Result<(), Vec<String>>, expected: &str) {
    let problems = result.expect_err("the checker refuses this answer");
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem with {expected:?}: {problems:?}"
    );
}

/// The checker passes what the document allows and refuses the rest: an
/// undocumented status, a body off its schema, a code the status does not
/// carry, a missing required header or field, an unknown route answered
/// other than `404 no_such_route`, a wrong method without its `Allow`.
#[test]
fn the_checker_refuses_answers_the_document_does_not_allow() {
    let c = contract();
    let json = json_headers();
    let job_path = format!("/v1/jobs/{JOB_ID}");
    c.check("GET", &job_path, 200, &json, &job()).unwrap();
    c.check("GET", &job_path, 404, &json, &error("not_found")).unwrap();

    refused(
        c.check("GET", &job_path, 409, &json, &error("job_running")),
        "does not document status 409",
    );
    refused(
        c.check("GET", &job_path, 404, &json, &error("job_running")),
        "/error/code",
    );
    let mut no_status = job();
    no_status.as_object_mut().unwrap().remove("status");
    refused(c.check("GET", &job_path, 200, &json, &no_status), "status");
    let mut bad_status = job();
    bad_status["status"] = json!("done");
    refused(c.check("GET", &job_path, 200, &json, &bad_status), "done");
    let mut bad_time = job();
    bad_time["created_at"] = json!("yesterday");
    refused(c.check("GET", &job_path, 200, &json, &bad_time), "date-time");
    refused(
        c.check(
            "GET",
            &job_path,
            200,
            &[("content-type".into(), "text/plain".into())],
            &job(),
        ),
        "Content-Type",
    );
    // Added fields are allowed on answers (other work adds some).
    let mut more = job();
    more["requested_by"] = json!("someone");
    c.check("GET", &job_path, 200, &json, &more).unwrap();

    // Extra fields come with their codes.
    refused(
        c.check("POST", "/v1/jobs", 400, &json, &error("invalid_accruals")),
        "errors",
    );

    // Headers: 202 carries Location; a replay header says "true".
    let accepted = json!({"job_id": JOB_ID, "accepted": 1, "deduplicated": 0, "messages": 1,
                          "status_url": job_path});
    refused(
        c.check("POST", "/v1/jobs", 202, &json, &accepted),
        "Location is missing",
    );
    let mut located = json.clone();
    located.push(("location".into(), job_path.clone()));
    c.check("POST", "/v1/jobs", 202, &located, &accepted).unwrap();
    located.push(("idempotent-replayed".into(), "yes".into()));
    refused(
        c.check("POST", "/v1/jobs", 202, &located, &accepted),
        "Idempotent-Replayed",
    );

    // No route: 404 no_such_route only.
    c.check("GET", "/v1/nothing", 404, &json, &error("no_such_route"))
        .unwrap();
    refused(c.check("GET", "/v1/nothing", 200, &json, &job()), "must be 404");
    refused(
        c.check("GET", "/v1/nothing", 404, &json, &error("not_found")),
        "/error/code",
    );
    // A deployed stack refuses a request without its identity before routing.
    c.check("GET", "/v1/nothing", 403, &json, &error("missing_iam_identity"))
        .unwrap();
    c.check("GET", &job_path, 403, &json, &json!({"message": "Forbidden"}))
        .unwrap();
    refused(
        c.check("GET", "/v1/nothing", 403, &json, &error("not_found")),
        "/error/code",
    );
    // A method the path does not take: 405 with the path's methods in Allow.
    let mut allow = json.clone();
    allow.push(("allow".into(), "GET".into()));
    c.check("DELETE", &job_path, 405, &allow, &error("method_not_allowed"))
        .unwrap();
    refused(
        c.check("DELETE", &job_path, 405, &json, &error("method_not_allowed")),
        "Allow",
    );
    refused(
        c.check("DELETE", &job_path, 404, &allow, &error("method_not_allowed")),
        "must be 405",
    );
}
