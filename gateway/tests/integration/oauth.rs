//! The OAuth2 authorization-code flow of a connection (architecture §6, §7), end to end against
//! a local authorization server: the authorize redirect (state, PKCE challenge), the code
//! exchange (with the verifier), single-use states bound to their workspace, refusals.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use weft_testkit::{Fleet, Reply, Upstream, Workspace};

/// A connector whose authorization server is `provider` and whose API is `api`.
fn crm(provider: &str, api: &str) -> Value {
    json!({
        "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": api,
        "auth": {
            "type": "oauth2",
            "authorize_url": format!("{provider}/oauth/authorize"),
            "token_url": format!("{provider}/oauth/token"),
            "scopes": ["contacts.read", "contacts.write"]
        },
        "actions": [{
            "key": "get_contact", "name": "Get contact",
            "request": {"method": "GET", "path": "/contacts/{{ input.id }}"}
        }]
    })
}

/// A client that shows redirects instead of following them, as a test of one needs.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn pending_connection(fleet: &Fleet, workspace: &Workspace, secret: &str) -> String {
    let created = fleet
        .connection(
            workspace,
            json!({"connector": "crm", "name": "CRM", "credentials": {"client_id": "weft-client", "client_secret": secret}}),
        )
        .await;
    assert_eq!(created["status"], "pending", "{created}");
    assert_eq!(
        created["credentials_set"],
        json!(["client_id", "client_secret"])
    );
    created["id"].as_str().expect("id").to_owned()
}

/// Starts the flow; returns the query of the authorize URL the user is sent to.
async fn start(fleet: &Fleet, workspace: &Workspace, connection: &str) -> BTreeMap<String, String> {
    let response = no_redirects()
        .get(fleet.url(&format!(
            "/api/v1/oauth/crm/start?connection_id={connection}"
        )))
        .bearer_auth(&workspace.api_key)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let url = reqwest::Url::parse(&location).expect("a URL");
    assert_eq!(url.path(), "/oauth/authorize");
    url.query_pairs().into_owned().collect()
}

/// The provider's redirect back, as the user's browser follows it.
async fn callback(fleet: &Fleet, query: &[(&str, &str)]) -> (u16, Value) {
    let response = fleet
        .client
        .get(fleet.url("/api/v1/oauth/callback"))
        .query(query)
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn form(body: &Value) -> BTreeMap<String, String> {
    let text = body.as_str().expect("a form body");
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_code_flow_stores_sealed_tokens_and_the_connection_calls_with_them() {
    let fleet = Fleet::with(0, 1).await;
    let (provider, api) = (Upstream::start().await, Upstream::start().await);
    let access_token = format!("access-{}", Uuid::new_v4().simple());
    let refresh_token = format!("refresh-{}", Uuid::new_v4().simple());
    let client_secret = format!("secret-{}", Uuid::new_v4().simple());
    provider.script(
        "/oauth/token",
        vec![Reply::json(
            200,
            json!({"access_token": access_token, "refresh_token": refresh_token, "expires_in": 3600, "token_type": "bearer"}),
        )],
    );
    api.script("/contacts/1", vec![Reply::json(200, json!({"id": "1"}))]);
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&provider.url, &api.url))
        .await;
    let connection = pending_connection(&fleet, &workspace, &client_secret).await;
    let execute = json!({"connection_id": connection, "input": {"id": "1"}});
    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(execute.clone()),
        )
        .await;
    assert_eq!(status, 409, "not authorized yet: {body}");
    assert_eq!(body["error"]["code"], "connection_pending");

    let authorize = start(&fleet, &workspace, &connection).await;
    let redirect_uri = fleet.url("/api/v1/oauth/callback");
    for (name, value) in [
        ("response_type", "code"),
        ("client_id", "weft-client"),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", "contacts.read contacts.write"),
    ] {
        assert_eq!(
            authorize.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    let state = authorize["state"].clone();
    let challenge = authorize["code_challenge"].clone();
    assert!(state.len() >= 43, "an unguessable state: {state}");

    let (status, body) = callback(&fleet, &[("code", "the-code"), ("state", &state)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["connection_id"], json!(connection));

    let exchanges = provider.received_on("/oauth/token");
    assert_eq!(exchanges.len(), 1);
    let exchange = form(&exchanges[0].body);
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(exchange["code"], "the-code");
    assert_eq!(exchange["redirect_uri"], redirect_uri);
    assert_eq!(exchange["client_id"], "weft-client");
    assert_eq!(exchange["client_secret"], client_secret);
    let verifier = exchange["code_verifier"].clone();
    assert_eq!(
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        challenge,
        "the verifier is the one the challenge was made from"
    );

    // The callback comes from the provider's redirect, without credentials: its event
    // names the key that started the flow, and no token.
    let (status, events) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/audit-events?target_id={connection}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|event| event["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "connection.authorized",
            "connection.authorization_started",
            "connection.created"
        ]
    );
    assert_eq!(events["items"][0]["actor"], events["items"][1]["actor"]);
    assert_eq!(events["items"][0]["actor"]["kind"], "api_key");
    for secret in [&access_token, &refresh_token, &client_secret, &verifier] {
        assert!(
            !events.to_string().contains(secret.as_str()),
            "a secret in the audit log"
        );
    }

    let (status, again) = callback(&fleet, &[("code", "the-code"), ("state", &state)]).await;
    assert_eq!(status, 400, "a state works once: {again}");
    assert_eq!(again["error"]["code"], "invalid_oauth_state");
    assert_eq!(provider.received_on("/oauth/token").len(), 1);

    let (status, read) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/connections/{connection}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(read["status"], "active");
    assert_eq!(
        read["credentials_set"],
        json!([
            "access_token",
            "client_id",
            "client_secret",
            "expires_at",
            "refresh_token"
        ])
    );

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connectors/crm/actions/get_contact/execute",
            Some(execute),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    let calls = api.received_on("/contacts/1");
    assert_eq!(
        calls[0].headers["authorization"],
        format!("Bearer {access_token}").as_str()
    );

    let dump = fleet.pg_dump().await;
    for secret in [&access_token, &refresh_token, &client_secret, &verifier] {
        assert!(
            !dump.contains(secret.as_str()),
            "a secret is stored in clear"
        );
    }
    for answer in [&read, &body] {
        for secret in [&access_token, &refresh_token, &client_secret] {
            assert!(!answer.to_string().contains(secret.as_str()), "{answer}");
        }
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_belongs_to_its_workspace_and_connection_and_expires() {
    let fleet = Fleet::with(0, 0).await;
    let (provider, api) = (Upstream::start().await, Upstream::start().await);
    provider.script(
        "/oauth/token",
        vec![Reply::json(
            200,
            json!({"access_token": "a-token", "expires_in": 3600}),
        )],
    );
    let (mine, other) = (fleet.workspace().await, fleet.workspace().await);
    for workspace in [&mine, &other] {
        fleet
            .register_connector(workspace, crm(&provider.url, &api.url))
            .await;
    }
    let my_connection = pending_connection(&fleet, &mine, "s1").await;
    let their_connection = pending_connection(&fleet, &other, "s2").await;

    let (status, body) = fleet
        .call(
            &other,
            "GET",
            &format!("/api/v1/oauth/crm/start?connection_id={my_connection}&format=json"),
            None,
        )
        .await;
    assert_eq!(status, 404, "another workspace's connection: {body}");
    let (status, body) = fleet
        .call(
            &mine,
            "GET",
            &format!("/api/v1/oauth/github/start?connection_id={my_connection}&format=json"),
            None,
        )
        .await;
    assert_eq!(status, 400, "the connection is not github's: {body}");
    let (status, body) = fleet
        .call(
            &mine,
            "GET",
            &format!("/api/v1/oauth/http/start?connection_id={my_connection}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("not_oauth"))
    );

    let (status, started) = fleet
        .call(
            &mine,
            "GET",
            &format!("/api/v1/oauth/crm/start?connection_id={my_connection}&format=json"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert!(started["expires_at"].is_string());
    let url = reqwest::Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    let state = url
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .expect("a state");

    let (status, body) = callback(&fleet, &[("code", "c"), ("state", "forged")]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_oauth_state"))
    );
    let (status, _) = callback(&fleet, &[("code", "c")]).await;
    assert_eq!(status, 400, "no state");

    let (status, body) = callback(&fleet, &[("code", "c"), ("state", &state)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["connection_id"],
        json!(my_connection),
        "the state names the connection"
    );
    let status_of = |workspace: &Workspace, id: &str| {
        let path = format!("/api/v1/connections/{id}");
        let workspace = workspace.clone();
        let fleet = &fleet;
        async move { fleet.call(&workspace, "GET", &path, None).await.1["status"].clone() }
    };
    assert_eq!(status_of(&mine, &my_connection).await, "active");
    assert_eq!(
        status_of(&other, &their_connection).await,
        "pending",
        "untouched"
    );

    // An expired flow cannot be finished, and is gone once tried.
    let (_, started) = fleet
        .call(
            &other,
            "GET",
            &format!("/api/v1/oauth/crm/start?connection_id={their_connection}&format=json"),
            None,
        )
        .await;
    let url = reqwest::Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    let state = url
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .expect("a state");
    let pg = fleet.pg().await;
    pg.execute(
        "UPDATE oauth_states SET expires_at = now() - interval '1 minute' WHERE state = $1",
        &[&state],
    )
    .await
    .expect("expired");
    let (status, body) = callback(&fleet, &[("code", "c"), ("state", &state)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{body}"
    );
    let left: i64 = pg
        .query_one("SELECT count(*) FROM oauth_states", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "used and expired states are gone");
    assert_eq!(status_of(&other, &their_connection).await, "pending");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_marks_the_connection_error_with_the_providers_message() {
    let fleet = Fleet::with(0, 0).await;
    let (provider, api) = (Upstream::start().await, Upstream::start().await);
    provider.script(
        "/oauth/token",
        vec![Reply::json(
            400,
            json!({"error": "invalid_grant", "error_description": "The code has expired"}),
        )],
    );
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&provider.url, &api.url))
        .await;
    let connection = pending_connection(&fleet, &workspace, "s").await;
    let path = format!("/api/v1/connections/{connection}");
    let read = || async { fleet.call(&workspace, "GET", &path, None).await.1 };

    let state = start(&fleet, &workspace, &connection).await["state"].clone();
    let (status, body) = callback(&fleet, &[("code", "old-code"), ("state", &state)]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "oauth_refused");
    let now = read().await;
    assert_eq!(now["status"], "error");
    let last_error = now["last_error"].as_str().expect("a reason");
    assert!(
        last_error.contains("invalid_grant: The code has expired"),
        "{last_error}"
    );

    let state = start(&fleet, &workspace, &connection).await["state"].clone();
    let (status, body) = callback(
        &fleet,
        &[
            ("error", "access_denied"),
            ("error_description", "The user said no"),
            ("state", &state),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "oauth_refused");
    let now = read().await;
    assert!(
        now["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("access_denied: The user said no")),
        "{now}"
    );
    assert_eq!(
        provider.received_on("/oauth/token").len(),
        1,
        "a refused authorization exchanges nothing"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_a_worker_refreshes_during_an_execution_are_stored() {
    let fleet = Fleet::with(0, 1).await;
    let (provider, api) = (Upstream::start().await, Upstream::start().await);
    let fresh = format!("fresh-{}", Uuid::new_v4().simple());
    provider.script(
        "/oauth/token",
        vec![
            Reply::json(200, json!({"access_token": fresh, "expires_in": 3600})),
            Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "Token revoked"}),
            ),
        ],
    );
    api.script("/contacts/1", vec![Reply::json(200, json!({"id": "1"}))]);
    let workspace = fleet.workspace().await;
    fleet
        .register_connector(&workspace, crm(&provider.url, &api.url))
        .await;
    // A grant brought along from elsewhere, whose access token has expired.
    let expired = |name: &str| {
        json!({"connector": "crm", "name": name, "credentials": {
            "client_id": "weft-client", "client_secret": "s", "access_token": "stale",
            "refresh_token": "r", "expires_at": "2000-01-01T00:00:00Z"
        }})
    };
    let connection = fleet.connection(&workspace, expired("kept")).await;
    assert_eq!(
        connection["status"], "active",
        "it has a token: {connection}"
    );
    let connection = connection["id"].as_str().expect("id").to_owned();
    let execute = |id: String| {
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

    for _ in 0..2 {
        let (status, body) = execute(connection.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "completed", "{body}");
    }
    assert_eq!(
        provider.received_on("/oauth/token").len(),
        1,
        "the refreshed token was stored: the second call did not refresh again"
    );
    for call in api.received_on("/contacts/1") {
        assert_eq!(
            call.headers["authorization"],
            format!("Bearer {fresh}").as_str()
        );
    }
    assert!(!fleet.pg_dump().await.contains(&fresh), "stored sealed");

    // The provider now refuses: the connection is marked broken.
    let revoked = fleet.connection(&workspace, expired("revoked")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = execute(revoked.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let (_, read) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/connections/{revoked}"),
            None,
        )
        .await;
    assert_eq!(read["status"], "error", "{read}");
    assert!(
        read["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_grant")),
        "{read}"
    );
    fleet.stop().await;
}
