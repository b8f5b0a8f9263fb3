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
