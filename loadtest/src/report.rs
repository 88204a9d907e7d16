//! Figures from one load test: run accounting, throughput, latency percentiles, step
//! overhead, the timeline and the processes' CPU and memory; as a table on stdout and as
//! JSON (the HTML report is drawn from the same figures, see [`crate::html`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::monitor::Tick;
use crate::profile::Profile;
use crate::spawn::{Fleet, SpawnArgs};
use crate::stats::{Latencies, ms};

/// One webhook sent.
pub struct Sample {
    /// The phase (ramp step) it belongs to.
    pub phase: usize,
    /// When it was scheduled, from the start of the load.
    pub at: Duration,
    /// From the scheduled send time to the answer.
    pub latency: Duration,
    /// HTTP status, 0 when no answer came.
    pub status: u16,
    /// Set when accepted (202).
    pub run_id: Option<String>,
}

/// A run as the fleet's run list shows it.
pub struct RunRecord {
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    pub fn unfinished(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "running")
    }
}

/// What one run read in full says about the fleet's own latency.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    pub phase: usize,
    /// For each hop between consecutive action nodes: the next node's start (the
    /// worker's clock just before its request) minus the previous node's finish (the
    /// worker's clock just before it published the result), in ms.
    pub hops_ms: Vec<f64>,
    /// The run's creation (webhook accepted) to its first action node's start, in ms.
    pub start_ms: Option<f64>,
}

impl RunDetail {
    /// Measures the hops of a run as `GET /api/v1/runs/{id}` returns it.
    pub fn measure(phase: usize, run: &Value, hops: &[(String, String)]) -> Self {
        let time = |value: &Value| {
            value
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let node = |id: &str| {
            run["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
        };
        let millis = |from: DateTime<Utc>, to: DateTime<Utc>| {
            (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3
        };
        let hops_ms = hops
            .iter()
            .filter_map(|(before, after)| {
                let finished = time(&node(before)?["finished_at"])?;
                let started = time(&node(after)?["started_at"])?;
                Some(millis(finished, started))
            })
            .collect();
        let start_ms = hops.first().and_then(|(first, _)| {
            Some(millis(
                time(&run["created_at"])?,
                time(&node(first)?["started_at"])?,
            ))
        });
        Self {
            phase,
            hops_ms,
            start_ms,
        }
    }
}

/// Whether a ramp step was kept up with.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub sustained: bool,
    /// Why not, when not.
    pub reason: String,
    /// Runs of the step that had not made their final call when the step ended.
    pub unfinished_at_end: usize,
}

/// One phase as it was driven: a fixed-rate run has one, a ramp one per step.
pub struct PhasePlan {
    pub rate: f64,
    pub offered_for: Duration,
    pub verdict: Option<Verdict>,
}

/// What was measured and on what.
pub struct Meta {
    pub profile: Profile,
    pub mode: &'static str,
    /// Date, commit, machine and fleet, as they go into the JSON report.
    pub about: Value,
    pub load_before: Option<[f64; 3]>,
}

impl Meta {
    pub fn collect(
        profile: Profile,
        mode: &'static str,
        fleet: Option<&Fleet>,
        spawn: &SpawnArgs,
        upstream: &str,
    ) -> Self {
        let fleet = match fleet {
            Some(fleet) => json!({
                "spawned": true,
                "build": fleet.build_profile(),
                "binaries": fleet.bin_dir.display().to_string(),
                "schedulers": spawn.schedulers,
                "workers": spawn.workers,
                "worker_concurrency": spawn.worker_concurrency,
                "fleet_env": spawn.fleet_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "log_level": spawn.fleet_log,
                "mock_latency_ms": spawn.mock_latency.as_secs_f64() * 1e3,
                "mock_error_rate": spawn.mock_error_rate,
            }),
            None => json!({"spawned": false, "upstream": upstream}),
        };
        Self {
            profile,
            mode,
            about: json!({
                "date": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "commit": commit(),
                "machine": machine(),
                "fleet": fleet,
            }),
            load_before: crate::procs::load_average(),
        }
    }
}

/// The checked-out commit, when run inside the repository (`+dirty` with local changes).
fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| crate::procs::parse_kib(&m, "MemTotal:"))
        .map(|kib| (kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": model,
        "memory_gib": memory_gib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_owned()),
    })
}

/// The figures of a phase, or of all phases together.
pub struct PhaseReport {
    pub label: String,
    pub rate: Option<f64>,
    pub offered_for: Duration,
    pub offered: usize,
    pub accepted: usize,
    pub refused: usize,
    /// Answers other than 202, by status (0: no answer).
    pub refused_by_status: BTreeMap<u16, usize>,
    pub completed: usize,
    pub failed: usize,
    /// Accepted but not finished when the drain time was up (including `unrecorded`).
    pub lost: usize,
    /// Accepted runs the fleet's run list does not show at all.
    pub unrecorded: usize,
    pub accept: Latencies,
    pub completion: Latencies,
    pub overhead: Latencies,
    pub start: Latencies,
    /// Runs read in full for `overhead` and `start`.
    pub detailed_runs: usize,
    pub completed_per_second: f64,
    pub steps_per_second: f64,
    pub verdict: Option<Verdict>,
}

impl PhaseReport {
    pub fn new(
        label: String,
        rate: Option<f64>,
        offered_for: Duration,
        profile: Profile,
        samples: &[&Sample],
        runs: &HashMap<String, RunRecord>,
        details: &[&RunDetail],
    ) -> Self {
        let accept = Latencies::new(
            samples
                .iter()
                .map(|s| s.latency.as_secs_f64() * 1e3)
                .collect(),
        );
        let mut completion = Vec::new();
        let (mut completed, mut failed, mut lost, mut unrecorded) = (0, 0, 0, 0);
        let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        let mut refused_by_status = BTreeMap::new();
        for sample in samples {
            let Some(id) = &sample.run_id else {
                *refused_by_status.entry(sample.status).or_insert(0) += 1;
                continue;
            };
            match runs.get(id) {
                Some(run) if run.status == "completed" => {
                    completed += 1;
                    if let Some(finished) = run.finished_at {
                        completion.push(
                            (finished - run.created_at).num_microseconds().unwrap_or(0) as f64
                                / 1e3,
                        );
                        first = Some(first.map_or(run.created_at, |f| f.min(run.created_at)));
                        last = Some(last.map_or(finished, |l| l.max(finished)));
                    }
                }
                Some(run) if !run.unfinished() => failed += 1,
                Some(_) => lost += 1,
                None => {
                    lost += 1;
                    unrecorded += 1;
                }
            }
        }
        let span = match (first, last) {
            (Some(f), Some(l)) => ((l - f).num_milliseconds().max(1) as f64) / 1e3,
            _ => f64::NAN,
        };
        let completed_per_second = completed as f64 / span;
        let accepted = samples.iter().filter(|s| s.run_id.is_some()).count();
        Self {
            label,
            rate,
            offered_for,
            offered: samples.len(),
            accepted,
            refused: samples.len() - accepted,
            refused_by_status,
            completed,
            failed,
            lost,
            unrecorded,
            accept,
            completion: Latencies::new(completion),
            overhead: Latencies::new(details.iter().flat_map(|d| d.hops_ms.clone()).collect()),
            start: Latencies::new(details.iter().filter_map(|d| d.start_ms).collect()),
            detailed_runs: details.len(),
            completed_per_second,
            steps_per_second: completed_per_second * profile.steps() as f64,
            verdict: None,
        }
    }

    fn to_json(&self) -> Value {
        let number = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({
            "label": self.label,
            "rate": self.rate,
            "offered_seconds": self.offered_for.as_secs_f64(),
            "offered": self.offered,
            "accepted": self.accepted,
            "accepted_per_second": number(self.accepted as f64 / self.offered_for.as_secs_f64()),
            "refused": self.refused,
            "refused_by_status": self.refused_by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "completed": self.completed,
            "failed": self.failed,
            "lost": self.lost,
            "unrecorded": self.unrecorded,
            "completed_runs_per_second": number(self.completed_per_second),
            "node_steps_per_second": number(self.steps_per_second),
            "webhook_accept_ms": self.accept.to_json(),
            "trigger_to_completion_ms": self.completion.to_json(),
            "step_overhead_ms": self.overhead.to_json(),
            "trigger_to_first_request_ms": self.start.to_json(),
            "detailed_runs": self.detailed_runs,
            "verdict": self.verdict,
        })
    }
}

/// A process's CPU and memory over the load.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    pub name: String,
    /// CPU time used over the whole test.
    pub cpu_seconds: f64,
    pub cpu_avg_percent: f64,
    pub cpu_max_percent: f64,
    pub rss_avg_mib: f64,
    pub rss_max_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pss_max_mib: Option<f64>,
}

/// Summaries of every process seen in the timeline, Weft's first.
pub fn summarize(ticks: &[Tick]) -> Vec<ProcessSummary> {
    let mut names: Vec<String> = Vec::new();
    for tick in ticks {
        for sample in &tick.processes {
            if !names.contains(&sample.name) {
                names.push(sample.name.clone());
            }
        }
    }
    names.sort_by_key(|name| (process_rank(name), name.clone()));
    names
        .into_iter()
        .map(|name| {
            let mut cpu_seconds = 0.0;
            let mut previous = 0.0;
            for tick in ticks {
                if let Some(p) = tick.processes.iter().find(|p| p.name == name) {
                    cpu_seconds += p.cpu_percent / 100.0 * (tick.t - previous);
                }
                previous = tick.t;
            }
            let samples: Vec<_> = ticks
                .iter()
                .filter_map(|t| t.processes.iter().find(|p| p.name == name))
                .collect();
            let n = samples.len().max(1) as f64;
            ProcessSummary {
                cpu_seconds,
                cpu_avg_percent: samples.iter().map(|s| s.cpu_percent).sum::<f64>() / n,
                cpu_max_percent: samples.iter().map(|s| s.cpu_percent).fold(0.0, f64::max),
                rss_avg_mib: samples.iter().map(|s| s.rss_mib).sum::<f64>() / n,
                rss_max_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
                pss_max_mib: samples.iter().filter_map(|s| s.pss_mib).reduce(f64::max),
                name,
            }
        })
        .collect()
}

fn process_rank(name: &str) -> usize {
    [
        "gateway",
        "scheduler",
        "worker",
        "mock",
        "loadtest",
        "rabbitmq",
        "postgresql",
    ]
    .iter()
    .position(|prefix| name.starts_with(prefix))
    .unwrap_or(usize::MAX)
}

pub struct Report {
    pub meta: Meta,
    pub started_at: DateTime<Utc>,
    pub load_after: Option<[f64; 3]>,
    pub phases: Vec<PhaseReport>,
    pub total: PhaseReport,
    pub timeline: Vec<Tick>,
    /// Runs finished in each second from the start of the load, from the run records.
    pub completions_per_second: Vec<u64>,
    pub processes: Vec<ProcessSummary>,
}

impl Report {
    pub fn new(
        meta: Meta,
        started_at: DateTime<Utc>,
        plans: Vec<PhasePlan>,
        samples: &[Sample],
        runs: &HashMap<String, RunRecord>,
        details: &[RunDetail],
        timeline: Vec<Tick>,
    ) -> Self {
        let profile = meta.profile;
        let ramp = meta.mode == "ramp";
        let phases: Vec<PhaseReport> = plans
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                let samples: Vec<&Sample> = samples.iter().filter(|s| s.phase == index).collect();
                let details: Vec<&RunDetail> =
                    details.iter().filter(|d| d.phase == index).collect();
                let label = if ramp {
                    format!("step {} ({}/s)", index + 1, plan.rate)
                } else {
                    format!("{}/s", plan.rate)
                };
                let mut phase = PhaseReport::new(
                    label,
                    Some(plan.rate),
                    plan.offered_for,
                    profile,
                    &samples,
                    runs,
                    &details,
                );
                phase.verdict = plan.verdict;
                phase
            })
            .collect();
        let offered_for = samples.iter().map(|s| s.at).max().unwrap_or_default();
        let total = PhaseReport::new(
            "total".to_owned(),
            None,
            offered_for.max(phases.iter().map(|p| p.offered_for).sum()),
            profile,
            &samples.iter().collect::<Vec<_>>(),
            runs,
            &details.iter().collect::<Vec<_>>(),
        );
        let accepted: std::collections::HashSet<&str> =
            samples.iter().filter_map(|s| s.run_id.as_deref()).collect();
        let mut completions_per_second: Vec<u64> = Vec::new();
        for (id, run) in runs {
            if run.status != "completed" || !accepted.contains(id.as_str()) {
                continue;
            }
            let Some(finished) = run.finished_at else {
                continue;
            };
            let second = (finished - started_at).num_milliseconds().max(0) as usize / 1000;
            if completions_per_second.len() <= second {
                completions_per_second.resize(second + 1, 0);
            }
            completions_per_second[second] += 1;
        }
        Self {
            processes: summarize(&timeline),
            meta,
            started_at,
            load_after: crate::procs::load_average(),
            phases,
            total,
            timeline,
            completions_per_second,
        }
    }

    /// The highest ramp step kept up with.
    pub fn max_sustained(&self) -> Option<&PhaseReport> {
        self.phases
            .iter()
            .rfind(|p| p.verdict.as_ref().is_some_and(|v| v.sustained))
    }

    pub fn ramp_stop(&self) -> Option<&str> {
        self.phases
            .iter()
            .find_map(|p| p.verdict.as_ref().filter(|v| !v.sustained))
            .map(|v| v.reason.as_str())
    }

    /// Node steps executed by the completed runs.
    pub fn steps_done(&self) -> f64 {
        (self.total.completed * self.meta.profile.steps()) as f64
    }

    /// CPU time per node step of the fleet, RabbitMQ and PostgreSQL (not the driver or the
    /// mock), in ms, over the whole test.
    pub fn cpu_ms_per_step(&self) -> f64 {
        let busy: f64 = self
            .processes
            .iter()
            .filter(|p| !matches!(p.name.as_str(), "loadtest driver" | "mock"))
            .map(|p| p.cpu_seconds)
            .sum();
        busy * 1e3 / self.steps_done()
    }

    pub fn tasks_in_flight_max(&self) -> Option<f64> {
        self.timeline
            .iter()
            .filter_map(|t| t.tasks_in_flight)
            .reduce(f64::max)
    }

    pub fn title(&self) -> String {
        format!(
            "weft-loadtest {} ({}) {}",
            self.meta.profile.name(),
            self.meta.mode,
            self.started_at.format("%Y-%m-%d %H:%M UTC")
        )
    }

    // The table on stdout is this command's output.
    #[allow(clippy::print_stdout)]
    pub fn print(&self) {
        let about = &self.meta.about;
        println!("{}", self.title());
        println!(
            "commit {}, {} CPUs, load average {} before, {} after",
            about["commit"].as_str().unwrap_or("unknown"),
            about["machine"]["cpus"],
            load(self.meta.load_before),
            load(self.load_after)
        );
        println!("fleet {}", about["fleet"]);
        if self.meta.mode == "ramp" {
            println!();
            println!(
                "{:<18} {:>8} {:>12} {:>9} {:>20} {:>22} {:>20}  verdict",
                "step",
                "accepted",
                "completed/s",
                "steps/s",
                "accept p50/p99",
                "completion p50/p99",
                "overhead p50/p99"
            );
            for phase in &self.phases {
                println!(
                    "{:<18} {:>8} {:>12.1} {:>9.0} {:>20} {:>22} {:>20}  {}",
                    phase.label,
                    phase.accepted,
                    phase.completed_per_second,
                    phase.steps_per_second,
                    pair(&phase.accept),
                    pair(&phase.completion),
                    pair(&phase.overhead),
                    phase
                        .verdict
                        .as_ref()
                        .map_or(String::new(), |v| if v.sustained {
                            "kept up".to_owned()
                        } else {
                            v.reason.clone()
                        })
                );
            }
            match self.max_sustained() {
                Some(best) => println!(
                    "max sustainable rate: {} webhooks/s, {:.0} node steps/s",
                    best.rate.unwrap_or_default(),
                    best.steps_per_second
                ),
                None => println!("no step was kept up with"),
            }
        }
        println!();
        let t = &self.total;
        let row = |name: &str, value: String| println!("{name:<38} {value}");
        row(
            "webhooks offered / accepted / refused",
            format!("{} / {} / {}", t.offered, t.accepted, t.refused),
        );
        if !t.refused_by_status.is_empty() {
            row(
                "refused by status (0: no answer)",
                format!("{:?}", t.refused_by_status),
            );
        }
        row(
            "accepted per second",
            format!("{:.1}", t.accepted as f64 / t.offered_for.as_secs_f64()),
        );
        row(
            "runs completed / failed / lost",
            format!("{} / {} / {}", t.completed, t.failed, t.lost),
        );
        row(
            "completed runs per second",
            per_second(t.completed_per_second),
        );
        row("node steps per second", per_second(t.steps_per_second));
        row("webhook accept", t.accept.summary());
        row("trigger to completion", t.completion.summary());
        row(
            &format!("step overhead ({} runs read)", t.detailed_runs),
            t.overhead.summary(),
        );
        row("trigger to first request", t.start.summary());
        if let Some(max) = self.tasks_in_flight_max() {
            row("worker tasks in flight (max)", format!("{max:.0}"));
        }
        row(
            "CPU per node step (fleet+broker+db)",
            format!("{:.3} ms", self.cpu_ms_per_step()),
        );
        println!();
        println!(
            "{:<18} {:>10} {:>10} {:>12} {:>12} {:>12}",
            "process", "CPU avg %", "CPU max %", "CPU ms/step", "RSS avg MiB", "RSS max MiB"
        );
        for p in &self.processes {
            let pss = p
                .pss_max_mib
                .map_or(String::new(), |pss| format!("  (PSS max {pss:.0} MiB)"));
            println!(
                "{:<18} {:>10.1} {:>10.1} {:>12.3} {:>12.1} {:>12.1}{pss}",
                p.name,
                p.cpu_avg_percent,
                p.cpu_max_percent,
                p.cpu_seconds * 1e3 / self.steps_done(),
                p.rss_avg_mib,
                p.rss_max_mib
            );
        }
    }

    pub fn to_json(&self) -> Value {
        let ramp = (self.meta.mode == "ramp").then(|| {
            json!({
                "max_sustainable_rate": self.max_sustained().and_then(|p| p.rate),
                "node_steps_per_second_at_max": self.max_sustained().map(|p| p.steps_per_second),
                "stopped_because": self.ramp_stop(),
            })
        });
        json!({
            "tool": "weft-loadtest",
            "version": env!("CARGO_PKG_VERSION"),
            "profile": self.meta.profile.name(),
            "mode": self.meta.mode,
            "started_at": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "about": self.meta.about,
            "load_average_before": self.meta.load_before,
            "load_average_after": self.load_after,
            "steps_per_run": self.meta.profile.steps(),
            "total": self.total.to_json(),
            "phases": self.phases.iter().map(PhaseReport::to_json).collect::<Vec<_>>(),
            "ramp": ramp,
            "worker_tasks_in_flight_max": self.tasks_in_flight_max(),
            "cpu_ms_per_node_step": Some(self.cpu_ms_per_step()).filter(|v| v.is_finite()),
            "processes": self.processes,
            "completions_per_second": self.completions_per_second,
            "timeline": self.timeline,
        })
    }
}

fn pair(latencies: &Latencies) -> String {
    if latencies.len() == 0 {
        return "-".to_owned();
    }
    format!("{} / {}", ms(latencies.q(0.5)), ms(latencies.q(0.99)))
}

fn per_second(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "-".to_owned()
    }
}

fn load(average: Option<[f64; 3]>) -> String {
    average.map_or("unknown".to_owned(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, created: &str, finished: Option<&str>) -> RunRecord {
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .expect("a timestamp")
                .with_timezone(&Utc)
        };
        RunRecord {
            status: status.to_owned(),
            created_at: at(created),
            finished_at: finished.map(at),
        }
    }

    fn sample(phase: usize, run_id: Option<&str>, status: u16, latency_ms: u64) -> Sample {
        Sample {
            phase,
            at: Duration::ZERO,
            latency: Duration::from_millis(latency_ms),
            status,
            run_id: run_id.map(str::to_owned),
        }
    }

    #[test]
    fn every_accepted_run_is_completed_failed_or_lost() {
        let runs: HashMap<String, RunRecord> = [
            (
                "a",
                run(
                    "completed",
                    "2026-01-01T00:00:00Z",
                    Some("2026-01-01T00:00:00.100Z"),
                ),
            ),
            (
                "b",
                run(
                    "completed",
                    "2026-01-01T00:00:01Z",
                    Some("2026-01-01T00:00:01.300Z"),
                ),
            ),
            (
                "c",
                run(
                    "failed",
                    "2026-01-01T00:00:01Z",
                    Some("2026-01-01T00:00:01.050Z"),
                ),
            ),
            ("d", run("running", "2026-01-01T00:00:01Z", None)),
        ]
        .into_iter()
        .map(|(id, r)| (id.to_owned(), r))
        .collect();
        let samples = [
            sample(0, Some("a"), 202, 3),
            sample(0, Some("b"), 202, 5),
            sample(0, Some("c"), 202, 4),
            sample(0, Some("d"), 202, 4),
            sample(0, Some("e"), 202, 4),
            sample(0, None, 503, 9),
            sample(0, None, 0, 30_000),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let phase = PhaseReport::new(
            "x".into(),
            Some(7.0),
            Duration::from_secs(1),
            Profile::Chain4,
            &refs,
            &runs,
            &[],
        );
        assert_eq!((phase.offered, phase.accepted, phase.refused), (7, 5, 2));
        assert_eq!(
            (phase.completed, phase.failed, phase.lost, phase.unrecorded),
            (2, 1, 2, 1)
        );
        assert_eq!(phase.refused_by_status, BTreeMap::from([(0, 1), (503, 1)]));
        assert_eq!(phase.completion.q(0.5), 100.0);
        assert_eq!(phase.completion.max(), 300.0);
        // Two runs completed between 00:00:00 and 00:00:01.3.
        assert!((phase.completed_per_second - 2.0 / 1.3).abs() < 1e-9);
        assert!((phase.steps_per_second - 2.0 * 2.0 / 1.3).abs() < 1e-9);
        let json = phase.to_json();
        assert_eq!(json["lost"], 2);
        assert_eq!(json["webhook_accept_ms"]["max"], 30_000.0);
    }

    #[test]
    fn hops_are_measured_from_the_previous_finish_to_the_next_start() {
        let run = json!({
            "created_at": "2026-01-01T00:00:00Z",
            "nodes": [
                {"id": "lookup", "started_at": "2026-01-01T00:00:00.004Z", "finished_at": "2026-01-01T00:00:00.010Z"},
                {"id": "is_known", "started_at": "2026-01-01T00:00:00.011Z", "finished_at": "2026-01-01T00:00:00.011Z"},
                {"id": "notify", "started_at": "2026-01-01T00:00:00.0135Z", "finished_at": null}
            ]
        });
        let detail = RunDetail::measure(2, &run, &Profile::Chain4.hops());
        assert_eq!(detail.phase, 2);
        assert_eq!(detail.hops_ms, vec![3.5]);
        assert_eq!(detail.start_ms, Some(4.0));
        let partial = json!({"created_at": "2026-01-01T00:00:00Z", "nodes": [{"id": "lookup"}]});
        let detail = RunDetail::measure(0, &partial, &Profile::Chain4.hops());
        assert!(detail.hops_ms.is_empty() && detail.start_ms.is_none());
    }

    #[test]
    fn processes_are_summarized_weft_first() {
        use crate::procs::ProcSample;
        let proc = |name: &str, cpu: f64, rss: f64| ProcSample {
            name: name.to_owned(),
            pids: 1,
            cpu_percent: cpu,
            rss_mib: rss,
            pss_mib: None,
        };
        let tick = |t, processes| Tick {
            t,
            offered: 0,
            accepted: 0,
            refused: 0,
            upstream_calls: 0,
            final_calls: 0,
            tasks_in_flight: None,
            processes,
        };
        let ticks = [
            tick(
                1.0,
                vec![
                    proc("postgresql", 10.0, 100.0),
                    proc("worker-1", 20.0, 30.0),
                ],
            ),
            tick(
                2.0,
                vec![proc("worker-1", 40.0, 50.0), proc("gateway", 5.0, 20.0)],
            ),
        ];
        let summary = summarize(&ticks);
        let names: Vec<&str> = summary.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gateway", "worker-1", "postgresql"]);
        let worker = &summary[1];
        assert_eq!(
            (worker.cpu_avg_percent, worker.cpu_max_percent),
            (30.0, 40.0)
        );
        // 20 % over the first second, 40 % over the next.
        assert!(
            (worker.cpu_seconds - 0.6).abs() < 1e-9,
            "{}",
            worker.cpu_seconds
        );
        assert_eq!((worker.rss_avg_mib, worker.rss_max_mib), (40.0, 50.0));
    }
}
