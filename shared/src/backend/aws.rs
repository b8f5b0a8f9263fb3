//! The AWS backend: its ports over DynamoDB and SQS, and the Lambdas'
//! services, each built from one SDK config.

use std::sync::Arc;

use super::Ports;
use crate::adapters::retry::Backoff;

use crate::adapters::aws::dynamodb::DynamoStore;
use crate::adapters::aws::presign::S3Presigner;
use crate::adapters::aws::s3::S3Objects;
use crate::adapters::aws::sqs::SqsQueue;
use crate::config::{ImportConfig, IngestConfig, WorkerConfig};
use crate::services::api::ApiService;
use crate::services::import::Importer;
use crate::services::worker::Worker;

/// The HTTP API service over DynamoDB and SQS, built from one SDK config.
pub fn api_service(config: &IngestConfig, sdk: &aws_config::SdkConfig) -> ApiService {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name));
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url));
    let service = ApiService::new(store.clone(), store, queue, config.settings);
    match &config.uploads {
        Some(uploads) => service.with_uploads(
            Arc::new(S3Presigner::new(crate::adapters::aws::s3_client(sdk))),
            uploads.clone(),
        ),
        None => service,
    }
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
        Arc::new(S3Objects::new(crate::adapters::aws::s3_client(sdk))),
        store,
        Arc::new(SqsQueue::new(sqs.clone(), &config.queue_url)),
        Arc::new(SqsQueue::new(sqs, &config.import_queue_url)),
        config.settings.clone(),
    )
}

/// The ports over an existing table, work queue and dead-letter queue.
/// `backoff` replaces the adapters' default retry pacing (tests against an
/// emulator that never throttles make it short).
pub fn ports(
    sdk: &aws_config::SdkConfig,
    table: &str,
    queue_url: &str,
    dlq_url: &str,
    backoff: Option<Backoff>,
) -> Ports {
    let mut store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table);
    if let Some(backoff) = backoff {
        store = store.with_backoff(backoff);
    }
    store_ports(Arc::new(store), sdk, queue_url, dlq_url, backoff)
}

/// [`ports`] over a store the caller keeps too, so that other writers
/// through it (the benchmarks' naive baseline) are counted by the same
/// request and write-unit counters.
pub fn store_ports(
    store: Arc<DynamoStore>,
    sdk: &aws_config::SdkConfig,
    queue_url: &str,
    dlq_url: &str,
    backoff: Option<Backoff>,
) -> Ports {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queue = SqsQueue::new(sqs.clone(), queue_url);
    if let Some(backoff) = backoff {
        queue = queue.with_backoff(backoff);
    }
    let counter = store.clone();
    let meter = store.clone();
    Ports {
        ledger: store.clone(),
        jobs: store,
        queue: Arc::new(queue),
        dlq: Arc::new(SqsQueue::new(sqs, dlq_url)),
        store_requests: Arc::new(move || counter.requests()),
        store_write_cost: Arc::new(move || meter.write_cost()),
    }
}
