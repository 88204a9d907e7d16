//! The audit log (architecture §11): every operation of the API that changes something,
//! performed once, writes exactly one event of its action, naming its caller; events are
//! read back filtered, paged and exported; secrets never reach them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use weft_testkit::{Fleet, PASSWORD, Person, Reply, Upstream, Workspace, link_token, read};

/// Operations that change nothing but are not GETs would be listed here; the two GETs
/// that do change something are covered: `startOAuth` and `completeOAuth` in oauth.rs.
const COVERED_ELSEWHERE: [&str; 0] = [];

/// The audit log as the database holds it: (action, actor kind, actor id) in order.
async fn events(fleet: &Fleet) -> Vec<(String, String, Option<String>)> {
    fleet
        .pg()
        .await
        .query(
            "SELECT action, actor_kind, actor_id::text FROM audit_events ORDER BY id",
            &[],
        )
        .await
        .expect("audit events")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Records what one operation wrote to the log.
struct Log<'a> {
    fleet: &'a Fleet,
    seen: usize,
    performed: BTreeSet<String>,
}

impl Log<'_> {
    /// Asserts that `operation` (which just ran) wrote one event, `action` by `actor`.
    async fn one(&mut self, operation: &str, action: &str, actor: (&str, Option<&str>)) {
        let all = events(self.fleet).await;
        let new = &all[self.seen..];
        let expected = (
            action.to_owned(),
            actor.0.to_owned(),
            actor.1.map(str::to_owned),
        );
        assert_eq!(new, [expected], "{operation} wrote {new:?}");
        self.seen = all.len();
        self.performed.insert(operation.to_owned());
    }
}

fn ok(what: &str, (status, body): (u16, Value), expected: u16) -> Value {
    assert_eq!(status, expected, "{what}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_writes_exactly_one_event_naming_its_caller() {
    let fleet = Fleet::with_gateway_flags(0, 1, &["--signup", "open"]).await;
    let upstream = Upstream::start().await;
    upstream.script("/me", vec![Reply::json(200, json!({"me": true}))]);
    upstream.script("/ping", vec![Reply::json(200, json!({"pong": true}))]);
    let db = fleet.pg().await;
    let owner = fleet.workspace().await;
    let owner_key: String = db
        .query_one(
            "SELECT id::text FROM api_keys WHERE workspace_id = $1",
            &[&owner.id.as_uuid()],
        )
        .await
        .expect("the admin-issued key")
        .get(0);
    let key = ("api_key", Some(owner_key.as_str()));
    let mut log = Log {
        fleet: &fleet,
        seen: 0,
        performed: BTreeSet::new(),
    };
    log.one(
        "createWorkspace",
        "workspace.created",
        ("admin_token", None),
    )
    .await;

    let fleet_ref = &fleet;
    let owner_ref = &owner;
    let call = move |method: &'static str, path: String, body: Option<Value>| async move {
        fleet_ref.call(owner_ref, method, &path, body).await
    };
    let manifest = json!({
        "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": upstream.url,
        "auth": {"type": "api_key", "in": "header", "name": "X-Api-Key"},
        "test": {"method": "GET", "path": "/me"},
        "actions": [{"key": "ping", "name": "Ping", "request": {"method": "GET", "path": "/ping"}}]
    });
    ok(
        "create connector",
        call("POST", "/api/v1/connectors".into(), Some(manifest.clone())).await,
        201,
    );
    log.one("createConnector", "connector.created", key).await;
    ok(
        "update connector",
        call("PUT", "/api/v1/connectors/crm".into(), Some(manifest)).await,
        200,
    );
    log.one("updateConnector", "connector.updated", key).await;
    let secret = "crm-key-that-must-stay-secret";
    let connection = ok(
        "create connection",
        call(
            "POST",
            "/api/v1/connections".into(),
            Some(json!({"connector": "crm", "name": "CRM", "credentials": {"api_key": secret}})),
        )
        .await,
        201,
    );
    log.one("createConnection", "connection.created", key).await;
    let connection = connection["id"].as_str().expect("id").to_owned();
    ok(
        "rename connection",
        call(
            "PATCH",
            format!("/api/v1/connections/{connection}"),
            Some(json!({"name": "CRM (EU)", "credentials": {"api_key": secret}})),
        )
        .await,
        200,
    );
    log.one("updateConnection", "connection.updated", key).await;
    ok(
        "test connection",
        call(
            "POST",
            format!("/api/v1/connections/{connection}/test"),
            None,
        )
        .await,
        200,
    );
    log.one("testConnection", "connection.tested", key).await;
    ok(
        "execute",
        call(
            "POST",
            "/api/v1/connectors/crm/actions/ping/execute".into(),
            Some(json!({"connection_id": connection})),
        )
        .await,
        200,
    );
    log.one("executeAction", "connector.action_executed", key)
        .await;

    let definition = |name: &str| {
        json!({
            "name": name, "trigger": {"type": "webhook"},
            "nodes": [
                {"id": "wait", "type": "delay", "duration": "1h"},
                weft_testkit::http_node("call", &["wait"], json!({"method": "GET", "url": format!("{}/ping", upstream.url)}))
            ]
        })
    };
    let scenario = ok(
        "create scenario",
        call(
            "POST",
            "/api/v1/scenarios".into(),
            Some(definition("First")),
        )
        .await,
        201,
    );
    log.one("createScenario", "scenario.created", key).await;
    let scenario = scenario["id"].as_str().expect("id").to_owned();
    ok(
        "update scenario",
        call(
            "PUT",
            format!("/api/v1/scenarios/{scenario}"),
            Some(definition("Second")),
        )
        .await,
        200,
    );
    log.one("updateScenario", "scenario.updated", key).await;
    ok(
        "activate",
        call(
            "POST",
            format!("/api/v1/scenarios/{scenario}/activate"),
            None,
        )
        .await,
        200,
    );
    log.one("activateScenario", "scenario.activated", key).await;
    ok(
        "pause",
        call("POST", format!("/api/v1/scenarios/{scenario}/pause"), None).await,
        200,
    );
    log.one("pauseScenario", "scenario.paused", key).await;
    let run = ok(
        "start run",
        call(
            "POST",
            format!("/api/v1/scenarios/{scenario}/runs"),
            Some(json!({"x": 1})),
        )
        .await,
        202,
    );
    log.one("startRun", "run.started", key).await;
    let run = run["run_id"].as_str().expect("run id").to_owned();
    ok(
        "cancel run",
        call("POST", format!("/api/v1/runs/{run}/cancel"), None).await,
        200,
    );
    log.one("cancelRun", "run.cancelled", key).await;
    ok(
        "replay run",
        call(
            "POST",
            format!("/api/v1/runs/{run}/replay"),
            Some(json!({"from_node": "wait"})),
        )
        .await,
        202,
    );
    log.one("replayRun", "run.replayed", key).await;
    ok(
        "delete scenario",
        call("DELETE", format!("/api/v1/scenarios/{scenario}"), None).await,
        204,
    );
    log.one("deleteScenario", "scenario.deleted", key).await;
    ok(
        "delete connection",
        call("DELETE", format!("/api/v1/connections/{connection}"), None).await,
        204,
    );
    log.one("deleteConnection", "connection.deleted", key).await;
    ok(
        "delete connector",
        call("DELETE", "/api/v1/connectors/crm".into(), None).await,
        204,
    );
    log.one("deleteConnector", "connector.deleted", key).await;

    ok(
        "rename workspace",
        call(
            "PATCH",
            "/api/v1/workspace".into(),
            Some(json!({"name": "Acme"})),
        )
        .await,
        200,
    );
    log.one("renameWorkspace", "workspace.renamed", key).await;
    let withdrawn = ok(
        "invite",
        call(
            "POST",
            "/api/v1/invitations".into(),
            Some(json!({"email": "nobody@example.com", "role": "viewer"})),
        )
        .await,
        201,
    );
    log.one("createInvitation", "invitation.created", key).await;
    let withdrawn = withdrawn["invitation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ok(
        "withdraw",
        call("DELETE", format!("/api/v1/invitations/{withdrawn}"), None).await,
        204,
    );
    log.one("revokeInvitation", "invitation.revoked", key).await;
    let issued = ok(
        "issue key",
        call(
            "POST",
            "/api/v1/api-keys".into(),
            Some(json!({"name": "CI", "role": "editor"})),
        )
        .await,
        201,
    );
    log.one("createApiKey", "api_key.created", key).await;
    let ci = issued["key"]["id"].as_str().expect("id").to_owned();
    let rotated = ok(
        "rotate key",
        call("POST", format!("/api/v1/api-keys/{ci}/rotate"), None).await,
        200,
    );
    log.one("rotateApiKey", "api_key.rotated", key).await;
    ok(
        "revoke key",
        call("DELETE", format!("/api/v1/api-keys/{ci}"), None).await,
        204,
    );
    log.one("revokeApiKey", "api_key.revoked", key).await;

    // A person: invited, then through their own session.
    let invitation = ok(
        "invite Ada",
        call(
            "POST",
            "/api/v1/invitations".into(),
            Some(json!({"email": "ada@example.com", "role": "editor"})),
        )
        .await,
        201,
    );
    log.one("createInvitation", "invitation.created", key).await;
    let response = fleet
        .client
        .post(fleet.url("/api/v1/invitations/accept"))
        .header("origin", &fleet.api)
        .json(
            &json!({"token": link_token(&invitation), "display_name": "Ada", "password": PASSWORD}),
        )
        .send()
        .await
        .expect("answers");
    let ada_cookie = weft_testkit::session_cookie(&response).expect("signed in");
    ok("accept", read(response).await, 200);
    let ada_id: String = db
        .query_one(
            "SELECT id::text FROM users WHERE email = 'ada@example.com'",
            &[],
        )
        .await
        .expect("Ada")
        .get(0);
    let ada_actor = ("user", Some(ada_id.as_str()));
    log.one("acceptInvitation", "member.added", ada_actor).await;

    let (status, body, cookie) = fleet.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    log.one("login", "session.login", ada_actor).await;
    let ada = Person {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
        cookie: cookie.expect("cookie"),
        csrf_token: body["csrf_token"].as_str().expect("csrf").to_owned(),
        workspace: owner.id,
    };
    let (_, sessions) = fleet
        .as_person(&ada, "GET", "/api/v1/me/sessions", None)
        .await;
    let first_session = sessions["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["current"] == false)
        .expect("the session of the acceptance")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ok(
        "revoke one session",
        fleet
            .as_person(
                &ada,
                "DELETE",
                &format!("/api/v1/me/sessions/{first_session}"),
                None,
            )
            .await,
        204,
    );
    log.one("revokeMySession", "session.revoked", ada_actor)
        .await;
    let _ = ada_cookie;
    ok(
        "create own workspace",
        fleet
            .as_person(
                &ada,
                "POST",
                "/api/v1/workspaces",
                Some(json!({"name": "Ada's"})),
            )
            .await,
        201,
    );
    log.one("createMyWorkspace", "workspace.created", ada_actor)
        .await;
    ok(
        "log out",
        fleet
            .as_person(&ada, "DELETE", "/api/v1/session", None)
            .await,
        204,
    );
    log.one("logout", "session.logout", ada_actor).await;
    let (_, body, cookie) = fleet.login("ada@example.com", PASSWORD).await;
    log.one("login", "session.login", ada_actor).await;
    let ada = Person {
        cookie: cookie.expect("cookie"),
        csrf_token: body["csrf_token"].as_str().expect("csrf").to_owned(),
        ..ada
    };
    ok(
        "log out everywhere",
        fleet
            .as_person(&ada, "DELETE", "/api/v1/me/sessions", None)
            .await,
        204,
    );
    log.one("revokeMySessions", "session.revoked", ada_actor)
        .await;

    ok(
        "demote Ada",
        call(
            "PATCH",
            format!("/api/v1/members/{ada_id}"),
            Some(json!({"role": "viewer"})),
        )
        .await,
        204,
    );
    log.one("changeMemberRole", "member.role_changed", key)
        .await;
    let (status, body) = call(
        "POST",
        format!("/api/v1/members/{ada_id}/password-reset"),
        None,
    )
    .await;
    assert_eq!(status, 409, "Ada has a workspace of her own: {body}");
    assert_eq!(
        events(&fleet).await.len(),
        log.seen,
        "a refused change writes nothing"
    );
    ok(
        "remove Ada",
        call("DELETE", format!("/api/v1/members/{ada_id}"), None).await,
        204,
    );
    log.one("removeMember", "member.removed", key).await;

    let bob = fleet.person(&owner, "bob@example.com", "viewer").await;
    let all = events(&fleet).await;
    let joined: Vec<&str> = all[log.seen..]
        .iter()
        .map(|event| event.0.as_str())
        .collect();
    assert_eq!(joined, ["invitation.created", "member.added"]);
    log.seen = all.len();
    let bob_id: String = db
        .query_one(
            "SELECT id::text FROM users WHERE email = 'bob@example.com'",
            &[],
        )
        .await
        .expect("Bob")
        .get(0);
    ok(
        "disable Bob",
        call(
            "PUT",
            format!("/api/v1/members/{bob_id}/disabled"),
            Some(json!({"disabled": true})),
        )
        .await,
        204,
    );
    log.one("setMemberDisabled", "user.disabled", key).await;
    let (status, _) = fleet.as_person(&bob, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 401, "his session ended");

    // Someone who signs up alone can be reset by their workspace's owner: themselves.
    let response = fleet
        .post_from_site(
            "/api/v1/signup",
            &json!({"email": "grace@example.com", "display_name": "Grace", "password": PASSWORD}),
        )
        .await;
    let grace_cookie = weft_testkit::session_cookie(&response).expect("signed in");
    let grace_session = ok("sign up", read(response).await, 200);
    let grace_id = grace_session["user"]["id"].as_str().expect("id").to_owned();
    let grace_actor = ("user", Some(grace_id.as_str()));
    log.one("signUp", "user.created", grace_actor).await;
    let grace = Person {
        email: "grace@example.com".into(),
        password: PASSWORD.into(),
        cookie: grace_cookie,
        csrf_token: grace_session["csrf_token"]
            .as_str()
            .expect("csrf")
            .to_owned(),
        workspace: grace_session["workspaces"][0]["id"]
            .as_str()
            .expect("workspace")
            .parse()
            .expect("id"),
    };
    let reset = ok(
        "issue a reset",
        fleet
            .as_person(
                &grace,
                "POST",
                &format!("/api/v1/members/{grace_id}/password-reset"),
                None,
            )
            .await,
        201,
    );
    log.one(
        "issuePasswordReset",
        "member.password_reset_issued",
        grace_actor,
    )
    .await;
    let response = fleet
        .post_from_site(
            "/api/v1/password-reset",
            &json!({"token": link_token(&reset), "password": "another long password"}),
        )
        .await;
    ok("reset", read(response).await, 204);
    log.one("resetPassword", "user.password_reset", grace_actor)
        .await;

    // Read back: filtered, paged, exported.
    let (status, page) = call("GET", "/api/v1/audit-events?limit=2".into(), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, next) = call(
        "GET",
        format!("/api/v1/audit-events?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_ne!(page["items"][0]["id"], next["items"][0]["id"]);
    let (_, renames) = call(
        "GET",
        "/api/v1/audit-events?action=workspace.renamed".into(),
        None,
    )
    .await;
    assert_eq!(
        renames["items"].as_array().map(Vec::len),
        Some(1),
        "{renames}"
    );
    assert_eq!(
        renames["items"][0]["summary"]["name"],
        json!({"from": "test", "to": "Acme"})
    );
    let export = fleet
        .client
        .get(fleet.url("/api/v1/audit-events?format=jsonl"))
        .bearer_auth(&owner.api_key)
        .send()
        .await
        .expect("answers");
    assert_eq!(export.headers()["content-type"], "application/jsonl");
    let export = export.text().await.expect("text");
    let in_workspace: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_events WHERE workspace_id = $1",
            &[&owner.id.as_uuid()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(export.lines().count() as i64, in_workspace);
    for line in export.lines() {
        serde_json::from_str::<Value>(line).expect("each line is an event");
    }

    // No secret of any kind reached the log.
    let everything: String = db
        .query_one("SELECT coalesce(string_agg(summary::text || coalesce(user_agent, ''), ' '), '') FROM audit_events", &[])
        .await
        .expect("summaries")
        .get(0);
    for secret in [
        secret,
        PASSWORD,
        "another long password",
        issued["secret"].as_str().expect("secret"),
        rotated["secret"].as_str().expect("secret"),
        link_token(&invitation).as_str(),
        link_token(&reset).as_str(),
        owner.api_key.as_str(),
    ] {
        assert!(
            !everything.contains(secret),
            "a secret in the audit log: {secret}"
        );
    }

    // Last, deleting the workspace: audited, and the log outlives it.
    ok(
        "delete workspace",
        call("DELETE", "/api/v1/workspace".into(), None).await,
        204,
    );
    log.one("deleteWorkspace", "workspace.deleted", key).await;

    // Every operation that is not a plain read was performed above (or elsewhere).
    let (_, document) = fleet
        .call(
            &Workspace {
                id: owner.id,
                api_key: String::new(),
            },
            "GET",
            "/api/v1/openapi.json",
            None,
        )
        .await;
    let mut mutating = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let id = operation["operationId"].as_str().unwrap_or_default();
            let changes = ["post", "put", "patch", "delete"].contains(&method.as_str());
            if changes && path.starts_with("/api/v1/") && !COVERED_ELSEWHERE.contains(&id) {
                mutating.insert(id.to_owned());
            }
        }
    }
    let missing: Vec<_> = mutating.difference(&log.performed).collect();
    assert!(
        missing.is_empty(),
        "changes not covered by this test: {missing:?}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn housekeeping_drops_events_past_retention_and_sessions_that_ran_out() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "viewer").await;
    let db = fleet.pg().await;
    db.batch_execute(
        "INSERT INTO audit_events (id, workspace_id, occurred_at, actor_kind, action, target_kind)
         SELECT gen_random_uuid(), NULL, now() - interval '400 days', 'system', 'old.event', 'test'
         FROM generate_series(1, 12000);
         UPDATE sessions SET last_seen_at = now() - interval '2 days'",
    )
    .await
    .expect("old rows");
    let before: i64 = db
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .expect("count")
        .get(0);

    let pool = fleet.pool();
    let day = std::time::Duration::from_secs(86_400);
    let swept = weft_gateway::housekeeping::sweep(&pool, 365 * day, day / 2)
        .await
        .expect("swept");
    assert_eq!(swept.audit_events, 12_000, "in batches, all of them");
    assert_eq!(swept.sessions, 1, "Ada's idle session");
    let after: i64 = db
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(after, before - 12_000, "the recent events stay");
    let (status, _) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 401);
    fleet.stop().await;
}
