//! Logging set-up shared by every binary.

pub mod metrics;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// JSON logs for Lambda (CloudWatch parses them; `LoggingConfig: LogFormat:
/// JSON` in the template), filtered by `RUST_LOG` (default `info`). Each line
/// carries its current span's fields (job id, message id, counts).
pub fn init_lambda_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init` fails only if a subscriber is already set; keep that one.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_span_events(FmtSpan::NONE)
        .with_target(false)
        .without_time()
        .try_init();
}
