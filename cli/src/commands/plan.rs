//! `pointflow plan`: the capacity planner's command line; the model is in
//! `pointflow_cli::plan`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pointflow_cli::plan::{plan, Params, PlanInput, TableStart};
use pointflow_cli::settings::template_parameter;

use super::template_settings;
use crate::render::{print_pretty_json, Output};

/// `pointflow plan`'s arguments: the campaign, and the settings that differ from the template's.
#[derive(Args)]
pub struct PlanArgs {
    /// Accruals in the campaign.
    #[arg(long)]
    accruals: u64,
    /// Distinct members (default: one per accrual).
    #[arg(long)]
    members: Option<u64>,
    /// Accruals of the most-credited member (default: accruals / members).
    #[arg(long)]
    hot_member_accruals: Option<u64>,
    /// Worker MaximumConcurrency (default: the template's).
    #[arg(long)]
    max_concurrency: Option<u64>,
    /// Messages per worker invocation (default: the template's).
    #[arg(long)]
    batch_size: Option<u64>,
    /// Accruals per message (default: the template's).
    #[arg(long)]
    accruals_per_message: Option<u64>,
    /// Messages one invocation applies at once (default: the template's).
    #[arg(long)]
    message_concurrency: Option<u64>,
    /// Function memory in MB (default: the template's).
    #[arg(long)]
    memory: Option<u64>,
    /// Items per API request (the client's chunk).
    #[arg(long, default_value_t = 20_000)]
    items_per_request: u64,
    /// API requests in flight (`submit --parallel`).
    #[arg(long, default_value_t = 4)]
    submitters: u64,
    /// The table's write throughput at the start, WRU/s: warm throughput or a previous peak (default: a new
    /// on-demand table).
    #[arg(long)]
    warm_write_units: Option<f64>,
    /// Bytes of a member id.
    #[arg(long, default_value_t = 12)]
    member_id_bytes: usize,
    /// Parameters file (default: the shipped cli/plan/params.yaml).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Output for people or for scripts.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Prints the plan; what the arguments leave out comes from the template.
pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let params = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Params::from_yaml(&text).with_context(|| path.display().to_string())?
        }
        None => Params::shipped()?,
    };
    let settings = template_settings()?;
    let template_u64 = |name: &'static str| -> anyhow::Result<u64> {
        template_parameter(name).with_context(|| format!("template parameter {name}"))
    };
    let members = args.members.unwrap_or(args.accruals).clamp(1, args.accruals.max(1));
    let input = PlanInput {
        accruals: args.accruals,
        members,
        hot_member_accruals: args
            .hot_member_accruals
            .unwrap_or_else(|| args.accruals.div_ceil(members)),
        items_per_request: args.items_per_request.min(settings.ingest.max_items as u64),
        submitters: args.submitters,
        api_rate_limit: template_u64("ApiRateLimit")? as f64,
        accruals_per_message: args
            .accruals_per_message
            .unwrap_or(settings.ingest.packing.max_accruals as u64),
        batch_size: args.batch_size.unwrap_or(settings.batch_size as u64),
        max_concurrency: args.max_concurrency.unwrap_or(settings.maximum_concurrency as u64),
        message_concurrency: args
            .message_concurrency
            .unwrap_or(settings.worker.message_concurrency as u64),
        memory_mb: match args.memory {
            Some(mb) => mb,
            None => template_u64("FunctionMemorySize")?,
        },
        table: args.warm_write_units.map_or(TableStart::New, TableStart::Warm),
        member_id_bytes: args.member_id_bytes,
    };
    let plan = plan(&params, &input);
    match args.output {
        Output::Json => print_pretty_json(&plan)?,
        Output::Human => println!("{plan}"),
    }
    Ok(ExitCode::SUCCESS)
}
