//! Open-loop load: webhooks are sent on a fixed schedule whether or not earlier ones
//! were answered (no coordinated omission: latency counts from the scheduled time), then
//! every accepted run is accounted for from the fleet's own run records.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::profile::Profile;
use crate::report::{Report, Sample};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The gateway's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// The fleet's admin token (creates the load test's workspace).
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// The mock upstream the scenario calls (`weft-loadtest mock`).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    upstream: String,
    #[arg(long, value_enum, default_value = "chain4")]
    profile: Profile,
    /// Webhooks per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to wait for accepted runs to finish after the load stops.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    out: PathBuf,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be above zero");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()?;
    let key = create_workspace(&client, &args).await?;
    let (scenario_id, hook) = create_scenario(&client, &args, &key).await?;
    let hook_url = format!("{}{hook}", args.api);

    let total = (args.rate * args.duration.as_secs_f64()).round() as usize;
    eprintln!(
        "{total} webhooks at {}/s for {:?} ({:?})",
        args.rate, args.duration, args.profile
    );
    let start = Instant::now();
    let mut pending = Vec::with_capacity(total);
    let mut last_progress = start;
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(scheduled).await;
        let (client, url) = (client.clone(), hook_url.clone());
        pending.push(tokio::spawn(async move {
            let response = client
                .post(&url)
                .json(&json!({"phone": "555-0100", "n": i}))
                .send()
                .await;
            let latency = scheduled.elapsed();
            match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Sample {
                        latency,
                        status,
                        run_id: body["run_id"].as_str().map(str::to_owned),
                    }
                }
                Err(_) => Sample {
                    latency,
                    status: 0,
                    run_id: None,
                },
            }
        }));
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!("  offered {} in {:.0?}", i + 1, start.elapsed());
        }
    }
    let mut samples = Vec::with_capacity(total);
    for handle in pending {
        samples.push(handle.await?);
    }
    let offered_for = start.elapsed();

    let accepted: Vec<String> = samples.iter().filter_map(|s| s.run_id.clone()).collect();
    eprintln!("{} accepted; waiting for runs to finish", accepted.len());
    let runs = await_runs(&client, &args, &key, &scenario_id, &accepted).await?;
    let report = Report::new(
        args.profile,
        args.rate,
        offered_for,
        &samples,
        &accepted,
        &runs,
    );
    report.print();
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report.to_json())?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

async fn create_workspace(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<String> {
    let response = client
        .post(format!("{}/api/v1/admin/workspaces", args.api))
        .bearer_auth(&args.admin_token)
        .json(&json!({"name": "loadtest"}))
        .send()
        .await
        .context("creating the workspace")?;
    let body: Value = response.json().await?;
    body["api_key"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no api_key in {body}"))
}

async fn create_scenario(
    client: &reqwest::Client,
    args: &RunArgs,
    key: &str,
) -> anyhow::Result<(String, String)> {
    let created: Value = client
        .post(format!("{}/api/v1/scenarios", args.api))
        .bearer_auth(key)
        .json(&args.profile.definition(&args.upstream))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .with_context(|| format!("scenario not created: {created}"))?
        .to_owned();
    client
        .post(format!("{}/api/v1/scenarios/{id}/activate", args.api))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?;
    let hook = created["webhook"]["path"]
        .as_str()
        .context("no webhook path")?
        .to_owned();
    Ok((id, hook))
}

/// A run as recorded by the fleet.
pub struct RunRecord {
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Reads the scenario's runs until every accepted one is finished or the drain time is up.
async fn await_runs(
    client: &reqwest::Client,
    args: &RunArgs,
    key: &str,
    scenario_id: &str,
    accepted: &[String],
) -> anyhow::Result<HashMap<String, RunRecord>> {
    let deadline = Instant::now() + args.drain;
    loop {
        let runs = list_runs(client, args, key, scenario_id).await?;
        let unfinished = accepted
            .iter()
            .filter(|id| {
                runs.get(*id)
                    .is_none_or(|r| matches!(r.status.as_str(), "queued" | "running"))
            })
            .count();
        if unfinished == 0 || Instant::now() >= deadline {
            return Ok(runs);
        }
        eprintln!("  {unfinished} runs unfinished");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn list_runs(
    client: &reqwest::Client,
    args: &RunArgs,
    key: &str,
    scenario_id: &str,
) -> anyhow::Result<HashMap<String, RunRecord>> {
    let mut runs = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/runs?scenario_id={scenario_id}&limit=200",
            args.api
        );
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client
            .get(&url)
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        for item in page["items"]
            .as_array()
            .context("runs page without items")?
        {
            let parse = |field: &str| {
                item[field]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
            };
            let (Some(id), Some(created_at)) = (item["id"].as_str(), parse("created_at")) else {
                continue;
            };
            runs.insert(
                id.to_owned(),
                RunRecord {
                    status: item["status"].as_str().unwrap_or_default().to_owned(),
                    created_at,
                    finished_at: parse("finished_at"),
                },
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(runs),
        }
    }
}
