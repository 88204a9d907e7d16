//! What happens during the load, once a second: the driver's counters, the mock
//! upstream's counts (node steps and completed runs), the workers' tasks in flight and
//! the CPU and memory of every process under test. Shown as a live progress line and
//! kept as the report's timeline.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::procs::{ProcSample, ProcessSampler};

/// Updated by the webhook senders.
#[derive(Default)]
pub struct Counters {
    pub offered: AtomicU64,
    pub accepted: AtomicU64,
    /// Answers other than 202, and webhooks that got no answer.
    pub refused: AtomicU64,
}

/// The mock upstream's counters.
#[derive(Debug, Clone, Copy)]
pub struct MockStats {
    /// Requests served: node steps executed.
    pub served: u64,
    /// Final calls of a run: runs that reached their end.
    pub last: u64,
}

pub async fn mock_stats(client: &reqwest::Client, upstream: &str) -> anyhow::Result<MockStats> {
    let body: Value = client
        .get(format!("{upstream}{}", crate::mock::STATS_PATH))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let field = |name: &str| {
        body[name]
            .as_u64()
            .with_context(|| format!("no `{name}` in the mock's stats: {body}"))
    };
    Ok(MockStats {
        served: field("served")?,
        last: field("last")?,
    })
}

/// One second of the timeline. Counts are cumulative from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the load started.
    pub t: f64,
    pub offered: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Requests the mock upstream served.
    pub upstream_calls: u64,
    /// Final calls the mock upstream saw (runs that reached their end).
    pub final_calls: u64,
    /// Sum of `weft_tasks_in_flight` over the workers, when their metrics are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_in_flight: Option<f64>,
    pub processes: Vec<ProcSample>,
}

pub struct Monitor {
    stage: Arc<Mutex<String>>,
    progress: ProgressBar,
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Tick>>,
}

impl Monitor {
    pub fn start(
        client: reqwest::Client,
        upstream: String,
        worker_metrics: Vec<String>,
        known_pids: Vec<(u32, String)>,
        counters: Arc<Counters>,
    ) -> Self {
        let stage = Arc::new(Mutex::new(String::new()));
        let (stop, stopped) = watch::channel(false);
        let progress = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        let sources = Sources {
            client,
            upstream,
            worker_metrics,
            sampler: ProcessSampler::new(known_pids),
        };
        let task = tokio::spawn(watch_load(
            sources,
            counters,
            stage.clone(),
            progress.clone(),
            stopped,
        ));
        Self {
            stage,
            progress,
            stop,
            task,
        }
    }

    /// A line above the progress line.
    pub fn note(&self, line: &str) {
        if self.progress.is_hidden() {
            eprintln!("{line}");
        } else {
            self.progress.println(line);
        }
    }

    /// What the progress line says the driver is doing.
    pub fn set_stage(&self, stage: &str) {
        if let Ok(mut current) = self.stage.lock() {
            stage.clone_into(&mut current);
        }
    }

    pub async fn stop(self) -> Vec<Tick> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Where a tick's figures come from, besides the driver's counters.
struct Sources {
    client: reqwest::Client,
    upstream: String,
    worker_metrics: Vec<String>,
    sampler: ProcessSampler,
}

async fn watch_load(
    sources: Sources,
    counters: Arc<Counters>,
    stage: Arc<Mutex<String>>,
    progress: ProgressBar,
    mut stopped: watch::Receiver<bool>,
) -> Vec<Tick> {
    let Sources {
        client,
        upstream,
        worker_metrics,
        mut sampler,
    } = sources;
    let start = Instant::now();
    let base = mock_stats(&client, &upstream).await.ok();
    sampler.sample();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => break,
        }
        let mock = mock_stats(&client, &upstream).await.ok();
        let (upstream_calls, final_calls) = match (mock, base) {
            (Some(now), Some(base)) => (
                now.served.saturating_sub(base.served),
                now.last.saturating_sub(base.last),
            ),
            _ => ticks
                .last()
                .map_or((0, 0), |t| (t.upstream_calls, t.final_calls)),
        };
        let tasks_in_flight = tasks_in_flight(&client, &worker_metrics).await;
        let tick = Tick {
            t: start.elapsed().as_secs_f64(),
            offered: counters.offered.load(Ordering::Relaxed),
            accepted: counters.accepted.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            upstream_calls,
            final_calls,
            tasks_in_flight,
            processes: sampler.sample(),
        };
        let stage = stage.lock().map(|s| s.clone()).unwrap_or_default();
        let line = progress_line(&stage, ticks.last(), &tick);
        if progress.is_hidden() {
            if ticks.len() % 5 == 4 {
                eprintln!("{:>5.0}s {line}", tick.t);
            }
        } else {
            progress.set_message(line);
        }
        ticks.push(tick);
    }
    progress.finish_and_clear();
    ticks
}

/// The live line: what was offered and completed, at what rate over the last second.
fn progress_line(stage: &str, before: Option<&Tick>, now: &Tick) -> String {
    let seconds = before.map_or(now.t, |b| now.t - b.t).max(1e-3);
    let rate = |f: fn(&Tick) -> u64| (f(now).saturating_sub(before.map_or(0, f))) as f64 / seconds;
    let mut line = format!(
        "{stage} | offered {} ({:.0}/s) | accepted {} | completed {} ({:.0}/s) | steps {:.0}/s | errors {}",
        now.offered,
        rate(|t| t.offered),
        now.accepted,
        now.final_calls,
        rate(|t| t.final_calls),
        rate(|t| t.upstream_calls),
        now.refused,
    );
    if let Some(in_flight) = now.tasks_in_flight {
        line.push_str(&format!(" | tasks in flight {in_flight:.0}"));
    }
    line
}

async fn tasks_in_flight(client: &reqwest::Client, workers: &[String]) -> Option<f64> {
    if workers.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for worker in workers {
        let text = client
            .get(format!("{worker}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        total += gauge(&text, "weft_tasks_in_flight")?;
    }
    Some(total)
}

/// The value of an unlabelled (or singly-labelled) gauge in a Prometheus exposition.
pub fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: f64, offered: u64, final_calls: u64, upstream_calls: u64) -> Tick {
        Tick {
            t,
            offered,
            accepted: offered,
            refused: 0,
            upstream_calls,
            final_calls,
            tasks_in_flight: None,
            processes: Vec::new(),
        }
    }

    #[test]
    fn the_progress_line_shows_rates_over_the_last_interval() {
        let before = tick(1.0, 100, 90, 180);
        let now = tick(3.0, 300, 250, 500);
        let line = progress_line("chain4 at 100/s", Some(&before), &now);
        assert!(line.starts_with("chain4 at 100/s |"), "{line}");
        assert!(line.contains("offered 300 (100/s)"), "{line}");
        assert!(line.contains("completed 250 (80/s)"), "{line}");
        assert!(line.contains("steps 160/s"), "{line}");
        assert!(line.contains("errors 0"), "{line}");
    }

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# HELP weft_tasks_in_flight Tasks.\n# TYPE weft_tasks_in_flight gauge\n\
                    weft_tasks_in_flight_total 9\nweft_tasks_in_flight 42\n";
        assert_eq!(gauge(text, "weft_tasks_in_flight"), Some(42.0));
        assert_eq!(
            gauge("weft_tasks_in_flight{a=\"b\"} 3\n", "weft_tasks_in_flight"),
            Some(3.0)
        );
        assert_eq!(gauge(text, "weft_missing"), None);
    }
}
