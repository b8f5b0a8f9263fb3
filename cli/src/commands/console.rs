//! `pointflow console`: the operator console against a deployed stack,
//! served on this machine's loopback and calling AWS with the operator's
//! credentials.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pointflow_cli::client::api::ApiClient;
use pointflow_cli::client::signing::{SignMode, Signer};
use pointflow_cli::console::{fetch_api_key, serve_console, Console, StackResources};
use pointflow_cli::stack::StackOutputs;
use tokio::net::TcpListener;

use super::{template_settings, StackArg};

/// `pointflow console`'s arguments.
#[derive(Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    stack: StackArg,
    /// Address to listen on: loopback only (the console acts with your AWS credentials).
    #[arg(long, default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// The API's stage URL [default: the --stack's ApiUrl].
    #[arg(long, env = "POINTFLOW_ENDPOINT")]
    endpoint: Option<String>,
    /// API key (sent as x-api-key) [default: the --stack's key, read with apigateway:GET on its ApiKeyId output].
    #[arg(long, env = "POINTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// SigV4-sign the API calls with your AWS credentials (auto: unless the endpoint is on loopback).
    #[arg(long, value_enum, env = "POINTFLOW_SIGN", default_value = "auto")]
    sign: SignMode,
    /// Accrual queue URL [default: the stack's QueueUrl].
    #[arg(long, env = "QUEUE_URL")]
    queue_url: Option<String>,
    /// Dead-letter queue URL [default: the stack's DeadLetterQueueUrl].
    #[arg(long, env = "DLQ_URL")]
    dlq_url: Option<String>,
    /// Import queue URL [default: the stack's ImportQueueUrl].
    #[arg(long, env = "IMPORT_QUEUE_URL")]
    import_queue_url: Option<String>,
    /// Import dead-letter queue URL [default: the stack's ImportDeadLetterQueueUrl].
    #[arg(long, env = "IMPORT_DLQ_URL")]
    import_dlq_url: Option<String>,
    /// Import bucket [default: the stack's ImportBucketName].
    #[arg(long, env = "IMPORT_BUCKET")]
    bucket: Option<String>,
}

/// Serves the console until Ctrl-C.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    // Refused before anything is read: the console acts with the operator's credentials.
    if !args.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {}: the console calls AWS with your credentials, so it listens on loopback only \
             (127.0.0.1 or [::1])",
            args.addr
        );
    }
    let settings = template_settings()?;
    let outputs = args.stack.outputs().await?;
    let endpoint = match (&args.endpoint, &args.stack.stack) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(stack)) => StackOutputs::require(stack, None, &outputs.api_url, "ApiUrl")?,
        (None, None) => anyhow::bail!("name the stack (--stack NAME) or the API (--endpoint URL)"),
    };
    let sdk = pointflow::adapters::aws::load_config().await;
    let api_key = match (args.api_key, &outputs.api_key_id) {
        (Some(key), _) => Some(key),
        (None, Some(id)) => Some(
            fetch_api_key(&sdk, id)
                .await
                .with_context(|| format!("reading the stack's API key (ApiKeyId {id}); or pass --api-key"))?,
        ),
        (None, None) => None,
    };
    let mut api = ApiClient::new(&endpoint, api_key, Duration::from_secs(30))?;
    if args.sign.signs(&endpoint) {
        let signer = Signer::from_environment(&endpoint).await.with_context(|| {
            format!("signing requests to {endpoint} (for a stack with AuthMode api-key, pass --sign never)")
        })?;
        api = api.with_signer(signer);
    }
    let resources = StackResources {
        stack: args.stack.stack.clone(),
        queue_url: StackOutputs::or_output(args.queue_url, &outputs.queue_url),
        dlq_url: StackOutputs::or_output(args.dlq_url, &outputs.dlq_url),
        import_queue_url: StackOutputs::or_output(args.import_queue_url, &outputs.import_queue_url),
        import_dlq_url: StackOutputs::or_output(args.import_dlq_url, &outputs.import_dlq_url),
        bucket: StackOutputs::or_output(args.bucket, &outputs.bucket),
        report_prefix: settings.import.report_prefix.clone(),
    };
    let console = Console::stack(&sdk, api, resources);
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let addr = listener.local_addr()?;
    eprintln!("Operator console: http://{addr}/console/ (API {endpoint}). Ctrl-C stops.");
    serve_console(listener, console, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serving the console")?;
    Ok(ExitCode::SUCCESS)
}
