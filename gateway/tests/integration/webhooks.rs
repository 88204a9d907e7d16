//! Signed webhooks, their secrets, repeated deliveries and key rotation, against the real
//! gateway, PostgreSQL and RabbitMQ. No scheduler runs: an accepted delivery's run stays
//! `queued`, which is all these tests look at.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;
use weft_domain::crypto::KeyRing;
use weft_domain::ids::ScenarioId;
use weft_gateway::secrets::{rotate_keys, webhook_signature_aad};
use weft_testkit::{Fleet, Workspace};

const SECRET: &str = "s3cret-never-shown-9f2c";

fn hmac_sha256(secret: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds fit")
}

fn signed(signature: Value) -> Value {
    json!({
        "name": "signed",
        "trigger": {"type": "webhook", "signature": signature},
        "nodes": [{"id": "t", "type": "transform", "output": {"n": "{{ trigger.body.n }}"}}]
    })
}

/// How each scheme signs `body` with `secret` at `timestamp`: the headers to send.
fn sign(scheme: &str, secret: &str, body: &[u8], timestamp: i64) -> Vec<(String, String)> {
    let header = |name: &str, value: String| vec![(name.to_owned(), value)];
    match scheme {
        "github" => header(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(hmac_sha256(secret, body))),
        ),
        "stripe" => {
            let payload = [format!("{timestamp}.").as_bytes(), body].concat();
            header(
                "Stripe-Signature",
                format!(
                    "t={timestamp},v1={}",
                    hex::encode(hmac_sha256(secret, &payload))
                ),
            )
        }
        "slack" => {
            let base = [format!("v0:{timestamp}:").as_bytes(), body].concat();
            let mut headers = header("X-Slack-Request-Timestamp", timestamp.to_string());
            headers.extend(header(
                "X-Slack-Signature",
                format!("v0={}", hex::encode(hmac_sha256(secret, &base))),
            ));
            headers
        }
        "hmac-sha256" => header(
            "X-Weft-Test-Signature",
            format!("sha256={}", STANDARD.encode(hmac_sha256(secret, body))),
        ),
        other => panic!("no signer for {other}"),
    }
}

fn definition_for(scheme: &str, secret: &str) -> Value {
    if scheme == "hmac-sha256" {
        signed(
            json!({"scheme": scheme, "secret": secret, "header": "X-Weft-Test-Signature",
                      "encoding": "base64", "prefix": "sha256="}),
        )
    } else {
        signed(json!({"scheme": scheme, "secret": secret}))
    }
}

/// Posts a JSON body as raw bytes with the given headers; returns status and JSON body.
async fn deliver(
    fleet: &Fleet,
    hook: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    deliver_to(fleet, &fleet.api, hook, headers, body).await
}

async fn deliver_to(
    fleet: &Fleet,
    base: &str,
    hook: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    post(
        fleet.client.clone(),
        format!("{base}{hook}"),
        headers.to_vec(),
        body.to_vec(),
    )
    .await
}

/// Owns its arguments, so that deliveries can run as tasks of their own.
async fn post(
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn runs_of(fleet: &Fleet, scenario_id: ScenarioId) -> Vec<String> {
    let pg = fleet.pg().await;
    pg.query(
        "SELECT id FROM runs WHERE scenario_id = $1 ORDER BY id",
        &[&scenario_id],
    )
    .await
    .expect("runs query")
    .iter()
    .map(|row| row.get::<_, Uuid>("id").to_string())
    .collect()
}

/// The gateway's `weft_webhooks_received_total` for `outcome`.
async fn webhooks_received(fleet: &Fleet, outcome: &str) -> u64 {
    let text = fleet.metrics(&fleet.gateway_ops).await;
    let series = format!("weft_webhooks_received_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

fn assert_refused(status: u16, body: &Value, case: &str) {
    assert_eq!(status, 401, "{case}: {body}");
    assert_eq!(
        body["error"],
        json!({"code": "invalid_signature", "message": "the webhook signature is missing or invalid", "details": null}),
        "{case}: the same answer whatever failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scheme_accepts_signed_deliveries_and_refuses_the_rest() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let mut refused = 0;
    for scheme in ["github", "stripe", "slack", "hmac-sha256"] {
        let (scenario_id, hook) = fleet
            .active_scenario(&workspace, definition_for(scheme, SECRET))
            .await;
        let body =
            json!({"n": 1, "id": format!("evt_{scheme}"), "event_id": format!("Ev_{scheme}")})
                .to_string()
                .into_bytes();
        let now = now();

        let (status, accepted) =
            deliver(&fleet, &hook, &sign(scheme, SECRET, &body, now), &body).await;
        assert_eq!(status, 202, "{scheme}: {accepted}");
        let run_id = accepted["run_id"].as_str().expect("run id").to_owned();

        let mut tampered = body.clone();
        tampered[5] = b'2';
        let mut bad_cases = vec![
            ("tampered body", sign(scheme, SECRET, &body, now), tampered),
            (
                "wrong secret",
                sign(scheme, "not-the-secret", &body, now),
                body.clone(),
            ),
            ("no signature", vec![], body.clone()),
        ];
        let mut malformed = sign(scheme, SECRET, &body, now);
        let last = malformed.len() - 1;
        malformed[last].1 = "sha256=zz,t=,v0=".into();
        bad_cases.push(("malformed signature", malformed, body.clone()));
        if matches!(scheme, "stripe" | "slack") {
            let stale = now - 301;
            bad_cases.push((
                "stale timestamp",
                sign(scheme, SECRET, &body, stale),
                body.clone(),
            ));
            // A minute past the tolerance: the gateway's clock moves on while the test
            // runs, so a timestamp just past the edge could come back within it.
            let early = now + 360;
            bad_cases.push((
                "future timestamp",
                sign(scheme, SECRET, &body, early),
                body.clone(),
            ));
        }
        for (case, headers, body) in bad_cases {
            let (status, answer) = deliver(&fleet, &hook, &headers, &body).await;
            assert_refused(status, &answer, &format!("{scheme}, {case}"));
            refused += 1;
        }
        assert_eq!(
            runs_of(&fleet, scenario_id).await,
            vec![run_id.clone()],
            "{scheme}: refused deliveries record no run"
        );

        // The signature is checked before the body is parsed: a forged non-JSON body is 401, not 400.
        let (status, answer) = deliver(&fleet, &hook, &[], b"{not json").await;
        assert_refused(status, &answer, &format!("{scheme}, forged broken body"));
        refused += 1;

        let (status, run) = fleet
            .call(&workspace, "GET", &format!("/api/v1/runs/{run_id}"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(run["trigger"]["body"]["n"], 1, "{run}");
        assert!(!run.to_string().contains(SECRET));
    }
    assert_eq!(webhooks_received(&fleet, "bad_signature").await, refused);
    assert_eq!(webhooks_received(&fleet, "accepted").await, 4);

    // A scenario without a signature takes unsigned deliveries, as before.
    let (_, hook) = fleet
        .active_scenario(
            &workspace,
            json!({"name": "open", "trigger": {"type": "webhook"},
            "nodes": [{"id": "t", "type": "transform", "output": {}}]}),
        )
        .await;
    let (status, _) = deliver(&fleet, &hook, &[], b"{}").await;
    assert_eq!(status, 202);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_options_are_validated_when_saved() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let cases = [
        (
            json!({"scheme": "md5", "secret": "k"}),
            "trigger.signature.scheme",
        ),
        (json!({"scheme": "github"}), "trigger.signature.secret"),
        (
            json!({"scheme": "github", "secret": ""}),
            "trigger.signature.secret",
        ),
        (
            json!({"scheme": "github", "secret": "k", "header": "x-sig"}),
            "trigger.signature.header",
        ),
        (
            json!({"scheme": "hmac-sha256", "secret": "k"}),
            "trigger.signature.header",
        ),
        (
            json!({"scheme": "hmac-sha256", "secret": "k", "header": "x-sig", "encoding": "base32"}),
            "trigger.signature.encoding",
        ),
    ];
    for (signature, field) in cases {
        let (status, body) = fleet
            .call(
                &workspace,
                "POST",
                "/api/v1/scenarios",
                Some(signed(signature.clone())),
            )
            .await;
        assert_eq!(status, 400, "{signature}: {body}");
        assert_eq!(body["error"]["code"], "invalid_scenario");
        assert_eq!(
            body["error"]["details"]["problems"][0]["field"], field,
            "{signature}: {body}"
        );
    }
    let (_, scenarios) = fleet
        .call(&workspace, "GET", "/api/v1/scenarios", None)
        .await;
    assert_eq!(scenarios["items"], json!([]), "nothing was saved");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_stored_encrypted_and_never_shown() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(definition_for("github", SECRET)),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/scenarios/{id}");
    let (_, activated) = fleet
        .call(&workspace, "POST", &format!("{path}/activate"), None)
        .await;
    let hook = created["webhook"]["path"]
        .as_str()
        .expect("hook")
        .to_owned();

    let (status, read) = fleet.call(&workspace, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        read["definition"]["trigger"]["signature"],
        json!({"scheme": "github", "secret_set": true})
    );
    let (_, listed) = fleet
        .call(&workspace, "GET", "/api/v1/scenarios", None)
        .await;
    let (_, versions) = fleet
        .call(&workspace, "GET", &format!("{path}/versions"), None)
        .await;

    // Saved again as read (no secret, same scheme): the stored secret is kept.
    let (status, updated) = fleet
        .call(&workspace, "PUT", &path, Some(read["definition"].clone()))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["version"], 2);
    let body = br#"{"n": 2}"#;
    let (status, answer) = deliver(&fleet, &hook, &sign("github", SECRET, body, 0), body).await;
    assert_eq!(status, 202, "the kept secret still verifies: {answer}");

    for shown in [
        &created, &activated, &read, &listed, &versions, &updated, &answer,
    ] {
        assert!(!shown.to_string().contains(SECRET), "{shown}");
    }

    let pg = fleet.pg().await;
    let uuid: Uuid = id.parse().expect("uuid");
    for row in pg
        .query(
            "SELECT definition::text AS definition FROM scenario_versions WHERE scenario_id = $1",
            &[&uuid],
        )
        .await
        .expect("versions")
    {
        let definition: String = row.get("definition");
        assert!(!definition.contains(SECRET), "{definition}");
        assert!(definition.contains(r#""secret_set": true"#), "{definition}");
    }
    let ciphertext: String = pg
        .query_one(
            "SELECT ciphertext FROM webhook_signatures WHERE scenario_id = $1",
            &[&uuid],
        )
        .await
        .expect("a stored secret")
        .get("ciphertext");
    assert!(ciphertext.starts_with("v1.test."), "{ciphertext}");
    assert!(!ciphertext.contains(SECRET));
    let ring: KeyRing = fleet.master_keys().parse().expect("the fleet's keys");
    let aad = webhook_signature_aad(workspace.id, uuid.into());
    assert_eq!(
        ring.decrypt(&ciphertext, &aad)
            .expect("decrypts in its row"),
        SECRET.as_bytes()
    );
    let elsewhere = webhook_signature_aad(workspace.id, ScenarioId::generate());
    assert!(
        ring.decrypt(&ciphertext, &elsewhere).is_err(),
        "bound to its scenario"
    );

    // A new scheme needs its secret; a new secret replaces the old one.
    let (status, refused) = fleet
        .call(
            &workspace,
            "PUT",
            &path,
            Some(signed(json!({"scheme": "stripe"}))),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["details"]["problems"][0]["field"],
        "trigger.signature.secret"
    );
    let (status, _) = fleet
        .call(
            &workspace,
            "PUT",
            &path,
            Some(definition_for("github", "rotated-secret")),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = deliver(
        &fleet,
        &hook,
        &sign("github", SECRET, body_of(3).as_bytes(), 0),
        body_of(3).as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "the old secret no longer verifies");
    let (status, _) = deliver(
        &fleet,
        &hook,
        &sign("github", "rotated-secret", body_of(4).as_bytes(), 0),
        body_of(4).as_bytes(),
    )
    .await;
    assert_eq!(status, 202);

    // Without a signature the secret is dropped, and unsigned deliveries are accepted.
    let unsigned = json!({"name": "open", "trigger": {"type": "webhook"},
                          "nodes": [{"id": "t", "type": "transform", "output": {}}]});
    let (status, _) = fleet.call(&workspace, "PUT", &path, Some(unsigned)).await;
    assert_eq!(status, 200);
    let left = pg
        .query_opt(
            "SELECT 1 FROM webhook_signatures WHERE scenario_id = $1",
            &[&uuid],
        )
        .await
        .expect("query");
    assert!(left.is_none(), "the secret is deleted with the signature");
    let (status, _) = deliver(&fleet, &hook, &[], b"{}").await;
    assert_eq!(status, 202);
    fleet.stop().await;
}

fn body_of(n: u32) -> String {
    json!({"n": n}).to_string()
}

fn with_key(key: &str) -> Vec<(String, String)> {
    vec![("Idempotency-Key".to_owned(), key.to_owned())]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_delivery_returns_the_first_run_and_starts_nothing() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;

    // Idempotency-Key, on a scenario without a signature.
    let (open_id, open_hook) = fleet
        .active_scenario(
            &workspace,
            json!({"name": "open", "trigger": {"type": "webhook"},
            "nodes": [{"id": "t", "type": "transform", "output": {}}]}),
        )
        .await;
    let (status, first) = deliver(&fleet, &open_hook, &with_key("order-1"), b"{}").await;
    assert_eq!(status, 202, "{first}");
    let first_run = first["run_id"].as_str().expect("run id").to_owned();
    let (status, again) =
        deliver(&fleet, &open_hook, &with_key("order-1"), br#"{"other": 1}"#).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, json!({"run_id": first_run, "duplicate": true}));
    let (status, _) = deliver(&fleet, &open_hook, &with_key("order-2"), b"{}").await;
    assert_eq!(status, 202, "another key is another delivery");
    let (status, _) = deliver(&fleet, &open_hook, &[], b"{}").await;
    assert_eq!(status, 202, "no key, no dedupe");
    assert_eq!(runs_of(&fleet, open_id).await.len(), 3);

    // Ten identical deliveries at once: one run.
    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..10 {
        deliveries.spawn(post(
            fleet.client.clone(),
            fleet.url(&open_hook),
            with_key("burst"),
            b"{}".to_vec(),
        ));
    }
    let answers = deliveries.join_all().await;
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    let burst_run = &started[0]["run_id"];
    for (status, body) in &answers {
        assert!(
            *status == 202 || (*status == 200 && body["duplicate"] == true),
            "{answers:?}"
        );
        assert_eq!(&body["run_id"], burst_run, "every answer names the one run");
    }
    assert_eq!(runs_of(&fleet, open_id).await.len(), 4);

    // X-GitHub-Delivery on a GitHub-signed scenario.
    let (github_id, github_hook) = fleet
        .active_scenario(&workspace, definition_for("github", SECRET))
        .await;
    let body = br#"{"zen": "Keep it logically awesome."}"#;
    let mut headers = sign("github", SECRET, body, 0);
    headers.push((
        "X-GitHub-Delivery".into(),
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
    ));
    let (status, first) = deliver(&fleet, &github_hook, &headers, body).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = deliver(&fleet, &github_hook, &headers, body).await;
    assert_eq!(status, 200);
    assert_eq!(again, json!({"run_id": first["run_id"], "duplicate": true}));
    let mut redelivered = sign("github", SECRET, body, 0);
    redelivered.push(("X-GitHub-Delivery".into(), "a-new-delivery".into()));
    let (status, _) = deliver(&fleet, &github_hook, &redelivered, body).await;
    assert_eq!(status, 202);
    assert_eq!(runs_of(&fleet, github_id).await.len(), 2);

    // Stripe's event id, Slack's event_id, from signed bodies.
    for scheme in ["stripe", "slack"] {
        let (_, hook) = fleet
            .active_scenario(&workspace, definition_for(scheme, SECRET))
            .await;
        let body =
            br#"{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "event_id": "Ev0PV52K21", "type": "x"}"#;
        let (status, first) =
            deliver(&fleet, &hook, &sign(scheme, SECRET, body, now()), body).await;
        assert_eq!(status, 202, "{scheme}: {first}");
        // A retry is signed anew, at a later time: still the same event.
        let (status, again) =
            deliver(&fleet, &hook, &sign(scheme, SECRET, body, now() + 1), body).await;
        assert_eq!(status, 200, "{scheme}: {again}");
        assert_eq!(again["run_id"], first["run_id"]);
    }
    // 1 (order-1) + 9 (burst) + 1 (github) + 2 (stripe, slack)
    assert_eq!(webhooks_received(&fleet, "duplicate").await, 13);

    // After 24 hours the key is free again.
    let pg = fleet.pg().await;
    pg.execute(
        "UPDATE webhook_deliveries SET created_at = now() - interval '25 hours' WHERE delivery_key = 'idempotency-key:order-1'",
        &[],
    )
    .await
    .expect("age the delivery");
    let (status, later) = deliver(&fleet, &open_hook, &with_key("order-1"), b"{}").await;
    assert_eq!(status, 202, "{later}");
    assert_ne!(later["run_id"].as_str(), Some(first_run.as_str()));
    let (status, again) = deliver(&fleet, &open_hook, &with_key("order-1"), b"{}").await;
    assert_eq!((status, &again["run_id"]), (200, &later["run_id"]));

    let (status, body) = deliver(&fleet, &open_hook, &with_key(&"k".repeat(300)), b"{}").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_refused_with_503_can_be_retried_with_its_key() {
    let mut fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let (scenario_id, hook) = fleet
        .active_scenario(
            &workspace,
            json!({"name": "open", "trigger": {"type": "webhook"},
            "nodes": [{"id": "t", "type": "transform", "output": {}}]}),
        )
        .await;
    let (offline, _) = fleet
        .gateway_with_broker("amqp://guest:guest@127.0.0.1:1/%2f")
        .await;
    let (status, body) = deliver_to(&fleet, &offline, &hook, &with_key("retry-me"), b"{}").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = deliver(&fleet, &hook, &with_key("retry-me"), b"{}").await;
    assert_eq!(
        status, 202,
        "the retry starts a run rather than naming the failed one: {body}"
    );
    let runs = runs_of(&fleet, scenario_id).await;
    assert_eq!(runs.len(), 2, "the failed run and the retried one");
    assert_eq!(runs[1], body["run_id"].as_str().expect("run id"));
    fleet.stop().await;
}

/// Re-encrypts `secret` for `scenario` under `ring`, as if stored before a rotation.
async fn store_under(
    pg: &tokio_postgres::Client,
    ring: &KeyRing,
    workspace: &Workspace,
    scenario: Uuid,
    secret: &str,
) {
    let aad = webhook_signature_aad(workspace.id, scenario.into());
    pg.execute(
        "UPDATE webhook_signatures SET ciphertext = $2 WHERE scenario_id = $1",
        &[&scenario, &ring.encrypt(secret.as_bytes(), &aad)],
    )
    .await
    .expect("stored");
}

async fn ciphertext_of(pg: &tokio_postgres::Client, scenario: Uuid) -> String {
    pg.query_one(
        "SELECT ciphertext FROM webhook_signatures WHERE scenario_id = $1",
        &[&scenario],
    )
    .await
    .expect("a stored secret")
    .get("ciphertext")
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_keys_re_encrypts_old_secrets_under_the_newest_key() {
    let fleet = Fleet::with(0, 0).await;
    let workspace = fleet.workspace().await;
    let mut scenarios = Vec::new();
    for n in 0..4 {
        let secret = format!("secret-{n}");
        let (id, hook) = fleet
            .active_scenario(&workspace, definition_for("github", &secret))
            .await;
        scenarios.push((Uuid::from(id), hook, secret));
    }
    // Three secrets were stored under a key older than the fleet's ("test"), and one
    // under a key that is no longer known at all.
    let old: KeyRing = "old:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
        .parse()
        .expect("key");
    let lost: KeyRing = "lost:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
        .parse()
        .expect("key");
    let mut pg = fleet.pg().await;
    for (id, _, secret) in &scenarios[..3] {
        store_under(&pg, &old, &workspace, *id, secret).await;
    }
    let (lost_id, _, lost_secret) = &scenarios[3];
    store_under(&pg, &lost, &workspace, *lost_id, lost_secret).await;

    let (id, hook, secret) = &scenarios[0];
    let body = b"{}";
    let (status, _) = deliver(&fleet, hook, &sign("github", secret, body, 0), body).await;
    assert_eq!(
        status, 500,
        "the gateway does not know the old key: nothing is accepted unverified"
    );

    // Step 3 of a rotation: the fleet's key is the newest, the old one still listed.
    let ring: KeyRing = format!(
        "{},old:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        fleet.master_keys()
    )
    .parse()
    .expect("ring");
    let rotated = rotate_keys(&mut pg, &ring, 2).await.expect("rotation");
    assert_eq!(rotated.re_encrypted, 3);
    assert_eq!(rotated.undecryptable, 1);
    for (id, _, _) in &scenarios[..3] {
        let ciphertext = ciphertext_of(&pg, *id).await;
        assert!(ciphertext.starts_with("v1.test."), "{ciphertext}");
    }
    assert!(
        ciphertext_of(&pg, *lost_id).await.starts_with("v1.lost."),
        "left as it was"
    );
    let (status, answer) = deliver(&fleet, hook, &sign("github", secret, body, 0), body).await;
    assert_eq!(status, 202, "the re-encrypted secret verifies: {answer}");
    let current: KeyRing = fleet.master_keys().parse().expect("ring");
    let aad = webhook_signature_aad(workspace.id, (*id).into());
    assert_eq!(
        current
            .decrypt(&ciphertext_of(&pg, *id).await, &aad)
            .expect("decrypts without the old key"),
        secret.as_bytes()
    );

    let again = rotate_keys(&mut pg, &ring, 2).await.expect("rotation");
    assert_eq!(again.re_encrypted, 0, "idempotent");
    fleet.stop().await;
}
