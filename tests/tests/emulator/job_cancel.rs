//! Cancelling a job end to end over the emulator (small scale): the cases
//! every backend must pass (`pointflow_tests::pipeline`), on the AWS
//! adapters. The local backends' cases: `tests/local/job_cancel.rs`.

use std::time::Duration;

use pointflow_tests::backend;
use pointflow_tests::pipeline::{
    a_campaign_is_cancelled_through_the_pipeline, the_api_queues_a_cancel_for_the_workers,
};

#[tokio::test]
async fn cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        a_campaign_is_cancelled_through_the_pipeline(b).await;
    }
}

#[tokio::test]
async fn api_cancel_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        the_api_queues_a_cancel_for_the_workers(b).await;
    }
}
