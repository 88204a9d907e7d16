//! People and sessions (architecture §11): invitations, password login, the session
//! cookie and its CSRF protection, logging out (here and everywhere), disabling a person,
//! the back-off of failed logins, password resets and open sign-up.

use serde_json::{Value, json};
use weft_testkit::{Fleet, PASSWORD, Person, link_token, read, session_cookie};

/// Sends `method path` with only a cookie: no CSRF token and `origin` as the Origin.
async fn with_cookie(
    fleet: &Fleet,
    person: &Person,
    method: reqwest::Method,
    path: &str,
    origin: Option<&str>,
    csrf: Option<&str>,
) -> (u16, Value) {
    let mut request = fleet
        .client
        .request(method, fleet.url(path))
        .header("cookie", &person.cookie)
        .header("x-weft-workspace", person.workspace.to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(csrf) = csrf {
        request = request.header("x-weft-csrf", csrf);
    }
    read(request.send().await.expect("gateway answers")).await
}

#[tokio::test]
async fn an_invited_person_signs_in_acts_by_role_and_signs_out() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "Ada@Example.com", "editor").await;
    assert_eq!(ada.email, "Ada@Example.com");

    let (status, session) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        session["user"]["email"], "ada@example.com",
        "emails are normalized"
    );
    assert_eq!(session["workspaces"][0]["id"], owner.id.to_string());
    assert_eq!(session["workspaces"][0]["role"], "editor");

    // An editor edits scenarios but manages no keys.
    let (status, body) = fleet
        .as_person(&ada, "POST", "/api/v1/scenarios", Some(json!({
            "name": "by Ada", "trigger": {"type": "manual"},
            "nodes": [weft_testkit::http_node("call", &[], json!({"method": "GET", "url": "http://127.0.0.1:9/"}))]
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = fleet.as_person(&ada, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["details"],
        json!({"role": "editor", "needed": "admin"})
    );

    // A new login with the normalized email works; the old session still does too.
    let (status, body, cookie) = fleet.login(" ADA@example.com ", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let second = Person {
        cookie: cookie.expect("a session cookie"),
        csrf_token: body["csrf_token"].as_str().expect("csrf").to_owned(),
        ..ada.clone()
    };
    let (status, sessions) = fleet
        .as_person(&second, "GET", "/api/v1/me/sessions", None)
        .await;
    assert_eq!(status, 200, "{sessions}");
    let items = sessions["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{sessions}");
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);

    // Logging out ends only that session.
    let (status, _) = fleet
        .as_person(&ada, "DELETE", "/api/v1/session", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 401, "a logged-out session is over");
    let (status, _) = fleet
        .as_person(&second, "GET", "/api/v1/session", None)
        .await;
    assert_eq!(status, 200, "the other session goes on");

    // Logging out everywhere ends every session.
    let (status, _) = fleet
        .as_person(&second, "DELETE", "/api/v1/me/sessions", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = fleet
        .as_person(&second, "GET", "/api/v1/session", None)
        .await;
    assert_eq!(status, 401);
    fleet.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_lax_and_state_changes_need_origin_and_csrf() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "admin").await;
    let response = fleet
        .post_from_site(
            "/api/v1/session",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(session_cookie(&response).is_some());
    // The fleet's public URL is plain HTTP on 127.0.0.1: the one place `Secure` (and with
    // it the `__Host-` prefix) is left off.
    assert!(
        set_cookie.starts_with("weft_session=weft_s_"),
        "{set_cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }

    let path = "/api/v1/api-keys";
    let post = reqwest::Method::POST;
    let (status, body) =
        with_cookie(&fleet, &ada, post.clone(), path, Some(&fleet.api), None).await;
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert_eq!(body["error"]["code"], "cross_site_request");
    let (status, body) = with_cookie(
        &fleet,
        &ada,
        post.clone(),
        path,
        Some("http://evil.example"),
        Some(&ada.csrf_token),
    )
    .await;
    assert_eq!(status, 403, "another site: {body}");
    let (status, body) = with_cookie(
        &fleet,
        &ada,
        post.clone(),
        path,
        None,
        Some(&ada.csrf_token),
    )
    .await;
    assert_eq!(status, 403, "no Origin at all: {body}");
    let (status, body) = with_cookie(
        &fleet,
        &ada,
        post,
        path,
        Some(&fleet.api),
        Some("weft-not-the-token"),
    )
    .await;
    assert_eq!(status, 403, "a wrong token: {body}");
    // Reading needs neither.
    let (status, body) = with_cookie(&fleet, &ada, reqwest::Method::GET, path, None, None).await;
    assert_eq!(status, 200, "{body}");
    // A login from another site is refused too (login CSRF).
    let response = fleet
        .client
        .post(fleet.url("/api/v1/session"))
        .header("origin", "http://evil.example")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 403);
    fleet.stop().await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer_and_failures_back_off() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    fleet.person(&owner, "ada@example.com", "viewer").await;

    let (status, wrong_password, cookie) = fleet.login("ada@example.com", "not her password").await;
    assert_eq!(status, 401);
    assert!(cookie.is_none());
    let (status, unknown_email, _) = fleet.login("nobody@example.com", "not her password").await;
    assert_eq!(status, 401);
    assert_eq!(wrong_password, unknown_email, "nothing tells the two apart");
    assert_eq!(wrong_password["error"]["code"], "invalid_credentials");

    // Failures count against the account and the client's address: two more make four
    // from this address, the fifth is still answered, and the sixth attempt waits.
    for _ in 0..2 {
        let (status, _, _) = fleet.login("ada@example.com", "still wrong").await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = fleet.login("ada@example.com", "still wrong").await;
    assert_eq!(status, 401, "the fifth failure is still answered");
    let response = fleet
        .post_from_site(
            "/api/v1/session",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        response.status(),
        429,
        "even the right password waits its turn"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    let db = fleet.pg().await;
    let failed: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_events WHERE action = 'session.login_failed'",
            &[],
        )
        .await
        .expect("audit query")
        .get(0);
    assert_eq!(failed, 5, "every failed login is in the audit log");
    fleet.stop().await;
}

#[tokio::test]
async fn disabling_a_person_ends_their_sessions_and_keys_at_once() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "admin").await;
    let key = fleet.key_of(&ada, "Ada's CI", "editor").await;
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 200);

    let (_, session) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    let path = format!(
        "/api/v1/members/{}/disabled",
        session["user"]["id"].as_str().expect("id")
    );
    let (status, body) = fleet
        .as_person(&ada, "PUT", &path, Some(json!({"disabled": true})))
        .await;
    assert_eq!(status, 403, "an admin disables nobody: {body}");
    let (status, body) = fleet
        .call(&owner, "PUT", &path, Some(json!({"disabled": true})))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 401, "her session stopped");
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 401, "her key stopped");
    let (status, _, _) = fleet.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, 401, "and she cannot sign in");

    let (status, _) = fleet
        .call(&owner, "PUT", &path, Some(json!({"disabled": false})))
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = fleet.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, 200, "enabled again, she signs in");
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 200, "and her key works again");
    fleet.stop().await;
}

#[tokio::test]
async fn invitations_are_single_use_tied_to_their_email_and_capped_by_the_inviters_role() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let admin = fleet.person(&owner, "admin@example.com", "admin").await;
    let (status, body) = fleet
        .as_person(
            &admin,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "x@example.com", "role": "owner"})),
        )
        .await;
    assert_eq!(status, 403, "an admin makes no owners: {body}");

    let (status, invitation) = fleet
        .as_person(
            &admin,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "grace@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{invitation}");
    let url = invitation["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}/invitations/accept#token=weft_i_", fleet.api)),
        "{url}"
    );
    let token = url.split_once("#token=").expect("token").1;
    let (status, open) = fleet
        .as_person(&admin, "GET", "/api/v1/invitations", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(open["items"][0]["email"], "grace@example.com");
    assert!(!open.to_string().contains(token), "the link is shown once");

    let accept = |body: Value| {
        fleet
            .client
            .post(fleet.url("/api/v1/invitations/accept"))
            .header("origin", &fleet.api)
            .json(&body)
            .send()
    };
    let (status, body) = read(
        accept(json!({"token": token, "display_name": "Grace"}))
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 400, "a new account needs a password: {body}");
    let (status, body) = read(
        accept(json!({"token": token, "display_name": "Grace", "password": "short"}))
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = read(
        accept(json!({"token": token, "display_name": "Grace", "password": PASSWORD}))
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"workspace_id": owner.id.to_string(), "role": "viewer"})
    );
    let (status, _) = read(
        accept(json!({"token": token, "display_name": "Grace", "password": PASSWORD}))
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 404, "an invitation is used once");

    // A person who has an account accepts only signed in as the invited email.
    let (_, second) = fleet
        .as_person(
            &admin,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "grace@example.com", "role": "editor"})),
        )
        .await;
    let token = link_token(&second);
    let (status, _) = read(accept(json!({"token": token})).await.expect("answers")).await;
    assert_eq!(status, 401, "not signed in");
    let response = fleet
        .client
        .post(fleet.url("/api/v1/invitations/accept"))
        .header("origin", &fleet.api)
        .header("cookie", &admin.cookie)
        .header("x-weft-csrf", &admin.csrf_token)
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 403, "signed in as someone else");
    let (_, _, grace_cookie) = fleet.login("grace@example.com", PASSWORD).await;
    let (_, grace_session, _) = fleet.login("grace@example.com", PASSWORD).await;
    let response = fleet
        .client
        .post(fleet.url("/api/v1/invitations/accept"))
        .header("origin", &fleet.api)
        .header("cookie", grace_cookie.expect("cookie"))
        .header(
            "x-weft-csrf",
            grace_session["csrf_token"].as_str().unwrap_or_default(),
        )
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("answers");
    let (status, body) = read(response).await;
    assert_eq!(
        status, 403,
        "the CSRF token belongs to her other session: {body}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn an_owner_resets_a_members_password_which_ends_their_sessions() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let boss = fleet.person(&owner, "boss@example.com", "owner").await;
    let ada = fleet.person(&owner, "ada@example.com", "editor").await;
    let ada_id = {
        let (_, session) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
        session["user"]["id"].as_str().expect("id").to_owned()
    };
    let path = format!("/api/v1/members/{ada_id}/password-reset");
    let admin = fleet.person(&owner, "admin@example.com", "admin").await;
    let (status, _) = fleet.as_person(&admin, "POST", &path, None).await;
    assert_eq!(status, 403, "only owners issue resets");
    let (status, issued) = fleet.as_person(&boss, "POST", &path, None).await;
    assert_eq!(status, 201, "{issued}");
    let token = link_token(&issued);

    let reset = |password: &str| {
        fleet
            .client
            .post(fleet.url("/api/v1/password-reset"))
            .header("origin", &fleet.api)
            .json(&json!({"token": token, "password": password}))
            .send()
    };
    let (status, _) = read(reset("a brand new password").await.expect("answers")).await;
    assert_eq!(status, 204);
    let (status, _) = read(reset("a second new password").await.expect("answers")).await;
    assert_eq!(status, 404, "a reset link is used once");
    let (status, _) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    assert_eq!(status, 401, "her old sessions ended");
    let (status, _, _) = fleet.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, 401, "the old password is gone");
    let (status, _, _) = fleet.login("ada@example.com", "a brand new password").await;
    assert_eq!(status, 200);

    // Someone who belongs to another workspace too is the operator's to reset.
    let other = fleet.workspace().await;
    let (_, invitation) = fleet
        .call(
            &other,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "ada@example.com", "role": "viewer"})),
        )
        .await;
    let token = link_token(&invitation);
    let (_, body, cookie) = fleet.login("ada@example.com", "a brand new password").await;
    let ada = Person {
        cookie: cookie.expect("cookie"),
        csrf_token: body["csrf_token"].as_str().expect("csrf").to_owned(),
        ..ada
    };
    let (status, body) = fleet
        .as_person(
            &ada,
            "POST",
            "/api/v1/invitations/accept",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fleet.as_person(&boss, "POST", &path, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "member_elsewhere");
    fleet.stop().await;
}

#[tokio::test]
async fn a_person_created_from_the_command_line_signs_in_and_owns_a_workspace() {
    let fleet = Fleet::with(0, 0).await;
    let pool = fleet.pool();
    let created = weft_gateway::setup::create_user(
        &pool,
        "Owner@Example.com",
        None,
        secrecy::SecretString::from(PASSWORD.to_owned()),
        Some("Acme"),
    )
    .await
    .expect("created");
    assert_eq!(created.email, "owner@example.com");
    let again = weft_gateway::setup::create_user(
        &pool,
        "owner@example.com",
        Some("Twin"),
        secrecy::SecretString::from(PASSWORD.to_owned()),
        None,
    )
    .await;
    assert!(again.is_err_and(|e| e.to_string().contains("already exists")));

    let (status, session, _) = fleet.login("owner@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["display_name"], "owner");
    assert_eq!(
        session["workspaces"],
        json!([{
            "id": created.workspace.expect("a workspace").to_string(), "name": "Acme", "role": "owner"
        }])
    );

    let (link, _) = weft_gateway::setup::reset_password(&pool, &fleet.api, "owner@example.com")
        .await
        .expect("a reset link");
    assert!(
        link.starts_with(&format!("{}/password-reset#token=weft_r_", fleet.api)),
        "{link}"
    );
    let unknown =
        weft_gateway::setup::reset_password(&pool, &fleet.api, "nobody@example.com").await;
    assert!(unknown.is_err_and(|e| e.to_string().contains("nobody@example.com")));

    weft_gateway::setup::set_disabled(&pool, "owner@example.com", true)
        .await
        .expect("disabled");
    let (status, _, _) = fleet.login("owner@example.com", PASSWORD).await;
    assert_eq!(status, 401, "a disabled person cannot sign in");
    weft_gateway::setup::set_disabled(&pool, "owner@example.com", false)
        .await
        .expect("enabled");
    let (status, _, _) = fleet.login("owner@example.com", PASSWORD).await;
    assert_eq!(status, 200);
    fleet.stop().await;
}

#[tokio::test]
async fn objects_name_who_made_them_and_who_changed_them_last() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "editor").await;
    let (_, session) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    let ada_id = session["user"]["id"].clone();
    let (_, keys) = fleet.call(&owner, "GET", "/api/v1/api-keys", None).await;
    let key_id = keys["items"][0]["id"].clone();
    let by_key = json!({"kind": "api_key", "id": key_id});
    let by_ada = json!({"kind": "user", "id": ada_id});

    let definition = |name: &str| {
        json!({"name": name, "trigger": {"type": "manual"},
               "nodes": [weft_testkit::http_node("call", &[], json!({"method": "GET", "url": "http://127.0.0.1:9/"}))]})
    };
    let (status, created) = fleet
        .call(
            &owner,
            "POST",
            "/api/v1/scenarios",
            Some(definition("First")),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], by_key);
    assert_eq!(created["updated_by"], by_key);
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, updated) = fleet
        .as_person(
            &ada,
            "PUT",
            &format!("/api/v1/scenarios/{id}"),
            Some(definition("Second")),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["created_by"], by_key);
    assert_eq!(updated["updated_by"], by_ada);
    let (_, versions) = fleet
        .call(
            &owner,
            "GET",
            &format!("/api/v1/scenarios/{id}/versions"),
            None,
        )
        .await;
    assert_eq!(versions["items"][0]["created_by"], by_ada, "version 2");
    assert_eq!(versions["items"][1]["created_by"], by_key, "version 1");
    let (_, paused) = fleet
        .call(
            &owner,
            "POST",
            &format!("/api/v1/scenarios/{id}/pause"),
            None,
        )
        .await;
    assert_eq!(paused["updated_by"], by_key);

    let manifest = json!({
        "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": "https://crm.example.com",
        "auth": {"type": "bearer"},
        "actions": [{"key": "ping", "name": "Ping", "request": {"method": "GET", "path": "/ping"}}]
    });
    let (_, connector) = fleet
        .as_person(&ada, "POST", "/api/v1/connectors", Some(manifest.clone()))
        .await;
    assert_eq!(connector["created_by"], by_ada, "{connector}");
    let (_, connector) = fleet
        .call(&owner, "PUT", "/api/v1/connectors/crm", Some(manifest))
        .await;
    assert_eq!(connector["created_by"], by_ada);
    assert_eq!(connector["updated_by"], by_key);

    let (_, connection) = fleet
        .as_person(
            &ada,
            "POST",
            "/api/v1/connections",
            Some(
                json!({"connector": "crm", "name": "CRM", "credentials": {"token": "t0ken-value"}}),
            ),
        )
        .await;
    assert_eq!(connection["created_by"], by_ada, "{connection}");
    let connection_id = connection["id"].as_str().expect("id").to_owned();
    let (_, renamed) = fleet
        .call(
            &owner,
            "PATCH",
            &format!("/api/v1/connections/{connection_id}"),
            Some(json!({"name": "CRM (EU)"})),
        )
        .await;
    assert_eq!(renamed["created_by"], by_ada);
    assert_eq!(renamed["updated_by"], by_key);
    fleet.stop().await;
}

#[tokio::test]
async fn viewers_read_secret_config_values_masked() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let viewer = fleet.person(&owner, "viewer@example.com", "viewer").await;
    let operator = fleet
        .person(&owner, "operator@example.com", "operator")
        .await;
    fleet
        .register_connector(
            &owner,
            json!({
                "key": "chat", "name": "Chat", "version": "1.0.0", "base_url": "https://chat.example.com",
                "auth": {"type": "bearer"},
                "connection_schema": {"type": "object", "properties": {
                    "channel": {"type": "string"},
                    "webhook_url": {"type": "string", "writeOnly": true}
                }},
                "actions": [{"key": "post", "name": "Post", "request": {"method": "POST", "path": "/post"}}]
            }),
        )
        .await;
    let hook = "https://hooks.example.com/services/T0K3N";
    let created = fleet
        .connection(
            &owner,
            json!({"connector": "chat", "name": "Chat", "config": {"channel": "#ops", "webhook_url": hook},
                   "credentials": {"token": "bot-token"}}),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/connections/{id}");
    let (_, seen) = fleet.as_person(&viewer, "GET", &path, None).await;
    assert_eq!(
        seen["config"],
        json!({"channel": "#ops", "webhook_url": "********"})
    );
    let (_, listed) = fleet
        .as_person(&viewer, "GET", "/api/v1/connections", None)
        .await;
    assert_eq!(listed["items"][0]["config"]["webhook_url"], "********");
    assert!(!listed.to_string().contains("T0K3N"));
    let (_, seen) = fleet.as_person(&operator, "GET", &path, None).await;
    assert_eq!(
        seen["config"]["webhook_url"], hook,
        "only viewers are kept from it"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn with_smtp_invitations_and_resets_are_mailed_to_their_person() {
    let smtp = weft_testkit::smtp::SmtpSink::start().await;
    let fleet = Fleet::with_gateway_flags(
        0,
        0,
        &[
            "--smtp-url",
            &smtp.url,
            "--smtp-from",
            "Weft <weft@example.com>",
        ],
    )
    .await;
    let owner = fleet.workspace().await;
    let (status, invitation) = fleet
        .call(
            &owner,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "grace@example.com", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 201, "{invitation}");
    assert_eq!(invitation["mailed"], true);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "weft@example.com");
    assert_eq!(mails[0].to, ["grace@example.com"]);
    let token = link_token(&invitation);
    let text = mails[0].text();
    assert!(
        text.contains(&invitation["url"].as_str().expect("url").to_owned()),
        "the link is in the mail: {text}"
    );
    assert!(text.contains(&token));
    assert!(text.contains("as editor"), "{text}");

    let ada = fleet.person(&owner, "ada@example.com", "viewer").await;
    let (_, session) = fleet.as_person(&ada, "GET", "/api/v1/session", None).await;
    let ada_id = session["user"]["id"].as_str().expect("id").to_owned();
    let (status, reset) = fleet
        .call(
            &owner,
            "POST",
            &format!("/api/v1/members/{ada_id}/password-reset"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{reset}");
    assert_eq!(reset["mailed"], true);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3, "Ada's invitation, then her reset");
    assert_eq!(mails[2].to, ["ada@example.com"]);
    assert!(mails[2].text().contains(&link_token(&reset)));

    // Without a server that takes mail, the invitation still stands, unmailed.
    let dead = Fleet::with_gateway_flags(0, 0, &["--smtp-url", "smtp://127.0.0.1:9"]).await;
    let other = dead.workspace().await;
    let (status, unmailed) = dead
        .call(
            &other,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "ada@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{unmailed}");
    assert_eq!(unmailed["mailed"], false);
    let (_, open) = dead.call(&other, "GET", "/api/v1/invitations", None).await;
    assert_eq!(open["items"].as_array().map(Vec::len), Some(1));
    dead.stop().await;
    fleet.stop().await;
}

#[tokio::test]
async fn an_instance_can_keep_workspace_creation_to_its_operators() {
    let fleet = Fleet::with_gateway_flags(0, 0, &["--users-create-workspaces", "false"]).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "owner").await;
    let (status, body) = fleet
        .as_person(
            &ada,
            "POST",
            "/api/v1/workspaces",
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("WEFT_USERS_CREATE_WORKSPACES"))
    );
    let (_, mine) = fleet
        .as_person(&ada, "GET", "/api/v1/workspaces", None)
        .await;
    assert_eq!(
        mine["items"].as_array().map(Vec::len),
        Some(1),
        "nothing was created"
    );
    fleet.stop().await;
}
