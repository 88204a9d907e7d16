//! The connector catalog and direct execution (architecture §6, §7), against the real database,
//! broker and workers, with a local server standing in for the connector's API.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use weft_testkit::{Fleet, Reply, Upstream, Workspace};

/// A workspace connector whose API is `base_url`.
fn crm(base_url: &str) -> Value {
    json!({
        "key": "crm", "name": "CRM", "version": "1.0.0", "category": "sales",
        "description": "A CRM stood in for by a local server",
        "base_url": base_url,
        "auth": {"type": "bearer"},
        "connection_schema": {"type": "object", "properties": {"region": {"type": "string", "enum": ["eu", "us"]}}},
        "test": {"method": "GET", "path": "/me"},
        "actions": [{
            "key": "get_contact", "name": "Get contact", "description": "One contact by id",
            "input_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "request": {"method": "GET", "path": "/contacts/{{ input.id }}"},
            "response": {"output": {"name": "$.body.name"}}
        }],
        "triggers": [{
            "key": "new_contact", "name": "New contact", "kind": "poll", "interval": "60s",
            "request": {"method": "GET", "path": "/contacts"}, "items": "$.body.items", "id": "$.id"
        }]
    })
}

async fn list_all(fleet: &Fleet, workspace: &Workspace, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/connectors?limit={limit}&cursor={cursor}"),
            None => format!("/api/v1/connectors?limit={limit}"),
        };
        let (status, page) = fleet.call(workspace, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let page_items = page["items"].as_array().expect("items").clone();
        assert!(page_items.len() <= limit);
        items.extend(page_items);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn keys(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|c| c["key"].as_str().expect("key").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_lists_the_builtins_and_only_this_workspaces_connectors() {
    let fleet = Fleet::with(0, 0).await;
    let (mine, other) = (fleet.workspace().await, fleet.workspace().await);
    let source = crm("https://crm.example.com");
    let created = fleet.register_connector(&mine, source.clone()).await;
    assert_eq!(created["key"], "crm");
    assert_eq!(created["builtin"], false);
    assert_eq!(created["revision"], 1);
    assert_eq!(created["auth_type"], "bearer");
    assert_eq!(created["manifest"], source);

    let everything = list_all(&fleet, &mine, 50).await;
    let all_keys = keys(&everything);
    for key in ["crm", "github", "http", "slack"] {
        assert!(all_keys.contains(&key.to_owned()), "{key} in {all_keys:?}");
    }
    let mut sorted = all_keys.clone();
    sorted.sort();
    assert_eq!(all_keys, sorted, "by key");
    let crm_summary = &everything[all_keys.iter().position(|k| k == "crm").expect("crm")];
    assert_eq!(
        crm_summary["actions"],
        json!([{"key": "get_contact", "name": "Get contact", "description": "One contact by id"}])
    );
    assert_eq!(crm_summary["triggers"][0]["kind"], "poll");
    assert!(crm_summary.get("manifest").is_none(), "lists are summaries");
    let http = &everything[all_keys.iter().position(|k| k == "http").expect("http")];
    assert_eq!(
        (http["builtin"].clone(), http["auth_type"].clone()),
        (json!(true), json!("none"))
    );

    // Pages of one item walk the same list: built-ins and stored ones interleave by key.
    assert_eq!(keys(&list_all(&fleet, &mine, 1).await), all_keys);

    let theirs = keys(&list_all(&fleet, &other, 50).await);
    assert!(!theirs.contains(&"crm".to_owned()), "{theirs:?}");
    let (status, body) = fleet
        .call(&other, "GET", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 404, "another workspace's connector: {body}");
    let (status, body) = fleet
        .call(&mine, "GET", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["manifest"], source);
    let (status, slack) = fleet
        .call(&other, "GET", "/api/v1/connectors/slack", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(slack["manifest"]["auth"]["type"], "oauth2");
    let (status, http) = fleet
        .call(&other, "GET", "/api/v1/connectors/http", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(http["manifest"]["actions"][0]["key"], "request");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_names_every_problem_and_refuses_taken_keys() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let mut broken = crm("https://crm.example.com");
    broken["actions"][0]["request"]["method"] = json!("FETCH");
    broken.as_object_mut().expect("object").remove("name");
    let (status, body) = fleet
        .call(&workspace, "POST", "/api/v1/connectors", Some(broken))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_manifest");
    let problems = body["error"]["details"]["problems"]
        .as_array()
        .expect("problems");
    let paths: BTreeSet<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().expect("path"))
        .collect();
    assert!(paths.contains("actions[0].request.method"), "{problems:?}");
    assert!(paths.contains("name"), "{problems:?}");
    let method = problems
        .iter()
        .find(|p| p["path"] == "actions[0].request.method")
        .expect("the method's problem");
    assert!(
        method["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"FETCH\" is not an HTTP method")),
        "{method}"
    );

    for taken in ["slack", "http", "github"] {
        let mut manifest = crm("https://crm.example.com");
        manifest["key"] = json!(taken);
        let (status, body) = fleet
            .call(&workspace, "POST", "/api/v1/connectors", Some(manifest))
            .await;
        assert_eq!(status, 409, "{taken}: {body}");
        assert_eq!(body["error"]["code"], "builtin_connector");
    }
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors",
            Some(crm("https://crm.example.com")),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "connector_exists");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn saves_write_immutable_versions_and_deletes_are_soft() {
    let fleet = Fleet::with(0, 0).await;
    let (workspace, other) = (fleet.workspace().await, fleet.workspace().await);
    fleet
        .register_connector(&workspace, crm("https://v1.example.com"))
        .await;
    let updated_source = crm("https://v2.example.com");
    let (status, updated) = fleet
        .call(
            &workspace,
            "PUT",
            "/api/v1/connectors/crm",
            Some(updated_source.clone()),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["manifest"]["base_url"], "https://v2.example.com");

    let pg = fleet.pg().await;
    let versions: Vec<(i32, String)> = pg
        .query(
            "SELECT version, manifest->>'base_url' FROM connector_versions WHERE key = 'crm' ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        versions,
        [
            (1, "https://v1.example.com".to_owned()),
            (2, "https://v2.example.com".to_owned())
        ],
        "the first version is kept as it was"
    );

    let mut renamed = updated_source.clone();
    renamed["key"] = json!("erp");
    let (status, body) = fleet
        .call(&workspace, "PUT", "/api/v1/connectors/crm", Some(renamed))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["problems"][0]["path"], "key");
    let (status, _) = fleet
        .call(
            &other,
            "PUT",
            "/api/v1/connectors/crm",
            Some(updated_source.clone()),
        )
        .await;
    assert_eq!(status, 404, "another workspace's connector");
    let (status, _) = fleet
        .call(&other, "DELETE", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 404, "another workspace's connector");
    let (status, body) = fleet
        .call(&workspace, "DELETE", "/api/v1/connectors/slack", None)
        .await;
    assert_eq!(status, 409, "{body}");

    let (status, _) = fleet
        .call(&workspace, "DELETE", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = fleet
        .call(&workspace, "GET", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 404, "deleted");
    let (status, _) = fleet
        .call(&workspace, "DELETE", "/api/v1/connectors/crm", None)
        .await;
    assert_eq!(status, 404, "already deleted");
    let kept: i64 = pg
        .query_one(
            "SELECT count(*) FROM connector_versions WHERE key = 'crm'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        kept, 2,
        "runs may still pin the versions of a deleted connector"
    );

    let again = fleet
        .register_connector(&workspace, crm("https://v3.example.com"))
        .await;
    assert_eq!(again["revision"], 3, "the key's versions continue");
    fleet.stop().await;
}

/// A bearer connection of the `crm` connector at `upstream`.
async fn crm_connection(fleet: &Fleet, workspace: &Workspace, token: &str) -> String {
    let created = fleet
        .connection(
            workspace,
            json!({"connector": "crm", "name": "Sales CRM", "config": {"region": "eu"}, "credentials": {"token": token}}),
        )
        .await;
    created["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_runs_through_a_worker_with_the_connections_credentials() {
    let fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/contacts/42",
        vec![Reply::json(200, json!({"id": "42", "name": "Ada"}))],
    );
    upstream.script(
        "/contacts/404",
        vec![Reply::json(404, json!({"error": "no such contact"}))],
    );
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&upstream.url))
        .await;
    let connection = crm_connection(&fleet, &workspace, "crm-token-1").await;

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(json!({"connection_id": connection, "input": {"id": "42"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["output"], json!({"name": "Ada"}));
    assert_eq!(body["error"], Value::Null);
    assert!(body["duration_ms"].as_i64().is_some_and(|ms| ms >= 0));
    let received = upstream.received_on("/contacts/42");
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"]
            .to_str()
            .expect("ascii"),
        "Bearer crm-token-1"
    );

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(json!({"connection_id": connection, "input": {"id": "404"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["output"], Value::Null);
    assert_eq!(body["error"]["status"], 404, "{body}");
    assert_eq!(body["error"]["class"], "permanent");

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(json!({"connection_id": connection, "input": {"id": 7}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("input.id")),
        "the message names the field: {body}"
    );
    assert_eq!(
        upstream.received().len(),
        2,
        "an invalid input never reaches the upstream"
    );

    let (status, connection_now) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/connections/{connection}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        connection_now["last_used_at"].is_string(),
        "{connection_now}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_connector_runs_a_free_form_request() {
    let fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/http/actions/request/execute",
            Some(json!({"input": {
                "method": "POST", "url": format!("{}/echo", upstream.url),
                "headers": {"X-Test": "yes"}, "body": {"hello": "world"}
            }})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["output"]["status"], 200);
    assert_eq!(body["output"]["body"]["body"], json!({"hello": "world"}));
    let received = upstream.received_on("/echo");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["x-test"], "yes");

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/http/actions/request/execute",
            Some(json!({"input": {"url": "not a url"}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("input.url")),
        "{body}"
    );
    let (status, _) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/http/actions/download/execute",
            Some(json!({"input": {}})),
        )
        .await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn execution_needs_a_connection_of_the_connector_in_the_workspace() {
    let fleet = Fleet::with(0, 0).await;
    let (workspace, other) = (fleet.workspace().await, fleet.workspace().await);
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let mut erp = crm("https://erp.example.com");
    erp["key"] = json!("erp");
    fleet.register_connector(&workspace, erp.clone()).await;
    fleet
        .register_connector(&other, crm("https://crm.example.com"))
        .await;
    let erp_connection = fleet
        .connection(
            &workspace,
            json!({"connector": "erp", "name": "ERP", "credentials": {"token": "t"}}),
        )
        .await["id"]
        .clone();
    let theirs = crm_connection(&fleet, &other, "their-token").await;
    let path = "/api/v1/connectors/crm/actions/get_contact/execute";
    let cases = [
        (
            json!({"input": {"id": "1"}}),
            400,
            "`connection_id` is required",
        ),
        (
            json!({"connection_id": erp_connection, "input": {"id": "1"}}),
            400,
            "belongs to connector `erp`",
        ),
        (
            json!({"connection_id": theirs, "input": {"id": "1"}}),
            404,
            "connection not found",
        ),
    ];
    for (body, expected, message) in cases {
        let (status, answer) = fleet.call(&workspace, "POST", path, Some(body)).await;
        assert_eq!(status, expected, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{message}: {answer}"
        );
    }
    let (status, _) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/delete_contact/execute",
            Some(json!({"input": {}})),
        )
        .await;
    assert_eq!(status, 404, "no such action");
    let (status, _) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/nope/actions/x/execute",
            Some(json!({"input": {}})),
        )
        .await;
    assert_eq!(status, 404, "no such connector");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_workers_an_execution_times_out_with_504() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let mut quick = crm("https://crm.example.com");
    quick["auth"] = json!({"type": "none"});
    quick["actions"][0]["request"]["timeout"] = json!("1s");
    fleet.register_connector(&workspace, quick).await;
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(json!({"input": {"id": "1"}})),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no worker answered")),
        "{body}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_name_connectors_and_connections_that_exist_here() {
    let fleet = Fleet::with(0, 0).await;
    let (workspace, other) = (fleet.workspace().await, fleet.workspace().await);
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let mine = crm_connection(&fleet, &workspace, "t").await;
    fleet
        .register_connector(&other, crm("https://crm.example.com"))
        .await;
    let theirs = crm_connection(&fleet, &other, "t").await;
    let definition = |connection: Option<&str>| {
        let mut node = json!({"id": "lookup", "type": "action", "connector": "crm", "action": "get_contact", "input": {"id": "1"}});
        if let Some(connection) = connection {
            node["connection"] = json!(connection);
        }
        json!({"name": "s", "trigger": {"type": "manual"}, "nodes": [node]})
    };
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(definition(Some(&mine))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (connection, message) in [
        (None, "required: connector `crm` uses bearer auth"),
        (Some(theirs.as_str()), "in this workspace"),
    ] {
        let (status, body) = fleet
            .call(
                &workspace,
                "POST",
                "/api/v1/scenarios",
                Some(definition(connection)),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let problem = &body["error"]["details"]["problems"][0];
        assert_eq!(problem["node"], "lookup");
        assert_eq!(problem["field"], "connection");
        assert!(
            problem["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{message}: {problem}"
        );
    }
    let (status, body) = fleet
        .call(
            &other,
            "POST",
            "/api/v1/scenarios",
            Some(json!({"name": "s", "trigger": {"type": "manual"}, "nodes": [
                {"id": "x", "type": "action", "connector": "crm", "action": "nope", "connection": theirs}
            ]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has no action `nope`")),
        "{body}"
    );
    fleet.stop().await;
}
