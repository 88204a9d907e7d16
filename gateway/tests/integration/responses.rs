//! Webhooks that answer with their run's result (`respond: on_completion`), and the
//! per-scenario limits of what a webhook accepts, through the whole fleet.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, Reply, Upstream, accepted, amqp_url, http_node};

fn webhook(trigger: Value, nodes: Value) -> Value {
    json!({"name": "hook", "trigger": trigger, "nodes": nodes})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_responding_on_completion_answers_with_the_respond_node() {
    let mut fleet = Fleet::start().await;
    let workspace = fleet.workspace().await;
    let (_, hook) = fleet
        .active_scenario(
            &workspace,
            webhook(
                json!({"type": "webhook", "respond": "on_completion"}),
                json!([
                    {"id": "double", "type": "transform", "output": {"n": "{{ trigger.body.n * 2 }}"}},
                    {"id": "reply", "type": "respond", "after": ["double"], "status": 201,
                     "headers": {"x-weft-n": "{{ nodes.double.output.n }}"},
                     "body": {"doubled": "{{ nodes.double.output.n }}"}}
                ]),
            ),
        )
        .await;

    let response = fleet
        .client
        .post(fleet.url(&hook))
        .json(&json!({"n": 21}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-weft-n"], "42");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body, json!({"doubled": 42}));

    // With two gateways, the run's end reaches the one holding the request.
    let (second, _) = fleet.gateway_with_broker(&amqp_url()).await;
    for (gateway, n) in [(&second, 5), (&fleet.api, 6)] {
        let response = fleet
            .client
            .post(format!("{gateway}{hook}"))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body, json!({"doubled": n * 2}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_respond_node_the_last_output_is_the_answer_and_a_slow_run_gets_a_202() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/slow",
        vec![Reply::json(200, json!({"late": true})).after(Duration::from_secs(3))],
    );
    let workspace = fleet.workspace().await;
    let (_, quick) = fleet
        .active_scenario(
            &workspace,
            webhook(
                json!({"type": "webhook", "respond": "on_completion"}),
                json!([{"id": "echo", "type": "transform", "output": {"got": "{{ trigger.body.n }}"}}]),
            ),
        )
        .await;
    let response = fleet
        .client
        .post(fleet.url(&quick))
        .json(&json!({"n": 7}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!({"got": 7})
    );

    let (_, slow) = fleet
        .active_scenario(
            &workspace,
            webhook(
                json!({"type": "webhook", "respond": "on_completion", "respond_timeout": "1s"}),
                json!([http_node(
                    "call",
                    &[],
                    json!({"url": format!("{}/slow", upstream.url)})
                )]),
            ),
        )
        .await;
    let started = Instant::now();
    let response = fleet
        .client
        .post(fleet.url(&slow))
        .json(&json!({}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 202, "past its limit it answers 202");
    assert!(started.elapsed() >= Duration::from_millis(950));
    let run_id = accepted(&response.json().await.expect("JSON"));
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(30))
        .await;
    assert_eq!(
        run.summary.status,
        RunStatus::Completed,
        "the run itself goes on: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scenario_limits_the_methods_media_types_and_body_size_of_its_webhook() {
    let fleet = Fleet::start().await;
    let workspace = fleet.workspace().await;
    let (_, hook) = fleet
        .active_scenario(
            &workspace,
            webhook(
                json!({"type": "webhook", "methods": ["POST"],
                       "content_types": ["application/json"], "max_body_bytes": 32}),
                json!([{"id": "t", "type": "transform", "output": {}}]),
            ),
        )
        .await;
    let url = fleet.url(&hook);
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("gateway answers");
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };

    let (status, body) = send(fleet.client.put(&url).json(&json!({}))).await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("POST")
    );

    let (status, body) = send(
        fleet
            .client
            .post(&url)
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("application/json")
    );

    let (status, body) = send(
        fleet
            .client
            .post(&url)
            .json(&json!({"text": "x".repeat(64)})),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("32 bytes")
    );

    let (status, body) = send(
        fleet
            .client
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"ok": 1}"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}
