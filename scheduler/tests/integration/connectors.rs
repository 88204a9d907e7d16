//! Connector actions in runs, end to end: a workspace's own connector registered through
//! the API, its connection's credentials, input checked before dispatch, fleet-wide rate
//! limits, idempotency keys and 429s.

use std::time::Duration;

use serde_json::{Value, json};
use weft_domain::ids::ScenarioId;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, OrNull, Reply, RunExt, Upstream, Workspace, eventually, shown};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok_live_5ecret_never_shown";

/// A connector whose one action `ping` posts `{n}` to `{path}` with a bearer token.
fn manifest(path: &str, extra: Value) -> Value {
    let mut action = json!({
        "key": "ping", "name": "Ping",
        "input_schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
        "request": {"method": "POST", "path": path, "body": {"n": "{{ input.n }}"}},
        "response": {"output": {"n": "$.body.body.n", "path": "$.body.path"}}
    });
    if let (Value::Object(action), Value::Object(extra)) = (&mut action, extra) {
        action.extend(extra);
    }
    json!({
        "key": "acme", "name": "Acme", "version": "1.0.0",
        "base_url": "https://acme.example",
        "auth": {"type": "bearer"},
        "actions": [action]
    })
}

async fn register(fleet: &Fleet, workspace: &Workspace, manifest: Value) {
    let (status, body) = fleet
        .call(workspace, "POST", "/api/v1/connectors", Some(manifest))
        .await;
    assert_eq!(status, 201, "connector registration: {body}");
}

async fn connection(
    fleet: &Fleet,
    workspace: &Workspace,
    upstream: &Upstream,
    rate_limit: Option<Value>,
) -> String {
    let mut body = json!({
        "connector": "acme", "name": "acme test",
        "config": {"base_url": upstream.url},
        "credentials": {"token": TOKEN}
    });
    if let Some(limit) = rate_limit {
        body["rate_limit"] = limit;
    }
    let (status, created) = fleet
        .call(workspace, "POST", "/api/v1/connections", Some(body))
        .await;
    assert_eq!(status, 201, "connection: {created}");
    created["id"].as_str().expect("connection id").to_owned()
}

fn ping(id: &str, after: &[&str], connection: &str, n: &str) -> Value {
    json!({"id": id, "type": "action", "after": after, "connector": "acme", "action": "ping",
           "connection": connection, "input": {"n": n}})
}

async fn manual_scenario(fleet: &Fleet, workspace: &Workspace, nodes: Value) -> ScenarioId {
    let definition = json!({"name": "acme", "trigger": {"type": "manual"}, "nodes": nodes});
    let (id, _) = fleet.active_scenario(workspace, definition).await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_connector_is_used_at_once_and_an_update_changes_only_the_next_run() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    // The first call of the first run is slow: the connector is updated meanwhile.
    upstream.script(
        "/v1/ping",
        vec![
            Reply::echo().after(Duration::from_millis(1500)),
            Reply::echo(),
        ],
    );
    let workspace = fleet.workspace().await;
    register(&fleet, &workspace, manifest("/v1/ping", json!({}))).await;
    let acme = connection(&fleet, &workspace, &upstream, None).await;
    let scenario = manual_scenario(
        &fleet,
        &workspace,
        json!([
            ping("first", &[], &acme, "{{ trigger.body.n }}"),
            ping("second", &["first"], &acme, "{{ trigger.body.n + 1 }}")
        ]),
    )
    .await;

    let running = fleet.start_run(&workspace, scenario, json!({"n": 1})).await;
    // The run has started once its first node called the upstream.
    eventually("the run's first call", RUN_TIMEOUT, || async {
        let calls = upstream.received_on("/v1/ping").len();
        (calls > 0).then_some(()).ok_or("no call yet")
    })
    .await;
    let mut updated = manifest("/v2/ping", json!({}));
    updated["version"] = json!("2.0.0");
    let (status, body) = fleet
        .call(&workspace, "PUT", "/api/v1/connectors/acme", Some(updated))
        .await;
    assert_eq!(status, 200, "connector update: {body}");

    let run = fleet.wait_for_run(&workspace, running, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        upstream.received_on("/v1/ping").len(),
        2,
        "the running run kept the version it started with"
    );
    assert_eq!(run.node("second").output.or_null()["n"], 2);
    let (_, used) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/connections/{acme}"),
            None,
        )
        .await;
    assert!(
        used["last_used_at"].is_string(),
        "a run's call marks the connection used: {used}"
    );

    let next = fleet.start_run(&workspace, scenario, json!({"n": 5})).await;
    let run = fleet.wait_for_run(&workspace, next, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let calls = upstream.received_on("/v2/ping");
    assert_eq!(calls.len(), 2, "the next run uses the new version");
    assert_eq!(calls[0].body, json!({"n": 5}));
    assert_eq!(
        calls[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
    assert!(
        !shown(&run).contains(TOKEN),
        "the run record never holds the credential: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn input_is_checked_against_the_action_schema_before_anything_is_called() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    register(&fleet, &workspace, manifest("/v1/ping", json!({}))).await;
    let acme = connection(&fleet, &workspace, &upstream, None).await;
    let scenario = manual_scenario(
        &fleet,
        &workspace,
        json!([ping("first", &[], &acme, "{{ trigger.body.n }}")]),
    )
    .await;

    let run_id = fleet
        .start_run(&workspace, scenario, json!({"n": "ten"}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    let error = run.node("first").error.or_null();
    assert_eq!(error["class"], "permanent", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("input.n"),
        "the error names the field: {error}"
    );
    assert_eq!(run.node("first").attempts, 1, "not retried");
    assert!(
        upstream.received().is_empty(),
        "nothing was called upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_retried_after_a_503_sends_the_same_idempotency_key() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/v1/ping",
        vec![Reply::json(503, json!({"error": "busy"})), Reply::echo()],
    );
    let workspace = fleet.workspace().await;
    register(
        &fleet,
        &workspace,
        manifest(
            "/v1/ping",
            json!({"idempotency": {"header": "Idempotency-Key"}}),
        ),
    )
    .await;
    let acme = connection(&fleet, &workspace, &upstream, None).await;
    let mut first = ping("first", &[], &acme, "{{ trigger.body.n }}");
    first["retry"] = json!({"max_attempts": 3, "initial": "10ms", "max": "50ms"});
    let scenario = manual_scenario(
        &fleet,
        &workspace,
        json!([first, ping("second", &["first"], &acme, "{{ 2 }}")]),
    )
    .await;

    let run_id = fleet.start_run(&workspace, scenario, json!({"n": 1})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let keys: Vec<String> = upstream
        .received_on("/v1/ping")
        .iter()
        .map(|call| {
            call.headers["idempotency-key"]
                .to_str()
                .expect("ASCII key")
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 3, "503, its retry, then the second node");
    assert_eq!(keys[0], keys[1], "a retry sends the same key");
    assert_ne!(keys[1], keys[2], "another node run sends another key");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_waits_per_retry_after_without_using_up_attempts() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/v1/ping",
        vec![
            Reply::json(429, json!({"error": "slow down"})).header("retry-after", "1"),
            Reply::json(429, json!({"error": "slow down"})).header("retry-after", "1"),
            Reply::echo(),
        ],
    );
    let workspace = fleet.workspace().await;
    register(&fleet, &workspace, manifest("/v1/ping", json!({}))).await;
    let acme = connection(&fleet, &workspace, &upstream, None).await;
    let mut only = ping("only", &[], &acme, "{{ trigger.body.n }}");
    only["retry"] = json!({"max_attempts": 1});
    let scenario = manual_scenario(&fleet, &workspace, json!([only])).await;

    let run_id = fleet.start_run(&workspace, scenario, json!({"n": 1})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(
        run.summary.status,
        RunStatus::Completed,
        "two 429s did not use up the single attempt: {run:?}"
    );
    let calls = upstream.received_on("/v1/ping");
    assert_eq!(calls.len(), 3);
    for pair in calls.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(950),
            "each retry waited for Retry-After"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_across_two_workers() {
    let fleet = Fleet::with(1, 2).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    register(&fleet, &workspace, manifest("/v1/ping", json!({}))).await;
    let acme = connection(
        &fleet,
        &workspace,
        &upstream,
        Some(json!({"requests": 5, "per": "1s"})),
    )
    .await;
    let mut each = ping("each", &[], &acme, "{{ item }}");
    each["for_each"] = json!("{{ trigger.body.items }}");
    each["max_concurrency"] = json!(50);
    let scenario = manual_scenario(&fleet, &workspace, json!([each])).await;

    let items: Vec<u32> = (0..50).collect();
    let asked = std::time::Instant::now();
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"items": items}))
        .await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let mut calls: Vec<_> = upstream
        .received_on("/v1/ping")
        .iter()
        .map(|c| c.at)
        .collect();
    assert_eq!(calls.len(), 50);
    calls.sort_unstable();
    // Slots are 200 ms apart from the first reservation, which comes after `asked`: the
    // k-th call cannot come before k slots have passed. (A busy machine makes calls late,
    // never early, so this holds however slow the fleet is.)
    for (k, at) in calls.iter().enumerate() {
        let earliest = Duration::from_millis(200) * u32::try_from(k).expect("50 calls");
        assert!(
            at.duration_since(asked) + Duration::from_millis(20) >= earliest,
            "call {k} came {:?} after the run was asked for, before its slot at {earliest:?}",
            at.duration_since(asked)
        );
    }
}
