//! Checks on `template.yaml` as shipped: the alarm path (alarms → an SNS
//! topic under a key CloudWatch may use) and the dashboard (only resources
//! and metrics the stack really has).

use std::collections::BTreeSet;

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
