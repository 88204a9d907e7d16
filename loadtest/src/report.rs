//! Figures from one load run: throughput, latency percentiles, and run accounting.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::drive::RunRecord;
use crate::profile::Profile;

/// One webhook sent.
pub struct Sample {
    /// From the scheduled send time to the answer.
    pub latency: Duration,
    /// HTTP status, 0 when no answer came.
    pub status: u16,
    pub run_id: Option<String>,
}

pub struct Report {
    profile: Profile,
    rate: f64,
    offered: usize,
    offered_for: Duration,
    accepted: usize,
    refused: usize,
    /// Answers other than 202, by status (0: no answer).
    refused_by_status: std::collections::BTreeMap<u16, usize>,
    completed: usize,
    failed: usize,
    lost: usize,
    accept_ms: Vec<f64>,
    completion_ms: Vec<f64>,
    completed_per_second: f64,
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Report {
    pub fn new(
        profile: Profile,
        rate: f64,
        offered_for: Duration,
        samples: &[Sample],
        accepted: &[String],
        runs: &HashMap<String, RunRecord>,
    ) -> Self {
        let mut accept_ms: Vec<f64> = samples
            .iter()
            .map(|s| s.latency.as_secs_f64() * 1e3)
            .collect();
        accept_ms.sort_by(f64::total_cmp);
        let mut completion_ms = Vec::new();
        let (mut completed, mut failed, mut lost) = (0, 0, 0);
        let (mut first, mut last) = (None, None);
        for id in accepted {
            match runs.get(id) {
                Some(run) if run.status == "completed" => {
                    completed += 1;
                    if let Some(finished) = run.finished_at {
                        completion_ms.push(
                            (finished - run.created_at).num_microseconds().unwrap_or(0) as f64
                                / 1e3,
                        );
                        first = Some(
                            first.map_or(run.created_at, |f: chrono::DateTime<chrono::Utc>| {
                                f.min(run.created_at)
                            }),
                        );
                        last =
                            Some(last.map_or(finished, |l: chrono::DateTime<chrono::Utc>| {
                                l.max(finished)
                            }));
                    }
                }
                Some(run) if !matches!(run.status.as_str(), "queued" | "running") => failed += 1,
                _ => lost += 1,
            }
        }
        completion_ms.sort_by(f64::total_cmp);
        let mut refused_by_status = std::collections::BTreeMap::new();
        for sample in samples.iter().filter(|s| s.run_id.is_none()) {
            *refused_by_status.entry(sample.status).or_insert(0) += 1;
        }
        let span = match (first, last) {
            (Some(f), Some(l)) => (l - f).num_milliseconds().max(1) as f64 / 1e3,
            _ => f64::NAN,
        };
        Self {
            profile,
            rate,
            offered: samples.len(),
            offered_for,
            accepted: accepted.len(),
            refused: samples.len() - accepted.len(),
            refused_by_status,
            completed,
            failed,
            lost,
            accept_ms,
            completion_ms,
            completed_per_second: completed as f64 / span,
        }
    }

    // The table on stdout is this command's output.
    #[allow(clippy::print_stdout)]
    pub fn print(&self) {
        let row = |name: &str, value: String| println!("{name:<34} {value}");
        println!(
            "profile {:?} at {}/s offered for {:.1?}",
            self.profile, self.rate, self.offered_for
        );
        row(
            "webhooks offered / accepted / refused",
            format!("{} / {} / {}", self.offered, self.accepted, self.refused),
        );
        if !self.refused_by_status.is_empty() {
            row(
                "refused by status (0: no answer)",
                format!("{:?}", self.refused_by_status),
            );
        }
        row(
            "accepted per second",
            format!(
                "{:.1}",
                self.accepted as f64 / self.offered_for.as_secs_f64()
            ),
        );
        row(
            "runs completed / failed / lost",
            format!("{} / {} / {}", self.completed, self.failed, self.lost),
        );
        row(
            "completed runs per second",
            format!("{:.1}", self.completed_per_second),
        );
        row(
            "node steps per second",
            format!(
                "{:.1}",
                self.completed_per_second * self.profile.steps() as f64
            ),
        );
        for (name, values) in [
            ("webhook accept ms", &self.accept_ms),
            ("trigger to completion ms", &self.completion_ms),
        ] {
            row(
                name,
                format!(
                    "p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                    quantile(values, 0.5),
                    quantile(values, 0.99),
                    quantile(values, 0.999),
                    values.last().copied().unwrap_or(f64::NAN)
                ),
            );
        }
    }

    pub fn to_json(&self) -> Value {
        let percentiles = |values: &[f64]| {
            json!({"p50": quantile(values, 0.5), "p99": quantile(values, 0.99), "p99_9": quantile(values, 0.999),
                   "max": values.last().copied()})
        };
        json!({
            "profile": format!("{:?}", self.profile).to_lowercase(),
            "rate": self.rate,
            "offered": self.offered,
            "offered_seconds": self.offered_for.as_secs_f64(),
            "accepted": self.accepted,
            "refused": self.refused,
            "refused_by_status": self.refused_by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "completed": self.completed,
            "failed": self.failed,
            "lost": self.lost,
            "completed_runs_per_second": self.completed_per_second,
            "node_steps_per_second": self.completed_per_second * self.profile.steps() as f64,
            "webhook_accept_ms": percentiles(&self.accept_ms),
            "trigger_to_completion_ms": percentiles(&self.completion_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.999), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
