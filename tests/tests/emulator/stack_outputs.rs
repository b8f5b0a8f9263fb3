//! `--stack NAME`: the command line reads a deployed stack's resources from
//! its CloudFormation outputs, over the wire (DescribeStacks on the emulator).

use pointflow_cli::stack::{StackError, StackOutputs};
use pointflow_tests::backend::{emulator_config, unique_name};

/// A stack shaped like `template.yaml`'s outputs: two real queues (their
/// URLs come from CloudFormation's `Ref`) and a table name.
const TEMPLATE: &str = r#"{
  "Resources": {
    "AccrualQueue": {"Type": "AWS::SQS::Queue"},
    "AccrualDeadLetterQueue": {"Type": "AWS::SQS::Queue"}
  },
  "Outputs": {
    "QueueUrl": {"Value": {"Ref": "AccrualQueue"}},
    "DeadLetterQueueUrl": {"Value": {"Ref": "AccrualDeadLetterQueue"}},
    "TableName": {"Value": "pointflow-stack-test-table"},
    "AlarmTopicArn": {"Value": "arn:aws:sns:us-east-1:123456789012:alarms"}
  }
}"#;

#[tokio::test]
async fn a_stacks_outputs_name_its_queues_and_table() {
    let Some(sdk) = emulator_config().await else {
        return;
    };
    let cloudformation = aws_sdk_cloudformation::Client::new(&sdk);
    let name = unique_name("pointflow-stack");
    cloudformation
        .create_stack()
        .stack_name(&name)
        .template_body(TEMPLATE)
        .send()
        .await
        .expect("create stack");

    let outputs = StackOutputs::describe_with(&cloudformation, &name).await.unwrap();

    // The emulator answers `Ref` with AWS's host, its queue list with its
    // own: the queues are compared by name.
    let name_of = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queues = sqs.list_queues().queue_name_prefix(&name).send().await.unwrap();
    let mut listed: Vec<String> = queues.queue_urls().iter().map(|u| name_of(u)).collect();
    listed.sort();
    let mut read = vec![
        name_of(&outputs.queue_url.clone().expect("QueueUrl read")),
        name_of(&outputs.dlq_url.clone().expect("DeadLetterQueueUrl read")),
    ];
    read.sort();
    assert_eq!(read, listed);
    assert!(outputs.queue_url.as_deref().unwrap().contains("AccrualQueue"));
    assert_eq!(outputs.table.as_deref(), Some("pointflow-stack-test-table"));
    assert_eq!(outputs.api_url, None);
    let missing = StackOutputs::require(&name, None, &outputs.import_queue_url, "ImportQueueUrl").unwrap_err();
    assert!(
        missing.to_string().contains("has no output ImportQueueUrl"),
        "{missing}"
    );
}

#[tokio::test]
async fn an_unknown_stack_is_named_in_the_error() {
    let Some(sdk) = emulator_config().await else {
        return;
    };
    let cloudformation = aws_sdk_cloudformation::Client::new(&sdk);
    let name = unique_name("no-such-stack");
    let error = StackOutputs::describe_with(&cloudformation, &name).await.unwrap_err();
    assert!(
        matches!(&error, StackError::Describe { stack, .. } if stack == &name),
        "{error:?}"
    );
    assert!(error.to_string().contains(&name), "{error}");
}
