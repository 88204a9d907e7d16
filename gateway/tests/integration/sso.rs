//! Single sign-on (architecture §11) against a real OpenID provider (npm `oidc-provider`)
//! on 127.0.0.1, driven through the whole browser redirect flow: the gateway's redirect
//! to the provider, its login and consent forms, the callback with the code, the session.

use serde_json::{Value, json};
use uuid::Uuid;
use weft_testkit::oidc::{Browser, CLIENT_ID, CLIENT_SECRET, OidcProvider};
use weft_testkit::{Fleet, PASSWORD};

/// A provider, and a fleet whose gateway signs in through it; people of `example.com`
/// get an account in the returned workspace as editors.
async fn sso_fleet(extra: &[&str]) -> (OidcProvider, Fleet, Uuid) {
    let mut provider = OidcProvider::start().await;
    let workspace = Uuid::now_v7();
    let workspace_flag = workspace.to_string();
    let mut flags = vec![
        "--oidc-issuer",
        provider.issuer.as_str(),
        "--oidc-client-id",
        CLIENT_ID,
        "--oidc-client-secret",
        CLIENT_SECRET,
        "--oidc-provision-domains",
        "example.com",
        "--oidc-provision-workspace",
        &workspace_flag,
        "--oidc-provision-role",
        "editor",
    ];
    flags.extend_from_slice(extra);
    let fleet = Fleet::with_gateway_flags(0, 0, &flags).await;
    provider.register(&fleet.url("/api/v1/sso/callback")).await;
    fleet
        .pg()
        .await
        .execute(
            "INSERT INTO workspaces (id, name) VALUES ($1, 'Example')",
            &[&workspace],
        )
        .await
        .expect("the provisioning workspace");
    (provider, fleet, workspace)
}

/// Signs in as `login` at the provider, from the gateway's start to wherever it ends.
async fn sign_in(
    fleet: &Fleet,
    browser: &mut Browser,
    login: &str,
    return_to: &str,
) -> weft_testkit::oidc::Page {
    let start = fleet.url(&format!("/api/v1/sso/start?return_to={return_to}"));
    let login_page = browser.open(&start).await;
    assert!(
        login_page.body.contains("name=\"login\""),
        "the provider's login form: {}",
        login_page.body
    );
    let consent = browser
        .submit(&login_page, &[("login", login), ("password", "anything")])
        .await;
    assert!(
        consent.body.contains("value=\"consent\""),
        "the consent form: {}",
        consent.body
    );
    browser.submit(&consent, &[]).await
}

fn session_cookie(fleet: &Fleet, browser: &Browser) -> Option<String> {
    browser
        .cookie(&fleet.api, "weft_session")
        .map(|value| format!("weft_session={value}"))
}

async fn session(fleet: &Fleet, cookie: &str) -> (u16, Value) {
    let response = fleet
        .client
        .get(fleet.url("/api/v1/session"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("answers");
    weft_testkit::read(response).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_of_an_allowed_domain_signs_in_through_the_provider_and_gets_an_account() {
    let (provider, fleet, workspace) = sso_fleet(&[]).await;
    let (status, methods) = weft_testkit::read(
        fleet
            .client
            .get(fleet.url("/api/v1/sign-in-methods"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        methods,
        json!({"password": true, "sso": true, "signup": false})
    );

    let mut browser = Browser::new();
    let landed = sign_in(&fleet, &mut browser, "alice@example.com", "/scenarios").await;
    assert_eq!(
        landed.status, 404,
        "the web app is not served yet: {}",
        landed.body
    );
    let hops: Vec<String> = landed
        .visited
        .iter()
        .map(|url| url.path().to_owned())
        .collect();
    assert!(
        hops.iter().any(|path| path.starts_with("/auth/")),
        "back through the provider: {hops:?}"
    );
    assert!(
        hops.iter().any(|path| path == "/api/v1/sso/callback"),
        "{hops:?}"
    );
    assert_eq!(
        landed.url.as_str(),
        fleet.url("/scenarios"),
        "back where she was going"
    );
    assert!(landed.url.as_str().starts_with(&fleet.api));
    let callback = landed
        .visited
        .iter()
        .find(|url| url.path() == "/api/v1/sso/callback")
        .expect("the callback")
        .clone();

    let cookie = session_cookie(&fleet, &browser).expect("signed in");
    let (status, me) = session(&fleet, &cookie).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(me["user"]["display_name"], "alice");
    assert_eq!(
        me["workspaces"],
        json!([{"id": workspace.to_string(), "name": "Example", "role": "editor"}])
    );

    // The callback works once: its state is gone.
    let replayed = fleet
        .client
        .get(callback.as_str())
        .send()
        .await
        .expect("answers");
    let (status, body) = weft_testkit::read(replayed).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_sso_state");

    // A second sign-in finds her by her provider identity: no second account.
    let mut again = Browser::new();
    sign_in(&fleet, &mut again, "alice@example.com", "/").await;
    assert!(session_cookie(&fleet, &again).is_some());
    let db = fleet.pg().await;
    let accounts: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(accounts, 1);
    let logins: Vec<Value> = db
        .query(
            "SELECT summary FROM audit_events WHERE action = 'session.login' ORDER BY id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0]["method"], "sso");
    assert_eq!(logins[0]["provisioned"], true);
    assert_eq!(logins[1]["provisioned"], false);
    assert_eq!(logins[0]["issuer"], provider.issuer);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn people_without_an_account_or_a_verified_email_are_refused() {
    let (_provider, fleet, _) = sso_fleet(&[]).await;
    for login in ["bob@elsewhere.org", "unverified@example.com"] {
        let mut browser = Browser::new();
        let landed = sign_in(&fleet, &mut browser, login, "/").await;
        assert_eq!(landed.status, 403, "{login}: {}", landed.body);
        assert!(landed.body.contains("no Weft account"), "{}", landed.body);
        assert!(
            session_cookie(&fleet, &browser).is_none(),
            "{login} is not signed in"
        );
    }
    // An invitation is enough: the invited email gets an account on sign-in.
    let owner = fleet.workspace().await;
    let (status, _) = fleet
        .call(
            &owner,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "bob@elsewhere.org", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201);
    let mut browser = Browser::new();
    sign_in(&fleet, &mut browser, "bob@elsewhere.org", "/").await;
    assert!(
        session_cookie(&fleet, &browser).is_some(),
        "invited Bob signs in"
    );

    let (status, body) = weft_testkit::read(
        fleet
            .client
            .get(fleet.url("/api/v1/sso/start?return_to=https://evil.example/"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 400, "no open redirect: {body}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_account_is_linked_by_its_verified_email_and_sso_only_refuses_passwords() {
    let (_provider, fleet, _) = sso_fleet(&["--sso-only", "true"]).await;
    let pool = fleet.pool();
    weft_gateway::setup::create_user(
        &pool,
        "carol@example.com",
        Some("Carol"),
        secrecy::SecretString::from(PASSWORD.to_owned()),
        Some("Carol's"),
    )
    .await
    .expect("created");

    let (status, body, _) = fleet.login("carol@example.com", PASSWORD).await;
    assert_eq!(status, 403, "SSO only: {body}");
    let (_, methods) = weft_testkit::read(
        fleet
            .client
            .get(fleet.url("/api/v1/sign-in-methods"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(methods["password"], false);

    let mut browser = Browser::new();
    sign_in(&fleet, &mut browser, "carol@example.com", "/").await;
    let cookie = session_cookie(&fleet, &browser).expect("signed in");
    let (_, me) = session(&fleet, &cookie).await;
    assert_eq!(
        me["user"]["display_name"], "Carol",
        "her own account, not a new one"
    );
    assert_eq!(me["workspaces"][0]["name"], "Carol's");
    let linked: i64 = fleet
        .pg()
        .await
        .query_one(
            "SELECT count(*) FROM sso_identities i JOIN users u ON u.id = i.user_id \
             WHERE u.email = 'carol@example.com'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(linked, 1);
    fleet.stop().await;
}
