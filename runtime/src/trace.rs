//! One run, one trace: the W3C trace context (`traceparent`, `tracestate`) travels in AMQP
//! message headers between the services and in the worker's requests upstream, and the
//! spans of a run name it.
//!
//! Without an OpenTelemetry layer (tracing off) every span's context is empty and nothing
//! is written; a message without a context starts a trace of its own.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::{Context, global};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};

struct AmqpInjector<'a>(&'a mut FieldTable);

impl Injector for AmqpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(value.into()));
    }
}

struct AmqpExtractor<'a>(&'a FieldTable);

impl Extractor for AmqpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|key| key.as_str()).collect()
    }
}

struct HttpInjector<'a>(&'a mut HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            // Replaces a `traceparent` the scenario may have set: the request is ours.
            self.0.insert(name, value);
        }
    }
}

/// Writes `span`'s trace context into message headers.
pub fn inject_amqp(span: &Span, headers: &mut FieldTable) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut AmqpInjector(headers));
    });
}

/// The trace context a message carries; empty when it carries none.
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(headers) => global::get_text_map_propagator(|propagator| {
            propagator.extract(&AmqpExtractor(headers))
        }),
        None => Context::new(),
    }
}

/// Writes `span`'s trace context into the headers of an outgoing HTTP request.
pub fn inject_http(span: &Span, headers: &mut HeaderMap) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HttpInjector(headers));
    });
}

// Spans that concern a run declare these fields empty and have them filled in once the
// ids are known (a message is decoded, a webhook's scenario is found). JSON log lines
// drop the `weft.` prefix. Ids belong in traces and logs, never in metric labels.

/// Names the run on the current span.
pub fn record_run(run_id: RunId, workspace_id: WorkspaceId) {
    let span = Span::current();
    span.record("weft.run_id", tracing::field::display(run_id));
    span.record("weft.workspace_id", tracing::field::display(workspace_id));
}

/// Names the node attempt on the current span.
pub fn record_node(node_id: &str, attempt: u32) {
    let span = Span::current();
    span.record("weft.node_id", node_id);
    span.record("weft.attempt", attempt);
}

/// Names the scenario on the current span.
pub fn record_scenario(scenario_id: ScenarioId) {
    Span::current().record("weft.scenario_id", tracing::field::display(scenario_id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn a_trace_context_survives_message_headers() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = FieldTable::default();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(
                &Context::new().with_remote_span_context(sent.clone()),
                &mut AmqpInjector(&mut headers),
            );
        });
        assert!(headers.contains_key("traceparent"));

        let received = extract_amqp(Some(&headers));
        let received = received.span().span_context().clone();
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_eq!(received.span_id(), sent.span_id());
        assert!(received.is_sampled() && received.is_remote());

        assert!(
            !extract_amqp(None).span().span_context().is_valid(),
            "no headers, no parent"
        );
    }
}
