//! Building AWS clients, once per cold start.

/// The SDK's shared configuration from the usual sources (environment,
/// profile, instance role). `AWS_ENDPOINT_URL` points every client at an
/// emulator; no Pointflow-specific switch is needed.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

use std::sync::Arc;

use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::s3::S3Objects;
use crate::adapters::sqs::SqsQueue;
use crate::config::{ImportConfig, IngestConfig, WorkerConfig};
use crate::import::Importer;
use crate::ingest::IngestService;
use crate::worker::Worker;

/// The ingest service over DynamoDB and SQS, built from one SDK config.
pub fn ingest_service(config: &IngestConfig, sdk: &aws_config::SdkConfig) -> IngestService {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name));
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url));
    IngestService::new(store.clone(), store, queue, config.settings)
}

/// The worker over DynamoDB, built from one SDK config.
pub fn worker(config: &WorkerConfig, sdk: &aws_config::SdkConfig) -> Worker {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name));
    Worker::new(store.clone(), store, config.settings)
}

/// The CSV importer over S3, DynamoDB and SQS, built from one SDK config.
pub fn importer(config: &ImportConfig, sdk: &aws_config::SdkConfig) -> Importer {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name));
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Importer::new(
        Arc::new(S3Objects::new(s3_client(sdk))),
        store,
        Arc::new(SqsQueue::new(sqs.clone(), &config.queue_url)),
        Arc::new(SqsQueue::new(sqs, &config.import_queue_url)),
        config.settings.clone(),
    )
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
