//! One run is one trace: the spans of the gateway, the scheduler and the worker for a run
//! share its trace id, the upstream request carries it in `traceparent`, and no span
//! attribute holds a secret. Spans go to a local OTLP/HTTP receiver that decodes them.
//!
//! The services of the fleet share this test's process, so they share its one tracer,
//! set up here before anything else runs (this file holds one test: one process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use tokio::net::TcpListener;
use weft_domain::run::RunStatus;
use weft_runtime::telemetry::{self, Telemetry, Traces};
use weft_testkit::{Fleet, Upstream};

/// Secrets the run sees: none may appear in any attribute.
const QUERY_SECRET: &str = "sk_secret_query";
const HEADER_SECRET: &str = "sk_secret_header";
const CALLER_SECRET: &str = "sk_secret_caller";

/// A stand-in for an OpenTelemetry collector: keeps every span it is sent, with its
/// resource's attributes.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Collector {
    async fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(self);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    fn spans(&self) -> Vec<Span> {
        self.requests()
            .into_iter()
            .flat_map(|request| request.resource_spans)
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect()
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            collector
                .received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(request);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(n) => Some(n.to_string()),
        Any::BoolValue(b) => Some(b.to_string()),
        Any::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()))
}

/// Every string in a value, nested ones included.
fn strings(value: &AnyValue, into: &mut Vec<String>) {
    match &value.value {
        Some(Any::StringValue(s)) => into.push(s.clone()),
        Some(Any::BytesValue(bytes)) => into.push(String::from_utf8_lossy(bytes).into_owned()),
        Some(Any::ArrayValue(array)) => array.values.iter().for_each(|v| strings(v, into)),
        Some(Any::KvlistValue(list)) => list
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .for_each(|v| strings(v, into)),
        _ => {}
    }
}

/// Every attribute key and value exported: of resources, spans, events and links.
fn every_attribute(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
    let mut all = Vec::new();
    let mut add = |attributes: &[KeyValue]| {
        for kv in attributes {
            all.push(kv.key.clone());
            if let Some(value) = &kv.value {
                strings(value, &mut all);
            }
        }
    };
    for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
        if let Some(resource) = &resource_spans.resource {
            add(&resource.attributes);
        }
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            add(&span.attributes);
            span.events.iter().for_each(|e| add(&e.attributes));
            span.links.iter().for_each(|l| add(&l.attributes));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_across_the_fleet_with_no_secret_in_it() {
    let collector = Collector::default();
    let collector_url = collector.clone().start().await;
    let telemetry: Telemetry = telemetry::init_with(
        "weft-test",
        "json",
        Traces::To {
            endpoint: format!("{collector_url}/v1/traces"),
            delay: Duration::from_millis(100),
        },
    )
    .expect("telemetry starts");

    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "traced",
        "trigger": {"type": "webhook"},
        "nodes": [{"id": "call", "type": "action", "connector": "http", "action": "request",
                   "input": {
                       "method": "POST",
                       "url": format!("{}/notify?api_key={QUERY_SECRET}", upstream.url),
                       "headers": {"Authorization": format!("Bearer {HEADER_SECRET}")},
                       "body": {"n": 1}
                   }}]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;
    let token = hook.rsplit('/').next().expect("a token").to_owned();
    let response = fleet
        .client
        .post(fleet.url(&hook))
        .bearer_auth(CALLER_SECRET)
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 202);
    let run_id = weft_testkit::accepted(&response.json().await.expect("JSON body"));
    let run_attribute = Some(run_id.to_string());
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(20))
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");

    // A person signs in, issues a key and uses it: none of their secrets may show.
    let person = fleet
        .person(&workspace, "traced@example.com", "admin")
        .await;
    let key = fleet.key_of(&person, "traced", "viewer").await;
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 200);
    let session_token = person.session_token().to_owned();

    // The result's span ends after the run is recorded complete: wait for it.
    let topology = fleet.topology();
    let results = format!("process {}", topology.results());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        tokio::task::block_in_place(|| telemetry.flush()).expect("spans exported");
        let spans = collector.spans();
        let done = spans
            .iter()
            .any(|span| span.name == results && attribute(span, "weft.run_id") == run_attribute);
        if done {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the result's span was never exported; spans: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let server = spans
        .iter()
        .find(|span| {
            span.name == "POST /hooks/{token}"
                && span.kind == SpanKind::Server as i32
                && attribute(span, "weft.run_id") == run_attribute
        })
        .expect("the webhook request's span names the run");
    let trace_id = server.trace_id.clone();
    let in_trace = |span: &Span| span.trace_id == trace_id;
    let child_of = |name: &str, kind: SpanKind, parent: &Span| -> Span {
        spans
            .iter()
            .find(|span| {
                span.name == name
                    && span.kind == kind as i32
                    && span.parent_span_id == parent.span_id
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {kind:?} span `{name}` under `{}`", parent.name))
    };

    // Gateway: the request, and the publish of RunRequested under it.
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/hooks/{token}")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("202")
    );
    let publish_run = child_of(
        &format!("publish {}", topology.runs()),
        SpanKind::Producer,
        server,
    );
    assert_eq!(
        attribute(&publish_run, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(&publish_run, "messaging.destination.name").as_deref(),
        Some(topology.runs().as_str())
    );

    // Scheduler: takes the run up and dispatches the node.
    let take_up = child_of(
        &format!("process {}", topology.runs()),
        SpanKind::Consumer,
        &publish_run,
    );
    assert_eq!(attribute(&take_up, "weft.run_id"), run_attribute);
    assert_eq!(
        attribute(&take_up, "messaging.operation.type").as_deref(),
        Some("process")
    );
    let dispatch = child_of(
        &format!("publish {}", topology.tasks()),
        SpanKind::Producer,
        &take_up,
    );

    // Worker: executes the node with one request upstream, and publishes the result.
    let task = child_of(
        &format!("process {}", topology.tasks()),
        SpanKind::Consumer,
        &dispatch,
    );
    assert_eq!(attribute(&task, "weft.node_id").as_deref(), Some("call"));
    let execute = child_of("execute http.request", SpanKind::Internal, &task);
    let client = child_of("POST", SpanKind::Client, &execute);
    assert_eq!(
        attribute(&client, "url.full"),
        Some(format!("{}/notify", upstream.url)),
        "the URL is recorded without its query"
    );
    assert_eq!(
        attribute(&client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    let publish_result = child_of(
        &format!("publish {}", topology.results()),
        SpanKind::Producer,
        &task,
    );

    // Scheduler: records the result.
    let record = child_of(&results, SpanKind::Consumer, &publish_result);
    assert_eq!(attribute(&record, "weft.node_id").as_deref(), Some("call"));

    for span in [
        server,
        &publish_run,
        &take_up,
        &dispatch,
        &task,
        &execute,
        &client,
        &publish_result,
        &record,
    ] {
        assert!(in_trace(span), "`{}` is in another trace", span.name);
    }

    // Upstream: the request carried the trace, with the client span as its parent.
    let received = upstream.received_on("/notify");
    assert_eq!(received.len(), 1);
    let traceparent = received[0]
        .headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .expect("the upstream request carries traceparent");
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            hex::encode(&trace_id),
            hex::encode(&client.span_id)
        )
    );

    // No secret anywhere: not the webhook token, the caller's Authorization, the
    // action's Authorization header or the key in its query string, nor a person's
    // password, session, CSRF token or API key.
    let attributes = every_attribute(&collector.requests());
    for secret in [
        token.as_str(),
        CALLER_SECRET,
        HEADER_SECRET,
        QUERY_SECRET,
        "Bearer",
        weft_testkit::PASSWORD,
        session_token.as_str(),
        person.csrf_token.as_str(),
        key.api_key.as_str(),
    ] {
        let leaks: Vec<&String> = attributes
            .iter()
            .filter(|value| value.contains(secret))
            .collect();
        assert!(leaks.is_empty(), "`{secret}` in attributes: {leaks:?}");
    }

    fleet.stop().await;
}
