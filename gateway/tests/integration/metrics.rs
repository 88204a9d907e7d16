//! Every binary's operations address: `/healthz`, `/readyz` with each dependency, and a
//! `/metrics` exposition that `promtool check metrics` accepts, with no ids in labels.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use weft_domain::ids::RunId;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, Reply, Upstream};

/// A metric, the labels that pick its sample, and the value it must have.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

/// The value of the sample named `name` whose labels include `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: BTreeMap<&str, &str> = label_text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            labels
                .iter()
                .all(|(k, v)| found.get(k) == Some(v))
                .then(|| value.parse().ok())
                .flatten()
        })
}

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
    let mut run_id = RunId::nil();
    for _ in 0..3 {
        run_id = fleet.fire(&hook, json!({})).await;
        let run = fleet
            .wait_for_run(&workspace, run_id, Duration::from_secs(20))
            .await;
        assert_eq!(run.summary.status, RunStatus::Completed);
    }
    upstream.script("/m", vec![Reply::json(400, json!({"error": "bad"}))]);
    let failing = fleet.fire(&hook, json!({})).await;
    let run = fleet
        .wait_for_run(&workspace, failing, Duration::from_secs(20))
        .await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let unknown = fleet
        .client
        .post(fleet.url("/hooks/unknown"))
        .send()
        .await
        .expect("answers");
    assert_eq!(unknown.status(), 404);

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
            fleet.schedulers()[0].ops.clone(),
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
            fleet.workers()[0].ops.clone(),
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

        let exposition = fleet.metrics(&ops).await;
        for metric in metrics.iter().chain(&[
            "weft_build_info",
            "process_resident_memory_bytes",
            "process_open_fds",
        ]) {
            assert!(exposition.contains(metric), "{name} exposes {metric}");
        }
        for id in [
            run_id.to_string(),
            scenario_id.to_string(),
            workspace.id.to_string(),
        ] {
            assert!(
                !exposition.contains(&id),
                "{name} metrics carry an id in a label"
            );
        }
        let expected: &[Expected] = match name {
            "gateway" => &[
                (
                    "weft_webhooks_received_total",
                    &[("outcome", "accepted")],
                    4.0,
                ),
                (
                    "weft_webhooks_received_total",
                    &[("outcome", "not_found")],
                    1.0,
                ),
                ("weft_runs_started_total", &[("trigger", "webhook")], 4.0),
            ],
            "scheduler" => &[
                ("weft_runs_finished_total", &[("status", "completed")], 3.0),
                ("weft_runs_finished_total", &[("status", "failed")], 1.0),
                ("weft_run_duration_seconds_count", &[], 4.0),
                ("weft_node_retries_total", &[("connector", "http")], 0.0),
            ],
            _ => &[
                (
                    "weft_external_requests_total",
                    &[("connector", "http"), ("status_class", "2xx")],
                    3.0,
                ),
                (
                    "weft_external_requests_total",
                    &[("connector", "http"), ("status_class", "4xx")],
                    1.0,
                ),
                (
                    "weft_node_duration_seconds_count",
                    &[("action", "request"), ("outcome", "success")],
                    3.0,
                ),
                (
                    "weft_node_duration_seconds_count",
                    &[("action", "request"), ("outcome", "permanent")],
                    1.0,
                ),
                ("weft_dispatch_latency_seconds_count", &[], 4.0),
                ("weft_tasks_in_flight", &[], 0.0),
            ],
        };
        for (metric, labels, value) in expected {
            assert_eq!(
                sample(&exposition, metric, labels).unwrap_or(0.0),
                *value,
                "{name}: {metric}{labels:?}\n{exposition}"
            );
        }
        if let Err(problems) = promtool_check(&exposition) {
            panic!("{name} metrics fail promtool check metrics:\n{problems}");
        }
    }
    fleet.stop().await;
}
