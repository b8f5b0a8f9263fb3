//! Lambda entry point of `worker`: start-up only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use pointflow::adapters::aws;
use pointflow::backend;
use pointflow::config::WorkerConfig;
use pointflow::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logging();
    let config = WorkerConfig::from_env()?;
    let sdk = aws::load_config().await;
    let worker = backend::aws::worker(&config, &sdk);
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let started = worker::now_millis();
        let (response, metrics) = worker::handle_measured(worker, event.payload, started).await;
        // One Embedded Metric Format line per batch: CloudWatch Logs makes
        // it the Pointflow/* metrics the template's alarms watch.
        println!("{}", metrics.to_emf("worker", worker::now_millis()));
        Ok::<_, Error>(response)
    }))
    .await
}
