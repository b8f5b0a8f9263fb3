//! Lambda entry point of `csv-import`: start-up only.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use pointflow::adapters::aws;
use pointflow::backend;
use pointflow::config::ImportConfig;
use pointflow::telemetry;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logging();
    let config = ImportConfig::from_env()?;
    let sdk = aws::load_config().await;
    let importer = backend::aws::importer(&config, &sdk);
    let importer = &importer;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        csv_import::handle(importer, event.payload).await
    }))
    .await
}
