//! The worker's metrics (architecture §8). Labels never carry ids.

use prometheus::{HistogramVec, IntCounterVec, IntGauge, Registry};
use weft_runtime::telemetry::{FAST_BUCKETS, SLOW_BUCKETS, counter, gauge, histogram};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub node_duration: HistogramVec,
    pub external_requests: IntCounterVec,
    pub tasks_in_flight: IntGauge,
    pub dispatch_latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = weft_runtime::telemetry::registry("worker");
        Self {
            node_duration: histogram(
                &registry,
                "weft_node_duration_seconds",
                "Execution time of one node attempt on a worker",
                &["connector", "action", "outcome"],
                SLOW_BUCKETS,
            ),
            external_requests: counter(
                &registry,
                "weft_external_requests_total",
                "Requests to external APIs by response status class",
                &["connector", "status_class"],
            ),
            tasks_in_flight: gauge(
                &registry,
                "weft_tasks_in_flight",
                "Node tasks being executed by this worker",
            ),
            dispatch_latency: histogram(
                &registry,
                "weft_dispatch_latency_seconds",
                "Time from a node becoming ready to a worker picking up its task",
                &[],
                FAST_BUCKETS,
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
