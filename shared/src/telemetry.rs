//! Logs, the Prometheus registry, and the operations server every binary runs on its
//! metrics address: `/healthz`, `/readyz`, `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Starts logging: JSON lines (default) or human-readable, filtered by `RUST_LOG`.
pub fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
    // A second initialisation (several services in one test process) keeps the first.
    drop(result);
}

/// A fresh registry with `weft_build_info{service,version}` and the standard process
/// metrics (CPU, resident memory, open file descriptors).
pub fn registry(service: &str) -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once per registry");
    let info = IntGaugeVec::new(
        Opts::new(
            "weft_build_info",
            "Build information; the value is always 1",
        ),
        &["service", "version"],
    )
    .expect("static metric definition is valid");
    info.with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    register(&registry, info);
    registry
}

/// Registers a collector; a name registered twice is a programming error.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric is registered once per registry");
    collector
}

pub fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels)
            .expect("static metric definition is valid"),
    )
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("static metric definition is valid"),
    )
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition is valid"),
    )
}

pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("static metric definition is valid"),
    )
}

/// Buckets for latencies from a fraction of a millisecond to a few seconds.
pub const FAST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets for durations from milliseconds to tens of minutes.
pub const SLOW_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

type CheckFuture = Pin<Box<dyn Future<Output = Vec<(&'static str, bool)>> + Send>>;

/// Reports each dependency's reachability for `/readyz`.
pub type Readiness = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    registry: Registry,
    readiness: Readiness,
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` resolves.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            readiness,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let checks = (state.readiness)().await;
    let ready = checks.iter().all(|(_, up)| *up);
    let body: Map<String, Value> = checks
        .into_iter()
        .map(|(name, up)| (name.to_owned(), Value::from(if up { "up" } else { "down" })))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(
            serde_json::json!({"status": if ready { "ready" } else { "unavailable" }, "checks": body}),
        ),
    )
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut buffer) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buffer,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
