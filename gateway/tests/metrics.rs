//! Every binary's operations address: `/healthz`, `/readyz` with each dependency, and a
//! `/metrics` exposition that `promtool check metrics` accepts, with no ids in labels.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use weft_testkit::{Fleet, Upstream};

fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "promtool is needed (Debian package `prometheus`; deploy/check.sh installs it): {e}"
            )
        })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(exposition.as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_binary_serves_health_readiness_and_clean_metrics() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "metrics",
        "trigger": {"type": "webhook"},
        "nodes": [{"id": "call", "type": "action", "connector": "http", "action": "request",
                   "input": {"url": format!("{}/m", upstream.url)}}]
    });
    let (scenario_id, hook) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.fire(&hook, json!({})).await;
    let run = fleet
        .wait_for_run(&workspace, &run_id, Duration::from_secs(20))
        .await;
    assert_eq!(run["status"], "completed");

    let services = [
        (
            "gateway",
            fleet.gateway_ops.clone(),
            vec![
                "weft_webhooks_received_total",
                "weft_runs_started_total",
                "weft_http_requests_total",
            ],
            vec!["database", "broker"],
        ),
        (
            "scheduler",
            fleet.schedulers[0].ops.clone(),
            vec![
                "weft_runs_finished_total",
                "weft_run_duration_seconds",
                "weft_queue_messages",
                "weft_queue_consumers",
            ],
            vec!["database", "broker"],
        ),
        (
            "worker",
            fleet.workers[0].ops.clone(),
            vec![
                "weft_node_duration_seconds",
                "weft_external_requests_total",
                "weft_tasks_in_flight",
                "weft_dispatch_latency_seconds",
            ],
            vec!["broker"],
        ),
    ];
    for (name, ops, metrics, dependencies) in services {
        let health = fleet
            .client
            .get(format!("{ops}/healthz"))
            .send()
            .await
            .expect("answers");
        assert_eq!(health.status(), 200, "{name} /healthz");
        let ready = fleet
            .client
            .get(format!("{ops}/readyz"))
            .send()
            .await
            .expect("answers");
        assert_eq!(ready.status(), 200, "{name} /readyz");
        let ready: Value = ready.json().await.expect("JSON");
        for dependency in dependencies {
            assert_eq!(ready["checks"][dependency], "up", "{name}: {ready}");
        }

        let exposition = fleet
            .client
            .get(format!("{ops}/metrics"))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("text");
        for metric in metrics.iter().chain(&[
            "weft_build_info",
            "process_resident_memory_bytes",
            "process_open_fds",
        ]) {
            assert!(exposition.contains(metric), "{name} exposes {metric}");
        }
        for id in [&run_id, &scenario_id, &workspace.id] {
            assert!(
                !exposition.contains(id.as_str()),
                "{name} metrics carry an id in a label"
            );
        }
        if let Err(problems) = promtool_check(&exposition) {
            panic!("{name} metrics fail promtool check metrics:\n{problems}");
        }
    }
    fleet.stop().await;
}
