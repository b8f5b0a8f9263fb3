//! One module per area of the command line, each with its clap arguments and
//! the functions that run them; `main.rs` only parses and dispatches. Here:
//! the arguments more than one area takes.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use pointflow_cli::client::api::{ApiClient, DEFAULT_ENDPOINT};
use pointflow_cli::client::signing::{SignMode, Signer};
use pointflow_cli::settings::StackSettings;
use pointflow_cli::stack::StackOutputs;

use crate::render::Output;

pub mod bench;
pub mod console;
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
    /// The API: a deployed stage URL (the ApiUrl output) or `pointflow local serve` [default: the --stack's
    /// ApiUrl, else http://127.0.0.1:3000, the local server].
    #[arg(long, env = "POINTFLOW_ENDPOINT")]
    endpoint: Option<String>,
    #[command(flatten)]
    stack: StackArg,
    /// API key (sent as x-api-key), as the template's usage plan requires in both auth modes.
    #[arg(long, env = "POINTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// SigV4-sign requests with the standard AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO, a
    /// role…), as a stack with AuthMode iam requires: auto signs unless the endpoint is on loopback.
    #[arg(long, value_enum, env = "POINTFLOW_SIGN", default_value = "auto")]
    sign: SignMode,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// Seconds before one HTTP request times out (it is then retried).
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
}

impl ApiArgs {
    /// A client of the API these arguments name, signing its requests
    /// when `--sign` says so (credentials are looked up here, so a missing
    /// one stops the command before anything is sent).
    pub async fn client(&self) -> anyhow::Result<ApiClient> {
        let endpoint = match (&self.endpoint, &self.stack.stack) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(stack)) => StackOutputs::require(stack, None, &self.stack.outputs().await?.api_url, "ApiUrl")?,
            (None, None) => DEFAULT_ENDPOINT.to_owned(),
        };
        let client = ApiClient::new(
            &endpoint,
            self.api_key.clone(),
            Duration::from_secs(self.request_timeout.max(1)),
        )?;
        if !self.sign.signs(&endpoint) {
            return Ok(client);
        }
        let signer = Signer::from_environment(&endpoint).await.with_context(|| {
            format!("signing requests to {endpoint} (for a stack with AuthMode api-key, pass --sign never)")
        })?;
        Ok(client.with_signer(signer))
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

/// `--stack NAME`: a deployed stack whose outputs fill the resource options
/// that are not given.
#[derive(Args, Clone, Default)]
pub struct StackArg {
    /// A deployed Pointflow stack (its CloudFormation name): its outputs (TableName, QueueUrl, DeadLetterQueueUrl,
    /// ImportQueueUrl, …) fill every resource option not given, and the backend is aws. Read with the AWS
    /// credentials and region of the environment (profile, AWS_REGION).
    #[arg(long, env = "POINTFLOW_STACK", global = true)]
    pub stack: Option<String>,
}

impl StackArg {
    /// The backend: the one given, else aws with a stack and embedded without.
    pub fn backend(&self, given: Option<BackendKind>) -> anyhow::Result<BackendKind> {
        match (given, &self.stack) {
            (Some(BackendKind::Embedded), Some(stack)) => {
                anyhow::bail!("--stack {stack} names a deployed stack: it goes with --backend aws, not embedded")
            }
            (Some(kind), _) => Ok(kind),
            (None, Some(_)) => Ok(BackendKind::Aws),
            (None, None) => Ok(BackendKind::Embedded),
        }
    }

    /// The stack's outputs, or none without `--stack`.
    pub async fn outputs(&self) -> anyhow::Result<StackOutputs> {
        match &self.stack {
            Some(name) => Ok(StackOutputs::describe(name).await?),
            None => Ok(StackOutputs::default()),
        }
    }
}

/// The deployed stack's settings, from the compiled-in `template.yaml`.
pub fn template_settings() -> anyhow::Result<StackSettings> {
    StackSettings::from_template().context("reading template.yaml")
}
