//! Lambda entry point of `ingest-api`: start-up only.

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use pointflow::adapters::aws;
use pointflow::backend;
use pointflow::config::IngestConfig;
use pointflow::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logging();
    let config = IngestConfig::from_env()?;
    let sdk = aws::load_config().await;
    let service = backend::aws::api_service(&config, &sdk);
    let service = &service;
    let auth_mode = config.auth_mode;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayProxyRequest>| async move {
            Ok::<_, Error>(ingest_api::handle_authenticated(service, auth_mode, event.payload).await)
        },
    ))
    .await
}
