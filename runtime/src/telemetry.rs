//! Logs, traces, the Prometheus registry, and the operations server every binary runs on
//! its metrics address: `/healthz`, `/readyz`, `/metrics`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Key, KeyValue, global};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{variable} is `{value}`: only `http/protobuf` (OTLP over HTTP, port 4318) is supported"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    /// The exporter's message, with the endpoints' passwords masked: it quotes them.
    #[error("configuring the OTLP exporter (OTEL_EXPORTER_OTLP_*): {0}")]
    Exporter(String),
    #[error("exporting spans: {0}")]
    Export(#[from] OTelSdkError),
}

/// Where spans go.
#[derive(Debug, Clone)]
pub enum Traces {
    /// Nowhere: logs only.
    Off,
    /// OTLP over HTTP (protobuf), configured by the standard `OTEL_EXPORTER_OTLP_*` and
    /// `OTEL_BSP_*` variables.
    FromEnv,
    /// OTLP over HTTP (protobuf) to this traces URL (`…/v1/traces`), in batches sent
    /// every `delay`.
    To { endpoint: String, delay: Duration },
}

impl Traces {
    /// On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
    /// set (and `OTEL_SDK_DISABLED` is not `true`), as with other OpenTelemetry SDKs.
    pub fn from_env() -> Self {
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
        if !disabled
            && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            Self::FromEnv
        } else {
            Self::Off
        }
    }
}

/// Keeps traces flowing; dropping it (at the end of `main`) exports the spans still
/// buffered and stops the exporter.
#[must_use = "dropping it stops exporting spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span finished so far, and waits until the collector answered.
    /// Blocks the thread.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.provider {
            Some(provider) => Ok(provider.force_flush()?),
            None => Ok(()),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// Starts logs (JSON lines by default, or `pretty`; filtered by `RUST_LOG`) and, when an
/// OTLP endpoint is configured (see [`Traces::from_env`]), traces named `service` unless
/// `OTEL_SERVICE_NAME` says otherwise.
pub fn init(service: &str, log_format: &str) -> Result<Telemetry, TelemetryError> {
    init_with(service, log_format, Traces::from_env())
}

/// Like [`init`], with traces sent where `traces` says. The first initialisation in a
/// process wins; later ones (several services in one test process) change nothing.
pub fn init_with(
    service: &str,
    log_format: &str,
    traces: Traces,
) -> Result<Telemetry, TelemetryError> {
    let from_env = matches!(traces, Traces::FromEnv);
    let provider = tracer_provider(service, traces)?;
    let logs_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if log_format == "pretty" {
        tracing_subscriber::fmt::layer()
            .with_filter(logs_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_filter(logs_filter)
            .boxed()
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("weft"))
            .with_filter(filter::filter_fn(traced))
    });
    if tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_err()
    {
        if let Some(unused) = provider {
            drop(unused.shutdown());
        }
        return Ok(Telemetry { provider: None });
    }
    if provider.is_some() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(variable) = grpc_endpoint(env_value).filter(|_| from_env) {
            tracing::warn!(
                variable,
                "{variable} points at port 4317, where collectors serve OTLP over gRPC: only OTLP over HTTP/protobuf is supported, on port 4318, and spans sent to 4317 are lost"
            );
        }
    }
    Ok(Telemetry { provider })
}

/// What goes into traces: Weft's own spans and events at `info` and above, whatever
/// `RUST_LOG` says about logs. Dependencies' spans would add noise, and those of the
/// exporter's own HTTP client would feed back into the exporter.
fn traced(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("weft_") && *metadata.level() <= Level::INFO
}

fn tracer_provider(
    service: &str,
    traces: Traces,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let (endpoint, delay) = match traces {
        Traces::Off => return Ok(None),
        Traces::FromEnv => {
            check_protocol(env_value)?;
            (None, None)
        }
        Traces::To { endpoint, delay } => (Some(endpoint), Some(delay)),
    };
    let mut exporter = SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    // The batch processor exports from a thread of its own, with the blocking HTTP client:
    // the async client would need a Tokio runtime on that thread.
    let mut batch = BatchConfigBuilder::default();
    if let Some(delay) = delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError::Exporter(endpoints_masked(&e, env_value)))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (parent-based
    // always-on when unset).
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(service))
            .build(),
    ))
}

/// Only OTLP/HTTP with protobuf is built in: another protocol is a configuration error,
/// not something to fall back from silently.
fn check_protocol(env: impl Fn(&str) -> Option<String>) -> Result<(), TelemetryError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(variable) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if value != "http/protobuf" {
                return Err(TelemetryError::Protocol {
                    variable,
                    value: value.to_owned(),
                });
            }
            // The signal's own variable takes precedence over the general one.
            return Ok(());
        }
    }
    Ok(())
}

/// The endpoint variable in effect (the signal's own one wins), if it names port 4317:
/// the port of OTLP over gRPC, a common slip that would lose every span silently.
fn grpc_endpoint(env: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    let variable = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find(|variable| env(variable).is_some_and(|value| !value.trim().is_empty()))?;
    let endpoint = url::Url::parse(env(variable)?.trim()).ok()?;
    (endpoint.port_or_known_default() == Some(4317)).then_some(variable)
}

/// An endpoint may carry credentials (`https://user:password@collector`), and the
/// exporter's messages quote the endpoint whole.
fn endpoints_masked(message: &dyn fmt::Display, env: impl Fn(&str) -> Option<String>) -> String {
    let mut message = message.to_string();
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        if let Some(endpoint) = env(variable).filter(|endpoint| !endpoint.is_empty()) {
            message = crate::config::masked(&message, &endpoint);
        }
    }
    message
}

fn env_value(variable: &str) -> Option<String> {
    std::env::var(variable).ok()
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named after the
/// binary when neither names the service.
fn resource(service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name(service.to_owned()).build()
    }
}

/// One JSON object per line: time, level, target, the event's fields, the fields of the
/// spans it happened in (`weft.run_id` as `run_id`; span names and kinds for the tracer,
/// `otel.*`, left out) and, inside a traced span, its `trace_id` and `span_id`.
struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        if let Some(scope) = ctx.event_scope() {
            // Outermost first, so an inner span's field wins over an outer one's.
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() {
                    merge_fields(&mut line, fields, true);
                }
            }
        }
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        merge_fields(&mut line, &fields, false);
        // Records of the `log` crate (refinery, tokio-postgres) arrive with target `log`
        // and their origin in fields: put the origin back as the target.
        if let Some(target) = line.remove("log.target") {
            line.insert("target".into(), target);
            for origin in ["log.module_path", "log.file", "log.line"] {
                line.remove(origin);
            }
        }
        opentelemetry::Context::map_current(|context| {
            let span = context.span();
            let span = span.span_context();
            if span.is_valid() {
                line.insert("trace_id".into(), span.trace_id().to_string().into());
                line.insert("span_id".into(), span.span_id().to_string().into());
            }
        });
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Adds the fields of a JSON object (as `JsonFields` formats them) to the line.
fn merge_fields(line: &mut Map<String, Value>, fields: &str, of_span: bool) {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) else {
        return;
    };
    for (name, value) in fields {
        if of_span && name.starts_with("otel.") {
            continue;
        }
        let name = match name.strip_prefix("weft.") {
            Some(short) => short.to_owned(),
            None => name,
        };
        line.insert(name, value);
    }
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_line(traced: bool) -> Value {
        let captured = Captured::default();
        let writer = captured.clone();
        let provider = SdkTracerProvider::builder().build();
        let spans =
            traced.then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_writer(move || writer.clone()),
            )
            .with(spans);
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", weft.run_id = "run-1", attempt = 1);
            let inner = outer.in_scope(|| {
                tracing::info_span!(
                    "process",
                    otel.kind = "consumer",
                    weft.node_id = "call",
                    attempt = 2
                )
            });
            inner.in_scope(|| tracing::info!(status = 200, "handled"));
        });
        let text =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        serde_json::from_str(text.trim()).expect("one JSON line")
    }

    fn env_of<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |variable| {
            pairs
                .iter()
                .find(|(name, _)| *name == variable)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn only_the_http_protobuf_protocol_is_accepted_and_the_refusal_says_so() {
        assert!(check_protocol(env_of(&[])).is_ok());
        assert!(
            check_protocol(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_ok()
        );
        let refused = check_protocol(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]))
            .expect_err("gRPC is not built in");
        assert_eq!(
            refused.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL is `grpc`: only `http/protobuf` (OTLP over HTTP, port 4318) is supported"
        );
        // The signal's own variable takes precedence over the general one.
        assert!(
            check_protocol(env_of(&[
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]))
            .is_ok()
        );
        assert!(
            check_protocol(env_of(&[(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "http/json"
            )]))
            .is_err()
        );
    }

    #[test]
    fn an_endpoint_on_the_grpc_port_is_noticed() {
        let general = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let traces = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
        assert_eq!(grpc_endpoint(env_of(&[])), None);
        assert_eq!(
            grpc_endpoint(env_of(&[(general, "http://collector:4318")])),
            None
        );
        assert_eq!(
            grpc_endpoint(env_of(&[(general, "https://collector")])),
            None
        );
        assert_eq!(
            grpc_endpoint(env_of(&[(general, "http://collector.monitoring:4317")])),
            Some(general)
        );
        assert_eq!(
            grpc_endpoint(env_of(&[(traces, "http://collector:4317/v1/traces")])),
            Some(traces)
        );
        assert_eq!(
            grpc_endpoint(env_of(&[
                (traces, "http://collector:4318/v1/traces"),
                (general, "http://collector:4317"),
            ])),
            None,
            "the signal's own endpoint is the one in effect"
        );
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans_and_the_trace_id() {
        let line = log_line(true);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "handled");
        assert_eq!(line["status"], 200);
        assert_eq!(line["run_id"], "run-1", "{line}");
        assert_eq!(line["node_id"], "call", "{line}");
        assert_eq!(line["attempt"], 2, "the inner span's field wins: {line}");
        assert!(line.get("weft.run_id").is_none(), "{line}");
        assert!(line.get("otel.kind").is_none(), "{line}");
        let trace_id = line["trace_id"].as_str().expect("a trace id");
        assert_eq!(trace_id.len(), 32, "{line}");
        assert!(line["span_id"].is_string(), "{line}");

        let untraced = log_line(false);
        assert_eq!(untraced["run_id"], "run-1");
        assert!(untraced.get("trace_id").is_none(), "{untraced}");
    }
}
