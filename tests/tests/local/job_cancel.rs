//! Cancelling a job end to end: accruals submitted through the API and
//! applied by the worker (whose folds record each message's ids) are
//! reversed by `cancel_job`, on the local backends (moto's cases:
//! `tests/emulator/job_cancel.rs`).

use std::time::Duration;

use pointflow_tests::backend;
use pointflow_tests::pipeline::{
    a_campaign_is_cancelled_through_the_pipeline, the_api_queues_a_cancel_for_the_workers,
};

#[tokio::test]
async fn cancel_on_memory() {
    a_campaign_is_cancelled_through_the_pipeline(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn cancel_on_sqlite() {
    a_campaign_is_cancelled_through_the_pipeline(backend::sqlite(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn api_cancel_on_memory() {
    the_api_queues_a_cancel_for_the_workers(backend::memory(Duration::from_millis(300), 3)).await;
}

#[tokio::test]
async fn api_cancel_on_sqlite() {
    the_api_queues_a_cancel_for_the_workers(backend::sqlite(Duration::from_millis(300), 3)).await;
}
