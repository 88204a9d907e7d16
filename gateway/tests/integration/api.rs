//! The gateway's HTTP API: validation, authentication, workspace isolation, limits,
//! and refusing triggers it cannot enqueue.

use std::time::Duration;

use serde_json::{Value, json};
use weft_domain::ids::RunId;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, Upstream};

fn transform(id: &str, after: &[&str], output: Value) -> Value {
    json!({"id": id, "type": "transform", "after": after, "output": output})
}

fn scenario(nodes: Value) -> Value {
    json!({"name": "s", "trigger": {"type": "webhook"}, "nodes": nodes})
}

/// The problems of a 400, as "node/field/message" lines.
fn problems(body: &Value) -> Vec<String> {
    body["error"]["details"]["problems"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    format!(
                        "{}/{}/{}",
                        p["node"].as_str().unwrap_or("-"),
                        p["field"].as_str().unwrap_or("-"),
                        p["message"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_scenarios_are_refused_with_the_node_field_and_problem() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let cases = [
        (
            scenario(json!([
                transform("a", &["b"], json!({})),
                transform("b", &["a"], json!({}))
            ])),
            "after/is part of a cycle",
        ),
        (
            scenario(json!([transform("a", &["ghost"], json!({}))])),
            "a/after/references unknown node `ghost`",
        ),
        (
            scenario(json!([
                transform("a", &[], json!({})),
                transform("a", &[], json!({}))
            ])),
            "a/id/duplicate node id",
        ),
        (
            scenario(json!([transform(
                "a",
                &[],
                json!({"x": "{{ trigger.body."})
            )])),
            "a/output.x/template does not parse",
        ),
        (
            scenario(json!([{"id": "a", "type": "teleport"}])),
            "a/type/unknown node type `teleport`",
        ),
        (
            scenario(json!([
                transform("a", &[], json!({"x": "{{ nodes.b.output }}"})),
                transform("b", &[], json!({}))
            ])),
            "a/output.x/reads `nodes.b`, which does not run before this node",
        ),
        (
            scenario(json!([{"id": "a", "type": "action", "connector": "nope", "action": "x"}])),
            "a/action/unknown connector `nope`",
        ),
    ];
    for (definition, expected) in cases {
        let (status, body) = fleet
            .call(&workspace, "POST", "/api/v1/scenarios", Some(definition))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_scenario", "{body}");
        let found = problems(&body);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected {expected:?} in {found:?}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("node `"),
            "{body}"
        );
    }
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(json!({"nodes": []})),
        )
        .await;
    assert_eq!(status, 400, "a body that is not a definition: {body}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_required_and_workspaces_do_not_see_each_other() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let alice = fleet.workspace().await;
    let bob = fleet.workspace().await;
    let definition = scenario(
        json!([{"id": "call", "type": "action", "connector": "http", "action": "request",
                                     "input": {"url": format!("{}/x", upstream.url)}}]),
    );
    let (scenario_id, hook) = fleet.active_scenario(&alice, definition).await;
    let run_id = fleet.fire(&hook, json!({})).await;
    fleet
        .wait_for_run(&alice, run_id, Duration::from_secs(20))
        .await;

    let no_key = fleet
        .client
        .get(fleet.url("/api/v1/scenarios"))
        .send()
        .await
        .expect("answers");
    assert_eq!(no_key.status(), 401);
    let body: Value = no_key.json().await.expect("JSON error");
    assert!(body["error"]["code"].is_string(), "{body}");
    let wrong_key = fleet
        .client
        .get(fleet.url("/api/v1/scenarios"))
        .bearer_auth("weft_not-a-real-key")
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong_key.status(), 401);
    let admin_wrong = fleet
        .client
        .post(fleet.url("/api/v1/admin/workspaces"))
        .bearer_auth(&alice.api_key)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        admin_wrong.status(),
        401,
        "an API key is not the admin token"
    );

    for path in [
        format!("/api/v1/scenarios/{scenario_id}"),
        format!("/api/v1/runs/{run_id}"),
    ] {
        let (status, body) = fleet.call(&bob, "GET", &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (status, _) = fleet.call(&alice, "GET", &path, None).await;
        assert_eq!(status, 200, "{path} is visible to its owner");
    }
    let (status, _) = fleet
        .call(
            &bob,
            "POST",
            &format!("/api/v1/scenarios/{scenario_id}/runs"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = fleet
        .call(
            &bob,
            "DELETE",
            &format!("/api/v1/scenarios/{scenario_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, listed) = fleet.call(&bob, "GET", "/api/v1/runs", None).await;
    assert_eq!(listed["items"], json!([]), "bob sees none of alice's runs");
    let (_, listed) = fleet.call(&alice, "GET", "/api/v1/runs", None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_answer_404_for_unknown_or_inactive_and_413_over_the_limit() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let unknown = fleet
        .client
        .post(fleet.url("/hooks/no-such-token"))
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(unknown.status(), 404);

    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(scenario(json!([transform("t", &[], json!({}))]))),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let hook = created["webhook"]["path"]
        .as_str()
        .expect("webhook path")
        .to_owned();
    let draft = fleet
        .client
        .post(fleet.url(&hook))
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(draft.status(), 404, "a draft scenario does not fire");

    let id = created["id"].as_str().expect("id");
    let (status, _) = fleet
        .call(
            &workspace,
            "POST",
            &format!("/api/v1/scenarios/{id}/activate"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let too_big = "x".repeat(70_000);
    let response = fleet
        .client
        .post(fleet.url(&hook))
        .body(too_big)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let (_, runs) = fleet.call(&workspace, "GET", "/api/v1/runs", None).await;
    assert_eq!(runs["items"], json!([]), "a refused webhook records no run");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_are_readable_at_once_and_pages_follow_the_cursor() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (id, hook) = fleet
        .active_scenario(
            &workspace,
            scenario(json!([transform(
                "t",
                &[],
                json!({"v": "{{ trigger.body.n }}"})
            )])),
        )
        .await;
    let mut fired = Vec::new();
    for n in 0..5 {
        let run_id = fleet.fire(&hook, json!({"n": n})).await;
        // With no scheduler running, the run is recorded and queued, readable at once.
        let run = fleet.get_run(&workspace, run_id).await;
        assert_eq!(run.summary.status, RunStatus::Queued);
        assert_eq!(run.trigger["body"], json!({"n": n}));
        fired.push(run_id);
    }
    let mut seen: Vec<RunId> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?scenario_id={id}&limit=2&cursor={c}"),
            None => format!("/api/v1/runs?scenario_id={id}&limit=2"),
        };
        let (status, page) = fleet.call(&workspace, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").parse().expect("a run id"));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    fired.reverse();
    assert_eq!(seen, fired, "newest first, every run once");
    let (status, _) = fleet
        .call(&workspace, "GET", "/api/v1/runs?status=sleeping", None)
        .await;
    assert_eq!(status, 400);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_the_broker_cannot_take_gets_503_and_its_run_never_starts() {
    let mut fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (id, _) = fleet
        .active_scenario(
            &workspace,
            scenario(json!([transform("t", &[], json!({}))])),
        )
        .await;
    let (offline, offline_ops) = fleet
        .gateway_with_broker("amqp://guest:guest@127.0.0.1:1/%2f")
        .await;
    let ready = fleet
        .client
        .get(format!("{offline_ops}/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        ready.status(),
        503,
        "not ready while the broker is unreachable"
    );
    let ready: Value = ready.json().await.expect("JSON");
    assert_eq!(ready["checks"]["broker"], "down", "{ready}");
    assert_eq!(ready["checks"]["database"], "up", "{ready}");
    let healthy = fleet
        .client
        .get(format!("{offline_ops}/healthz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(healthy.status(), 200, "the process itself is alive");
    let response = fleet
        .client
        .post(format!("{offline}/api/v1/scenarios/{id}/runs"))
        .bearer_auth(&workspace.api_key)
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "broker_unavailable", "{body}");
    let (_, runs) = fleet.call(&workspace, "GET", "/api/v1/runs", None).await;
    let run = &runs["items"][0];
    assert_eq!(
        run["status"], "failed",
        "the run is marked as never started: {runs}"
    );
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not enqueued"),
        "{runs}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_covers_every_endpoint() {
    let fleet = Fleet::with(0, 0).await;
    let document: Value = fleet
        .client
        .get(fleet.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for expected in [
        "/api/v1/admin/workspaces",
        "/api/v1/scenarios",
        "/api/v1/scenarios/{id}",
        "/api/v1/scenarios/{id}/activate",
        "/api/v1/scenarios/{id}/pause",
        "/api/v1/scenarios/{id}/runs",
        "/api/v1/scenarios/{id}/versions",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/hooks/{token}",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    fleet.stop().await;
}

/// What client generators need: each operation named by a unique `operationId`, and each
/// request body a named schema (generators name inline ones after the operation, and
/// skip the operations whose names collide).
#[tokio::test(flavor = "multi_thread")]
async fn every_operation_has_a_unique_id_and_every_body_a_named_schema() {
    let fleet = Fleet::with(0, 0).await;
    let document: Value = fleet
        .client
        .get(fleet.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut ids = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        let operations = item.as_object().expect("a path item");
        for (method, operation) in operations
            .iter()
            .filter(|(m, _)| methods.contains(&m.as_str()))
        {
            let name = format!("{method} {path}");
            match operation["operationId"].as_str() {
                None => problems.push(format!("{name}: no operationId")),
                Some(id) => {
                    if let Some(other) = ids.insert(id.to_owned(), name.clone()) {
                        problems.push(format!("{name}: operationId {id} is also {other}'s"));
                    }
                }
            }
            let content = operation["requestBody"]["content"].as_object();
            for (media_type, body) in content.into_iter().flatten() {
                if !body["schema"]["$ref"].is_string() {
                    problems.push(format!(
                        "{name}: the {media_type} body is an inline schema {}",
                        body["schema"]
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // Integrators' code calls these names: they must not change.
    for (id, path, method) in [
        ("createScenario", "/api/v1/scenarios", "post"),
        ("updateScenario", "/api/v1/scenarios/{id}", "put"),
        (
            "activateScenario",
            "/api/v1/scenarios/{id}/activate",
            "post",
        ),
        ("startRun", "/api/v1/scenarios/{id}/runs", "post"),
        ("getRun", "/api/v1/runs/{id}", "get"),
        ("deliverWebhook", "/hooks/{token}", "post"),
    ] {
        assert_eq!(
            document["paths"][path][method]["operationId"], id,
            "{method} {path}"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_scenario_shows_its_whole_url_under_the_public_url() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(scenario(json!([transform("t", &[], json!({}))]))),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = created["webhook"]["path"].as_str().expect("a path");
    // The fleet's WEFT_PUBLIC_URL is its API's address.
    assert_eq!(
        created["webhook"]["url"],
        json!(fleet.url(path)),
        "{created}"
    );
    let id = created["id"].as_str().expect("id");
    for (method, read) in [
        ("GET", format!("/api/v1/scenarios/{id}")),
        ("POST", format!("/api/v1/scenarios/{id}/activate")),
    ] {
        let (status, body) = fleet.call(&workspace, method, &read, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["webhook"]["url"], json!(fleet.url(path)), "{read}");
    }
    let (_, listed) = fleet
        .call(&workspace, "GET", "/api/v1/scenarios", None)
        .await;
    assert_eq!(listed["items"][0]["webhook"]["url"], json!(fleet.url(path)));
    // The URL is the one that works.
    let response = fleet
        .client
        .post(created["webhook"]["url"].as_str().expect("a url"))
        .json(&json!({}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 202);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_timeout_over_the_cap_is_refused_when_saved_naming_the_cap() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let with_timeout = |timeout: &str| {
        let mut definition = scenario(json!([transform("t", &[], json!({}))]));
        definition["settings"] = json!({"timeout": timeout});
        definition
    };
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(with_timeout("2h")),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_scenario");
    let found = problems(&body);
    assert!(
        found.len() == 1
            && found[0].starts_with("-/settings.timeout/")
            && found[0].contains("2h")
            && found[0].contains("1h")
            && found[0].contains("WEFT_MAX_RUN_TIMEOUT"),
        "{found:?}"
    );

    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(with_timeout("1h")),
        )
        .await;
    assert_eq!(status, 201, "at the cap: {created}");
    let id = created["id"].as_str().expect("id");
    let (status, body) = fleet
        .call(
            &workspace,
            "PUT",
            &format!("/api/v1/scenarios/{id}"),
            Some(with_timeout("90m")),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        problems(&body)
            .iter()
            .any(|p| p.starts_with("-/settings.timeout/") && p.contains("1h")),
        "{body}"
    );
    let (_, versions) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/scenarios/{id}/versions"),
            None,
        )
        .await;
    assert_eq!(
        versions["items"].as_array().map(Vec::len),
        Some(1),
        "nothing saved"
    );
    fleet.stop().await;
}
