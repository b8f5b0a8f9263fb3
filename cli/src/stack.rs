//! `--stack NAME`: a deployed stack's resources, read from its CloudFormation
//! outputs, so that an operator names the stack once instead of exporting
//! one variable per queue and table.
//!
//! An option given explicitly (or its environment variable) always wins over
//! the stack's output: `--stack prod --dlq-url …` reads that other queue.

use aws_sdk_cloudformation::Client;

/// The outputs of `template.yaml` that the command line uses, by output name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs {
    /// `ApiUrl`: the API stage's URL.
    pub api_url: Option<String>,
    /// `TableName`.
    pub table: Option<String>,
    /// `QueueUrl`: the accrual queue.
    pub queue_url: Option<String>,
    /// `DeadLetterQueueUrl`: the accrual queue's DLQ.
    pub dlq_url: Option<String>,
    /// `ImportBucketName`.
    pub bucket: Option<String>,
    /// `ImportQueueUrl`.
    pub import_queue_url: Option<String>,
    /// `ImportDeadLetterQueueUrl`.
    pub import_dlq_url: Option<String>,
    /// `ApiKeyId`: the API key's id (its value is read with GetApiKey).
    pub api_key_id: Option<String>,
}

/// The stack could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// DescribeStacks failed: no such stack, no credentials, no permission.
    #[error("reading the outputs of stack {stack}: {message}")]
    Describe { stack: String, message: String },
    /// The stack exists but is not one this command can use.
    #[error("stack {stack} has no output {output}: is it a Pointflow stack (template.yaml), fully created?")]
    MissingOutput { stack: String, output: &'static str },
}

impl StackOutputs {
    /// The outputs among `(OutputKey, OutputValue)` pairs; other keys are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut outputs = Self::default();
        for (key, value) in pairs {
            let slot = match key {
                "ApiUrl" => &mut outputs.api_url,
                "TableName" => &mut outputs.table,
                "QueueUrl" => &mut outputs.queue_url,
                "DeadLetterQueueUrl" => &mut outputs.dlq_url,
                "ImportBucketName" => &mut outputs.bucket,
                "ImportQueueUrl" => &mut outputs.import_queue_url,
                "ImportDeadLetterQueueUrl" => &mut outputs.import_dlq_url,
                "ApiKeyId" => &mut outputs.api_key_id,
                _ => continue,
            };
            *slot = Some(value.to_owned());
        }
        outputs
    }

    /// Reads stack `name`'s outputs with the AWS SDK's usual configuration
    /// (profile, region, `AWS_ENDPOINT_URL`).
    pub async fn describe(name: &str) -> Result<Self, StackError> {
        let config = aws_config::load_from_env().await;
        Self::describe_with(&Client::new(&config), name).await
    }

    /// Reads stack `name`'s outputs with `client`.
    pub async fn describe_with(client: &Client, name: &str) -> Result<Self, StackError> {
        let described = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|error| {
                // The service's own message ("Stack with id x does not exist",
                // "not authorized") is what the operator needs; it holds no data.
                let message = aws_sdk_cloudformation::error::DisplayErrorContext(&error).to_string();
                StackError::Describe {
                    stack: name.to_owned(),
                    message,
                }
            })?;
        let outputs = described
            .stacks()
            .first()
            .map(|stack| stack.outputs())
            .unwrap_or_default();
        Ok(Self::from_pairs(
            outputs
                .iter()
                .filter_map(|o| Some((o.output_key()?, o.output_value()?))),
        ))
    }

    /// `explicit`, or else this stack's output `output` (`value`), or else
    /// `None`.
    pub fn or_output(explicit: Option<String>, value: &Option<String>) -> Option<String> {
        explicit.or_else(|| value.clone())
    }

    /// `explicit`, or else the stack's output; an error naming the output when
    /// the stack lacks it.
    pub fn require(
        stack: &str,
        explicit: Option<String>,
        value: &Option<String>,
        output: &'static str,
    ) -> Result<String, StackError> {
        Self::or_output(explicit, value).ok_or_else(|| StackError::MissingOutput {
            stack: stack.to_owned(),
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_read_by_their_template_names() {
        let outputs = StackOutputs::from_pairs([
            ("ApiUrl", "https://abc.execute-api.us-east-1.amazonaws.com/v1"),
            ("TableName", "pointflow-prod-table"),
            ("QueueUrl", "https://sqs/q"),
            ("DeadLetterQueueUrl", "https://sqs/dlq"),
            ("ImportBucketName", "bucket"),
            ("ImportQueueUrl", "https://sqs/iq"),
            ("ImportDeadLetterQueueUrl", "https://sqs/idlq"),
            ("ApiKeyId", "abc123key"),
            ("AlarmTopicArn", "arn:aws:sns:…"),
        ]);
        assert_eq!(
            outputs,
            StackOutputs {
                api_url: Some("https://abc.execute-api.us-east-1.amazonaws.com/v1".into()),
                table: Some("pointflow-prod-table".into()),
                queue_url: Some("https://sqs/q".into()),
                dlq_url: Some("https://sqs/dlq".into()),
                bucket: Some("bucket".into()),
                import_queue_url: Some("https://sqs/iq".into()),
                import_dlq_url: Some("https://sqs/idlq".into()),
                api_key_id: Some("abc123key".into()),
            }
        );
    }

    #[test]
    fn every_output_read_here_is_an_output_of_the_template() {
        let template: serde_norway::Value = serde_norway::from_str(crate::settings::TEMPLATE).unwrap();
        let declared = template.get("Outputs").unwrap();
        for name in [
            "ApiUrl",
            "TableName",
            "QueueUrl",
            "DeadLetterQueueUrl",
            "ImportBucketName",
            "ImportQueueUrl",
            "ImportDeadLetterQueueUrl",
            "ApiKeyId",
        ] {
            assert!(declared.get(name).is_some(), "template.yaml has no output {name}");
            let one = StackOutputs::from_pairs([(name, "x")]);
            assert_ne!(one, StackOutputs::default(), "{name} is not read");
        }
    }

    #[test]
    fn an_explicit_option_wins_over_the_stack() {
        let from_stack = Some("https://sqs/stack-dlq".to_owned());
        assert_eq!(
            StackOutputs::or_output(Some("https://sqs/other".into()), &from_stack),
            Some("https://sqs/other".into())
        );
        assert_eq!(StackOutputs::or_output(None, &from_stack), from_stack);
        let missing = StackOutputs::require("prod", None, &None, "QueueUrl").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "stack prod has no output QueueUrl: is it a Pointflow stack (template.yaml), fully created?"
        );
    }
}
