//! Building AWS clients, once per cold start.

/// The SDK's shared configuration from the usual sources (environment,
/// profile, instance role). `AWS_ENDPOINT_URL` points every client at an
/// emulator; no Pointflow-specific switch is needed.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

use std::sync::Arc;

use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::sqs::SqsQueue;
use crate::config::{IngestConfig, WorkerConfig};
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
