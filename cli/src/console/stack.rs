//! `pointflow console`: the console on the operator's machine against a
//! deployed stack. The page's `/v1` calls go to the stack's API through
//! [`ApiClient`] (its API key and SigV4 signature added here), the
//! dead-letter queues are read and redriven on SQS, reports read and files
//! dropped on S3, all with the operator's own credentials (the SDK's
//! default chain). The browser never sees a credential.

use std::future::Future;
use std::sync::Arc;

use axum::http::Uri;
use axum::Router;
use pointflow::adapters::aws::s3::S3Objects;
use pointflow::adapters::aws::sqs::SqsQueue;
use pointflow::ports::WorkQueue;
use tokio::net::TcpListener;

use super::{api, routes, Console, Info, JobLookup, Parts, QueuePair};
use crate::backend::ImportSide;
use crate::client::api::ApiClient;
use crate::exposure::Exposure;
use crate::server::serve_router;

/// A deployed stack's resources, as `pointflow console` found them (the
/// stack's outputs, or the options that override them).
#[derive(Debug, Clone, Default)]
pub struct StackResources {
    /// The stack's name, shown on the page.
    pub stack: Option<String>,
    /// `QueueUrl` and `DeadLetterQueueUrl`.
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    /// `ImportQueueUrl` and `ImportDeadLetterQueueUrl`.
    pub import_queue_url: Option<String>,
    pub import_dlq_url: Option<String>,
    /// `ImportBucketName`.
    pub bucket: Option<String>,
    /// Where the importer writes reports (the template's `ReportPrefix`).
    pub report_prefix: String,
}

impl Console {
    /// The console of a deployed stack: `/v1` through `api` (which holds the
    /// endpoint, the API key and the signer), the queues on SQS and the
    /// bucket on S3 through clients of `sdk`. A queue pair or the bucket
    /// not named makes its endpoints answer `404 not_configured`.
    pub fn stack(sdk: &aws_config::SdkConfig, api: ApiClient, resources: StackResources) -> Console {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let queue = |url: &str| Arc::new(SqsQueue::new(sqs.clone(), url)) as Arc<dyn WorkQueue>;
        let pair = |queue_url: &Option<String>, dlq_url: &Option<String>| match (queue_url, dlq_url) {
            (Some(q), Some(d)) => Some(QueuePair {
                queue: queue(q),
                dlq: queue(d),
            }),
            _ => None,
        };
        let files = match (&resources.bucket, &resources.import_queue_url) {
            (Some(bucket), Some(import_queue_url)) => {
                let s3 = pointflow::adapters::aws::s3_client(sdk);
                Some(ImportSide {
                    // The bucket notifies the import queue itself.
                    queue: queue(import_queue_url),
                    objects: Arc::new(S3Objects::new(s3.clone())),
                    bucket: bucket.clone(),
                    bucket_dir: None,
                    s3: Some(s3),
                    report_prefix: resources.report_prefix.clone(),
                })
            }
            _ => None,
        };
        Console::new(Parts {
            info: Info {
                backend: "aws",
                stack: resources.stack.clone(),
                api: api.endpoint().to_owned(),
                version: env!("CARGO_PKG_VERSION"),
            },
            accruals: pair(&resources.queue_url, &resources.dlq_url),
            imports: pair(&resources.import_queue_url, &resources.import_dlq_url),
            files,
            jobs: JobLookup::Api(api.clone()),
            upstream: Some(api),
        })
    }
}

/// Serves `console` on `listener` (loopback `Host` headers only) until
/// `shutdown` resolves; what is neither the page, its endpoints nor `/v1`
/// is a JSON 404.
pub async fn serve_console(
    listener: TcpListener,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app: Router = routes(console).fallback(|uri: Uri| api::not_found(uri));
    serve_router(listener, app, Exposure::LoopbackOnly, shutdown).await
}

#[cfg(test)]
mod tests {
    use serde_norway::Value;

    /// The resources (as their `!Sub` text) the operate policy grants `action` on.
    fn operate_grants(action: &str) -> Vec<String> {
        let doc: Value = serde_norway::from_str(crate::settings::TEMPLATE).unwrap();
        let statements = doc["Resources"]["OperatePolicy"]["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence()
            .unwrap();
        let list = |v: &Value| match v {
            Value::Sequence(items) => items.clone(),
            other => vec![other.clone()],
        };
        statements
            .iter()
            .filter(|s| list(&s["Action"]).iter().any(|a| a.as_str() == Some(action)))
            .flat_map(|s| list(&s["Resource"]))
            .filter_map(|r| match r {
                Value::Tagged(tagged) if tagged.tag == "Sub" => tagged.value.as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    }

    /// What `pointflow console` does on S3 and API Gateway beyond `pointflow
    /// dlq`, the operate policy allows, and no more: read reports, drop
    /// files under `imports/console/`, read this stack's API key.
    #[test]
    fn operate_may_read_reports_drop_console_files_and_read_its_api_key() {
        let gets = operate_grants("s3:GetObject");
        assert!(gets.contains(&"${ImportBucket.Arn}/reports/*".to_owned()), "{gets:?}");
        let puts = operate_grants("s3:PutObject");
        assert!(
            puts.contains(&format!("${{ImportBucket.Arn}}/{}*", super::super::DROP_PREFIX)),
            "{puts:?}"
        );
        assert!(!puts.iter().any(|p| p.ends_with("/imports/*")), "{puts:?}");
        assert_eq!(
            operate_grants("apigateway:GET"),
            ["arn:${AWS::Partition}:apigateway:${AWS::Region}::/apikeys/${PointflowApiApiKey}"]
        );
    }
}
