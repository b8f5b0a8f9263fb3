//! Bulk uses through jobs over the emulator (small scale): the case every
//! backend must pass (`pointflow_tests::pipeline`), on the AWS adapters.
//! The local backends' cases: `tests/local/bulk_uses.rs`.

use std::time::Duration;

use pointflow_tests::backend;
use pointflow_tests::pipeline::bulk_uses_apply_once_and_count_refusals;

#[tokio::test]
async fn bulk_uses_on_aws() {
    if let Some(b) = backend::aws(Duration::from_secs(30), 3).await {
        bulk_uses_apply_once_and_count_refusals(b).await;
    }
}
