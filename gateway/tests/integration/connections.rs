//! Connections (architecture §6, §7): credentials go in and never come out — not in an answer,
//! not in clear in the database — and are bound to their row; tests and key rotation.

use serde_json::{Value, json};
use uuid::Uuid;
use weft_domain::crypto::KeyRing;
use weft_domain::messages::connection_aad;
use weft_gateway::secrets::{oauth_verifier_aad, rotate_keys};
use weft_testkit::{Fleet, Reply, Upstream, Workspace};

const OLD_KEY: &str = "old:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn crm(base_url: &str) -> Value {
    json!({
        "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": base_url,
        "auth": {"type": "basic"},
        "connection_schema": {
            "type": "object",
            "properties": {"region": {"type": "string", "enum": ["eu", "us"]}, "base_url": {"type": "string"}}
        },
        "test": {"method": "GET", "path": "/me"},
        "actions": [{
            "key": "get_contact", "name": "Get contact",
            "input_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "request": {"method": "GET", "path": "/contacts/{{ input.id }}"}
        }]
    })
}

async fn get(fleet: &Fleet, workspace: &Workspace, id: &str) -> (u16, Value) {
    fleet
        .call(workspace, "GET", &format!("/api/v1/connections/{id}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_in_and_never_come_out() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let password = format!("pw-{}", Uuid::new_v4().simple());
    let mut answers = Vec::new();

    let created = fleet
        .connection(
            &workspace,
            json!({
                "connector": "crm", "name": "Sales", "config": {"region": "eu"},
                "credentials": {"username": "ada", "password": password},
                "rate_limit": {"requests": 5, "per": "1s"}
            }),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["auth_type"], "basic");
    assert_eq!(created["config"], json!({"region": "eu"}));
    assert_eq!(created["credentials_set"], json!(["password", "username"]));
    assert_eq!(created["rate_limit"], json!({"requests": 5, "per": "1s"}));
    assert!(created.get("credentials").is_none(), "{created}");
    answers.push(created);

    let (status, read) = get(&fleet, &workspace, &id).await;
    assert_eq!(status, 200);
    answers.push(read);
    let (status, list) = fleet
        .call(&workspace, "GET", "/api/v1/connections?connector=crm", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    answers.push(list.clone());
    let (status, none) = fleet
        .call(
            &workspace,
            "GET",
            "/api/v1/connections?connector=slack",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(none["items"], json!([]));

    // Merging: the username changes, the password stays.
    let (status, patched) = fleet
        .call(
            &workspace,
            "PATCH",
            &format!("/api/v1/connections/{id}"),
            Some(json!({"name": "Sales EU", "credentials": {"username": "grace"}, "rate_limit": null})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Sales EU");
    assert_eq!(patched["config"], json!({"region": "eu"}), "kept");
    assert_eq!(patched["rate_limit"], Value::Null);
    assert_eq!(patched["credentials_set"], json!(["password", "username"]));
    answers.push(patched);

    for answer in &answers {
        assert!(
            !answer.to_string().contains(&password),
            "an answer shows the password: {answer}"
        );
    }
    let pg = fleet.pg().await;
    let sealed: String = pg
        .query_one(
            "SELECT credentials FROM connections WHERE id = $1",
            &[&id.parse::<Uuid>().expect("uuid")],
        )
        .await
        .expect("row")
        .get(0);
    let ring: KeyRing = fleet.master_keys().parse().expect("ring");
    let opened: Value = serde_json::from_slice(
        &ring
            .decrypt(
                &sealed,
                &connection_aad(workspace.id, id.parse().expect("uuid")),
            )
            .expect("sealed for this row"),
    )
    .expect("a JSON object");
    assert_eq!(
        opened,
        json!({"username": "grace", "password": password}),
        "merged"
    );
    let dump = fleet.pg_dump().await;
    assert!(dump.contains(&sealed), "the dump holds the table");
    assert!(
        !dump.contains(&password),
        "the password is in the database in clear"
    );
    assert!(!dump.contains("grace"), "the username is sealed too");

    let (status, _) = fleet
        .call(
            &workspace,
            "DELETE",
            &format!("/api/v1/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = get(&fleet, &workspace, &id).await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_connections_name_each_problem() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connections",
            Some(json!({
                "connector": "crm", "name": "", "config": {"region": "mars"},
                "credentials": {"username": "ada", "token": "x"},
                "rate_limit": {"requests": 0, "per": "1s"}
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_connection");
    let mut fields: Vec<&str> = body["error"]["details"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().expect("field"))
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "config.region",
            "credentials.password",
            "credentials.token",
            "name",
            "rate_limit.requests"
        ],
        "{body}"
    );

    for (connector, message) in [
        ("erp", "unknown connector `erp`"),
        ("http", "the http connector takes no connection"),
    ] {
        let (status, body) = fleet
            .call(
                &workspace,
                "POST",
                "/api/v1/connections",
                Some(json!({"connector": connector, "name": "n", "credentials": {}})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let problem = &body["error"]["details"]["problems"][0];
        assert_eq!(problem["field"], "connector");
        assert!(
            problem["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{problem}"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_workspaces_connection_is_not_found() {
    let fleet = Fleet::with(0, 0).await;
    let (workspace, other) = (fleet.workspace().await, fleet.workspace().await);
    fleet
        .register_connector(&workspace, crm("https://crm.example.com"))
        .await;
    let id = fleet
        .connection(
            &workspace,
            json!({"connector": "crm", "name": "n", "credentials": {"username": "u", "password": "p"}}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/connections/{id}");
    for (method, path, body) in [
        ("GET", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"name": "mine now"}))),
        ("DELETE", path.clone(), None),
        ("POST", format!("{path}/test"), None),
    ] {
        let (status, answer) = fleet.call(&other, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let (status, list) = fleet.call(&other, "GET", "/api/v1/connections", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([]));
    let (status, read) = get(&fleet, &workspace, &id).await;
    assert_eq!(
        (status, read["name"].clone()),
        (200, json!("n")),
        "untouched"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_marks_the_connection_active_or_error() {
    let fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&upstream.url))
        .await;
    let id = fleet
        .connection(
            &workspace,
            json!({"connector": "crm", "name": "n", "credentials": {"username": "ada", "password": "lovelace"}}),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    upstream.script(
        "/me",
        vec![
            Reply::json(200, json!({"user": "ada"})),
            Reply::json(401, json!({"message": "bad credentials"})),
        ],
    );
    let test = format!("/api/v1/connections/{id}/test");

    let (status, body) = fleet.call(&workspace, "POST", &test, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "active", "error": null}));
    let received = upstream.received_on("/me");
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"], "Basic YWRhOmxvdmVsYWNl",
        "the manifest's test request, with the connection's credentials"
    );

    let (status, body) = fleet.call(&workspace, "POST", &test, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error");
    let error = body["error"].as_str().expect("the reason").to_owned();
    assert!(error.contains("401"), "{error}");
    let (_, read) = get(&fleet, &workspace, &id).await;
    assert_eq!(read["status"], "error");
    assert_eq!(read["last_error"], json!(error));
    assert!(read["last_used_at"].is_string());

    // New credentials make it usable again.
    let (status, patched) = fleet
        .call(
            &workspace,
            "PATCH",
            &format!("/api/v1/connections/{id}"),
            Some(json!({"credentials": {"password": "new"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "active");
    assert_eq!(patched["last_error"], Value::Null);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_copied_to_another_connection_do_not_decrypt() {
    let fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&upstream.url))
        .await;
    let mut ids = Vec::new();
    for (user, password) in [("admin", "admin-secret"), ("guest", "guest-secret")] {
        let created = fleet
            .connection(
                &workspace,
                json!({"connector": "crm", "name": user, "credentials": {"username": user, "password": password}}),
            )
            .await;
        ids.push(
            created["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid"),
        );
    }
    let pg = fleet.pg().await;
    // The guest's row gets the admin's ciphertext.
    pg.execute(
        "UPDATE connections SET credentials = (SELECT credentials FROM connections WHERE id = $1) WHERE id = $2",
        &[&ids[0], &ids[1]],
    )
    .await
    .expect("copied");

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            &format!("/api/v1/connections/{}/test", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("decrypt")),
        "{body}"
    );
    assert!(
        upstream.received().is_empty(),
        "nothing was sent with the copied credentials"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_re_encrypts_credentials_and_verifiers_and_connections_keep_working() {
    let fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    upstream.script("/contacts/1", vec![Reply::json(200, json!({"id": "1"}))]);
    let workspace = fleet.workspace().await;
    let workspace_id: Uuid = workspace.id.into();
    fleet
        .register_connector(&workspace, crm(&upstream.url))
        .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = fleet
            .connection(
                &workspace,
                json!({"connector": "crm", "name": format!("c{n}"), "credentials": {"username": format!("user{n}"), "password": "pw"}}),
            )
            .await;
        ids.push(
            created["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid"),
        );
    }
    // Stored before the fleet's key ("test") was the newest: under the old one.
    let old: KeyRing = OLD_KEY.parse().expect("key");
    let pg = fleet.pg().await;
    for (n, id) in ids.iter().enumerate() {
        let plaintext = json!({"username": format!("user{n}"), "password": "pw"}).to_string();
        pg.execute(
            "UPDATE connections SET credentials = $2 WHERE id = $1",
            &[
                id,
                &old.encrypt(
                    plaintext.as_bytes(),
                    &connection_aad(workspace_id.into(), (*id).into()),
                ),
            ],
        )
        .await
        .expect("stored under the old key");
    }
    let state = "a-flow-in-progress";
    pg.execute(
        "INSERT INTO oauth_states (state, workspace_id, connection_id, verifier, redirect_uri, expires_at)
         VALUES ($1, $2, $3, $4, 'http://127.0.0.1/cb', now() + interval '10 minutes')",
        &[
            &state,
            &workspace_id,
            &ids[0],
            &old.encrypt(b"the-verifier", &oauth_verifier_aad(workspace_id.into(), state)),
        ],
    )
    .await
    .expect("a flow");

    let execute = |id: Uuid| {
        let fleet = &fleet;
        let workspace = &workspace;
        async move {
            fleet
                .call(
                    workspace,
                    "POST",
                    "/api/v1/connectors/crm/actions/get_contact/execute",
                    Some(json!({"connection_id": id, "input": {"id": "1"}})),
                )
                .await
        }
    };
    let (status, body) = execute(ids[0]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], "failed",
        "the fleet does not know the old key yet: {body}"
    );

    let ring: KeyRing = format!("{},{OLD_KEY}", fleet.master_keys())
        .parse()
        .expect("ring");
    let mut client = fleet.pg().await;
    let rotated = rotate_keys(&mut client, &ring, 2).await.expect("rotation");
    assert_eq!(
        rotated.re_encrypted, 4,
        "three credentials and one verifier"
    );
    assert_eq!(rotated.undecryptable, 0);
    for row in pg
        .query("SELECT credentials FROM connections", &[])
        .await
        .expect("rows")
    {
        let sealed: String = row.get(0);
        assert!(sealed.starts_with("v1.test."), "{sealed}");
    }
    let verifier: String = pg
        .query_one(
            "SELECT verifier FROM oauth_states WHERE state = $1",
            &[&state],
        )
        .await
        .expect("row")
        .get(0);
    let current: KeyRing = fleet.master_keys().parse().expect("ring");
    assert_eq!(
        current
            .decrypt(&verifier, &oauth_verifier_aad(workspace_id.into(), state))
            .expect("decrypts without the old key"),
        b"the-verifier"
    );

    // The fleet runs without the old key: every connection works.
    for id in &ids {
        let (status, body) = execute(*id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "completed", "{body}");
    }
    let again = rotate_keys(&mut client, &ring, 2).await.expect("rotation");
    assert_eq!(again.re_encrypted, 0, "idempotent");
    fleet.stop().await;
}
