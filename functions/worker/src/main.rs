//! Lambda entry point of `worker`: start-up only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use pointflow::config::WorkerConfig;
use pointflow::{aws, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logging();
    let config = WorkerConfig::from_env()?;
    let sdk = aws::load_config().await;
    let worker = aws::worker(&config, &sdk);
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(worker::handle(worker, event.payload).await)
    }))
    .await
}
