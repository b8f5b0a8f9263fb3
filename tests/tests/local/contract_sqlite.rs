//! The port contract suite against the embedded (SQLite) backend.

use std::time::Duration;

async fn backend(visibility: Duration) -> Option<pointflow_tests::backend::Backend> {
    Some(pointflow_tests::backend::sqlite(visibility, 2))
}

pointflow_tests::contract_suite!(
    backend(Duration::from_millis(300)),
    long_visibility: backend(Duration::from_secs(3600))
);
