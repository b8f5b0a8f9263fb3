//! `pointflow balance`, `history`, `use` and `reverse`: one member's points,
//! through the API.

use std::process::ExitCode;

use clap::Args;
use pointflow_cli::client::api::ClientError;
use serde_json::Value;

use super::ApiArgs;
use crate::render::Output;

/// `pointflow balance`'s arguments.
#[derive(Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The member's id.
    member: String,
}

/// `pointflow history`'s arguments.
#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The member's id.
    member: String,
    /// Only this point type.
    #[arg(long)]
    point_type: Option<String>,
    /// Entries per page (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Start after this cursor (a page's next_cursor).
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow the cursors to the oldest entry.
    #[arg(long)]
    all: bool,
}

/// `pointflow use`'s arguments.
#[derive(Args)]
pub struct UseArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The member whose points are used.
    member: String,
    /// Idempotency id of this deduction, e.g. the order number.
    #[arg(long)]
    use_id: String,
    /// The point type to deduct from.
    #[arg(long)]
    point_type: String,
    /// Points to deduct (a positive whole number).
    #[arg(long)]
    amount: u64,
    /// Why, recorded with the use and shown in the history.
    #[arg(long)]
    reason: Option<String>,
}

/// `pointflow reverse`'s arguments.
#[derive(Args)]
pub struct ReverseArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The accrual to cancel.
    #[arg(long, conflicts_with = "use_id", required_unless_present = "use_id")]
    accrual_id: Option<String>,
    /// The use to cancel (its points go back).
    #[arg(long)]
    use_id: Option<String>,
    /// Why, recorded with the reversal and shown in the history.
    #[arg(long)]
    reason: Option<String>,
}

/// Prints the member's balance of every point type.
pub async fn balance(args: BalanceArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client().await?;
    let balances = client.balances(&args.member).await?;
    match args.api.output {
        Output::Json => println!("{balances}"),
        Output::Human => {
            if let Some(map) = balances.get("balances").and_then(|b| b.as_object()) {
                for (point_type, balance) in map {
                    let detail = &balances["details"][point_type];
                    let figure = |name: &str| detail[name].as_u64().unwrap_or(0);
                    println!(
                        "{point_type:<32} {balance:>12} available  {:>10} pending  {:>10} expiring soon  {:>10} expired",
                        figure("pending"),
                        figure("expiring_soon"),
                        figure("expired")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one page of the member's history, or with `--all` every page.
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let HistoryArgs {
        api,
        member,
        point_type,
        limit,
        mut cursor,
        all,
    } = args;
    let client = api.client().await?;
    loop {
        let page = client
            .history(&member, point_type.as_deref(), Some(limit), cursor.as_deref())
            .await?;
        let next = page["next_cursor"].as_str().map(str::to_owned);
        match api.output {
            Output::Json => println!("{page}"),
            Output::Human => {
                print_history_page(&page);
                if let (Some(next), false) = (&next, all) {
                    println!("more: pointflow history {member} --cursor {next}");
                }
            }
        }
        match next {
            Some(next) if all => cursor = Some(next),
            _ => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per entry of a history page, for people.
fn print_history_page(page: &Value) {
    for entry in page["entries"].as_array().into_iter().flatten() {
        let text = |name: &str| entry[name].as_str().unwrap_or_default();
        let kind = match text("reverses") {
            "" => text("kind").to_owned(),
            target => format!("reversal of {target}"),
        };
        println!(
            "{:<30} {kind:<20} {:>12} {:<16} {}{}",
            text("at"),
            entry["amount"].as_i64().unwrap_or(0),
            text("point_type"),
            text("id"),
            match text("job_id") {
                "" => String::new(),
                job => format!("  (job {job})"),
            }
        );
    }
}

/// Deducts points once per use id; exit status 3 when the API refuses.
pub async fn use_points(args: UseArgs) -> anyhow::Result<ExitCode> {
    let UseArgs {
        api,
        member,
        use_id,
        point_type,
        amount,
        reason,
    } = args;
    let client = api.client().await?;
    let mut body = serde_json::json!({ "use_id": use_id, "point_type": point_type, "amount": amount });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    match client.use_points(&member, &body).await {
        Ok((record, replayed)) => {
            match api.output {
                Output::Json => println!("{record}"),
                Output::Human => println!(
                    "{} {} {} points of member {member} (use {use_id}, at {})",
                    if replayed { "already deducted:" } else { "deducted" },
                    record["amount"],
                    record["point_type"].as_str().unwrap_or_default(),
                    record["applied_at"].as_str().unwrap_or_default()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => refusal_exit(error, api.output),
    }
}

/// Cancels one accrual or one use; exit status 3 when the API refuses.
pub async fn reverse(args: ReverseArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client().await?;
    let mut body = match (&args.accrual_id, &args.use_id) {
        (Some(id), _) => serde_json::json!({ "accrual_id": id }),
        (None, Some(id)) => serde_json::json!({ "use_id": id }),
        (None, None) => anyhow::bail!("give --accrual-id or --use-id"),
    };
    if let Some(reason) = args.reason {
        body["reason"] = reason.into();
    }
    match client.reverse(&body).await {
        Ok((record, replayed)) => {
            match args.api.output {
                Output::Json => println!("{record}"),
                Output::Human => println!(
                    "{} {} {} ({} {} points of member {})",
                    if replayed { "already reversed:" } else { "reversed" },
                    record["kind"].as_str().unwrap_or_default(),
                    record["id"].as_str().unwrap_or_default(),
                    record["amount"],
                    record["point_type"].as_str().unwrap_or_default(),
                    record["member_id"].as_str().unwrap_or_default()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => refusal_exit(error, args.api.output),
    }
}

/// A refusal (4xx) is exit status 3 with the API's words; anything else an error.
fn refusal_exit(error: ClientError, output: Output) -> anyhow::Result<ExitCode> {
    match &error {
        ClientError::Refused { body, .. } => {
            match output {
                Output::Json => println!("{body}"),
                Output::Human => eprintln!("refused: {error}"),
            }
            Ok(ExitCode::from(3))
        }
        _ => Err(error.into()),
    }
}
