//! Shared pieces of Pointflow's integration tests: backends to run against
//! (in-memory, and the AWS adapters over the moto emulator), the port
//! contract suite every backend must pass, end-to-end cases every backend
//! must pass (`pipeline`), helpers that drive the real Lambda handlers, and
//! the OpenAPI document as a checker of the API's answers (`openapi`, and
//! `openapi_proxy` in front of a real server).

pub mod backend;
pub mod contract;
pub mod import;
pub mod lambda;
pub mod openapi;
pub mod openapi_proxy;
pub mod pipeline;
pub mod strict;
pub mod workbooks;

/// Logs of the code under test, shown for failing tests (`RUST_LOG`, default
/// `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Several tests of one binary call this; the first wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
