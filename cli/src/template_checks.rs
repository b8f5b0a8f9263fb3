//! Checks on `template.yaml` as shipped: the alarm path (alarms → an SNS
//! topic under a key CloudWatch may use), the dashboard (only resources
//! and metrics the stack really has), the queue, bucket and table
//! hardening, and authorization (each capability policy invokes exactly
//! its routes; IAM is the default mode).

use std::collections::BTreeSet;

use pointflow::domain::capabilities::{route_for, AuthMode, Capability, Route, ROUTES};

use pointflow::telemetry::metrics::{BatchMetrics, NAMESPACE};
use serde_norway::Value;

use crate::settings::TEMPLATE;

fn template() -> Value {
    serde_norway::from_str(TEMPLATE).unwrap()
}

/// `v` as a list (a single item is a list of one).
fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(list) => list.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The logical id a `!Ref X` or `!GetAtt X.Arn` names.
fn referenced(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => tagged.value.as_str()?.split('.').next(),
        _ => None,
    }
}

/// Every alarm notifies the alarm topic; the topic is encrypted with the
/// stack's own rotating KMS key (not the AWS-managed `alias/aws/sns`, whose
/// policy CloudWatch cannot be added to); the key policy lets
/// `cloudwatch.amazonaws.com` decrypt and generate data keys, as
/// <https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html>
/// requires of an AWS service publishing to an encrypted topic.
#[test]
fn alarms_reach_a_topic_under_a_key_cloudwatch_may_use() {
    let doc = template();
    let resources = &doc["Resources"];
    let topic = &resources["AlarmTopic"];
    assert_eq!(topic["Type"].as_str(), Some("AWS::SNS::Topic"));
    let key_id = referenced(&topic["Properties"]["KmsMasterKeyId"])
        .expect("the alarm topic's key is a key of this stack, not an alias such as alias/aws/sns");
    let key = &resources[key_id];
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"), "{key_id}");
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
    let policy = &key["Properties"]["KeyPolicy"];
    let statements = as_list(&policy["Statement"]);
    let cloudwatch: Vec<&Value> = statements
        .iter()
        .copied()
        .filter(|s| s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
        .collect();
    assert_eq!(cloudwatch.len(), 1, "one statement for CloudWatch: {cloudwatch:?}");
    let grant = cloudwatch[0];
    assert_eq!(grant["Effect"].as_str(), Some("Allow"));
    let actions: BTreeSet<&str> = as_list(&grant["Action"]).iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(actions, BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey*"]));
    // A key policy's Resource can only be the key itself.
    for statement in &statements {
        assert_eq!(statement["Resource"].as_str(), Some("*"), "{statement:?}");
    }
    // Only the account (as the default key policy does) and CloudWatch.
    let principals: BTreeSet<String> = statements.iter().map(|s| format!("{:?}", s["Principal"])).collect();
    assert_eq!(principals.len(), 2, "{principals:?}");

    let mut alarms = 0;
    for (name, resource) in resources.as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        alarms += 1;
        for list in ["AlarmActions", "OKActions"] {
            let targets: Vec<Option<&str>> = as_list(&resource["Properties"][list])
                .into_iter()
                .map(referenced)
                .collect();
            assert_eq!(targets, [Some("AlarmTopic")], "{name:?} {list}");
        }
    }
    assert!(alarms >= 6, "found {alarms} alarms");
}

/// The `${…}` substitutions of a `!Sub` string.
fn substitutions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("a closed ${…}");
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// The dashboard names only resources the template declares (or pseudo
/// parameters), and only metrics that exist: the AWS services' own, or the
/// worker's EMF metrics as `BatchMetrics::to_emf` declares them, with the
/// dimension the worker's `main` gives them.
#[test]
fn the_dashboard_shows_only_existing_resources_and_emitted_metrics() {
    let doc = template();
    let resources = &doc["Resources"];
    let dashboard = &resources["PointflowDashboard"];
    assert_eq!(dashboard["Type"].as_str(), Some("AWS::CloudWatch::Dashboard"));
    let body = match &dashboard["Properties"]["DashboardBody"] {
        Value::Tagged(tagged) if tagged.tag == "Sub" => tagged.value.as_str().unwrap().to_owned(),
        other => panic!("the body is a !Sub string: {other:?}"),
    };
    let mut json = body.clone();
    for name in substitutions(&body) {
        if !name.starts_with("AWS::") {
            let logical = name.split('.').next().unwrap();
            assert!(
                resources[logical].is_mapping(),
                "the dashboard names {name}, not in the template"
            );
        }
        json = json.replace(&format!("${{{name}}}"), "x");
    }
    let body: serde_json::Value = serde_json::from_str(&json).expect("the body is JSON");

    let emf: serde_json::Value = serde_json::from_str(
        &BatchMetrics {
            enqueue_to_apply_ms: Some(1.0),
            ..BatchMetrics::default()
        }
        .to_emf("worker", 0),
    )
    .unwrap();
    let emitted: BTreeSet<&str> = emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    let aws: BTreeSet<(&str, &str, &str)> = BTreeSet::from([
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"),
        ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName"),
        ("AWS/Lambda", "Errors", "FunctionName"),
        ("AWS/Lambda", "Throttles", "FunctionName"),
        ("AWS/DynamoDB", "WriteThrottleEvents", "TableName"),
    ]);
    let mut shown = BTreeSet::new();
    for widget in body["widgets"].as_array().unwrap() {
        let Some(metrics) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        for metric in metrics {
            let row = metric.as_array().unwrap();
            let text = |i: usize| row[i].as_str().unwrap_or_else(|| panic!("{metric}"));
            let (namespace, name, dimension) = (text(0), text(1), text(2));
            if namespace == NAMESPACE {
                assert!(emitted.contains(name), "{name} is not an EMF metric the worker emits");
                assert_eq!((dimension, text(3)), ("Function", "worker"), "{metric}");
            } else {
                assert!(
                    aws.contains(&(namespace, name, dimension)),
                    "unexpected metric {metric}"
                );
            }
            shown.insert(name.to_owned());
        }
    }
    for wanted in [
        "AccrualsApplied",
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "Throttles",
        "WriteThrottleEvents",
    ] {
        assert!(shown.contains(wanted), "the dashboard lacks {wanted}");
    }
}

/// A `!Sub` as its string and its variables (empty for the one-string form).
fn sub(v: &Value) -> (&str, Option<&Value>) {
    match v {
        Value::Tagged(tagged) if tagged.tag == "Sub" => match &tagged.value {
            Value::String(text) => (text, None),
            Value::Sequence(parts) if parts.len() == 2 => (parts[0].as_str().expect("a !Sub string"), Some(&parts[1])),
            other => panic!("not a !Sub: {other:?}"),
        },
        other => panic!("not a !Sub: {other:?}"),
    }
}

/// Every resource of `kind`, by logical id.
fn resources_of<'a>(doc: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    doc["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().unwrap(), r))
        .collect()
}

/// The import queue takes `SendMessage` only from S3 on behalf of the
/// stack's own bucket in the stack's account: `aws:SourceArn` is exactly the
/// bucket's ARN (built from its name, no wildcard) and `aws:SourceAccount` is
/// the account, as
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/grant-destinations-permissions-to-s3.html>
/// recommends. Any bucket of the account could otherwise mint points.
#[test]
fn the_import_queue_takes_notifications_only_from_the_stacks_bucket() {
    let doc = template();
    let resources = &doc["Resources"];
    let (bucket_name, bucket_vars) = sub(&resources["ImportBucket"]["Properties"]["BucketName"]);
    let policies: Vec<_> = resources_of(&doc, "AWS::SQS::QueuePolicy")
        .into_iter()
        .filter(|(_, p)| {
            as_list(&p["Properties"]["Queues"])
                .into_iter()
                .any(|q| referenced(q) == Some("ImportQueue"))
        })
        .collect();
    assert_eq!(policies.len(), 1, "{policies:?}");
    let statements = as_list(&policies[0].1["Properties"]["PolicyDocument"]["Statement"]);
    assert!(!statements.is_empty());
    for statement in statements {
        if statement["Effect"].as_str() != Some("Allow") {
            continue;
        }
        assert_eq!(statement["Principal"]["Service"].as_str(), Some("s3.amazonaws.com"));
        let condition = &statement["Condition"];
        assert_eq!(
            referenced(&condition["StringEquals"]["aws:SourceAccount"]),
            Some("AWS::AccountId"),
            "{statement:?}"
        );
        let (arn, vars) = sub(&condition["ArnEquals"]["aws:SourceArn"]);
        assert!(!arn.contains('*'), "{arn}");
        assert_eq!(arn, format!("arn:${{AWS::Partition}}:s3:::{bucket_name}"));
        assert_eq!(vars, bucket_vars);
    }
}

/// Each dead-letter queue lets only its own source queue use it
/// (`RedriveAllowPolicy` `byQueue` with that queue's ARN, built from its
/// name), so no other queue can move messages into a DLQ that
/// `pointflow dlq redrive` would then send to the worker.
#[test]
fn each_dead_letter_queue_takes_only_its_source_queue() {
    let doc = template();
    let resources = &doc["Resources"];
    let queues = resources_of(&doc, "AWS::SQS::Queue");
    let mut dlqs = BTreeSet::new();
    for (source, queue) in &queues {
        let Some(dlq) = referenced(&queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]) else {
            continue;
        };
        dlqs.insert(dlq);
        let (name, name_vars) = sub(&queue["Properties"]["QueueName"]);
        let allow = &resources[dlq]["Properties"]["RedriveAllowPolicy"];
        assert_eq!(allow["redrivePermission"].as_str(), Some("byQueue"), "{dlq}");
        let arns = as_list(&allow["sourceQueueArns"]);
        assert_eq!(arns.len(), 1, "{dlq}: {arns:?}");
        let (arn, vars) = sub(arns[0]);
        assert_eq!(
            arn,
            format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}"),
            "{dlq} names {source}"
        );
        assert_eq!(vars, name_vars, "{dlq}");
    }
    assert_eq!(dlqs.len(), 2, "{dlqs:?}");
    // No other queue accepts redrives from anywhere.
    for (name, queue) in &queues {
        let allow = &queue["Properties"]["RedriveAllowPolicy"];
        if !allow.is_null() {
            assert!(dlqs.contains(name), "{name}: {allow:?}");
        }
    }
}

/// Every bucket has a policy that denies all requests not made over TLS.
#[test]
fn every_bucket_refuses_requests_without_tls() {
    let doc = template();
    let buckets = resources_of(&doc, "AWS::S3::Bucket");
    assert!(!buckets.is_empty());
    let policies = resources_of(&doc, "AWS::S3::BucketPolicy");
    for (bucket, _) in buckets {
        let denies_plain_http = policies
            .iter()
            .filter(|(_, p)| referenced(&p["Properties"]["Bucket"]) == Some(bucket))
            .flat_map(|(_, p)| as_list(&p["Properties"]["PolicyDocument"]["Statement"]))
            .any(|s| {
                let resources: Vec<String> = as_list(&s["Resource"]).iter().map(|r| format!("{r:?}")).collect();
                s["Effect"].as_str() == Some("Deny")
                    && s["Principal"].as_str() == Some("*")
                    && s["Action"].as_str() == Some("s3:*")
                    && resources.len() == 2
                    && resources.iter().any(|r| r.contains("/*"))
                    && s["Condition"]["Bool"]["aws:SecureTransport"].as_str() == Some("false")
            });
        assert!(denies_plain_http, "{bucket} has no TLS-only policy");
    }
}

/// The ledger table cannot be deleted by accident: deletion protection is
/// on, not a parameter, and the stack retains it.
#[test]
fn the_table_has_deletion_protection() {
    let doc = template();
    for (name, table) in resources_of(&doc, "AWS::DynamoDB::Table") {
        assert_eq!(
            table["Properties"]["DeletionProtectionEnabled"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"), "{name}");
    }
}

/// The `$context.…` variables of an access log format, by the JSON key
/// each fills.
fn access_log_fields(format: &str) -> serde_json::Map<String, serde_json::Value> {
    // Every value is a quoted variable, so the format is JSON once each
    // variable is replaced by a sample; the variables themselves are kept.
    let parsed: serde_json::Value =
        serde_json::from_str(format).unwrap_or_else(|e| panic!("the access log format is not JSON: {e}: {format}"));
    parsed
        .as_object()
        .expect("the access log format is a JSON object")
        .clone()
}

/// The API's stage writes access logs: to a log group of this stack with a
/// retention, as one JSON object per request, holding who called (the IAM
/// caller, its ARN and account, the API key's id, the source IP), the route
/// (resource path and method), the status, both latencies and the request
/// id; never the API key itself. API Gateway can write them: the stack
/// sets the account's CloudWatch Logs role (or is told it exists), and the
/// API waits for that setting.
#[test]
fn the_api_writes_json_access_logs_of_who_called_what() {
    let doc = template();
    let resources = &doc["Resources"];
    let api = &resources["PointflowApi"];
    let setting = &api["Properties"]["AccessLogSetting"];
    let group = referenced(&setting["DestinationArn"]).expect("the destination is a log group of this stack");
    assert_eq!(resources[group]["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    let retention = referenced(&resources[group]["Properties"]["RetentionInDays"]).expect("a retention parameter");
    assert!(doc["Parameters"][retention]["Default"]
        .as_u64()
        .is_some_and(|days| days >= 365));

    let fields = access_log_fields(setting["Format"].as_str().expect("a format string"));
    let wanted = [
        ("requestId", "$context.requestId"),
        ("httpMethod", "$context.httpMethod"),
        ("resourcePath", "$context.resourcePath"),
        ("status", "$context.status"),
        ("responseLatency", "$context.responseLatency"),
        ("integrationLatency", "$context.integrationLatency"),
        ("sourceIp", "$context.identity.sourceIp"),
        ("caller", "$context.identity.caller"),
        ("userArn", "$context.identity.userArn"),
        ("accountId", "$context.identity.accountId"),
        ("apiKeyId", "$context.identity.apiKeyId"),
    ];
    for (key, variable) in wanted {
        assert_eq!(fields.get(key).and_then(|v| v.as_str()), Some(variable), "{key}");
    }
    for (key, value) in &fields {
        let variable = value.as_str().unwrap_or_default();
        assert!(variable.starts_with("$context."), "{key}: {variable}");
        assert_ne!(
            variable, "$context.identity.apiKey",
            "{key} would log the API key itself"
        );
    }

    // API Gateway's account-level CloudWatch Logs role, and the wait for it.
    let account = &resources["ApiGatewayAccount"];
    assert_eq!(account["Type"].as_str(), Some("AWS::ApiGateway::Account"));
    let role = referenced(&account["Properties"]["CloudWatchRoleArn"]).expect("a role of this stack");
    let role = &resources[role];
    assert_eq!(
        role["DeletionPolicy"].as_str(),
        Some("Retain"),
        "other APIs may log with it"
    );
    let trusted = &as_list(&role["Properties"]["AssumeRolePolicyDocument"]["Statement"])[0]["Principal"]["Service"];
    assert_eq!(trusted.as_str(), Some("apigateway.amazonaws.com"));
    let policies = format!("{:?}", role["Properties"]["ManagedPolicyArns"]);
    assert!(
        policies.contains("service-role/AmazonAPIGatewayPushToCloudWatchLogs"),
        "{policies}"
    );
    let waits_for = api["DependsOn"]
        .as_str()
        .expect("the API waits for the account setting");
    assert!(
        format!("{:?}", resources[waits_for]["Metadata"]).contains("ApiGatewayAccount"),
        "{waits_for} must depend on ApiGatewayAccount"
    );
}

/// Whether `value` matches an IAM policy pattern: `*` stands for any run of
/// characters (none, or many, `/` included) and `?` for exactly one, as IAM
/// matches resource ARNs
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html>).
fn iam_matches(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // Greedy match with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[test]
fn iam_wildcards_match_as_iam_does() {
    let arn = "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/jobs/j-1/cancel";
    assert!(iam_matches(arn, arn));
    assert!(iam_matches(
        "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/jobs/*/cancel",
        arn
    ));
    // `*` crosses `/`: GET/v1/jobs/* would also match a deeper GET path.
    assert!(iam_matches("arn:aws:execute-api:eu-west-1:1:api/prod/POST/*", arn));
    assert!(iam_matches("*", arn));
    assert!(iam_matches(
        "arn:aws:execute-api:eu-west-1:?:api/prod/POST/v1/jobs/j-?/cancel",
        arn
    ));
    assert!(!iam_matches(
        "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/jobs",
        arn
    ));
    assert!(!iam_matches(
        "arn:aws:execute-api:eu-west-1:1:api/prod/GET/v1/jobs/*",
        arn
    ));
    assert!(!iam_matches(
        "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/jobs/?/cancel",
        arn
    ));
    assert!(!iam_matches(
        "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/jobs/*/cancel/x",
        arn
    ));
    assert!(iam_matches("a*b*c", "abc"));
    assert!(iam_matches("a*b*c", "aXbYbZc"));
    assert!(!iam_matches("a*b*c", "aXbYbZ"));
    assert!(iam_matches("", ""));
    assert!(!iam_matches("", "a"));
}

/// The stand-ins for a `!Sub` ARN's variables: a region, account, API id
/// and stage such as a deployed stack has.
fn expand_arn(v: &Value) -> String {
    let (text, vars) = sub(v);
    assert!(vars.is_none(), "a one-string !Sub: {v:?}");
    let mut arn = text.to_owned();
    for name in substitutions(text) {
        let value = match name {
            "AWS::Partition" => "aws",
            "AWS::Region" => "eu-west-1",
            "AWS::AccountId" => "123456789012",
            "PointflowApi" => "a1b2c3d4e5",
            "StageName" => "prod",
            other => panic!("unexpected ${{{other}}} in {text}"),
        };
        arn = arn.replace(&format!("${{{name}}}"), value);
    }
    arn
}

/// The ARN API Gateway checks for a request on `route` of that stack, with
/// each path parameter given the value `value`.
fn request_arn(route: &Route, value: &str) -> String {
    let path: Vec<&str> = route
        .path
        .split('/')
        .map(|s| if s.starts_with('{') { value } else { s })
        .collect();
    format!(
        "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/prod/{}{}",
        route.method,
        path.join("/")
    )
}

/// The capability each managed policy of the template grants.
const CAPABILITY_POLICIES: [(&str, Capability, &str); 3] = [
    ("SubmitPolicy", Capability::Submit, "SubmitPolicyArn"),
    ("ReadPolicy", Capability::Read, "ReadPolicyArn"),
    ("OperatePolicy", Capability::Operate, "OperatePolicyArn"),
];

/// Whether `policy` lets its holder invoke the request `arn`: some Allow
/// statement names `execute-api:Invoke` and a resource matching the ARN.
/// (The policies have no Deny, NotAction or NotResource: checked, so this is
/// all IAM would evaluate of them.)
fn policy_allows_invoke(policy: &Value, arn: &str) -> bool {
    as_list(&policy["Properties"]["PolicyDocument"]["Statement"])
        .into_iter()
        .any(|statement| {
            statement["Effect"].as_str() == Some("Allow")
                && as_list(&statement["Action"])
                    .iter()
                    .any(|a| iam_matches(a.as_str().unwrap_or_default(), "execute-api:Invoke"))
                && as_list(&statement["Resource"])
                    .into_iter()
                    .any(|r| iam_matches(&expand_arn(r), arn))
        })
}

/// The auth matrix: for every route of the capability table and every
/// capability policy of the template, IAM would allow the call exactly when
/// the table says so. A caller holding one policy cannot use another's
/// routes. Printed as the table in docs/deploying.md.
#[test]
fn each_capability_policy_invokes_exactly_its_routes() {
    let doc = template();
    let resources = &doc["Resources"];
    let policies = resources_of(&doc, "AWS::IAM::ManagedPolicy");
    let names: BTreeSet<&str> = policies.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        CAPABILITY_POLICIES.iter().map(|(name, _, _)| *name).collect(),
        "one managed policy per capability, no other"
    );
    for (name, policy) in &policies {
        for statement in as_list(&policy["Properties"]["PolicyDocument"]["Statement"]) {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{name}: {statement:?}");
            for key in ["NotAction", "NotResource", "NotPrincipal", "Principal"] {
                assert!(statement[key].is_null(), "{name} has {key}");
            }
        }
    }
    for (name, _, output) in CAPABILITY_POLICIES {
        assert_eq!(referenced(&doc["Outputs"][output]["Value"]), Some(name), "{output}");
    }

    let mut table = String::from("| route | submit | read | operate |\n|---|---|---|---|\n");
    for route in ROUTES {
        let mut row = format!("| `{} {}` |", route.method, route.path);
        for (name, capability, _) in CAPABILITY_POLICIES {
            let policy = &resources[name];
            // A value with a `/` would be another route (API Gateway path
            // parameters hold one segment); these are the ones a request can have.
            for value in ["p-1", "x", "cancel", "*"] {
                let arn = request_arn(route, value);
                assert_eq!(
                    policy_allows_invoke(policy, &arn),
                    route.allows(capability),
                    "{name} on {arn}"
                );
            }
            row += if route.allows(capability) {
                " allowed |"
            } else {
                " refused |"
            };
        }
        table += &row;
        table.push('\n');
    }
    println!("{table}");

    // No request outside the table is granted: another method, another
    // stage, another API.
    for route in ROUTES {
        let arn = request_arn(route, "p-1");
        for other in [
            arn.replacen(&format!("/prod/{}", route.method), "/prod/DELETE", 1),
            arn.replacen("/prod/", "/test/", 1),
            arn.replacen("a1b2c3d4e5", "zzzzzzzzzz", 1),
        ] {
            for (name, _, _) in CAPABILITY_POLICIES {
                assert!(!policy_allows_invoke(&resources[name], &other), "{name} allows {other}");
            }
        }
        // One segment more is another route, or none. `GET/v1/jobs/*` also
        // matches deeper GET paths under a job, which are no route (API
        // Gateway refuses an undeclared resource before IAM is asked).
        let longer = format!("{}/more", route.path.replace(['{', '}'], ""));
        let arn = format!("{arn}/more");
        for (name, capability, _) in CAPABILITY_POLICIES {
            let job_route = ROUTES
                .iter()
                .find(|r| (r.method, r.path) == ("GET", "/v1/jobs/{job_id}"))
                .unwrap();
            let expected = route_for(route.method, &longer).is_some_and(|r| r.allows(capability))
                || (route.method == "GET" && longer.starts_with("/v1/jobs/") && job_route.allows(capability));
            assert_eq!(
                policy_allows_invoke(&resources[name], &arn),
                expected,
                "{name} on {arn}"
            );
        }
    }
}

/// Every route the template gives the ingest function is in the capability
/// table, so no route escapes the policies; the table's routes are the
/// template's (GET /v1/jobs may wait for the jobs listing's event).
#[test]
fn the_template_routes_are_the_capability_table() {
    let doc = template();
    let events = doc["Resources"]["IngestApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .unwrap();
    let mut declared = BTreeSet::new();
    for (name, event) in events {
        assert_eq!(event["Type"].as_str(), Some("Api"), "{name:?}");
        let method = event["Properties"]["Method"].as_str().unwrap().to_ascii_uppercase();
        let path = event["Properties"]["Path"].as_str().unwrap().to_owned();
        assert!(
            ROUTES.iter().any(|r| r.method == method && r.path == path),
            "{method} {path} is not in shared/src/domain/capabilities.rs"
        );
        declared.insert((method, path));
    }
    for route in ROUTES {
        let key = (route.method.to_owned(), route.path.to_owned());
        assert!(
            declared.contains(&key) || (route.method, route.path) == ("GET", "/v1/jobs"),
            "{} {} has no event in the template",
            route.method,
            route.path
        );
    }
}

/// `AuthMode` is `iam` by default; in that mode the API's default
/// authorizer is AWS_IAM (API Gateway invoking the function with its own
/// permission, not the caller's credentials), the API key is required in
/// both modes (the usage plan meters only keyed requests), and the function
/// is told the mode. The `!If` relies on `AWS::LanguageExtensions` running
/// before the SAM transform.
#[test]
fn iam_is_the_default_auth_mode() {
    let doc = template();
    let parameter = &doc["Parameters"]["AuthMode"];
    assert_eq!(parameter["Default"].as_str(), Some(AuthMode::Iam.name()));
    let allowed: Vec<&str> = as_list(&parameter["AllowedValues"])
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(allowed, [AuthMode::Iam.name(), AuthMode::ApiKey.name()]);
    let transforms: Vec<&str> = as_list(&doc["Transform"]).iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(transforms, ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]);
    assert_eq!(
        format!("{:?}", doc["Conditions"]["UseIam"]),
        format!(
            "{:?}",
            serde_norway::from_str::<Value>("!Equals [!Ref AuthMode, iam]").unwrap()
        )
    );
    let auth = &doc["Resources"]["PointflowApi"]["Properties"]["Auth"];
    assert_eq!(
        format!("{:?}", auth["DefaultAuthorizer"]),
        format!(
            "{:?}",
            serde_norway::from_str::<Value>("!If [UseIam, AWS_IAM, !Ref AWS::NoValue]").unwrap()
        )
    );
    assert_eq!(auth["InvokeRole"].as_str(), Some("NONE"));
    assert_eq!(auth["ApiKeyRequired"].as_bool(), Some(true));
    // No event overrides the default authorizer.
    for (name, event) in doc["Resources"]["IngestApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .unwrap()
    {
        assert!(event["Properties"]["Auth"].is_null(), "{name:?} sets its own Auth");
    }
    let variables = &doc["Resources"]["IngestApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(referenced(&variables["AUTH_MODE"]), Some("AuthMode"));
}

/// The operate policy lets `pointflow dlq` read and drain both dead-letter
/// queues, send back to both source queues, and find them with `--stack`
/// (this stack's outputs); the other two policies only invoke routes.
#[test]
fn operate_may_list_archive_and_redrive_the_dead_letter_queues() {
    let doc = template();
    let statements = as_list(&doc["Resources"]["OperatePolicy"]["Properties"]["PolicyDocument"]["Statement"]);
    let grants = |action: &str| -> BTreeSet<&str> {
        statements
            .iter()
            .filter(|s| as_list(&s["Action"]).iter().any(|a| a.as_str() == Some(action)))
            .flat_map(|s| as_list(&s["Resource"]))
            .filter_map(referenced)
            .collect()
    };
    let dlqs = BTreeSet::from(["AccrualDeadLetterQueue", "ImportDeadLetterQueue"]);
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ] {
        assert_eq!(grants(action), dlqs, "{action}");
    }
    assert_eq!(
        grants("sqs:SendMessage"),
        BTreeSet::from(["AccrualQueue", "ImportQueue"])
    );
    // `--stack NAME` reads the outputs of this stack, and of no other.
    assert_eq!(
        grants("cloudformation:DescribeStacks"),
        BTreeSet::from(["AWS::StackId"])
    );
    for (name, capability, _) in CAPABILITY_POLICIES {
        if capability == Capability::Operate {
            continue;
        }
        for statement in as_list(&doc["Resources"][name]["Properties"]["PolicyDocument"]["Statement"]) {
            for action in as_list(&statement["Action"]) {
                assert_eq!(action.as_str(), Some("execute-api:Invoke"), "{name}");
            }
        }
    }
}

/// The API's OpenAPI document, as shipped.
const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// The methods an OpenAPI path item may describe.
const OPENAPI_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The routes API Gateway sends to the function (the `Api` events of the
/// template's functions) are exactly the operations `docs/openapi.yaml`
/// describes, method and path: a route added to one and not the other fails.
#[test]
fn the_templates_routes_are_the_operations_of_the_openapi_document() {
    let doc = template();
    let mut routes = BTreeSet::new();
    for (name, function) in resources_of(&doc, "AWS::Serverless::Function") {
        for (event, properties) in function["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if properties["Type"].as_str() != Some("Api") {
                continue;
            }
            assert_eq!(
                name, "IngestApiFunction",
                "{event:?}: only the ingest function serves the API"
            );
            let properties = &properties["Properties"];
            assert_eq!(referenced(&properties["RestApiId"]), Some("PointflowApi"), "{event:?}");
            let method = properties["Method"].as_str().expect("a method").to_ascii_uppercase();
            let path = properties["Path"].as_str().expect("a path").to_owned();
            assert!(routes.insert((method, path)), "{event:?} repeats a route");
        }
    }
    let openapi: Value = serde_norway::from_str(OPENAPI).expect("docs/openapi.yaml is YAML");
    let mut operations = BTreeSet::new();
    for (path, item) in openapi["paths"].as_mapping().expect("paths") {
        for method in OPENAPI_METHODS {
            if !item[method].is_null() {
                operations.insert((method.to_ascii_uppercase(), path.as_str().expect("a path").to_owned()));
            }
        }
    }
    assert!(routes.len() >= 7, "{routes:?}");
    let only_template: Vec<_> = routes.difference(&operations).collect();
    let only_document: Vec<_> = operations.difference(&routes).collect();
    assert!(
        only_template.is_empty() && only_document.is_empty(),
        "routes in template.yaml only: {only_template:?}\noperations in docs/openapi.yaml only: {only_document:?}"
    );
}
