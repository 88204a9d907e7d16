//! The scheduler's metrics (architecture §8). Labels never carry ids.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};
use weft_domain::scenario::TriggerKind;
use weft_runtime::telemetry::{SLOW_BUCKETS, counter, gauge_vec, histogram};

/// Batch sizes up to the largest `WEFT_SCHEDULER_RESULT_BATCH` worth having.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How a poll ended, as `weft_polls_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// The first poll after activation: its ids were recorded, nothing started.
    Baseline,
    Success,
    Failure,
}

impl PollOutcome {
    pub const ALL: [Self; 3] = [Self::Baseline, Self::Success, Self::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub runs_started: IntCounterVec,
    pub runs_finished: IntCounterVec,
    pub run_duration: HistogramVec,
    pub node_retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub queue_messages: IntGaugeVec,
    pub queue_consumers: IntGaugeVec,
    pub polls: IntCounterVec,
    pub state_reads: IntCounterVec,
    pub result_batches: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = weft_runtime::telemetry::registry("scheduler");
        let metrics = Self {
            // The same series as the gateway's: summed over both jobs, every started run.
            runs_started: counter(
                &registry,
                "weft_runs_started_total",
                "Runs recorded and confirmed by the broker (answered 202), by trigger",
                &["trigger"],
            ),
            runs_finished: counter(
                &registry,
                "weft_runs_finished_total",
                "Runs that reached a final status",
                &["status"],
            ),
            run_duration: histogram(
                &registry,
                "weft_run_duration_seconds",
                "Run duration from start to finish",
                &[],
                SLOW_BUCKETS,
            ),
            node_retries: counter(
                &registry,
                "weft_node_retries_total",
                "Node attempts scheduled again after a retryable failure",
                &["connector"],
            ),
            dead_letters: counter(
                &registry,
                "weft_dead_letters_total",
                "Messages that reached the dead-letter queue",
                &["queue"],
            ),
            queue_messages: gauge_vec(
                &registry,
                "weft_queue_messages",
                "Messages ready in a queue",
                &["queue"],
            ),
            queue_consumers: gauge_vec(
                &registry,
                "weft_queue_consumers",
                "Consumers attached to a queue",
                &["queue"],
            ),
            polls: counter(
                &registry,
                "weft_polls_total",
                "Polls of poll triggers, by outcome: baseline (recorded, nothing started), success or failure",
                &["outcome"],
            ),
            state_reads: counter(
                &registry,
                "weft_run_state_reads_total",
                "Run states a result needed, by source: the scheduler's cache or the node rows",
                &["source"],
            ),
            result_batches: histogram(
                &registry,
                "weft_result_batch_size",
                "Results recorded in one transaction",
                &[],
                BATCH_BUCKETS,
            ),
            registry,
        };
        // The scheduler starts schedule and poll runs only; the series exist from the start
        // so that `rate()` and alerts work before the first tick.
        for trigger in [TriggerKind::Schedule, TriggerKind::Poll] {
            metrics.runs_started.with_label_values(&[trigger.as_str()]);
        }
        for outcome in PollOutcome::ALL {
            metrics.polls.with_label_values(&[outcome.as_str()]);
        }
        for source in ["cache", "database"] {
            metrics.state_reads.with_label_values(&[source]);
        }
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_outcomes_are_named_for_their_label() {
        let names: Vec<&str> = PollOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["baseline", "success", "failure"]);
    }
}
