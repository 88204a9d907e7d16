//! Input limits, one test each, against the real gateway, PostgreSQL and RabbitMQ: every
//! limit answers a clear 4xx (or fails the node for good) with a message naming it.
//!
//! | limit | where | answer |
//! |---|---|---|
//! | API body, 1 MiB (`WEFT_API_MAX_BODY`) | gateway router | 413 `payload_too_large` |
//! | request head, 32 KiB; 100 headers | gateway middleware; HTTP server | 431 |
//! | JSON nesting, 64 levels | API bodies, webhook JSON bodies, definitions | 400 |
//! | nodes per scenario, 500 | scenario validation | 400 `invalid_scenario` |
//! | template source, 64 KiB | scenario validation | 400 `invalid_scenario` |
//! | upstream response, 10 MiB (`WEFT_MAX_RESPONSE_BYTES`) | worker | node failed, permanent |
//! | rendered value, 1 MiB per template | template engine | node failed, permanent |

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, OrNull, Reply, RunExt, Upstream, Workspace, accepted, http_node};

fn transform(id: &str, output: Value) -> Value {
    json!({"id": id, "type": "transform", "output": output})
}

fn definition(nodes: Value) -> Value {
    json!({"name": "limits", "trigger": {"type": "webhook"}, "nodes": nodes})
}

/// A JSON array nested `depth` levels deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Sends `body` as JSON text (not re-encoded, so it may be anything) with the key.
async fn post_text(fleet: &Fleet, workspace: &Workspace, path: &str, body: String) -> (u16, Value) {
    let response = fleet
        .client
        .post(fleet.url(path))
        .bearer_auth(&workspace.api_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body reads");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// Writes a raw HTTP/1.1 request and reads the whole answer: what no client library
/// lets a test send (a body in chunks of its choosing, a hundred headers).
async fn raw_exchange(api: &str, request: &[u8]) -> (u16, String) {
    let address = api.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(request).await.expect("request is written");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    // The server may answer before it has read everything, then reset the connection:
    // what arrived is the answer.
    let _ = read
        .await
        .expect("the gateway answers and closes within 10 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {text:?}"));
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_body_over_the_limit_is_413_naming_it_however_it_is_sent() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let limit = 1024 * 1024;

    let declared = format!(r#"{{"name": "{}"}}"#, "x".repeat(limit));
    let (status, body) = post_text(&fleet, &workspace, "/api/v1/scenarios", declared).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        error_message(&body),
        "the body is larger than the limit of 1048576 bytes"
    );

    // Without a Content-Length, the limit applies as the chunks arrive. The body stops
    // one byte past the limit, with no last chunk: the gateway reads everything sent
    // before it answers, so closing does not reset the connection under the answer.
    let chunk = "x".repeat(64 * 1024);
    let mut request = format!(
        "POST /api/v1/scenarios HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        workspace.api_key
    );
    for _ in 0..(limit / chunk.len()) {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("1\r\nx\r\n");
    let (status, answer) = raw_exchange(&fleet.api, request.as_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    let (_, listed) = fleet
        .call(&workspace, "GET", "/api/v1/scenarios", None)
        .await;
    assert_eq!(listed["items"], json!([]), "nothing was saved");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_over_the_limit_are_431() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let get = |padding: usize| {
        fleet
            .client
            .get(fleet.url("/api/v1/scenarios"))
            .bearer_auth(&workspace.api_key)
            .header("x-padding", "p".repeat(padding))
            .send()
    };
    let response = get(8 * 1024).await.expect("answers");
    assert_eq!(response.status(), 200, "8 KiB of headers is ordinary");

    let response = get(40 * 1024).await.expect("answers");
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert!(
        error_message(&body).contains("over the limit of 32768"),
        "{body}"
    );

    let webhook = fleet
        .client
        .post(fleet.url("/hooks/any-token"))
        .header("x-padding", "p".repeat(40 * 1024))
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_eq!(webhook.status(), 431, "webhooks have the same limit");

    // Past 100 headers the HTTP server itself refuses, before any route.
    let mut request =
        "GET /api/v1/scenarios HTTP/1.1\r\nhost: test\r\nconnection: close\r\n".to_owned();
    for i in 0..150 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let (status, answer) = raw_exchange(&fleet.api, request.as_bytes()).await;
    assert_eq!(status, 431, "{answer}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_nested_past_the_limit_is_400_naming_it_in_definitions_payloads_and_webhooks() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;

    for depth in [65, 500] {
        let body = format!(
            r#"{{"name": "deep", "trigger": {{"type": "manual"}}, "nodes": [{{"id": "t", "type": "transform", "output": {{"v": {}}}}}]}}"#,
            nested(depth)
        );
        let (status, answer) = post_text(&fleet, &workspace, "/api/v1/scenarios", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "json_too_deep");
        assert_eq!(
            error_message(&answer),
            format!(
                "the body is nested {} levels deep, over the limit of 64 levels of arrays and objects",
                depth + 4
            )
        );
    }

    let (scenario, hook) = fleet
        .active_scenario(&workspace, definition(json!([transform("t", json!({}))])))
        .await;
    let (status, answer) = post_text(
        &fleet,
        &workspace,
        &format!("/api/v1/scenarios/{scenario}/runs"),
        nested(65),
    )
    .await;
    assert_eq!(status, 400, "a manual run's payload: {answer}");
    assert_eq!(answer["error"]["code"], "json_too_deep");
    let (status, _) = post_text(
        &fleet,
        &workspace,
        &format!("/api/v1/scenarios/{scenario}/runs"),
        nested(64),
    )
    .await;
    assert_eq!(status, 202, "the limit itself is accepted");

    let response = fleet
        .client
        .post(fleet.url(&hook))
        .header("content-type", "application/json")
        .body(nested(65))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("a JSON error");
    assert!(
        error_message(&answer).contains("nested 65 levels deep, over the limit of 64"),
        "{answer}"
    );
    let (_, runs) = fleet.call(&workspace, "GET", "/api/v1/runs", None).await;
    assert_eq!(
        runs["items"].as_array().map(Vec::len),
        Some(1),
        "only the run at the limit was recorded"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_nodes_and_too_large_a_template_are_400_naming_the_limit() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;

    let nodes: Vec<Value> = (0..501)
        .map(|i| transform(&format!("n{i}"), json!({})))
        .collect();
    let (status, answer) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(definition(json!(nodes))),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_scenario");
    assert_eq!(
        error_message(&answer),
        "field `nodes`: 501 nodes, over the limit of 500"
    );

    let template = format!("{{{{ trigger.body }}}}{}", "x".repeat(64 * 1024));
    let (status, answer) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(definition(json!([transform("t", json!({"v": template}))]))),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_message(&answer).contains("node `t`, field `output.v`")
            && error_message(&answer).contains("over the limit of 65536"),
        "{answer}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_output_over_its_limit_fails_the_node_for_good_naming_it() {
    let fleet = Fleet::start().await;
    let workspace = fleet.workspace().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/huge",
        vec![Reply::json(
            200,
            json!({"blob": "x".repeat(11 * 1024 * 1024)}),
        )],
    );

    let mut call = http_node(
        "call",
        &[],
        json!({"method": "GET", "url": format!("{}/huge", upstream.url)}),
    );
    call["retry"] = json!({"max_attempts": 3, "initial": "100ms"});
    let (_, hook) = fleet
        .active_scenario(&workspace, definition(json!([call])))
        .await;
    let run_id = fleet.fire(&hook, json!({})).await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    let call = run.node("call");
    assert_eq!(
        call.attempts, 1,
        "a permanent failure is not retried: {call:?}"
    );
    assert!(
        call.error.or_null()["message"].as_str().is_some_and(
            |m| m.contains("over the limit of 10485760 bytes (WEFT_MAX_RESPONSE_BYTES)")
        ),
        "{call:?}"
    );
    assert_eq!(upstream.received_on("/huge").len(), 1);

    let (_, hook) = fleet
        .active_scenario(
            &workspace,
            definition(json!([transform(
                "big",
                // From the payload: a constant this large is refused when saved.
                json!({"v": "{{ trigger.body.s * 2000000 }}"})
            )])),
        )
        .await;
    let run_id = fleet.fire(&hook, json!({"s": "x"})).await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(30))
        .await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    let big = run.node("big");
    assert!(
        big.error.or_null()["message"].as_str().is_some_and(
            |m| m.contains("field `output`") && m.contains("over the limit of 1048576")
        ),
        "{big:?}"
    );
    fleet.stop().await;
}

/// PostgreSQL cannot store U+0000 in `jsonb`: found by Schemathesis as a 500 on a manual
/// run's payload. JSON holding it is refused with a 400; text and query strings, captured
/// as they come, keep U+FFFD in its place.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_is_refused_in_json_and_replaced_in_text_never_a_500() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (scenario, hook) = fleet
        .active_scenario(&workspace, definition(json!([transform("t", json!({}))])))
        .await;

    let payload = r#"{"a": "x\u0000y"}"#.to_owned();
    let (status, answer) = post_text(
        &fleet,
        &workspace,
        &format!("/api/v1/scenarios/{scenario}/runs"),
        payload.clone(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_message(&answer).contains("U+0000"), "{answer}");

    let response = fleet
        .client
        .post(fleet.url(&hook))
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);

    let response = fleet
        .client
        .post(fleet.url(&format!("{hook}?q=a%00b")))
        .header("content-type", "text/plain")
        .body(b"text\0with a NUL".to_vec())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 202);
    let run_id = accepted(&response.json().await.expect("JSON"));
    let run = fleet.get_run(&workspace, run_id).await;
    assert_eq!(run.trigger["body"], "text\u{fffd}with a NUL", "{run:?}");
    assert_eq!(run.trigger["query"]["q"], "a\u{fffd}b", "{run:?}");
    fleet.stop().await;
}

/// Found by Schemathesis: a `%00` in a query parameter or a path segment reached
/// PostgreSQL as U+0000 in a text parameter, which it refuses: a 500. Now a 400.
#[tokio::test(flavor = "multi_thread")]
async fn an_encoded_nul_in_the_uri_is_400() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    for (path, code) in [
        ("/api/v1/connections?connector=a%00b", "invalid_query"),
        ("/api/v1/runs?status=%00", "invalid_query"),
        ("/api/v1/connectors/a%00b", "invalid_path"),
    ] {
        let (status, answer) = fleet.call(&workspace, "GET", path, None).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{path}");
        assert!(error_message(&answer).contains("U+0000"), "{answer}");
    }
    let response = fleet
        .client
        .post(fleet.url("/hooks/tok%00en"))
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400, "a webhook token");
    fleet.stop().await;
}
