//! A connection's credential never shows: not in the debug-level logs of the gateway, the
//! scheduler and the worker (all three run in this process, so one subscriber sees them
//! all), not in run records, not in API responses, even when the upstream echoes it back.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, Reply, RunExt, Upstream, shown};

const TOKEN: &str = "tok_live_hunter2_do_not_log";

/// Every log line of the process, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
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

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_is_in_no_log_run_record_or_response() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    // An upstream that reflects the credential it was sent in an error body.
    upstream.script(
        "/leaky",
        vec![Reply::json(
            400,
            json!({"error": format!("bad token Bearer {TOKEN}")}),
        )],
    );
    let workspace = fleet.workspace().await;
    let manifest = json!({
        "key": "acme", "name": "Acme", "version": "1.0.0", "base_url": "https://acme.example",
        "auth": {"type": "bearer"},
        "test": {"method": "GET", "path": "/me"},
        "actions": [
            {"key": "ok", "name": "OK", "request": {"method": "POST", "path": "/ok", "body": {"q": "{{ input.q }}"}}},
            {"key": "leaky", "name": "Leaky", "request": {"method": "GET", "path": "/leaky"}}
        ]
    });
    let (status, body) = fleet
        .call(&workspace, "POST", "/api/v1/connectors", Some(manifest))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/connections",
            Some(json!({"connector": "acme", "name": "acme",
                        "config": {"base_url": upstream.url}, "credentials": {"token": TOKEN}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let connection = created["id"].as_str().expect("id").to_owned();
    let mut responses = vec![created.to_string()];

    let definition = json!({"name": "secrets", "trigger": {"type": "manual"}, "nodes": [
        {"id": "ok", "type": "action", "connector": "acme", "action": "ok", "connection": connection,
         "input": {"q": "{{ trigger.body.q }}"}},
        {"id": "leaky", "type": "action", "connector": "acme", "action": "leaky", "connection": connection,
         "after": ["ok"], "input": {}}
    ]});
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({"q": 1})).await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(30))
        .await;
    assert_eq!(
        run.summary.status,
        RunStatus::Failed,
        "the leaky call fails: {run:?}"
    );
    assert_eq!(run.node("ok").status, "completed");
    let ok_calls = upstream.received_on("/ok");
    assert_eq!(
        ok_calls[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str(),
        "the credential did reach the upstream"
    );

    for (method, path, body) in [
        ("GET", format!("/api/v1/connections/{connection}"), None),
        ("GET", "/api/v1/connections".to_owned(), None),
        (
            "POST",
            format!("/api/v1/connections/{connection}/test"),
            None,
        ),
        (
            "POST",
            "/api/v1/connectors/acme/actions/leaky/execute".to_owned(),
            Some(json!({"connection_id": connection, "input": {}})),
        ),
        ("GET", format!("/api/v1/runs/{run_id}"), None),
    ] {
        let (status, answer) = fleet.call(&workspace, method, &path, body).await;
        assert!(status < 500, "{method} {path}: {status} {answer}");
        responses.push(answer.to_string());
    }
    responses.push(shown(&run));
    for response in &responses {
        assert!(
            !response.contains(TOKEN),
            "a response shows the credential: {response}"
        );
    }

    let logs = logs.text();
    assert!(
        logs.contains("DEBUG"),
        "debug-level logs were captured ({} bytes)",
        logs.len()
    );
    assert!(
        !logs.contains(TOKEN),
        "the credential is in the logs: {}",
        logs.lines()
            .find(|line| line.contains(TOKEN))
            .unwrap_or_default()
    );
}
