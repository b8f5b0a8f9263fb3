//! The AWS backend: DynamoDB for the ledger and jobs, SQS for the work
//! queue, S3 for files. Clients are built once per cold start.

pub mod dynamodb;
pub mod presign;
mod redact;
pub mod s3;
pub mod sqs;

/// The SDK's shared configuration from the usual sources (environment,
/// profile, instance role). `AWS_ENDPOINT_URL` points every client at an
/// emulator; no Pointflow-specific switch is needed.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client. Path-style addressing when an endpoint override is set
/// (`AWS_ENDPOINT_URL`), because emulators on `127.0.0.1` have no
/// per-bucket host names.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = sdk.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build(),
    )
}
