//! `pointflow local demo`: a generated campaign submitted through the local
//! HTTP API, applied by the pollers, and verified balance by balance.

use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pointflow::domain::JobId;
use pointflow::services::api::{Accepted, JobView};

use crate::backend::LocalBackend;
use crate::poller::PollerStats;

/// The campaign to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Campaign {
    pub members: usize,
    pub point_types: usize,
    /// Accruals per member and point type.
    pub repeats: usize,
    /// Names the campaign's members and idempotency keys: the same seed is the
    /// same campaign, so a re-run must credit nothing.
    pub seed: u64,
    /// Accruals per request (at most the API's item limit).
    pub chunk: usize,
}

impl Campaign {
    pub fn len(&self) -> usize {
        self.members * self.point_types * self.repeats
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn chunks(&self) -> usize {
        self.len().div_ceil(self.chunk.max(1))
    }

    pub fn member_id(&self, member: usize) -> String {
        format!("demo{}-m{member:07}", self.seed)
    }

    pub fn point_type(&self, point_type: usize) -> String {
        format!("PT{point_type}")
    }

    fn amount(&self, member: usize, point_type: usize, repeat: usize) -> u64 {
        1 + ((member * 7 + point_type * 13 + repeat * 3) % 100) as u64
    }

    /// What the member's balance of this point type must be afterwards.
    pub fn expected_balance(&self, member: usize, point_type: usize) -> u64 {
        (0..self.repeats).map(|r| self.amount(member, point_type, r)).sum()
    }

    /// The request key of chunk `c`.
    pub fn key(&self, c: usize) -> String {
        format!(
            "demo-{}-{}x{}x{}-chunk-{c}",
            self.seed, self.members, self.point_types, self.repeats
        )
    }

    /// The JSON body of chunk `c`, written directly (a million items through
    /// `serde_json::Value` would cost more than the API call).
    pub fn body(&self, c: usize) -> String {
        let start = c * self.chunk;
        let end = (start + self.chunk).min(self.len());
        let mut body = String::with_capacity((end - start) * 90 + 16);
        body.push_str("{\"accruals\":[");
        for k in start..end {
            let repeat = k % self.repeats;
            let point_type = (k / self.repeats) % self.point_types;
            let member = k / (self.repeats * self.point_types);
            if k > start {
                body.push(',');
            }
            let _ = write!(
                body,
                "{{\"member_id\":\"{}\",\"point_type\":\"{}\",\"amount\":{},\"reason\":\"demo\"}}",
                self.member_id(member),
                self.point_type(point_type),
                self.amount(member, point_type, repeat)
            );
        }
        body.push_str("]}");
        body
    }
}

/// What the demo did and found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoReport {
    pub accruals: u64,
    pub requests: usize,
    /// Requests answered as idempotent replays of an earlier run.
    pub replayed_requests: usize,
    pub messages: u64,
    pub applied: u64,
    pub duplicate: u64,
    pub failed: u64,
    pub wall: Duration,
    /// Time until every request was answered (accepted and queued).
    pub submitted_after: Duration,
    pub store_requests: u64,
    pub queue_requests: u64,
    pub invocations: u64,
    pub max_in_flight: usize,
    pub balances_checked: usize,
    pub balance_mismatches: usize,
    pub peak_rss_kib: Option<u64>,
}

impl DemoReport {
    /// Every check passed.
    pub fn ok(&self) -> bool {
        self.balance_mismatches == 0 && self.failed == 0 && self.applied + self.duplicate == self.accruals
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.wall.as_secs_f64();
        writeln!(f, "accruals          {}", self.accruals)?;
        writeln!(
            f,
            "wall time         {secs:.2} s (all requests queued after {:.2} s)",
            self.submitted_after.as_secs_f64()
        )?;
        writeln!(
            f,
            "throughput        {:.0} accruals/s",
            self.accruals as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "requests          {} ({} replayed from an earlier run)",
            self.requests, self.replayed_requests
        )?;
        writeln!(f, "messages          {}", self.messages)?;
        writeln!(f, "applied           {}", self.applied)?;
        writeln!(f, "duplicates        {}", self.duplicate)?;
        writeln!(f, "failed            {}", self.failed)?;
        writeln!(
            f,
            "store operations  {} ({:.4} per accrual)",
            self.store_requests,
            self.store_requests as f64 / self.accruals.max(1) as f64
        )?;
        writeln!(f, "queue operations  {}", self.queue_requests)?;
        writeln!(
            f,
            "worker invocations {} (at most {} at once)",
            self.invocations, self.max_in_flight
        )?;
        writeln!(
            f,
            "balances checked  {} ({} wrong)",
            self.balances_checked, self.balance_mismatches
        )?;
        if let Some(kib) = self.peak_rss_kib {
            writeln!(f, "peak RSS          {:.1} MiB", kib as f64 / 1024.0)?;
        }
        if self.replayed_requests == self.requests && self.requests > 0 {
            writeln!(
                f,
                "re-run            every request was a replay of an earlier run: nothing was credited twice"
            )?;
        }
        write!(f, "result            {}", if self.ok() { "OK" } else { "FAILED" })
    }
}

/// Peak resident set size of this process (Linux), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Submits the campaign to `base_url`, waits for every job to complete,
/// verifies the balances and reports.
pub async fn run_demo(
    base_url: &str,
    backend: &LocalBackend,
    stats: &PollerStats,
    campaign: Campaign,
    submitters: usize,
    progress: bool,
    timeout: Duration,
) -> anyhow::Result<DemoReport> {
    if campaign.is_empty() {
        bail!("the campaign is empty: --members, --point-types and --repeats must be at least 1");
    }
    let client = reqwest::Client::builder().build()?;
    let started = Instant::now();
    let store_before = (backend.store_requests)();
    let queue_before = backend.queue.requests();
    let invocations_before = stats.invocations.load(std::sync::atomic::Ordering::Relaxed);

    let bar = ProgressBar::with_draw_target(
        Some(campaign.len() as u64),
        if progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} accruals settled ({per_sec}) {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message("submitting");

    let submissions: Vec<(Accepted, bool)> = stream::iter(0..campaign.chunks())
        .map(|c| submit(&client, base_url, campaign, c))
        .buffer_unordered(submitters.max(1))
        .try_collect()
        .await?;
    bar.set_message("applying");
    let submitted_after = started.elapsed();

    let mut report = DemoReport {
        accruals: campaign.len() as u64,
        requests: submissions.len(),
        replayed_requests: submissions.iter().filter(|(_, replayed)| *replayed).count(),
        messages: submissions.iter().map(|(a, _)| a.messages).sum(),
        ..DemoReport::default()
    };
    let deadline = Instant::now() + timeout;
    let jobs = loop {
        let jobs: Vec<JobView> = stream::iter(&submissions)
            .map(|(accepted, _)| get_job(&client, base_url, accepted.job_id))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let settled: u64 = jobs.iter().map(|j| j.applied + j.duplicate + j.failed).sum();
        bar.set_position(settled);
        if jobs.iter().all(|j| j.completed_at.is_some()) {
            break jobs;
        }
        if Instant::now() > deadline {
            bar.abandon_with_message("timed out");
            bail!(
                "timed out after {timeout:?} with {settled} of {} accruals settled",
                campaign.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.wall = started.elapsed();
    report.submitted_after = submitted_after;
    bar.finish_with_message("done");
    report.applied = jobs.iter().map(|j| j.applied).sum();
    report.duplicate = jobs.iter().map(|j| j.duplicate).sum();
    report.failed = jobs.iter().map(|j| j.failed).sum();
    report.store_requests = (backend.store_requests)() - store_before;
    report.queue_requests = backend.queue.requests() - queue_before;
    report.invocations = stats.invocations.load(std::sync::atomic::Ordering::Relaxed) - invocations_before;
    report.max_in_flight = stats.max_in_flight();

    let (checked, wrong) = verify_balances(&client, base_url, backend, campaign).await?;
    report.balances_checked = checked;
    report.balance_mismatches = wrong;
    report.peak_rss_kib = peak_rss_kib();
    Ok(report)
}

async fn submit(
    client: &reqwest::Client,
    base_url: &str,
    campaign: Campaign,
    c: usize,
) -> anyhow::Result<(Accepted, bool)> {
    // Shared, not copied, by each attempt.
    let body = axum::body::Bytes::from(campaign.body(c));
    let mut attempt = 0;
    loop {
        let response = client
            .post(format!("{base_url}/v1/jobs"))
            .header("content-type", "application/json")
            .header("idempotency-key", campaign.key(c))
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("submitting chunk {c}"))?;
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        if status.as_u16() == 202 {
            return Ok((response.json().await?, replayed));
        }
        let text = response.text().await.unwrap_or_default();
        // 503: queueing failed partway; the same key finishes it.
        if status.as_u16() == 503 && attempt < 5 {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            continue;
        }
        bail!("chunk {c} was refused with {status}: {text}");
    }
}

async fn get_job(client: &reqwest::Client, base_url: &str, job_id: JobId) -> anyhow::Result<JobView> {
    let response = client.get(format!("{base_url}/v1/jobs/{job_id}")).send().await?;
    if !response.status().is_success() {
        bail!("GET job {job_id}: {}", response.status());
    }
    Ok(response.json().await?)
}

/// The balances of a campaign as the store lists them, counted rather than
/// collected: a million-member check holds no map. Balances are unique per
/// (member, point type), so those found right, those found at all and those
/// outside the campaign say everything.
#[derive(Debug)]
struct BalanceTally {
    campaign: Campaign,
    /// The campaign's member ids start with it.
    prefix: String,
    right: usize,
    found: usize,
    foreign: usize,
}

impl BalanceTally {
    fn new(campaign: Campaign) -> Self {
        Self {
            campaign,
            prefix: format!("demo{}-m", campaign.seed),
            right: 0,
            found: 0,
            foreign: 0,
        }
    }

    /// Counts one balance; balances of other campaigns are ignored.
    fn see(&mut self, member: &str, point_type: &str, balance: u64) {
        let campaign = self.campaign;
        let Some(m) = member.strip_prefix(&self.prefix).and_then(|m| m.parse::<usize>().ok()) else {
            return;
        };
        let Some(t) = point_type.strip_prefix("PT").and_then(|t| t.parse::<usize>().ok()) else {
            return;
        };
        if m >= campaign.members || t >= campaign.point_types {
            self.foreign += 1;
            return;
        }
        self.found += 1;
        if balance == campaign.expected_balance(m, t) {
            self.right += 1;
        }
    }

    /// Balances missing, wrong, or of this campaign's members that it never sent.
    fn wrong(&self) -> usize {
        let expected = self.campaign.members * self.campaign.point_types;
        expected.saturating_sub(self.found) + (self.found - self.right) + self.foreign
    }
}

/// Every balance on the embedded backend (one query); a sample through the
/// API otherwise. Returns (checked, wrong).
async fn verify_balances(
    client: &reqwest::Client,
    base_url: &str,
    backend: &LocalBackend,
    campaign: Campaign,
) -> anyhow::Result<(usize, usize)> {
    if let Some(store) = &backend.embedded {
        let mut tally = BalanceTally::new(campaign);
        store.for_each_balance(|member, point_type, balance| tally.see(member, point_type, balance))?;
        let expected = campaign.members * campaign.point_types;
        let wrong = tally.wrong();
        return Ok((expected, wrong));
    }
    let step = (campaign.members / 200).max(1);
    let mut checked = 0;
    let mut wrong = 0;
    for m in (0..campaign.members).step_by(step) {
        let url = format!("{base_url}/v1/members/{}/balances", campaign.member_id(m));
        let body: serde_json::Value = client.get(url).send().await?.json().await?;
        for t in 0..campaign.point_types {
            checked += 1;
            if body["balances"][campaign.point_type(t)].as_u64() != Some(campaign.expected_balance(m, t)) {
                wrong += 1;
            }
        }
    }
    Ok((checked, wrong))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_campaign_once_and_parse() {
        let c = Campaign {
            members: 7,
            point_types: 2,
            repeats: 3,
            seed: 1,
            chunk: 10,
        };
        assert_eq!(c.len(), 42);
        assert_eq!(c.chunks(), 5);
        let mut per_balance: std::collections::HashMap<(String, String), u64> = Default::default();
        let mut items = 0;
        for chunk in 0..c.chunks() {
            let body: serde_json::Value = serde_json::from_str(&c.body(chunk)).unwrap();
            for item in body["accruals"].as_array().unwrap() {
                items += 1;
                *per_balance
                    .entry((
                        item["member_id"].as_str().unwrap().into(),
                        item["point_type"].as_str().unwrap().into(),
                    ))
                    .or_default() += item["amount"].as_u64().unwrap();
            }
        }
        assert_eq!(items, 42);
        for m in 0..7 {
            for t in 0..2 {
                assert_eq!(
                    per_balance[&(c.member_id(m), c.point_type(t))],
                    c.expected_balance(m, t)
                );
            }
        }
    }

    #[test]
    fn the_balance_tally_counts_missing_wrong_and_foreign_balances() {
        let c = Campaign {
            members: 3,
            point_types: 2,
            repeats: 1,
            seed: 4,
            chunk: 10,
        };
        let mut all_right = BalanceTally::new(c);
        for m in 0..3 {
            for t in 0..2 {
                all_right.see(&c.member_id(m), &c.point_type(t), c.expected_balance(m, t));
            }
        }
        // Another campaign's balances are not this one's business.
        all_right.see("demo5-m0000000", "PT0", 1);
        assert_eq!(all_right.wrong(), 0);

        let mut tally = BalanceTally::new(c);
        tally.see(&c.member_id(0), "PT0", c.expected_balance(0, 0));
        tally.see(&c.member_id(0), "PT1", c.expected_balance(0, 1) + 1); // wrong
        tally.see(&c.member_id(1), "PT0", c.expected_balance(1, 0));
        tally.see(&c.member_id(7), "PT0", 5); // a member the campaign never sent
                                              // (1, PT1), (2, PT0) and (2, PT1) are missing.
        assert_eq!(tally.wrong(), 1 + 1 + 3);
    }
}
