//! The gateway's Prometheus metrics (architecture §8). Labels never carry ids: routes are
//! recorded by their template (`/api/v1/runs/{id}`), never by the raw path.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramVec, IntCounterVec, Registry};
use weft_domain::scenario::TriggerKind;
use weft_runtime::telemetry;

/// What became of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Accepted,
    /// A repeated delivery: answered with the first run, nothing started.
    Duplicate,
    /// The signature is missing or does not verify.
    BadSignature,
    /// Unknown token, or its scenario is not active.
    NotFound,
    TooLarge,
    /// The body claims to be JSON but is not.
    Invalid,
    /// Not accepted because of a failure on our side (database, broker).
    Unavailable,
}

impl WebhookOutcome {
    const ALL: [Self; 7] = [
        Self::Accepted,
        Self::Duplicate,
        Self::BadSignature,
        Self::NotFound,
        Self::TooLarge,
        Self::Invalid,
        Self::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::BadSignature => "bad_signature",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The `trigger` of replayed runs, which no scenario trigger starts.
const REPLAY: &str = "replay";
const CANCELLED: &str = "cancelled";

#[derive(Clone)]
pub struct Metrics {
    webhooks_received: IntCounterVec,
    runs_started: IntCounterVec,
    runs_finished: IntCounterVec,
    http_requests: IntCounterVec,
    http_request_duration: HistogramVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = Self {
            webhooks_received: telemetry::counter(
                registry,
                "weft_webhooks_received_total",
                "Webhook deliveries received, by outcome",
                &["outcome"],
            ),
            runs_started: telemetry::counter(
                registry,
                "weft_runs_started_total",
                "Runs recorded and confirmed by the broker (answered 202), by trigger",
                &["trigger"],
            ),
            // The scheduler finishes most runs; the gateway those cancelled through the
            // API. Summed over both jobs, the series count every finished run.
            runs_finished: telemetry::counter(
                registry,
                "weft_runs_finished_total",
                "Runs that reached a final status",
                &["status"],
            ),
            http_requests: telemetry::counter(
                registry,
                "weft_http_requests_total",
                "HTTP requests answered, by route template and status class",
                &["route", "status_class"],
            ),
            http_request_duration: telemetry::histogram(
                registry,
                "weft_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template",
                &["route"],
                telemetry::FAST_BUCKETS,
            ),
        };
        // Series that exist from the start make `rate()` and alerts work before the
        // first event.
        for outcome in WebhookOutcome::ALL {
            metrics
                .webhooks_received
                .with_label_values(&[outcome.as_str()]);
        }
        for trigger in [TriggerKind::Webhook, TriggerKind::Manual] {
            metrics.runs_started.with_label_values(&[trigger.as_str()]);
        }
        metrics.runs_started.with_label_values(&[REPLAY]);
        metrics.runs_finished.with_label_values(&[CANCELLED]);
        metrics
    }

    pub fn webhook_received(&self, outcome: WebhookOutcome) {
        self.webhooks_received
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    pub fn run_started(&self, trigger: TriggerKind) {
        self.runs_started
            .with_label_values(&[trigger.as_str()])
            .inc();
    }

    /// A replay of an earlier run was started (its `trigger` label is `replay`).
    pub fn replay_started(&self) {
        self.runs_started.with_label_values(&[REPLAY]).inc();
    }

    pub fn run_cancelled(&self) {
        self.runs_finished.with_label_values(&[CANCELLED]).inc();
    }
}

/// Middleware counting and timing every request by its route template.
pub async fn track_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), status_class(response.status())])
        .inc();
    metrics
        .http_request_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_grouped_by_class() {
        assert_eq!(status_class(StatusCode::ACCEPTED), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }

    #[test]
    fn counters_are_registered_with_their_label_sets() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry);
        metrics.webhook_received(WebhookOutcome::Accepted);
        metrics.run_started(TriggerKind::Manual);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(
            names.contains(&"weft_webhooks_received_total".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"weft_runs_started_total".to_owned()),
            "{names:?}"
        );
    }
}
