//! One campaign through the operator console of `pointflow local serve`
//! (embedded backend, a temporary database), as an operator does it:
//! submit a file with a bad line, watch its job complete, read its error
//! report, submit a second file scheduled days ahead and cancel its job
//! through the confirmation dialog, look up a member's balance, and redrive
//! the dead-letter queue. Every assertion is on what the page shows (the
//! hooks of the console's page contract, docs/console.md).

use std::path::Path;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::key::Key;
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::{Accrual, JobId, MessageCounts, NewJob};
use pointflow_cli::backend::{BackendChoice, LocalBackend};
use pointflow_cli::exposure::Exposure;
use pointflow_cli::runner::Runner;
use pointflow_cli::settings::StackSettings;
use pointflow_tests::import::TempDir;
use time::format_description::well_known::Rfc3339;
use time::macros::offset;
use time::{OffsetDateTime, UtcOffset};

use crate::harness::{Browser, StepResult};

/// Two good rows and, on line 4, a member id with a space.
const WELCOME_CSV: &str = "member_id,point_type,amount,reason\n\
                           m-1,WELCOME,2000,welcome\n\
                           m-2,WELCOME,1500,welcome\n\
                           bad id,WELCOME,5,welcome\n";
/// The bad line of [`WELCOME_CSV`] as the operator counts lines (header = 1).
const BAD_LINE: &str = "4";
const CANCEL_REASON: &str = "sent by mistake";
/// The browser's time zone: 5 h 30 ahead of UTC all year (no daylight
/// saving), so its times differ from the machine's in any season.
const VIEWER_ZONE: &str = "Asia/Kolkata";
const VIEWER_OFFSET: UtcOffset = offset!(+5:30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_campaign_through_the_console() {
    let Some(mut browser) = Browser::start("console").await else {
        return;
    };
    pointflow_tests::init_logging();
    let dir = TempDir::new("pointflow-browser");
    let settings = StackSettings::from_template().unwrap();
    let choice = BackendChoice::Embedded {
        db: dir.0.join("local.db"),
        bucket_dir: dir.0.join("bucket"),
    };
    let backend = LocalBackend::open(&choice, &settings).await.unwrap();
    let runner = Runner::start_serving(
        &backend,
        &settings,
        "127.0.0.1:0".parse().unwrap(),
        settings.worker_pollers(Duration::from_millis(100)),
        Exposure::LoopbackOnly,
        true,
    )
    .await
    .unwrap();
    let dead = seed_dead_letters(&backend).await;
    let base = runner.base_url();
    let result = campaign(&mut browser, &base, &dir.0, &dead).await;
    let cancelled = result.as_ref().ok().cloned();
    browser.finish(result.map(drop)).await;
    // The reason typed into the dialog reached the API's cancel.
    if let Some(job_id) = cancelled {
        let job: serde_json::Value = reqwest::get(format!("{base}/v1/jobs/{job_id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["cancel"]["audit"]["reason"], CANCEL_REASON, "{job}");
    }
    runner.stop().await.unwrap();
}

/// Runs the campaign; returns the id of the job it cancelled.
async fn campaign(browser: &mut Browser, base: &str, dir: &Path, dead: &str) -> StepResult<String> {
    let welcome = dir.join("welcome.csv");
    std::fs::write(&welcome, WELCOME_CSV).map_err(|e| e.to_string())?;
    // Days ahead: its points stay pending, and its job cancellable.
    let apply_at = (OffsetDateTime::now_utc() + time::Duration::days(5))
        .format(&Rfc3339)
        .map_err(|e| e.to_string())?;
    let later = dir.join("later.csv");
    std::fs::write(
        &later,
        format!("member_id,point_type,amount,apply_at\nm-1,BONUS,500,{apply_at}\n"),
    )
    .map_err(|e| e.to_string())?;

    // Submit the file through the form, in a browser whose time zone is
    // not the machine's (UTC on CI): times must show in the viewer's zone.
    browser.set_time_zone(VIEWER_ZONE).await?;
    browser.goto(&format!("{base}/console/#/submit")).await?;
    let first = submit(browser, &welcome, None).await?;
    browser.step_done("submitted").await?;

    // The jobs list shows it, and its status reaches the end.
    browser.click("#nav-jobs").await?;
    let row = format!("#jobs-table tr[data-job-id=\"{first}\"]");
    browser
        .wait_text_is(&format!("{row} td[data-field=status]"), "completed_with_errors")
        .await?;
    browser
        .wait_text_is(&format!("{row} td[data-field=applied]"), "2")
        .await?;
    browser
        .wait_text_is(&format!("{row} td[data-field=rejected]"), "1")
        .await?;
    let created = created_at(base, &first).await?;
    browser
        .wait_text(
            &format!("{row} td[data-field=created]"),
            &format!("{:?} (created {created}, in {VIEWER_ZONE})", in_viewer_zone(created)),
            |t| same_text(t, &in_viewer_zone(created)),
        )
        .await?;
    let progress = browser.find(&format!("{row} td[data-field=progress] progress")).await?;
    let (value, max) = (
        number(browser, &progress, "value").await?,
        number(browser, &progress, "max").await?,
    );
    if value != max || max < 1.0 {
        return Err(format!("a finished job's progress bar shows {value} of {max}"));
    }
    browser.step_done("jobs-list").await?;

    // Its detail names the bad line and field.
    browser.click(&format!("{row} a[href=\"#/jobs/{first}\"]")).await?;
    let detail = format!("section#job-detail[data-job-id=\"{first}\"]");
    browser
        .wait_text_is(&format!("{detail} [data-field=status]"), "completed_with_errors")
        .await?;
    let bad = format!("#job-report-table tr[data-line=\"{BAD_LINE}\"]");
    browser
        .wait_text_is(&format!("{bad} td:nth-child(1)"), BAD_LINE)
        .await?;
    browser
        .wait_text_is(&format!("{bad} td:nth-child(2)"), "member_id")
        .await?;
    browser
        .wait_text(&format!("{bad} td:nth-child(3)"), "a message naming the space", |t| {
            t.contains("' '")
        })
        .await?;
    browser.step_done("error-report").await?;

    // A second file, scheduled days ahead, in a campaign of its own.
    browser.click("#nav-submit").await?;
    let second = submit(browser, &later, Some("spring-bonus")).await?;
    browser
        .click(&format!("#submit-result a[data-job-id=\"{second}\"]"))
        .await?;
    let detail = format!("section#job-detail[data-job-id=\"{second}\"]");
    browser
        .wait_text_is(&format!("{detail} [data-field=status]"), "completed")
        .await?;
    browser.step_done("scheduled-job").await?;

    // Cancel it through the dialog, with the keyboard only once it is open:
    // the focus is in the dialog, on the reason.
    browser.click("#cancel-job").await?;
    browser.find("dialog#confirm-cancel[open]").await?;
    let focused = browser.focused_id().await?;
    if focused != "cancel-reason" {
        return Err(format!(
            "the cancel dialog opened with the focus on {focused:?}, not its reason"
        ));
    }
    browser.keys(CANCEL_REASON).await?;
    browser.step_done("cancel-dialog").await?;
    browser.tab_to("confirm-cancel-yes", 3).await?;
    browser.press(Key::Enter).await?;
    browser
        .wait_text_is(&format!("{detail} [data-field=status]"), "cancelled")
        .await?;
    // The detail shows the reason given in the dialog and the one accrual taken back.
    browser
        .wait_text(
            &format!("{detail} [data-field=cancel]"),
            "the reason and 1 reversed",
            |t| t.contains(&format!("(\"{CANCEL_REASON}\")")) && t.contains("; 1 reversed,"),
        )
        .await?;
    browser.step_done("cancelled").await?;

    // Look a member up, by keyboard: Tab from the page's heading to the
    // member field, type, Enter.
    browser.click("#nav-members").await?;
    browser.find("form#member-form").await?;
    browser.tab_to("member-id", 10).await?;
    browser.keys("m-1").await?;
    browser.press(Key::Enter).await?;
    browser
        .wait_text_is(
            "#balances-table tr[data-point-type=\"WELCOME\"] [data-field=available]",
            "2,000",
        )
        .await?;
    // The cancel took the scheduled points back: none pending, and the
    // newest history entry is the reversal.
    browser
        .wait_text_is(
            "#balances-table tr[data-point-type=\"BONUS\"] [data-field=pending]",
            "0",
        )
        .await?;
    browser
        .wait_text(
            "#history-table tbody tr:first-child td:nth-child(2)",
            "the cancel's reversal first",
            |t| t.starts_with("reversal"),
        )
        .await?;
    browser.step_done("member").await?;

    // The dead-letter queue shows the seeded job's two messages; a redrive
    // confirmed in its dialog empties it and the pollers apply them.
    browser.click("#nav-dlq").await?;
    browser.wait_text_is("#dlq-count", "2").await?;
    let dead_row = format!("#dlq-table tr[data-job-id=\"{dead}\"]");
    browser
        .wait_text_is(&format!("{dead_row} td:nth-child(2)"), "2")
        .await?;
    browser
        .wait_text_is(&format!("{dead_row} td:nth-child(3)"), "3")
        .await?;
    browser.step_done("dlq").await?;
    browser.click("#dlq-redrive").await?;
    browser.find("dialog#confirm-redrive[open]").await?;
    browser.click("#confirm-redrive-yes").await?;
    browser
        .wait_text("#dlq-result", "what was redriven", |t| t.starts_with("Redrove 2 "))
        .await?;
    browser.wait_text_is("#dlq-count", "0").await?;
    browser.step_done("dlq-redriven").await?;
    browser.goto(&format!("{base}/console/#/jobs/{dead}")).await?;
    let detail = format!("section#job-detail[data-job-id=\"{dead}\"]");
    browser
        .wait_text_is(&format!("{detail} [data-field=applied]"), "3")
        .await?;
    browser
        .wait_text_is(&format!("{detail} [data-field=failed]"), "0")
        .await?;
    browser
        .wait_text_is(&format!("{detail} [data-field=status]"), "completed")
        .await?;
    browser.step_done("dlq-job-applied").await?;
    Ok(second)
}

/// The job's creation time, from the API.
async fn created_at(base: &str, job_id: &str) -> StepResult<OffsetDateTime> {
    let job: serde_json::Value = reqwest::get(format!("{base}/v1/jobs/{job_id}"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET job {job_id}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("job {job_id}: {e}"))?;
    let created = job["created_at"].as_str().unwrap_or_default();
    OffsetDateTime::parse(created, &Rfc3339).map_err(|e| format!("created_at {created:?}: {e}"))
}

/// `at` as `Date.prototype.toLocaleString()` shows it in `en-US` in the
/// viewer's zone: `12/7/2026, 12:30:35 PM`.
fn in_viewer_zone(at: OffsetDateTime) -> String {
    let at = at.to_offset(VIEWER_OFFSET);
    let (hour, half) = match at.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{}, {hour}:{:02}:{:02} {half}",
        u8::from(at.month()),
        at.day(),
        at.year(),
        at.minute(),
        at.second()
    )
}

/// Equal but for the kind of space (newer ICU puts a narrow no-break space
/// before AM/PM).
fn same_text(shown: &str, expected: &str) -> bool {
    shown.replace(['\u{202f}', '\u{a0}'], " ") == expected
}

/// A job whose two messages (three accruals) were dead-lettered and
/// counted failed, as the worker leaves them; returns its id.
async fn seed_dead_letters(backend: &LocalBackend) -> String {
    let job_id = JobId::random();
    let now = OffsetDateTime::now_utc();
    backend
        .jobs
        .create_job(&NewJob {
            job_id,
            request_hash: "browser-dlq".into(),
            total: 3,
            deduplicated: 0,
            messages: 2,
            source: None,
            reading: false,
            created_at: now,
            audit: None,
        })
        .await
        .unwrap();
    let accrual = |id: &str| Accrual {
        accrual_id: id.into(),
        member_id: "m-dlq".into(),
        point_type: "WELCOME".into(),
        amount: 5,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    let bodies = [
        QueueMessage::new(job_id, 0, Payload::Accruals(vec![accrual("d-1"), accrual("d-2")])).encode(),
        QueueMessage::new(job_id, 1, Payload::Accruals(vec![accrual("d-3")])).encode(),
    ];
    backend.dlq.send_messages(&bodies).await.unwrap();
    for (seq, failed) in [(0, 2), (1, 1)] {
        let counts = MessageCounts {
            failed,
            ..Default::default()
        };
        backend.jobs.fold_message(job_id, seq, counts, &[], now).await.unwrap();
    }
    job_id.to_string()
}

/// Submits `file` through the submit form and returns the job id the page
/// links to.
async fn submit(browser: &mut Browser, file: &Path, campaign: Option<&str>) -> StepResult<String> {
    let input = browser.find("form#submit-form input#submit-file[type=file]").await?;
    // A file input takes the file's path as typed text (WebDriver).
    input
        .send_keys(&file.display().to_string())
        .await
        .map_err(|e| format!("choosing {}: {e}", file.display()))?;
    if let Some(campaign) = campaign {
        browser.type_into("#submit-campaign", campaign).await?;
    }
    browser.click("#submit-button").await?;
    let link = browser.find("#submit-result a[data-job-id]").await?;
    link.attr("data-job-id")
        .await
        .map_err(|e| format!("the submitted job's link: {e}"))?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "the submitted job's link has no data-job-id".to_owned())
}

/// The number the DOM property `name` of `element` holds.
async fn number(browser: &Browser, element: &Element, name: &str) -> StepResult<f64> {
    let arg = serde_json::to_value(element).map_err(|e| e.to_string())?;
    let value = browser
        .client
        .execute("return arguments[0][arguments[1]];", vec![arg, name.into()])
        .await
        .map_err(|e| format!("property {name}: {e}"))?;
    value
        .as_f64()
        .ok_or_else(|| format!("property {name} is {value}, not a number"))
}
