//! The connector engine driven directly (no scheduler, no broker) against local servers
//! standing in for third-party APIs and authorization servers: auth injection, OAuth2
//! tokens, idempotency keys, response interpretation, egress, and that no credential
//! ever ends up in what an attempt records.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use weft_domain::connector::Credentials;
use weft_domain::crypto::KeyRing;
use weft_domain::ids::{ConnectionId, RunId, WorkspaceId};
use weft_domain::messages::{
    ActionCall, ErrorClass, NodeError, NodeTask, SealedConnection, VERSION,
};
use weft_runtime::egress::EgressPolicy;
use weft_testkit::{Recorded, Reply, Upstream};
use weft_worker::engine::{Engine, Execution};

const KEYS: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

fn ring() -> KeyRing {
    KEYS.parse().expect("test key ring")
}

fn engine_with(allow: &[&str]) -> Engine {
    let rules = allow
        .iter()
        .map(|rule| rule.parse().expect("egress rule"))
        .collect();
    Engine::new(EgressPolicy::new(rules), ring(), 1 << 20).expect("engine starts")
}

fn engine() -> Engine {
    engine_with(&["127.0.0.0/8"])
}

/// One connection of a workspace, its credentials sealed as the gateway stores them.
struct Connection {
    workspace_id: WorkspaceId,
    sealed: SealedConnection,
}

fn connection(credentials: Value) -> Connection {
    let workspace_id = WorkspaceId::generate();
    let id = ConnectionId::generate();
    let opened = Credentials::parse(credentials.to_string().as_bytes()).expect("credentials");
    Connection {
        workspace_id,
        sealed: SealedConnection {
            id,
            config: json!({}),
            credentials: Some(opened.seal(&ring(), workspace_id, id)),
        },
    }
}

fn call(base_url: &str, auth: Value, action: Value, connection: Option<&Connection>) -> ActionCall {
    let mut call = json!({"base_url": base_url, "auth": auth});
    if let Value::Object(fields) = action {
        for (key, value) in fields {
            call[key] = value;
        }
    }
    let mut call: ActionCall = serde_json::from_value(call).expect("action call");
    call.connection = connection.map(|c| c.sealed.clone());
    call
}

fn task(call: Option<ActionCall>, input: Value, workspace_id: WorkspaceId) -> NodeTask {
    NodeTask {
        v: VERSION,
        run_id: RunId::generate(),
        workspace_id,
        node_id: "step".into(),
        item_index: None,
        attempt: 1,
        connector: if call.is_some() { "acme" } else { "http" }.into(),
        action: if call.is_some() { "act" } else { "request" }.into(),
        input,
        timeout_ms: 5_000,
        ready_at: Utc::now(),
        not_before: None,
        call: call.map(Box::new),
        reply_to: None,
    }
}

fn header(request: &Recorded, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn form(request: &Recorded) -> BTreeMap<String, String> {
    let body = request.body.as_str().expect("a form body");
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn error(execution: &Execution) -> &NodeError {
    execution.result.as_ref().expect_err("the attempt fails")
}

/// Nothing the attempt hands back (output, error, connection update) holds a secret.
fn assert_no_secret(task: &NodeTask, execution: &Execution, secrets: &[&str]) {
    let now = Utc::now();
    let recorded = serde_json::to_string(&execution.clone().into_result(task, now, now))
        .expect("result serializes");
    for secret in secrets {
        assert!(
            !recorded.contains(secret),
            "`{secret}` leaked into the result: {recorded}"
        );
    }
}

fn opened(execution: &Execution, connection: &Connection) -> Credentials {
    let update = execution.connection.as_ref().expect("a connection update");
    assert_eq!(update.id, connection.sealed.id);
    let sealed = update.credentials.as_deref().expect("renewed credentials");
    Credentials::open(
        &ring(),
        sealed,
        connection.workspace_id,
        connection.sealed.id,
    )
    .expect("the update is sealed for the same connection")
}

fn field(credentials: &Credentials, name: &str) -> Option<String> {
    credentials.get(name).map(|v| v.expose_secret().to_owned())
}

#[tokio::test]
async fn each_auth_type_sends_its_credential_exactly_where_the_manifest_says() {
    let upstream = Upstream::start().await;
    let engine = engine();
    let get = json!({"request": {"method": "GET", "path": "/who"}});
    let cases = [
        (
            json!({"type": "api_key", "in": "header", "name": "X-Api-Key", "prefix": "Token "}),
            json!({"api_key": "key-in-header-1"}),
        ),
        (
            json!({"type": "api_key", "in": "query", "name": "api_key"}),
            json!({"api_key": "key-in-query-2"}),
        ),
        (
            json!({"type": "bearer"}),
            json!({"token": "bearer-token-3"}),
        ),
        (
            json!({"type": "basic"}),
            json!({"username": "ada", "password": "basic-pass-4"}),
        ),
        (json!({"type": "none"}), json!({})),
    ];
    for (auth, credentials) in cases {
        let connection = connection(credentials);
        let task = task(
            Some(call(&upstream.url, auth, get.clone(), Some(&connection))),
            json!({}),
            connection.workspace_id,
        );
        let execution = engine.execute(&task).await;
        assert!(execution.result.is_ok(), "{execution:?}");
        assert_no_secret(
            &task,
            &execution,
            &[
                "key-in-header-1",
                "key-in-query-2",
                "bearer-token-3",
                "basic-pass-4",
            ],
        );
        assert_eq!(execution.connection, None, "nothing changed");
    }
    let received = upstream.received_on("/who");
    assert_eq!(received.len(), 5);
    assert_eq!(
        header(&received[0], "x-api-key").as_deref(),
        Some("Token key-in-header-1")
    );
    assert_eq!(header(&received[0], "authorization"), None);
    assert_eq!(received[1].query, "api_key=key-in-query-2");
    assert_eq!(header(&received[1], "x-api-key"), None);
    assert_eq!(
        header(&received[2], "authorization").as_deref(),
        Some("Bearer bearer-token-3")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("ada:basic-pass-4");
    assert_eq!(
        header(&received[3], "authorization"),
        Some(format!("Basic {basic}"))
    );
    assert_eq!(header(&received[4], "authorization"), None);
    assert_eq!(received[4].query, "");
}

#[tokio::test]
async fn a_value_in_the_path_reaches_the_upstream_as_one_encoded_segment() {
    let upstream = Upstream::start().await;
    let engine = engine();
    let item = call(
        &upstream.url,
        json!({"type": "none"}),
        json!({"request": {"method": "GET", "path": "/items/{{ input.id }}"}}),
        None,
    );
    for id in ["x?admin=1", "../jump"] {
        let execution = engine
            .execute(&task(
                Some(item.clone()),
                json!({ "id": id }),
                WorkspaceId::generate(),
            ))
            .await;
        assert!(execution.result.is_ok(), "{id}: {execution:?}");
    }
    let received: Vec<(String, String)> = upstream
        .received()
        .into_iter()
        .map(|r| (r.path, r.query))
        .collect();
    assert_eq!(
        received,
        [
            ("/items/x%3Fadmin%3D1".to_owned(), String::new()),
            ("/items/..%2Fjump".to_owned(), String::new()),
        ]
    );

    let execution = engine
        .execute(&task(
            Some(item),
            json!({"id": ".."}),
            WorkspaceId::generate(),
        ))
        .await;
    let failure = error(&execution);
    assert_eq!(failure.class, ErrorClass::Permanent);
    assert!(
        failure
            .message
            .starts_with("request.path: {{ input.id }} renders to a `..` segment"),
        "{}",
        failure.message
    );
    assert_eq!(
        upstream.received().len(),
        2,
        "nothing is sent for a dot segment"
    );
}

#[tokio::test]
async fn a_key_echoed_back_by_the_upstream_is_cut_from_output_and_errors() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/fails",
        vec![Reply::json(
            400,
            json!({"message": "key echo-key-5 is not allowed here"}),
        )],
    );
    let engine = engine();
    let connection = connection(json!({"api_key": "echo-key-5"}));
    let auth = json!({"type": "api_key", "in": "query", "name": "key"});
    // The stand-in echoes the query string back in its body.
    let echo = task(
        Some(call(
            &upstream.url,
            auth.clone(),
            json!({"request": {"method": "GET", "path": "/echo"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine.execute(&echo).await;
    let output = execution.result.as_ref().expect("succeeds");
    assert_eq!(output["body"]["query"], "key=[redacted]");
    assert_no_secret(&echo, &execution, &["echo-key-5"]);

    let failing = task(
        Some(call(
            &upstream.url,
            auth,
            json!({"request": {"method": "GET", "path": "/fails"},
                   "response": {"error": "$.body.message"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine.execute(&failing).await;
    let failure = error(&execution);
    assert_eq!(failure.class, ErrorClass::Permanent);
    assert_eq!(
        failure.message,
        "upstream answered 400 Bad Request: key [redacted] is not allowed here"
    );
    assert_no_secret(&failing, &execution, &["echo-key-5"]);
}

fn oauth(upstream: &Upstream, grant: &str, scopes: Value) -> Value {
    json!({"type": "oauth2", "grant": grant, "token_url": format!("{}/token", upstream.url),
           "authorize_url": format!("{}/authorize", upstream.url), "scopes": scopes})
}

fn in_seconds(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

#[tokio::test]
async fn an_access_token_about_to_expire_is_refreshed_before_the_request() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/token",
        vec![Reply::json(
            200,
            json!({"access_token": "fresh-access-1", "refresh_token": "next-refresh-1",
                   "expires_in": 3600, "token_type": "bearer"}),
        )],
    );
    let connection = connection(json!({
        "client_id": "client-1", "client_secret": "client-secret-1",
        "access_token": "old-access-1", "refresh_token": "old-refresh-1",
        "expires_at": in_seconds(30)
    }));
    let task = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine().execute(&task).await;
    assert!(execution.result.is_ok(), "{execution:?}");

    let token = upstream.received_on("/token");
    assert_eq!(token.len(), 1);
    assert_eq!(token[0].method, "POST");
    assert_eq!(
        header(&token[0], "accept").as_deref(),
        Some("application/json")
    );
    let sent = form(&token[0]);
    assert_eq!(
        sent.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        sent.get("refresh_token").map(String::as_str),
        Some("old-refresh-1")
    );
    assert_eq!(sent.get("client_id").map(String::as_str), Some("client-1"));
    assert_eq!(
        sent.get("client_secret").map(String::as_str),
        Some("client-secret-1")
    );

    let items = upstream.received_on("/items");
    assert_eq!(items.len(), 1);
    assert_eq!(
        header(&items[0], "authorization").as_deref(),
        Some("Bearer fresh-access-1")
    );

    let stored = opened(&execution, &connection);
    assert_eq!(
        field(&stored, "access_token").as_deref(),
        Some("fresh-access-1")
    );
    assert_eq!(
        field(&stored, "refresh_token").as_deref(),
        Some("next-refresh-1")
    );
    assert_eq!(
        field(&stored, "client_secret").as_deref(),
        Some("client-secret-1")
    );
    let expires = stored.expires_at().expect("an expiry");
    assert!(
        expires > Utc::now() + chrono::Duration::seconds(3000),
        "{expires}"
    );
    assert_eq!(
        execution.connection.as_ref().and_then(|u| u.error.clone()),
        None
    );
    assert_no_secret(
        &task,
        &execution,
        &[
            "fresh-access-1",
            "next-refresh-1",
            "old-refresh-1",
            "client-secret-1",
        ],
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_sends_again() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/items",
        vec![
            Reply::json(401, json!({"message": "Bad credentials"})),
            Reply::echo(),
        ],
    );
    upstream.script(
        "/token",
        vec![Reply::json(
            200,
            json!({"access_token": "fresh-access-2", "expires_in": 3600}),
        )],
    );
    let connection = connection(json!({
        "client_id": "client-2", "client_secret": "client-secret-2",
        "access_token": "revoked-access-2", "refresh_token": "refresh-2",
        "expires_at": in_seconds(7200)
    }));
    let task = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine().execute(&task).await;
    assert!(execution.result.is_ok(), "{execution:?}");
    assert_eq!(execution.status, Some(200));

    let items = upstream.received_on("/items");
    let sent: Vec<Option<String>> = items.iter().map(|r| header(r, "authorization")).collect();
    assert_eq!(
        sent,
        [
            Some("Bearer revoked-access-2".to_owned()),
            Some("Bearer fresh-access-2".to_owned())
        ]
    );
    assert_eq!(upstream.received_on("/token").len(), 1);
    let stored = opened(&execution, &connection);
    assert_eq!(
        field(&stored, "access_token").as_deref(),
        Some("fresh-access-2")
    );
    assert_eq!(
        field(&stored, "refresh_token").as_deref(),
        Some("refresh-2"),
        "a provider that does not rotate refresh tokens leaves the one held"
    );
    assert_no_secret(
        &task,
        &execution,
        &["fresh-access-2", "refresh-2", "client-secret-2"],
    );
}

#[tokio::test]
async fn a_refused_refresh_breaks_the_connection_and_fails_the_node_for_good() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/token",
        vec![Reply::json(
            400,
            json!({"error": "invalid_grant", "error_description": "Token has been revoked"}),
        )],
    );
    let connection = connection(json!({
        "client_id": "client-3", "client_secret": "client-secret-3",
        "access_token": "expired-access-3", "refresh_token": "revoked-refresh-3",
        "expires_at": in_seconds(-10)
    }));
    let task = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine().execute(&task).await;
    let failure = error(&execution);
    assert_eq!(failure.class, ErrorClass::Permanent);
    assert!(
        failure
            .message
            .contains("invalid_grant: Token has been revoked"),
        "{}",
        failure.message
    );
    let update = execution.connection.as_ref().expect("a connection update");
    assert_eq!(update.id, connection.sealed.id);
    assert_eq!(update.error.as_deref(), Some(failure.message.as_str()));
    assert_eq!(update.credentials, None);
    assert!(
        upstream.received_on("/items").is_empty(),
        "no request with an expired token"
    );
    assert_no_secret(
        &task,
        &execution,
        &["expired-access-3", "revoked-refresh-3", "client-secret-3"],
    );
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_is_retried_later_without_blaming_the_connection() {
    let upstream = Upstream::start().await;
    upstream.script("/token", vec![Reply::json(503, json!({}))]);
    let connection = connection(json!({
        "client_id": "c", "client_secret": "client-secret-6",
        "access_token": "a", "refresh_token": "refresh-6", "expires_at": in_seconds(-10)
    }));
    let task = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine().execute(&task).await;
    assert_eq!(error(&execution).class, ErrorClass::Retryable);
    assert_eq!(execution.connection, None);
}

#[tokio::test]
async fn client_credentials_obtain_a_token_with_the_manifest_scopes() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/token",
        vec![Reply::json(
            200,
            json!({"access_token": "machine-access-7", "expires_in": 600}),
        )],
    );
    let connection =
        connection(json!({"client_id": "machine", "client_secret": "machine-secret-7"}));
    let task = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "client_credentials", json!(["read", "write"])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine().execute(&task).await;
    assert!(execution.result.is_ok(), "{execution:?}");
    let sent = form(&upstream.received_on("/token")[0]);
    assert_eq!(
        sent.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(sent.get("scope").map(String::as_str), Some("read write"));
    assert_eq!(sent.get("client_id").map(String::as_str), Some("machine"));
    assert_eq!(
        header(&upstream.received_on("/items")[0], "authorization").as_deref(),
        Some("Bearer machine-access-7")
    );
    let stored = opened(&execution, &connection);
    assert_eq!(
        field(&stored, "access_token").as_deref(),
        Some("machine-access-7")
    );
    assert_no_secret(&task, &execution, &["machine-access-7", "machine-secret-7"]);
}

#[tokio::test]
async fn concurrent_tasks_of_one_connection_refresh_its_token_once() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/token",
        vec![
            Reply::json(
                200,
                json!({"access_token": "shared-access-8", "refresh_token": "rotated-8", "expires_in": 3600}),
            )
            .after(Duration::from_millis(200)),
            // A rotating provider refuses the old refresh token once it was used.
            Reply::json(400, json!({"error": "invalid_grant"})),
        ],
    );
    let connection = connection(json!({
        "client_id": "c", "client_secret": "client-secret-8",
        "access_token": "old", "refresh_token": "single-use-8", "expires_at": in_seconds(5)
    }));
    let call = call(
        &upstream.url,
        oauth(&upstream, "authorization_code", json!([])),
        json!({"request": {"method": "GET", "path": "/items"}}),
        Some(&connection),
    );
    let engine = engine();
    let tasks: Vec<NodeTask> = (0..5)
        .map(|_| task(Some(call.clone()), json!({}), connection.workspace_id))
        .collect();
    let executions = futures_util::future::join_all(tasks.iter().map(|t| engine.execute(t))).await;
    for execution in &executions {
        assert!(execution.result.is_ok(), "{execution:?}");
    }
    assert_eq!(upstream.received_on("/token").len(), 1);
    for request in upstream.received_on("/items") {
        assert_eq!(
            header(&request, "authorization").as_deref(),
            Some("Bearer shared-access-8")
        );
    }
}

#[tokio::test]
async fn the_idempotency_key_is_stable_for_a_node_run_and_differs_between_node_runs() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/charges",
        vec![
            Reply::json(503, json!({})),
            Reply::json(200, json!({"id": "ch_1"})),
        ],
    );
    let engine = engine();
    let charge = call(
        &upstream.url,
        json!({"type": "none"}),
        json!({"request": {"method": "POST", "path": "/charges", "body": {"amount": "{{ input.amount }}"}},
               "idempotency": {"header": "Idempotency-Key"}}),
        None,
    );
    let first = task(
        Some(charge.clone()),
        json!({"amount": 100}),
        WorkspaceId::generate(),
    );
    let failed = engine.execute(&first).await;
    assert_eq!(error(&failed).class, ErrorClass::Retryable);
    let retry = NodeTask {
        attempt: 2,
        ..first.clone()
    };
    assert!(engine.execute(&retry).await.result.is_ok());
    let other_node = NodeTask {
        node_id: "second_charge".into(),
        ..first.clone()
    };
    engine.execute(&other_node).await;
    let other_run = NodeTask {
        run_id: RunId::generate(),
        ..first.clone()
    };
    engine.execute(&other_run).await;
    let item = NodeTask {
        item_index: Some(0),
        ..first.clone()
    };
    engine.execute(&item).await;

    let keys: Vec<String> = upstream
        .received_on("/charges")
        .iter()
        .map(|r| header(r, "idempotency-key").expect("every call carries a key"))
        .collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0], keys[1], "a retry sends the same key");
    for other in &keys[2..] {
        assert_ne!(&keys[0], other);
    }
    assert_ne!(keys[2], keys[3]);
    assert_ne!(keys[3], keys[4]);
    assert_eq!(
        upstream.received_on("/charges")[0].body,
        json!({"amount": 100})
    );
}

#[tokio::test]
async fn success_if_false_fails_with_the_message_at_the_error_path() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/chat.postMessage",
        vec![
            Reply::json(200, json!({"ok": false, "error": "channel_not_found"})),
            Reply::json(
                200,
                json!({"ok": true, "ts": "1700000000.000100", "channel": "C1"}),
            ),
        ],
    );
    let engine = engine();
    let connection = connection(json!({"token": "xoxb-secret-9"}));
    let post = call(
        &format!("{}/", upstream.url),
        json!({"type": "bearer"}),
        json!({"request": {"method": "POST", "path": "/chat.postMessage",
                           "body": {"channel": "{{ input.channel }}", "text": "{{ input.text }}"}},
               "response": {"success_if": "response.body.ok", "error": "$.body.error",
                            "output": {"ts": "$.body.ts", "channel": "$.body.channel"}}}),
        Some(&connection),
    );
    let first = task(
        Some(post.clone()),
        json!({"channel": "C404", "text": "hi"}),
        connection.workspace_id,
    );
    let execution = engine.execute(&first).await;
    let failure = error(&execution);
    assert_eq!(
        (failure.class, failure.message.as_str(), failure.status),
        (ErrorClass::Permanent, "channel_not_found", Some(200))
    );
    let second = task(
        Some(post),
        json!({"channel": "C1", "text": "hi"}),
        connection.workspace_id,
    );
    let execution = engine.execute(&second).await;
    assert_eq!(
        execution.result,
        Ok(json!({"ts": "1700000000.000100", "channel": "C1"}))
    );
    let sent = upstream.received_on("/chat.postMessage");
    assert_eq!(sent[0].body, json!({"channel": "C404", "text": "hi"}));
    assert_eq!(
        header(&sent[0], "content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn a_429_is_rate_limited_with_the_wait_the_upstream_asked_for() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/busy",
        vec![Reply::json(429, json!({})).header("retry-after", "3")],
    );
    let task = task(
        None,
        json!({"url": format!("{}/busy", upstream.url)}),
        WorkspaceId::generate(),
    );
    let execution = engine().execute(&task).await;
    let failure = error(&execution);
    assert_eq!(
        (failure.class, failure.retry_after_ms, failure.status),
        (ErrorClass::RateLimited, Some(3000), Some(429))
    );
}

#[tokio::test]
async fn credentials_sealed_for_another_connection_do_not_open() {
    let upstream = Upstream::start().await;
    let mut moved = connection(json!({"token": "moved-token-10"}));
    let original_id = moved.sealed.id;
    moved.sealed.id = ConnectionId::generate();
    let task = task(
        Some(call(
            &upstream.url,
            json!({"type": "bearer"}),
            json!({"request": {"method": "GET", "path": "/x"}}),
            Some(&moved),
        )),
        json!({}),
        moved.workspace_id,
    );
    let execution = engine().execute(&task).await;
    let failure = error(&execution);
    assert_eq!(failure.class, ErrorClass::Permanent);
    assert!(
        failure.message.starts_with(&format!(
            "credentials of connection {} do not decrypt with the key ring",
            moved.sealed.id
        )),
        "{}",
        failure.message
    );
    assert_ne!(original_id, moved.sealed.id);
    assert!(upstream.received().is_empty());
}

/// What the second upstream, another origin, was sent: nothing.
fn assert_other_origin_received_nothing(other: &Upstream) {
    let received = other.received();
    assert!(received.is_empty(), "another origin was sent {received:?}");
}

fn assert_redirect_refused(execution: &Execution, other: &Upstream) {
    let failure = error(execution);
    assert_eq!(failure.class, ErrorClass::Permanent, "{failure:?}");
    assert!(
        failure.message.ends_with(&format!(
            "redirected to {}; credentials are not sent to another origin",
            other.url
        )),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_credential_never_follows_a_redirect_to_another_origin() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let landing = format!("{}/landing?page=1", other.url);
    let cases = [
        (
            301,
            json!({"type": "api_key", "in": "header", "name": "X-Api-Key"}),
            json!({"api_key": "header-key-redirect-1"}),
        ),
        (
            307,
            json!({"type": "api_key", "in": "query", "name": "api_key"}),
            json!({"api_key": "query-key-redirect-2"}),
        ),
        (
            302,
            json!({"type": "bearer"}),
            json!({"token": "bearer-redirect-3"}),
        ),
        (
            308,
            json!({"type": "basic"}),
            json!({"username": "ada", "password": "basic-redirect-4"}),
        ),
        (
            303,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"client_id": "c", "client_secret": "client-secret-redirect-5",
                   "access_token": "access-redirect-5", "expires_at": in_seconds(3600)}),
        ),
    ];
    let engine = engine();
    for (status, auth, credentials) in cases {
        let path = format!("/moved/{status}");
        upstream.script(
            &path,
            vec![Reply::json(status, json!({})).header("location", &landing)],
        );
        let connection = connection(credentials);
        let task = task(
            Some(call(
                &upstream.url,
                auth.clone(),
                json!({"request": {"method": "POST", "path": path, "body": {"a": 1}}}),
                Some(&connection),
            )),
            json!({}),
            connection.workspace_id,
        );
        let execution = engine.execute(&task).await;
        assert_redirect_refused(&execution, &other);
        assert_eq!(
            execution.connection, None,
            "{auth}: not the connection's fault"
        );
        assert_no_secret(
            &task,
            &execution,
            &[
                "header-key-redirect-1",
                "query-key-redirect-2",
                "bearer-redirect-3",
                "basic-redirect-4",
                "access-redirect-5",
            ],
        );
        assert_eq!(upstream.received_on(&path).len(), 1, "{auth}");
    }
    assert_other_origin_received_nothing(&other);
}

#[tokio::test]
async fn an_oauth_token_request_never_follows_a_redirect_to_another_origin() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    // A 307 would repeat the POST, client secret and all, at the other origin.
    upstream.script(
        "/token",
        vec![Reply::json(307, json!({})).header("location", &format!("{}/token", other.url))],
    );
    let engine = engine();
    let machine = connection(json!({"client_id": "machine", "client_secret": "token-secret-6"}));
    let client_credentials = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "client_credentials", json!(["read"])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&machine),
        )),
        json!({}),
        machine.workspace_id,
    );
    let execution = engine.execute(&client_credentials).await;
    assert_redirect_refused(&execution, &other);
    assert_no_secret(&client_credentials, &execution, &["token-secret-6"]);

    let expired = connection(json!({
        "client_id": "c", "client_secret": "token-secret-7", "access_token": "old-7",
        "refresh_token": "refresh-redirect-7", "expires_at": in_seconds(-10)
    }));
    let refresh = task(
        Some(call(
            &upstream.url,
            oauth(&upstream, "authorization_code", json!([])),
            json!({"request": {"method": "GET", "path": "/items"}}),
            Some(&expired),
        )),
        json!({}),
        expired.workspace_id,
    );
    let execution = engine.execute(&refresh).await;
    assert_redirect_refused(&execution, &other);
    assert_no_secret(
        &refresh,
        &execution,
        &["token-secret-7", "refresh-redirect-7"],
    );

    assert_eq!(upstream.received_on("/token").len(), 2);
    assert!(upstream.received_on("/items").is_empty());
    assert_other_origin_received_nothing(&other);
}

#[tokio::test]
async fn same_origin_redirects_keep_their_credentials_and_others_are_followed_without_them() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    upstream.script(
        "/old",
        vec![Reply::json(302, json!({})).header("location", "/new?page=2")],
    );
    let engine = engine();
    let connection = connection(json!({"token": "same-origin-token-8"}));
    let bearer = task(
        Some(call(
            &upstream.url,
            json!({"type": "bearer"}),
            json!({"request": {"method": "GET", "path": "/old"}}),
            Some(&connection),
        )),
        json!({}),
        connection.workspace_id,
    );
    let execution = engine.execute(&bearer).await;
    let output = execution.result.as_ref().expect("followed");
    assert_eq!(output["body"]["path"], "/new");
    let new = upstream.received_on("/new");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].query, "page=2");
    assert_eq!(
        header(&new[0], "authorization").as_deref(),
        Some("Bearer same-origin-token-8")
    );
    assert_eq!(header(&new[0], "referer"), None);

    // A 303 turns a POST into a GET without its body; a 307 repeats it, body and all.
    for (status, method, body) in [(303, "GET", Value::Null), (307, "POST", json!({"n": 1}))] {
        let from = format!("/post/{status}");
        let to = format!("/after/{status}");
        upstream.script(
            &from,
            vec![Reply::json(status, json!({})).header("location", &to)],
        );
        let post = task(
            Some(call(
                &upstream.url,
                json!({"type": "bearer"}),
                json!({"request": {"method": "POST", "path": from, "body": {"n": 1}}}),
                Some(&connection),
            )),
            json!({}),
            connection.workspace_id,
        );
        assert!(engine.execute(&post).await.result.is_ok(), "{status}");
        let after = upstream.received_on(&to);
        assert_eq!(after.len(), 1, "{status}");
        assert_eq!(after[0].method, method, "{status}");
        let sent = if after[0].body == json!("") {
            Value::Null
        } else {
            after[0].body.clone()
        };
        assert_eq!(sent, body, "{status}");
        assert_eq!(
            header(&after[0], "authorization").as_deref(),
            Some("Bearer same-origin-token-8")
        );
    }

    // A request without credentials of Weft's goes where it is sent, as before, less the
    // Authorization header its input gave.
    upstream.script(
        "/away",
        vec![Reply::json(302, json!({})).header("location", &format!("{}/there", other.url))],
    );
    let free = NodeTask {
        input: json!({"url": format!("{}/away", upstream.url),
                      "headers": {"Authorization": "Bearer typed-in-9"}}),
        ..task(None, json!({}), WorkspaceId::generate())
    };
    let execution = engine.execute(&free).await;
    assert!(execution.result.is_ok(), "{execution:?}");
    let there = other.received_on("/there");
    assert_eq!(there.len(), 1);
    assert_eq!(header(&there[0], "authorization"), None);
}

const PROXY_PASSWORD: &str = "proxy-pa55word-12";

/// A stand-in forward proxy on 127.0.0.1: it records the head of every request (request
/// line and headers) and answers each with a 200 of its own, going nowhere.
struct StandInProxy {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StandInProxy {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let url = format!(
            "http://weft-egress:{PROXY_PASSWORD}@{}",
            listener.local_addr().expect("bound address")
        );
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => head.extend_from_slice(&chunk[..read]),
                    }
                }
                recorded
                    .lock()
                    .expect("heads")
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"via": "proxy"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

fn engine_through(proxy: &str, allow: &[&str]) -> Engine {
    let rules = allow
        .iter()
        .map(|rule| rule.parse().expect("egress rule"))
        .collect();
    let policy = EgressPolicy::new(rules).through(Some(proxy.parse().expect("proxy URL")));
    Engine::new(policy, ring(), 1 << 20).expect("engine starts")
}

#[tokio::test]
async fn through_the_egress_proxy_requests_carry_its_credentials_and_targets_are_still_checked() {
    let proxy = StandInProxy::start();
    let engine = engine_through(&proxy.url, &["partner.invalid"]);
    // A public address, and a name allowed by name (left for the proxy to resolve).
    let targets = [
        "http://93.184.215.14/items?page=1",
        "http://partner.invalid/hook",
    ];
    for url in targets {
        let execution = engine
            .execute(&task(None, json!({ "url": url }), WorkspaceId::generate()))
            .await;
        let output = execution.result.as_ref().expect("the proxy answers");
        assert_eq!(output["body"], json!({"via": "proxy"}), "{url}");
    }
    let heads = proxy.heads();
    let request_lines: Vec<&str> = heads.iter().filter_map(|h| h.lines().next()).collect();
    assert_eq!(
        request_lines,
        targets.map(|url| format!("GET {url} HTTP/1.1"))
    );
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("weft-egress:{PROXY_PASSWORD}"));
    for head in &heads {
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "proxy-authorization: basic {}",
                credentials.to_ascii_lowercase()
            )),
            "{head}"
        );
    }

    // Forbidden targets are refused before the proxy is asked, by address or by name.
    for url in [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/x",
        "http://[::ffff:127.0.0.1]/x",
    ] {
        let execution = engine
            .execute(&task(None, json!({ "url": url }), WorkspaceId::generate()))
            .await;
        assert!(is_egress_refusal(error(&execution)), "{url}: {execution:?}");
    }
    assert_eq!(
        proxy.heads().len(),
        2,
        "the proxy was asked for nothing forbidden"
    );
}

#[tokio::test]
async fn an_unreachable_egress_proxy_is_retried_and_its_password_never_shows() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let engine = engine_through(
        &format!("http://weft-egress:{PROXY_PASSWORD}@127.0.0.1:{port}"),
        &[],
    );
    let task = task(
        None,
        json!({"url": "http://93.184.215.14/items"}),
        WorkspaceId::generate(),
    );
    let execution = engine.execute(&task).await;
    assert_eq!(
        error(&execution).class,
        ErrorClass::Retryable,
        "{execution:?}"
    );
    assert_no_secret(&task, &execution, &[PROXY_PASSWORD]);
}

fn is_egress_refusal(error: &NodeError) -> bool {
    error.class == ErrorClass::Permanent && error.message.contains("egress to")
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let upstream = Upstream::start().await;
    let port = upstream.url.rsplit(':').next().expect("a port").to_owned();
    let targets = [
        format!("http://127.0.0.1:{port}/in"),
        format!("http://localhost:{port}/in"),
        "http://10.0.0.1:9/in".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ];
    let closed = engine_with(&[]);
    let open = engine_with(&["127.0.0.0/8", "::1/128", "10.0.0.0/8", "169.254.0.0/16"]);
    for url in &targets {
        let mut refused = task(None, json!({"url": url}), WorkspaceId::generate());
        refused.timeout_ms = 500;
        let execution = closed.execute(&refused).await;
        let failure = error(&execution);
        assert!(is_egress_refusal(failure), "{url}: {failure:?}");

        let execution = open.execute(&refused).await;
        match &execution.result {
            Ok(_) => assert!(url.contains(&port), "{url} answered"),
            // Let through: whatever answers there (or nobody), it is not the policy.
            Err(failure) => assert!(!is_egress_refusal(failure), "{url}: {failure:?}"),
        }
    }
    assert_eq!(
        upstream.received_on("/in").len(),
        2,
        "loopback by address and by name"
    );

    // Manifest actions and token endpoints go through the same guard.
    let metadata = call(
        "http://169.254.169.254/latest",
        json!({"type": "none"}),
        json!({"request": {"method": "GET", "path": "/meta-data"}}),
        None,
    );
    let execution = closed
        .execute(&task(Some(metadata), json!({}), WorkspaceId::generate()))
        .await;
    assert!(is_egress_refusal(error(&execution)), "{execution:?}");

    let connection = connection(json!({"client_id": "c", "client_secret": "s-secret-11"}));
    let internal_token = call(
        &upstream.url,
        json!({"type": "oauth2", "grant": "client_credentials", "token_url": "http://10.0.0.1/token"}),
        json!({"request": {"method": "GET", "path": "/x"}}),
        Some(&connection),
    );
    let execution = engine()
        .execute(&task(
            Some(internal_token),
            json!({}),
            connection.workspace_id,
        ))
        .await;
    assert!(is_egress_refusal(error(&execution)), "{execution:?}");
    assert_eq!(
        execution.connection, None,
        "a refused token endpoint is not the connection's fault"
    );
}

#[tokio::test]
async fn a_response_nested_deeper_than_messages_allow_fails_for_good() {
    let upstream = Upstream::start().await;
    let deep = (0..100).fold(json!(1), |inner, _| json!([inner]));
    upstream.script("/deep", vec![Reply::json(200, deep)]);
    upstream.script("/fine", vec![Reply::json(200, json!([[[1]]]))]);
    let get = |path: &str| {
        task(
            None,
            json!({"url": format!("{}{path}", upstream.url)}),
            WorkspaceId::generate(),
        )
    };
    let failure = engine().execute(&get("/deep")).await;
    let failed = error(&failure);
    assert_eq!(failed.class, ErrorClass::Permanent);
    assert!(
        failed.message.contains("over the limit of 64 levels"),
        "{failed:?}"
    );
    let fine = engine().execute(&get("/fine")).await;
    assert!(fine.result.is_ok(), "{fine:?}");
}

#[tokio::test]
async fn the_http_connector_and_manifest_actions_share_validation_and_limits() {
    let upstream = Upstream::start().await;
    upstream.script("/big", vec![Reply::json(200, json!("x".repeat(4096)))]);
    let small = Engine::new(
        EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("rule")]),
        ring(),
        1024,
    )
    .expect("engine");
    let big = task(
        None,
        json!({"url": format!("{}/big", upstream.url)}),
        WorkspaceId::generate(),
    );
    let failure = small.execute(&big).await;
    assert!(
        error(&failure)
            .message
            .contains("over the limit of 1024 bytes"),
        "{failure:?}"
    );
    let action = call(
        &upstream.url,
        json!({"type": "none"}),
        json!({"request": {"method": "GET", "path": "/big"}}),
        None,
    );
    let failure = small
        .execute(&task(Some(action), json!({}), WorkspaceId::generate()))
        .await;
    assert!(
        error(&failure)
            .message
            .contains("over the limit of 1024 bytes"),
        "{failure:?}"
    );

    let invalid = task(
        None,
        json!({"url": "http://x.test/", "bogus": 1}),
        WorkspaceId::generate(),
    );
    let failure = engine().execute(&invalid).await;
    assert!(
        error(&failure).message.contains("unknown field `bogus`"),
        "{failure:?}"
    );
    let unknown = NodeTask {
        connector: "acme".into(),
        ..invalid
    };
    let failure = engine().execute(&unknown).await;
    assert!(
        error(&failure)
            .message
            .contains("cannot execute `acme.request`"),
        "{failure:?}"
    );
}
