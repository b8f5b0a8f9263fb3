//! Shared pieces of Pointflow's integration tests: backends to run against
//! (in-memory, and the AWS adapters over the moto emulator), the port
//! contract suite every backend must pass, end-to-end cases every backend
//! must pass (`pipeline`), and helpers that drive the real Lambda handlers.

pub mod backend;
pub mod contract;
pub mod import;
pub mod lambda;
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
