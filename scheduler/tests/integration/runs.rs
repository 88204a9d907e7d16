//! Runs end to end across gateway, scheduler and worker, over the real broker and database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use weft_domain::ids::{RunId, ScenarioId};
use weft_domain::messages::{NodeResult, Outcome, VERSION};
use weft_domain::run::{RunKind, RunStatus};
use weft_runtime::queue::Publisher;
use weft_testkit::{Fleet, OrNull, Reply, RunExt, Upstream, http_node};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_runs_transform_lookup_condition_and_notify() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/people",
        vec![Reply::json(
            200,
            json!({"identities": [{"firstName": "Ada", "age": 36}]}),
        )],
    );
    let workspace = fleet.workspace().await;
    let mut lookup = http_node(
        "lookup",
        &["prepare"],
        json!({"method": "GET", "url": format!("{}/people", upstream.url), "query": {"phone": "{{ nodes.prepare.output.phone }}"}}),
    );
    lookup["outputs"] =
        json!({"first_name": "$.body.identities[0].firstName", "age": "$.body.identities[0].age"});
    let definition = json!({
        "name": "Lead enrichment",
        "trigger": {"type": "webhook"},
        "nodes": [
            {"id": "prepare", "type": "transform", "output": {"phone": "{{ trigger.body.phone }}", "score": "{{ trigger.body.score * 2 }}"}},
            lookup,
            {"id": "is_known", "type": "condition", "after": ["lookup"], "if": "nodes.lookup.output.first_name is not none"},
            http_node("notify", &["is_known:true"], json!({"method": "POST", "url": format!("{}/notify", upstream.url),
                "body": {"name": "{{ nodes.lookup.output.first_name }}", "age": "{{ nodes.lookup.output.age }}", "score": "{{ nodes.prepare.output.score }}"}}))
        ]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;

    let fired = Instant::now();
    let run_id = fleet
        .fire(&hook, json!({"phone": "555-0100", "score": 21}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    eprintln!(
        "4-node run: webhook to completed in {:?} (polled)",
        fired.elapsed()
    );

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let lookups = upstream.received_on("/people");
    assert_eq!(lookups.len(), 1);
    assert_eq!(
        (lookups[0].method.as_str(), lookups[0].query.as_str()),
        ("GET", "phone=555-0100")
    );
    let notified = upstream.received_on("/notify");
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0].method, "POST");
    assert_eq!(
        notified[0].body,
        json!({"name": "Ada", "age": 36, "score": 42}),
        "typed fields keep their type"
    );
    assert_eq!(upstream.received().len(), 2, "no other upstream calls");

    assert_eq!(
        run.node("lookup").output,
        Some(json!({"first_name": "Ada", "age": 36}))
    );
    assert_eq!(
        run.node("lookup").input.or_null()["query"],
        json!({"phone": "555-0100"})
    );
    assert_eq!(run.node("is_known").output, Some(json!({"result": true})));
    for id in ["prepare", "lookup", "is_known", "notify"] {
        let n = run.node(id);
        assert_eq!(n.status, "completed", "{id}: {n:?}");
        assert_eq!(n.attempts, 1, "{id}");
        assert!(
            n.started_at.is_some() && n.finished_at.is_some(),
            "{id} has timings: {n:?}"
        );
        assert!(n.duration_ms.is_some(), "{id}: {n:?}");
    }
    assert_eq!(run.node("notify").output.or_null()["status"], 200);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_branch_not_taken_is_skipped_and_the_join_runs() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let definition = json!({
        "name": "branches",
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "big", "type": "condition", "if": "trigger.body.amount > 100"},
            http_node("approve", &["big:true"], json!({"method": "POST", "url": url("/approve")})),
            http_node("review", &["big:false"], json!({"method": "POST", "url": url("/review")})),
            http_node("join", &["approve", "review"], json!({"method": "POST", "url": url("/join"), "body": {"approved": "{{ nodes.approve.status }}"}}))
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"amount": 500}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.node("approve").status, "completed");
    assert_eq!(run.node("review").status, "skipped");
    assert_eq!(run.node("join").status, "completed");
    assert_eq!(upstream.received_on("/review").len(), 0);
    let joins = upstream.received_on("/join");
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].body, json!({"approved": "completed"}));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_failures_retry_permanent_ones_do_not_and_retry_after_is_honoured() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/flaky",
        vec![
            Reply::json(503, json!({})),
            Reply::json(503, json!({})),
            Reply::json(200, json!({"ok": 1})),
        ],
    );
    upstream.script(
        "/bad",
        vec![Reply::json(400, json!({"error": "no such field"}))],
    );
    upstream.script(
        "/busy",
        vec![
            Reply::json(429, json!({})).header("retry-after", "1"),
            Reply::json(200, json!({})),
        ],
    );
    let workspace = fleet.workspace().await;
    let single = |name: &str, path: &str| {
        json!({
            "name": name,
            "trigger": {"type": "webhook"},
            "settings": {"retry": {"max_attempts": 3, "initial": "100ms", "max": "1s"}},
            "nodes": [http_node("call", &[], json!({"method": "GET", "url": format!("{}{path}", upstream.url)}))]
        })
    };

    let (_, flaky) = fleet
        .active_scenario(&workspace, single("flaky", "/flaky"))
        .await;
    let run_id = fleet.fire(&flaky, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.node("call").attempts, 3);
    assert_eq!(upstream.received_on("/flaky").len(), 3);

    let (_, bad) = fleet
        .active_scenario(&workspace, single("bad", "/bad"))
        .await;
    let run_id = fleet.fire(&bad, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.node("call").attempts, 1);
    assert_eq!(run.node("call").error.or_null()["class"], "permanent");
    assert_eq!(run.node("call").error.or_null()["status"], 400);
    assert!(
        run.summary.error.or_null()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`call`"),
        "the failing node is named: {run:?}"
    );
    assert_eq!(
        upstream.received_on("/bad").len(),
        1,
        "a 400 is not retried"
    );

    let (_, busy) = fleet
        .active_scenario(&workspace, single("busy", "/busy"))
        .await;
    let run_id = fleet.fire(&busy, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let calls = upstream.received_on("/busy");
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_result_changes_nothing() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "dup",
        "trigger": {"type": "webhook"},
        "nodes": [
            http_node("first", &[], json!({"url": format!("{}/first", upstream.url)})),
            http_node("second", &["first"], json!({"url": format!("{}/second", upstream.url)}))
        ]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.fire(&hook, json!({})).await;
    let before = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(before.summary.status, RunStatus::Completed);

    let topology = fleet.topology();
    let publisher = Publisher::new(weft_testkit::broker(), "test duplicate", topology.clone());
    let duplicate = NodeResult {
        v: VERSION,
        run_id,
        workspace_id: workspace.id,
        node_id: "first".into(),
        item_index: None,
        attempt: 1,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        outcome: Outcome::Success {
            output: json!("tampered"),
        },
        connection: None,
    };
    for _ in 0..2 {
        publisher
            .publish(&topology.results(), &topology.results(), &duplicate)
            .await
            .expect("duplicate published");
    }
    publisher.close().await;
    // Its result queues behind the duplicates.
    fleet
        .witness(&workspace, &format!("{}/witness", upstream.url))
        .await;

    let after = fleet.get_run(&workspace, run_id).await;
    assert_eq!(after, before, "the run record is unchanged");
    assert_eq!(
        upstream.received_on("/second").len(),
        1,
        "nothing dispatched again"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_dispatch_each_join_exactly_once() {
    let fleet = Fleet::with(2, 2).await;
    let upstream = Upstream::start().await;
    // Both branches answer at the same moment, so their results race to the schedulers.
    upstream.script(
        "/a",
        vec![Reply::json(200, json!({})).after(Duration::from_millis(100))],
    );
    upstream.script(
        "/b",
        vec![Reply::json(200, json!({})).after(Duration::from_millis(100))],
    );
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "fan-in",
        "trigger": {"type": "webhook"},
        "nodes": [
            http_node("a", &[], json!({"url": format!("{}/a", upstream.url)})),
            http_node("b", &[], json!({"url": format!("{}/b", upstream.url)})),
            http_node("join", &["a", "b"], json!({"method": "POST", "url": format!("{}/join", upstream.url), "body": {"run": "{{ run.id }}"}}))
        ]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;

    let mut run_ids = Vec::new();
    for _ in 0..30 {
        run_ids.push(fleet.fire(&hook, json!({})).await);
    }
    for &run_id in &run_ids {
        let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
        assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
        assert_eq!(run.node("join").attempts, 1);
    }
    // A wrongly doubled dispatch would have reached the upstream before a later run.
    fleet
        .witness(&workspace, &format!("{}/witness", upstream.url))
        .await;
    let mut joins: HashMap<String, usize> = HashMap::new();
    for request in upstream.received_on("/join") {
        *joins
            .entry(request.body["run"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    for &run_id in &run_ids {
        assert_eq!(
            joins.get(&run_id.to_string()),
            Some(&1),
            "join of run {run_id} dispatched exactly once"
        );
    }
    assert_eq!(joins.len(), run_ids.len());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_a_gateway_recorded_but_never_announced_is_taken_up_once() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "orphan",
        "trigger": {"type": "manual"},
        "nodes": [http_node("call", &[], json!({"url": format!("{}/orphan", upstream.url)}))]
    });
    let (scenario_id, _) = fleet.active_scenario(&workspace, definition).await;

    // What a gateway that died between its commit and its publish leaves behind.
    let run_id = RunId::generate();
    let workspace_id = workspace.id;
    fleet
        .pg()
        .await
        .execute(
            "INSERT INTO runs (id, workspace_id, scenario_id, version, status, trigger_kind, trigger) \
             VALUES ($1, $2, $3, 1, 'queued', 'manual', '{\"body\": {}}')",
            &[&run_id, &workspace_id, &scenario_id],
        )
        .await
        .expect("run recorded");
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(
        run.summary.status,
        RunStatus::Completed,
        "the sweeper re-published it: {run:?}"
    );

    // A late second announcement of the same run changes nothing.
    let topology = fleet.topology();
    let publisher = Publisher::new(weft_testkit::broker(), "test duplicate", topology.clone());
    let request = weft_domain::messages::RunRequested {
        v: VERSION,
        run_id,
        workspace_id,
    };
    publisher
        .publish(&topology.runs(), &topology.runs(), &request)
        .await
        .expect("published");
    publisher.close().await;
    // Requested behind the duplicate announcement.
    fleet
        .witness(&workspace, &format!("{}/witness", upstream.url))
        .await;
    let again = fleet.get_run(&workspace, run_id).await;
    assert_eq!(again, run);
    assert_eq!(upstream.received_on("/orphan").len(), 1);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_run_works_on_a_draft_and_stays_out_of_the_run_metrics() {
    let fleet = Fleet::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({"name": "draft", "trigger": {"type": "webhook"}, "nodes": [
        {"id": "t", "type": "transform", "output": {"n": "{{ trigger.body.n }}"}}
    ]});
    let (status, created) = fleet
        .call(&workspace, "POST", "/api/v1/scenarios", Some(definition))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "draft");
    let scenario: ScenarioId = created["id"].as_str().expect("id").parse().expect("uuid");

    let test_run = fleet
        .start_run(
            &workspace,
            scenario,
            json!({"test": true, "payload": {"n": 3}}),
        )
        .await;
    let run = fleet.wait_for_run(&workspace, test_run, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.summary.trigger_kind, RunKind::Test);
    assert_eq!(run.trigger["body"], json!({"n": 3}));
    assert_eq!(run.node("t").output, Some(json!({"n": 3})));

    let finished = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("weft_runs_finished_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let scheduler_ops = &fleet.schedulers()[0].ops;
    assert_eq!(
        finished(&fleet.metrics(scheduler_ops).await),
        0.0,
        "a test run is not counted"
    );
    let production = fleet.start_run(&workspace, scenario, json!({"n": 4})).await;
    let run = fleet
        .wait_for_run(&workspace, production, RUN_TIMEOUT)
        .await;
    assert_eq!(run.summary.trigger_kind, RunKind::Manual);
    assert_eq!(
        finished(&fleet.metrics(scheduler_ops).await),
        1.0,
        "a manual run is counted"
    );
}
