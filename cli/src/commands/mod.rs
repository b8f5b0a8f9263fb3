//! One module per area of the command line, each with its clap arguments and
//! the functions that run them; `main.rs` only parses and dispatches. Here:
//! the arguments more than one area takes.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use pointflow_cli::client::api::{ApiClient, DEFAULT_ENDPOINT};
use pointflow_cli::settings::StackSettings;

use crate::render::Output;

pub mod bench;
pub mod dlq;
pub mod jobs;
pub mod local;
pub mod members;
pub mod plan;
pub mod reconcile;
pub mod shell;
pub mod simulate;
pub mod submit;

/// How to reach the HTTP API, for the commands that are its clients.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The API: a deployed stage URL (the ApiUrl output) or `pointflow local serve`.
    #[arg(long, env = "POINTFLOW_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// API key (sent as x-api-key), as the template's usage plan requires.
    #[arg(long, env = "POINTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// Seconds before one HTTP request times out (it is then retried).
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
}

impl ApiArgs {
    /// A client of the API these arguments name.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            &self.endpoint,
            self.api_key.clone(),
            Duration::from_secs(self.request_timeout.max(1)),
        )?)
    }
}

/// `--backend`: where the local commands find their store and queues.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// SQLite in one file: no AWS account, no Docker.
    Embedded,
    /// The AWS adapters, configured like the AWS SDK (AWS_ENDPOINT_URL for moto or LocalStack).
    Aws,
}

/// The deployed stack's settings, from the compiled-in `template.yaml`.
pub fn template_settings() -> anyhow::Result<StackSettings> {
    StackSettings::from_template().context("reading template.yaml")
}
