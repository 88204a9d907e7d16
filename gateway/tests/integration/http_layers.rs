//! The layers every request goes through, on a real gateway: the request id (the
//! caller's or a new one) comes back on the response and is in the request's log lines,
//! and JSON responses are compressed for callers that accept gzip or br.
//!
//! The services share this test's process, so they share its one log subscriber, set up
//! once here.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;
use weft_domain::ids::RunId;
use weft_domain::run::RunStatus;
use weft_testkit::{ADMIN_TOKEN, Fleet};

/// Every log line of the process, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer"))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(logs.clone())
            .with_ansi(false)
            .init();
        logs
    })
}

/// Creates a workspace with `x-request-id: request_id` (none if `None`); returns the
/// request id of the response.
async fn create_workspace(fleet: &Fleet, request_id: Option<&str>) -> String {
    let mut request = fleet
        .client
        .post(fleet.url("/api/v1/admin/workspaces"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "ids"}));
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("gateway answers");
    assert_eq!(response.status(), 201);
    response
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .expect("the response carries a request id")
        .to_owned()
}

/// Whether a log line of the workspace's creation names `request_id`.
fn logged_with(request_id: &str) -> bool {
    logs()
        .lines()
        .iter()
        .any(|line| line.contains("workspace created") && line.contains(request_id))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_is_the_callers_or_a_new_one_and_is_in_the_requests_log_lines() {
    logs();
    let fleet = Fleet::with(0, 0).await;

    let id = create_workspace(&fleet, Some("edge-4f1c:981")).await;
    assert_eq!(id, "edge-4f1c:981", "the caller's id comes back");
    assert!(
        logged_with(&id),
        "no log line with {id}: {:?}",
        logs().lines()
    );

    let generated = create_workspace(&fleet, None).await;
    assert!(
        uuid::Uuid::parse_str(&generated).is_ok(),
        "a new id is a UUID: {generated}"
    );
    assert!(
        logged_with(&generated),
        "no log line with {generated}: {:?}",
        logs().lines()
    );

    let replaced = create_workspace(&fleet, Some("not an id\t")).await;
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");

    // Errors answered by the fallbacks carry one too.
    let response = fleet
        .client
        .get(fleet.url("/no/such/route"))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    fleet.stop().await;
}

/// A chain of `count` transform nodes, each with a modest output.
fn chain(count: usize) -> Value {
    let nodes: Vec<Value> = (0..count)
        .map(|i| {
            let after: Vec<String> = if i == 0 {
                Vec::new()
            } else {
                vec![format!("n{}", i - 1)]
            };
            json!({
                "id": format!("n{i}"), "type": "transform", "after": after,
                "output": {
                    "index": i,
                    "customer": "{{ trigger.body.customer }}",
                    "greeting": "Hello {{ trigger.body.customer.name }}, order {{ trigger.body.order }}",
                    "tags": ["integration", "weft", "step"],
                }
            })
        })
        .collect();
    json!({"name": "fifty", "trigger": {"type": "manual"}, "nodes": nodes})
}

/// The run's detail as sent with `Accept-Encoding: encoding` (none if `None`): the
/// `Content-Encoding` answered, the size on the wire and the decoded JSON.
async fn run_detail(
    fleet: &Fleet,
    api_key: &str,
    run_id: RunId,
    encoding: Option<&str>,
) -> (Option<String>, usize, Value) {
    let mut request = fleet
        .client
        .get(fleet.url(&format!("/api/v1/runs/{run_id}")))
        .bearer_auth(api_key);
    if let Some(encoding) = encoding {
        request = request.header("accept-encoding", encoding);
    }
    let response = request.send().await.expect("gateway answers");
    assert_eq!(response.status(), 200);
    let content_encoding = response
        .headers()
        .get("content-encoding")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let wire = response.bytes().await.expect("body reads").to_vec();
    let mut decoded = Vec::new();
    match content_encoding.as_deref() {
        None => decoded.clone_from(&wire),
        Some("gzip") => {
            flate2::read::GzDecoder::new(wire.as_slice())
                .read_to_end(&mut decoded)
                .expect("valid gzip");
        }
        Some("br") => {
            brotli_decompressor::Decompressor::new(wire.as_slice(), 4096)
                .read_to_end(&mut decoded)
                .expect("valid brotli");
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    let json = serde_json::from_slice(&decoded).expect("the body is JSON");
    (content_encoding, wire.len(), json)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_responses_are_compressed_for_callers_that_accept_it() {
    logs();
    let fleet = Fleet::with(1, 0).await;
    let workspace = fleet.workspace().await;
    let (scenario, _) = fleet.active_scenario(&workspace, chain(50)).await;
    let run_id = fleet
        .start_run(
            &workspace,
            scenario,
            json!({"customer": {"name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"}, "order": 1842}),
        )
        .await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(30))
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.nodes.len(), 50);

    let (encoding, plain, json) = run_detail(&fleet, &workspace.api_key, run_id, None).await;
    assert_eq!(encoding, None, "not compressed unless asked");
    assert_eq!(json["id"], run.summary.id.to_string());
    let (encoding, gzip, gzip_json) =
        run_detail(&fleet, &workspace.api_key, run_id, Some("gzip")).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(gzip_json, json);
    let (encoding, br, br_json) = run_detail(&fleet, &workspace.api_key, run_id, Some("br")).await;
    assert_eq!(encoding.as_deref(), Some("br"));
    assert_eq!(br_json, json);
    let (encoding, _, _) = run_detail(&fleet, &workspace.api_key, run_id, Some("gzip, br")).await;
    assert!(encoding.is_some(), "one of the two when both are accepted");
    assert!(gzip < plain && br < plain, "{plain} {gzip} {br}");
    eprintln!("run detail of a 50-node run: {plain} bytes, gzip {gzip} bytes, br {br} bytes");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_public_url_on_a_gateway_listening_beyond_loopback_is_warned_about() {
    logs();
    let db = weft_testkit::TestDatabase::create().await;
    let namespace = format!("weft_test_{}", uuid::Uuid::new_v4().simple());
    let config = <weft_gateway::Config as clap::Parser>::try_parse_from([
        "weft-gateway",
        "--database-url",
        &db.url,
        "--amqp-url",
        &weft_testkit::amqp_url(),
        "--namespace",
        &namespace,
        "--master-keys",
        "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "--public-url",
        "http://localhost:8080",
    ])
    .expect("valid configuration");
    let gateway = weft_gateway::Gateway::new(config)
        .await
        .expect("gateway starts");
    let api = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind every interface");
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ops port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(api, ops, async move {
        let _ = stopped.await;
    }));
    let warned = |line: &String| {
        line.contains("WARN") && line.contains("WEFT_PUBLIC_URL is a loopback address")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs().lines().iter().any(warned) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warning about WEFT_PUBLIC_URL: {:?}",
            logs().lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logs().lines().iter().filter(|l| warned(l)).count(),
        1,
        "one line"
    );
    let _ = stop.send(());
    served.await.expect("serve ends").expect("served");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_log_line_holds_a_password_session_csrf_token_key_or_link() {
    logs();
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let admin = fleet.person(&owner, "ada@example.com", "admin").await;
    let (status, _, _) = fleet.login("ada@example.com", "a wrong password").await;
    assert_eq!(status, 401);
    let key = fleet.key_of(&admin, "logged", "viewer").await;
    let (status, invitation) = fleet
        .as_person(
            &admin,
            "POST",
            "/api/v1/invitations",
            Some(json!({"email": "grace@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 200);
    let session = admin.session_token();
    let link = weft_testkit::link_token(&invitation);
    let lines = logs().lines();
    assert!(!lines.is_empty(), "the requests were logged");
    for secret in [
        weft_testkit::PASSWORD,
        "a wrong password",
        session,
        admin.csrf_token.as_str(),
        key.api_key.as_str(),
        owner.api_key.as_str(),
        link.as_str(),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "`{secret}` logged: {leaks:?}");
    }
    fleet.stop().await;
}
