//! Open-loop load: webhooks are sent on a fixed schedule whether or not earlier ones
//! were answered (no coordinated omission: latency counts from the scheduled time). At a
//! fixed rate, or in ramp mode in steps of increasing rate until the fleet stops keeping
//! up. Completion is followed live through the mock upstream's count of final calls, so
//! the fleet is not queried under load; at the end every accepted run is accounted for
//! from the fleet's own run records, and a sample of runs is read in full for the step
//! overhead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::monitor::{Counters, Monitor, mock_stats};
use crate::profile::Profile;
use crate::report::{Meta, PhasePlan, PhaseReport, Report, RunDetail, RunRecord, Sample, Verdict};
use crate::spawn::{Fleet, SpawnArgs};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The gateway's API (without --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// The fleet's admin token, which creates the load test's workspace (without --spawn).
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The mock upstream the scenario calls, a `weft-loadtest mock` (without --spawn).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    upstream: String,
    /// Worker metrics addresses to read `weft_tasks_in_flight` from (without --spawn;
    /// repeatable), e.g. `http://127.0.0.1:9103`.
    #[arg(long)]
    worker_metrics: Vec<String>,
    #[arg(long, value_enum, default_value = "chain4")]
    profile: Profile,
    /// Webhooks per second (with --ramp: of the first step).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long to offer load (without --ramp).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to wait for accepted runs to finish after the load stops.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Find the highest sustainable rate: steps of increasing rate, stopping at the first
    /// step the fleet did not keep up with (runs left unfinished, refused webhooks, or
    /// failed runs).
    #[arg(long)]
    ramp: bool,
    /// Rate added at each ramp step (default: --rate).
    #[arg(long)]
    ramp_step: Option<f64>,
    /// Length of each ramp step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step_duration: Duration,
    /// Most ramp steps.
    #[arg(long, default_value_t = 40)]
    max_steps: usize,
    /// A ramp step is kept up with when, at its end, no more than this much of its load
    /// is still unfinished (must exceed the profile's own run time).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ramp_lag: Duration,
    /// How long a ramp step's runs may take to finish after the step before the ramp stops.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ramp_grace: Duration,
    /// Completed runs per phase read in full for the step overhead.
    #[arg(long, default_value_t = 200)]
    detail_runs: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    out: PathBuf,
    /// Where to write the HTML report (default: --out with `.html`).
    #[arg(long)]
    html: Option<PathBuf>,
    /// The CI check: chain4 at 5 webhooks/s for 10 s; fails unless every accepted run
    /// completed and both reports were written and the JSON reads back.
    #[arg(long)]
    smoke: bool,
    #[command(flatten)]
    spawn: SpawnArgs,
}

/// The fleet under load, however it came to be.
struct Target {
    api: String,
    admin_token: String,
    upstream: String,
    worker_metrics: Vec<String>,
    pids: Vec<(u32, String)>,
}

/// The load test's workspace and scenario on the fleet under load.
struct Session<'a> {
    client: reqwest::Client,
    target: &'a Target,
    key: String,
    scenario_id: String,
}

impl Session<'_> {
    /// The mock upstream's count of final calls.
    async fn final_calls(&self) -> anyhow::Result<u64> {
        Ok(mock_stats(&self.client, &self.target.upstream).await?.last)
    }
}

pub async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.profile = Profile::Chain4;
        args.rate = 5.0;
        args.duration = Duration::from_secs(10);
        args.drain = Duration::from_secs(60);
        args.ramp = false;
        args.detail_runs = args.detail_runs.min(20);
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be above zero");
    }
    if args
        .ramp_step
        .is_some_and(|step| step.is_nan() || step <= 0.0)
    {
        bail!("--ramp-step must be above zero");
    }
    let html = args
        .html
        .clone()
        .unwrap_or_else(|| args.out.with_extension("html"));

    let mut fleet = None;
    let target = if args.spawn.spawn {
        eprintln!(
            "starting a fleet: 1 gateway, {} scheduler(s), {} worker(s), mock upstream (logs in {})",
            args.spawn.schedulers,
            args.spawn.workers,
            args.spawn.logs.display()
        );
        let started = Fleet::start(&args.spawn, interrupted()).await?;
        eprintln!(
            "fleet ready ({} build, namespace {}), API {}",
            started.build_profile(),
            started.namespace,
            started.api
        );
        let target = Target {
            api: started.api.clone(),
            admin_token: started.admin_token.clone(),
            upstream: started.upstream.clone(),
            worker_metrics: started.worker_metrics.clone(),
            pids: started.pids(),
        };
        fleet = Some(started);
        target
    } else {
        Target {
            api: args.api.clone(),
            admin_token: args
                .admin_token
                .clone()
                .context("--admin-token (or WEFT_ADMIN_TOKEN) is needed without --spawn")?,
            upstream: args.upstream.clone(),
            worker_metrics: args.worker_metrics.clone(),
            pids: Vec::new(),
        }
    };
    let meta = Meta::collect(
        args.profile,
        mode(&args),
        fleet.as_ref(),
        &args.spawn,
        &target.upstream,
    );
    let outcome = tokio::select! {
        outcome = measure(&args, &target, meta) => outcome,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    if let Some(fleet) = fleet.as_mut() {
        eprintln!("stopping the fleet");
        fleet.stop().await;
    }
    let report = outcome?;
    report.print();
    write(&args.out, &serde_json::to_vec_pretty(&report.to_json())?)?;
    write(&html, crate::html::render(&report).as_bytes())?;
    eprintln!(
        "reports written to {} and {}",
        args.out.display(),
        html.display()
    );
    if args.smoke {
        smoke_check(&report, &args.out, &html)?;
        eprintln!("smoke check passed: every accepted run completed, reports readable");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (so a spawned fleet is stopped and removed either way)
/// with the signal's name.
async fn interrupted() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    }
}

fn mode(args: &RunArgs) -> &'static str {
    if args.smoke {
        "smoke"
    } else if args.ramp {
        "ramp"
    } else {
        "fixed"
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The smoke test's verdict: the accounting adds up and the reports read back.
fn smoke_check(report: &Report, json_path: &Path, html_path: &Path) -> anyhow::Result<()> {
    let total = &report.total;
    let mut problems = accounting_problems(total);
    let text = std::fs::read_to_string(json_path)
        .with_context(|| format!("reading back {}", json_path.display()))?;
    let parsed: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    if parsed["total"]["completed"].as_u64() != Some(total.completed as u64) {
        problems.push(format!(
            "{} does not hold the completed count",
            json_path.display()
        ));
    }
    let html = std::fs::read_to_string(html_path)
        .with_context(|| format!("reading back {}", html_path.display()))?;
    if !html.contains("<svg") || !html.trim_end().ends_with("</html>") {
        problems.push(format!(
            "{} is not a complete report with charts",
            html_path.display()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("smoke check failed: {}", problems.join("; "))
    }
}

/// What is wrong with a smoke test's accounting: something refused, or an accepted run
/// that did not complete.
fn accounting_problems(total: &PhaseReport) -> Vec<String> {
    let mut problems = Vec::new();
    if total.accepted == 0 {
        problems.push("no webhook was accepted".to_owned());
    }
    if total.refused > 0 {
        problems.push(format!("{} webhooks refused", total.refused));
    }
    if total.completed != total.accepted {
        problems.push(format!(
            "{} accepted but {} completed ({} failed, {} lost)",
            total.accepted, total.completed, total.failed, total.lost
        ));
    }
    problems
}

async fn measure(args: &RunArgs, target: &Target, meta: Meta) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1024)
        .build()?;
    let base_last = mock_stats(&client, &target.upstream)
        .await
        .with_context(|| {
            format!(
                "the upstream {} is not a `weft-loadtest mock` (no {})",
                target.upstream,
                crate::mock::STATS_PATH
            )
        })?
        .last;
    let key = create_workspace(&client, target).await?;
    let (scenario_id, hook) = create_scenario(&client, target, &key, args.profile).await?;
    let hook_url = format!("{}{hook}", target.api);
    let session = Session {
        client: client.clone(),
        target,
        key,
        scenario_id,
    };

    let counters = Arc::new(Counters::default());
    let monitor = Monitor::start(
        client.clone(),
        target.upstream.clone(),
        target.worker_metrics.clone(),
        target.pids.clone(),
        counters.clone(),
    );
    let start = Instant::now();
    let start_wall = Utc::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut plans: Vec<PhasePlan> = Vec::new();
    let step = args.ramp_step.unwrap_or(args.rate);
    let phases = if args.ramp { args.max_steps } else { 1 };
    for phase in 0..phases {
        let rate = args.rate + step * phase as f64;
        let duration = if args.ramp {
            args.step_duration
        } else {
            args.duration
        };
        let label = if args.ramp {
            format!("step {} at {rate}/s", phase + 1)
        } else {
            format!("{} at {rate}/s", args.profile.name())
        };
        monitor.set_stage(&label);
        let last_before = mock_stats(&client, &target.upstream).await?.last;
        let phase_start = start.elapsed();
        let offered = offer(
            &client,
            &hook_url,
            args.profile,
            phase,
            rate,
            duration,
            start,
            &counters,
        )
        .await?;
        let offered_for = start.elapsed() - phase_start;
        let accepted = offered.iter().filter(|s| s.run_id.is_some()).count();
        let refused = offered.len() - accepted;
        samples.extend(offered);
        let mut plan = PhasePlan {
            rate,
            offered_for,
            verdict: None,
        };
        if args.ramp {
            let verdict = judge_step(
                args,
                &session,
                &monitor,
                rate,
                accepted,
                refused,
                last_before,
                base_last + counters.accepted.load(Ordering::Relaxed),
            )
            .await?;
            let sustained = verdict.sustained;
            monitor.note(&format!(
                "{label}: {}",
                if sustained {
                    "kept up".to_owned()
                } else {
                    format!("stopped: {}", verdict.reason)
                }
            ));
            plan.verdict = Some(verdict);
            plans.push(plan);
            if !sustained {
                break;
            }
        } else {
            plans.push(plan);
        }
    }

    monitor.set_stage("draining");
    let accepted: Vec<&str> = samples.iter().filter_map(|s| s.run_id.as_deref()).collect();
    let runs = await_runs(&session, &accepted, base_last, args.drain, &monitor).await?;
    monitor.set_stage("reading a sample of runs");
    let details = read_details(&session, &samples, &runs, args.detail_runs, args.profile).await;
    let timeline = monitor.stop().await;
    Ok(Report::new(
        meta, start_wall, plans, &samples, &runs, &details, timeline,
    ))
}

/// Sends webhooks at `rate` for `duration` on a fixed schedule; returns once every one
/// was answered (or gave up).
#[allow(clippy::too_many_arguments)]
async fn offer(
    client: &reqwest::Client,
    hook_url: &str,
    profile: Profile,
    phase: usize,
    rate: f64,
    duration: Duration,
    start: Instant,
    counters: &Arc<Counters>,
) -> anyhow::Result<Vec<Sample>> {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let phase_start = Instant::now();
    let mut pending = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = phase_start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled).await;
        let (client, url, counters) = (client.clone(), hook_url.to_owned(), counters.clone());
        let body = profile.payload(i);
        counters.offered.fetch_add(1, Ordering::Relaxed);
        pending.push(tokio::spawn(async move {
            let response = client.post(&url).json(&body).send().await;
            let (status, run_id) = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (status, body["run_id"].as_str().map(str::to_owned))
                }
                Err(_) => (0, None),
            };
            let latency = scheduled.elapsed();
            let run_id = run_id.filter(|_| status == 202);
            if run_id.is_some() {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            Sample {
                phase,
                at: scheduled.duration_since(start),
                latency,
                status,
                run_id,
            }
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for handle in pending {
        samples.push(handle.await?);
    }
    Ok(samples)
}

/// Whether the fleet kept up with a ramp step: nothing refused, no more than
/// `--ramp-lag` of load unfinished when the step ended, everything finished within
/// `--ramp-grace` after it, and no run failed.
#[allow(clippy::too_many_arguments)]
async fn judge_step(
    args: &RunArgs,
    session: &Session<'_>,
    monitor: &Monitor,
    rate: f64,
    accepted: usize,
    refused: usize,
    last_before: u64,
    // The mock's final-call count at which every run accepted so far has ended.
    last_when_done: u64,
) -> anyhow::Result<Verdict> {
    let finished = session.final_calls().await?.saturating_sub(last_before) as usize;
    let mut verdict = step_end_verdict(rate, args.ramp_lag, accepted, refused, finished);
    if !verdict.sustained {
        return Ok(verdict);
    }
    monitor.set_stage(&format!("{rate}/s: waiting for the step's runs"));
    let deadline = Instant::now() + args.ramp_grace;
    loop {
        let last = session.final_calls().await?;
        if last >= last_when_done {
            break;
        }
        if Instant::now() >= deadline {
            verdict.sustained = false;
            verdict.reason = format!(
                "{} runs still unfinished {:?} after the step",
                last_when_done - last,
                args.ramp_grace
            );
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for status in ["failed", "timed_out"] {
        let page: Value = session
            .client
            .get(format!(
                "{}/api/v1/runs?scenario_id={}&status={status}&limit=1",
                session.target.api, session.scenario_id
            ))
            .bearer_auth(&session.key)
            .send()
            .await?
            .json()
            .await?;
        if page["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            verdict.sustained = false;
            verdict.reason = format!("runs {status}");
            return Ok(verdict);
        }
    }
    Ok(verdict)
}

/// The verdict on a ramp step when its load ends: it fails when anything was refused,
/// or when more than `lag` worth of its load is unfinished (its runs that have not made
/// their final call).
fn step_end_verdict(
    rate: f64,
    lag: Duration,
    accepted: usize,
    refused: usize,
    finished: usize,
) -> Verdict {
    let backlog = accepted.saturating_sub(finished);
    let allowed = (rate * lag.as_secs_f64()).ceil() as usize;
    let reason = if refused > 0 {
        format!("{refused} webhooks refused or unanswered")
    } else if backlog > allowed {
        format!(
            "completion fell behind: {backlog} runs unfinished when the step ended (more than {lag:?} of load, {allowed})"
        )
    } else {
        String::new()
    };
    Verdict {
        sustained: reason.is_empty(),
        reason,
        unfinished_at_end: backlog,
    }
}

async fn create_workspace(client: &reqwest::Client, target: &Target) -> anyhow::Result<String> {
    let response = client
        .post(format!("{}/api/v1/admin/workspaces", target.api))
        .bearer_auth(&target.admin_token)
        .json(&json!({"name": "loadtest"}))
        .send()
        .await
        .with_context(|| format!("creating the workspace at {}", target.api))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["api_key"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("creating the workspace answered {status}: {body}"))
}

async fn create_scenario(
    client: &reqwest::Client,
    target: &Target,
    key: &str,
    profile: Profile,
) -> anyhow::Result<(String, String)> {
    let created: Value = client
        .post(format!("{}/api/v1/scenarios", target.api))
        .bearer_auth(key)
        .json(&profile.definition(&target.upstream))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .with_context(|| format!("scenario not created: {created}"))?
        .to_owned();
    client
        .post(format!("{}/api/v1/scenarios/{id}/activate", target.api))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()
        .context("activating the scenario")?;
    let hook = created["webhook"]["path"]
        .as_str()
        .context("no webhook path")?
        .to_owned();
    Ok((id, hook))
}

/// Waits (cheaply, on the mock's count) until every accepted run made its final call,
/// then reads the scenario's runs until every accepted one is finished or the drain
/// time is up.
async fn await_runs(
    session: &Session<'_>,
    accepted: &[&str],
    base_last: u64,
    drain: Duration,
    monitor: &Monitor,
) -> anyhow::Result<HashMap<String, RunRecord>> {
    let deadline = Instant::now() + drain;
    let mut next_listing = Instant::now() + Duration::from_secs(5);
    loop {
        let last = session.final_calls().await? - base_last;
        let now = Instant::now();
        if last as usize >= accepted.len() || now >= next_listing || now >= deadline {
            let runs = list_runs(session).await?;
            let unfinished = accepted
                .iter()
                .filter(|id| runs.get(**id).is_none_or(RunRecord::unfinished))
                .count();
            if unfinished == 0 || Instant::now() >= deadline {
                return Ok(runs);
            }
            monitor.set_stage(&format!("draining: {unfinished} runs unfinished"));
            next_listing = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list_runs(session: &Session<'_>) -> anyhow::Result<HashMap<String, RunRecord>> {
    let mut runs = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/runs?scenario_id={}&limit=200",
            session.target.api, session.scenario_id
        );
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = session
            .client
            .get(&url)
            .bearer_auth(&session.key)
            .send()
            .await?
            .json()
            .await?;
        for item in page["items"]
            .as_array()
            .with_context(|| format!("runs page without items: {page}"))?
        {
            let (Some(id), Some(created_at)) =
                (item["id"].as_str(), timestamp(&item["created_at"]))
            else {
                continue;
            };
            runs.insert(
                id.to_owned(),
                RunRecord {
                    status: item["status"].as_str().unwrap_or_default().to_owned(),
                    created_at,
                    finished_at: timestamp(&item["finished_at"]),
                },
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(runs),
        }
    }
}

fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Reads up to `per_phase` completed runs of each phase in full (evenly spread over the
/// phase) and measures their hops. Runs that cannot be read are left out.
async fn read_details(
    session: &Session<'_>,
    samples: &[Sample],
    runs: &HashMap<String, RunRecord>,
    per_phase: usize,
    profile: Profile,
) -> Vec<RunDetail> {
    let phases = samples.iter().map(|s| s.phase + 1).max().unwrap_or(0);
    let mut wanted: Vec<(usize, String)> = Vec::new();
    for phase in 0..phases {
        let completed: Vec<&str> = samples
            .iter()
            .filter(|s| s.phase == phase)
            .filter_map(|s| s.run_id.as_deref())
            .filter(|id| runs.get(*id).is_some_and(|r| r.status == "completed"))
            .collect();
        wanted.extend(
            spread(completed.len(), per_phase)
                .into_iter()
                .map(|i| (phase, completed[i].to_owned())),
        );
    }
    let hops = profile.hops();
    futures_util::stream::iter(wanted)
        .map(|(phase, id)| {
            let hops = &hops;
            async move {
                let run: Value = session
                    .client
                    .get(format!("{}/api/v1/runs/{id}", session.target.api))
                    .bearer_auth(&session.key)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                Some(RunDetail::measure(phase, &run, hops))
            }
        })
        .buffer_unordered(8)
        .filter_map(|detail| async move { detail })
        .collect()
        .await
}

/// Up to `wanted` indexes evenly spread over `0..len`.
pub fn spread(len: usize, wanted: usize) -> Vec<usize> {
    if len <= wanted {
        return (0..len).collect();
    }
    (0..wanted).map(|i| i * len / wanted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_fails_on_refusals_or_more_than_the_lag_unfinished() {
        let lag = Duration::from_secs(1);
        let kept = step_end_verdict(100.0, lag, 1000, 0, 900);
        assert!(kept.sustained && kept.reason.is_empty());
        assert_eq!(kept.unfinished_at_end, 100);
        let behind = step_end_verdict(100.0, lag, 1000, 0, 899);
        assert!(!behind.sustained);
        assert!(
            behind.reason.contains("101 runs unfinished"),
            "{}",
            behind.reason
        );
        let refused = step_end_verdict(100.0, lag, 999, 1, 999);
        assert!(!refused.sustained);
        assert!(
            refused.reason.contains("1 webhooks refused"),
            "{}",
            refused.reason
        );
        // The mock may have seen final calls of earlier steps' runs: never a negative backlog.
        assert_eq!(step_end_verdict(10.0, lag, 5, 0, 9).unfinished_at_end, 0);
    }

    #[test]
    fn the_smoke_accounting_needs_every_accepted_run_completed() {
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .expect("a timestamp")
                .with_timezone(&Utc)
        };
        let record = |status: &str| RunRecord {
            status: status.to_owned(),
            created_at: at("2026-01-01T00:00:00Z"),
            finished_at: Some(at("2026-01-01T00:00:01Z")),
        };
        let sample = |id: Option<&str>, status| Sample {
            phase: 0,
            at: Duration::ZERO,
            latency: Duration::from_millis(2),
            status,
            run_id: id.map(str::to_owned),
        };
        let phase = |samples: &[Sample], runs: &HashMap<String, RunRecord>| {
            let samples: Vec<&Sample> = samples.iter().collect();
            PhaseReport::new(
                "smoke".into(),
                Some(5.0),
                Duration::from_secs(1),
                Profile::Chain4,
                &samples,
                runs,
                &[],
            )
        };
        let mut runs = HashMap::from([("a".to_owned(), record("completed"))]);
        let good = [sample(Some("a"), 202)];
        assert!(accounting_problems(&phase(&good, &runs)).is_empty());

        runs.insert("b".to_owned(), record("failed"));
        let failed = [
            sample(Some("a"), 202),
            sample(Some("b"), 202),
            sample(Some("c"), 202),
        ];
        let problems = accounting_problems(&phase(&failed, &runs));
        assert_eq!(problems, ["3 accepted but 1 completed (1 failed, 1 lost)"]);

        let refused = [sample(Some("a"), 202), sample(None, 503)];
        assert_eq!(
            accounting_problems(&phase(&refused, &runs)),
            ["1 webhooks refused"]
        );
        assert_eq!(
            accounting_problems(&phase(&[sample(None, 0)], &runs)),
            ["no webhook was accepted", "1 webhooks refused"]
        );
    }

    #[test]
    fn spread_covers_the_range_without_repeats() {
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
        let picked = spread(1000, 4);
        assert_eq!(picked, vec![0, 250, 500, 750]);
        assert!(spread(0, 5).is_empty());
    }
}
