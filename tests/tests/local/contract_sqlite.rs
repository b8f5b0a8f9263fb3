//! The port contract suite against the embedded (SQLite) backend.

use std::time::Duration;

async fn backend() -> Option<pointflow_tests::backend::Backend> {
    Some(pointflow_tests::backend::sqlite(Duration::from_millis(300), 2))
}

pointflow_tests::contract_suite!(backend());
