//! Scenario semantics end to end: error handling, cancel, replay and timeouts, across
//! gateway, scheduler and worker over the real broker and database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_domain::ids::RunId;
use weft_domain::run::{RunKind, RunStatus};
use weft_testkit::{
    FakeWorker, Fleet, OrNull, Reply, RunDetail, RunExt, Upstream, Workspace, accepted, http_node,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks for a replay; returns the status and body of the answer.
async fn replay(
    fleet: &Fleet,
    workspace: &Workspace,
    run_id: RunId,
    body: Option<Value>,
) -> (u16, Value) {
    fleet
        .call(
            workspace,
            "POST",
            &format!("/api/v1/runs/{run_id}/replay"),
            body,
        )
        .await
}

/// Polls until `done` holds for the run, and returns it.
async fn wait_until(
    fleet: &Fleet,
    workspace: &Workspace,
    run_id: RunId,
    what: &str,
    done: impl Fn(&RunDetail) -> bool,
) -> RunDetail {
    fleet
        .wait_for_run_where(workspace, run_id, RUN_TIMEOUT, what, done)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_branch_handles_a_failure_and_the_run_completes() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/charge",
        vec![Reply::json(402, json!({"error": "declined"}))],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let mut charge = http_node(
        "charge",
        &[],
        json!({"method": "POST", "url": url("/charge")}),
    );
    charge["retry"] = json!({"max_attempts": 1});
    let mut alert = http_node(
        "alert",
        &["charge:error"],
        json!({"method": "POST", "url": url("/alert")}),
    );
    alert["input"]["body"] = json!({"class": "{{ nodes.charge.error.class }}", "status": "{{ nodes.charge.error.status }}"});
    let definition = json!({
        "name": "error branch",
        "trigger": {"type": "manual"},
        "nodes": [charge, alert, http_node("ship", &["charge"], json!({"method": "POST", "url": url("/ship")}))]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(
        run.summary.status,
        RunStatus::Completed,
        "the error branch handled it: {run:?}"
    );
    assert_eq!(run.summary.error, None);
    assert_eq!(run.node("charge").status, "failed");
    assert_eq!(run.node("charge").error.or_null()["status"], 402);
    assert_eq!(run.node("alert").status, "completed");
    assert_eq!(run.node("ship").status, "skipped");
    let alerts = upstream.received_on("/alert");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].body, json!({"class": "permanent", "status": 402}));
    assert!(upstream.received_on("/ship").is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_error_continue_passes_the_error_on_as_the_node_output() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/lookup",
        vec![Reply::json(404, json!({"error": "no such person"}))],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let mut lookup = http_node(
        "lookup",
        &[],
        json!({"method": "POST", "url": url("/lookup")}),
    );
    lookup["on_error"] = json!("continue");
    let mut next = http_node(
        "next",
        &["lookup"],
        json!({"method": "POST", "url": url("/next")}),
    );
    next["input"]["body"] = json!({"looked_up": "{{ nodes.lookup.output }}"});
    let definition = json!({
        "name": "continue",
        "trigger": {"type": "manual"},
        "nodes": [lookup, next]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let lookup = run.node("lookup");
    assert_eq!(lookup.status, "failed");
    let output = lookup.output.or_null();
    assert_eq!(output["class"], "permanent", "{output}");
    assert_eq!(output["status"], 404, "{output}");
    assert!(output["message"].is_string(), "{output}");
    assert!(
        output["body"]
            .as_str()
            .is_some_and(|body| body.contains("no such person")),
        "the start of the upstream body: {output}"
    );
    assert_eq!(run.node("next").status, "completed");
    let sent = upstream.received_on("/next");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["looked_up"], *output);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_run_dispatches_nothing_more_and_records_the_late_result() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/slow",
        vec![Reply::json(200, json!({"done": true})).after(Duration::from_secs(2))],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let definition = json!({
        "name": "cancel",
        "trigger": {"type": "manual"},
        "nodes": [http_node("slow", &[], json!({"method": "POST", "url": url("/slow")})), http_node("next", &["slow"], json!({"method": "POST", "url": url("/next")}))]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while upstream.received_on("/slow").is_empty() {
        assert!(Instant::now() < deadline, "the slow node never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let other = fleet.workspace().await;
    let (status, body) = fleet
        .call(
            &other,
            "POST",
            &format!("/api/v1/runs/{run_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 404, "another workspace's run: {body}");

    let cancelled = fleet.cancel_run(&workspace, run_id).await;
    assert_eq!(cancelled.summary.status, RunStatus::Cancelled);
    assert_eq!(cancelled.summary.error.or_null()["class"], "cancelled");
    assert!(cancelled.summary.finished_at.is_some(), "{cancelled:?}");
    assert_eq!(cancelled.node("slow").status, "cancelled");
    assert_eq!(cancelled.node("next").status, "cancelled");

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            &format!("/api/v1/runs/{run_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_finished");

    // The slow request finishes after the cancel: recorded, and nothing follows it.
    let run = wait_until(
        &fleet,
        &workspace,
        run_id,
        "recorded the late result",
        |run| run.node("slow").status == "completed",
    )
    .await;
    assert_eq!(
        run.node("slow").output.or_null()["body"],
        json!({"done": true})
    );
    assert_eq!(run.summary.status, RunStatus::Cancelled);
    assert_eq!(run.node("next").status, "cancelled");
    fleet
        .witness(&workspace, &format!("{}/witness", upstream.url))
        .await;
    assert!(
        upstream.received_on("/next").is_empty(),
        "nothing is dispatched after a cancel"
    );
    assert_eq!(fleet.get_run(&workspace, run_id).await, run);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cancelled_before_it_was_taken_up_never_starts() {
    let mut fleet = Fleet::with(0, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "cancel queued",
        "trigger": {"type": "manual"},
        "nodes": [http_node("call", &[], json!({"method": "POST", "url": format!("{}/call", upstream.url)}))]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let cancelled = fleet.cancel_run(&workspace, run_id).await;
    assert_eq!(cancelled.summary.status, RunStatus::Cancelled);

    // Requested after it: once this one finished, the cancelled run's request was consumed.
    let witness = fleet
        .witness_run(&workspace, &format!("{}/witness", upstream.url))
        .await;

    // The scheduler now consumes the run's request, and takes nothing up.
    fleet.add_scheduler().await;
    let witness = fleet.wait_for_run(&workspace, witness, RUN_TIMEOUT).await;
    assert_eq!(witness.summary.status, RunStatus::Completed, "{witness:?}");
    assert_eq!(fleet.get_run(&workspace, run_id).await, cancelled);
    assert!(upstream.received_on("/call").is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_starts_at_the_failed_node_and_reuses_the_outputs_before_it() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script("/first", vec![Reply::json(200, json!({"n": 7}))]);
    upstream.script(
        "/second",
        vec![
            Reply::json(400, json!({"error": "fix me"})),
            Reply::json(200, json!({})),
        ],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let mut third = http_node(
        "third",
        &["second"],
        json!({"method": "POST", "url": url("/third")}),
    );
    third["input"]["body"] = json!({"n": "{{ nodes.first.output.body.n }}"});
    let definition = json!({
        "name": "replay",
        "trigger": {"type": "manual"},
        "nodes": [http_node("first", &[], json!({"method": "POST", "url": url("/first")})), http_node("second", &["first"], json!({"method": "POST", "url": url("/second")})), third]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let original_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let original = fleet
        .wait_for_run(&workspace, original_id, RUN_TIMEOUT)
        .await;
    assert_eq!(original.summary.status, RunStatus::Failed, "{original:?}");
    assert_eq!(original.summary.replay_of, None);

    let (status, body) = replay(&fleet, &workspace, original_id, None).await;
    assert_eq!(status, 202, "{body}");
    let replay_id = accepted(&body);
    let replayed = fleet.wait_for_run(&workspace, replay_id, RUN_TIMEOUT).await;
    assert_eq!(
        replayed.summary.status,
        RunStatus::Completed,
        "{replayed:?}"
    );
    assert_eq!(replayed.summary.replay_of, Some(original_id));
    assert_eq!(replayed.summary.trigger_kind, RunKind::Replay);
    assert_eq!(replayed.summary.version, original.summary.version);
    assert_eq!(replayed.trigger, original.trigger);
    assert_eq!(
        replayed.node("first").output,
        original.node("first").output,
        "the first node's outcome is reused"
    );
    assert_eq!(upstream.received_on("/first").len(), 1, "not called again");
    assert_eq!(upstream.received_on("/second").len(), 2);
    let third_calls = upstream.received_on("/third");
    assert_eq!(third_calls.len(), 1);
    assert_eq!(
        third_calls[0].body,
        json!({"n": 7}),
        "from the reused output"
    );

    // A completed run has no failed node: the start must be named, and must exist.
    let (status, body) = replay(&fleet, &workspace, replay_id, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "nothing_to_replay");
    let (status, body) = replay(
        &fleet,
        &workspace,
        replay_id,
        Some(json!({"from_node": "fourth"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_node");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`fourth`")),
        "{body}"
    );
    let other = fleet.workspace().await;
    let (status, body) = replay(&fleet, &other, replay_id, None).await;
    assert_eq!(status, 404, "another workspace's run: {body}");

    // From a named node, on a replay: only that node runs again.
    let (status, body) = replay(
        &fleet,
        &workspace,
        replay_id,
        Some(json!({"from_node": "third"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let again_id = accepted(&body);
    let again = fleet.wait_for_run(&workspace, again_id, RUN_TIMEOUT).await;
    assert_eq!(again.summary.status, RunStatus::Completed, "{again:?}");
    assert_eq!(again.summary.replay_of, Some(replay_id));
    assert_eq!(upstream.received_on("/first").len(), 1);
    assert_eq!(upstream.received_on("/second").len(), 2);
    assert_eq!(upstream.received_on("/third").len(), 2);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_on_the_latest_version_runs_the_new_definition() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script("/v1", vec![Reply::json(400, json!({}))]);
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let version = |path: &str| {
        json!({
            "name": "versions",
            "trigger": {"type": "manual"},
            "nodes": [http_node("first", &[], json!({"method": "POST", "url": url("/first")})), http_node("second", &["first"], json!({"method": "POST", "url": url(path)}))]
        })
    };
    let (scenario, _) = fleet.active_scenario(&workspace, version("/v1")).await;
    let original_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let original = fleet
        .wait_for_run(&workspace, original_id, RUN_TIMEOUT)
        .await;
    assert_eq!(original.summary.status, RunStatus::Failed, "{original:?}");

    let (status, body) = fleet
        .call(
            &workspace,
            "PUT",
            &format!("/api/v1/scenarios/{scenario}"),
            Some(version("/v2")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);

    // By default the replay stays on the run's version, and fails the same way.
    let (status, body) = replay(&fleet, &workspace, original_id, Some(json!({}))).await;
    assert_eq!(status, 202, "{body}");
    let same = fleet
        .wait_for_run(&workspace, accepted(&body), RUN_TIMEOUT)
        .await;
    assert_eq!(
        (same.summary.status, same.summary.version),
        (RunStatus::Failed, 1)
    );

    let (status, body) = replay(
        &fleet,
        &workspace,
        original_id,
        Some(json!({"version": "latest"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let latest = fleet
        .wait_for_run(&workspace, accepted(&body), RUN_TIMEOUT)
        .await;
    assert_eq!(latest.summary.status, RunStatus::Completed, "{latest:?}");
    assert_eq!(latest.summary.version, 2);
    assert_eq!(upstream.received_on("/first").len(), 1, "reused every time");
    assert_eq!(upstream.received_on("/v1").len(), 2);
    assert_eq!(upstream.received_on("/v2").len(), 1);

    let (status, body) = replay(
        &fleet,
        &workspace,
        original_id,
        Some(json!({"version": "3"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_upstream_does_not_answer_in_time_fails_with_a_timeout() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/hang",
        vec![Reply::json(200, json!({})).after(Duration::from_secs(5))],
    );
    let workspace = fleet.workspace().await;
    let mut hang = http_node(
        "hang",
        &[],
        json!({"method": "POST", "url": format!("{}/hang", upstream.url)}),
    );
    hang["timeout"] = json!("500ms");
    hang["retry"] = json!({"max_attempts": 1});
    let definition =
        json!({"name": "node timeout", "trigger": {"type": "manual"}, "nodes": [hang]});
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let started = Instant::now();
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    assert_eq!(
        run.node("hang").error.or_null()["class"],
        "timeout",
        "{run:?}"
    );
    assert_eq!(run.node("hang").attempts, 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "failed before the upstream answered: {:?}",
        started.elapsed()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_timeout_is_timed_out_and_its_unfinished_nodes_cancelled() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/hang",
        vec![Reply::json(200, json!({})).after(Duration::from_secs(4))],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let definition = json!({
        "name": "run timeout",
        "trigger": {"type": "manual"},
        "settings": {"timeout": "1s"},
        "nodes": [http_node("hang", &[], json!({"method": "POST", "url": url("/hang")})), http_node("next", &["hang"], json!({"method": "POST", "url": url("/next")}))]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let started = Instant::now();
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::TimedOut, "{run:?}");
    assert_eq!(run.summary.error.or_null()["class"], "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timed out before the upstream answered: {:?}",
        started.elapsed()
    );
    assert_eq!(run.node("hang").status, "cancelled");
    assert_eq!(run.node("next").status, "cancelled");
    assert!(upstream.received_on("/next").is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_worker_never_answers_is_dispatched_again_after_its_deadline() {
    let mut fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let mut call = http_node(
        "call",
        &[],
        json!({"method": "POST", "url": format!("{}/work", upstream.url)}),
    );
    call["timeout"] = json!("500ms");
    call["retry"] = json!({"max_attempts": 3, "initial": "100ms"});
    let definition = json!({"name": "lost task", "trigger": {"type": "manual"}, "nodes": [call]});
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;

    // A worker that takes the task and then hangs: it never acks, never answers.
    let mut hung = FakeWorker::start(&fleet.topology()).await;
    let started = Instant::now();
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let task = hung
        .take(Duration::from_secs(10))
        .await
        .expect("the task is delivered");
    assert_eq!((task.run_id, task.attempt), (run_id, 1));

    // Its prefetch is full, so the next attempt goes to this live worker.
    fleet.add_worker().await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.node("call").attempts, 2, "{run:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "not before the deadline (500ms timeout + 2s grace): {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.received_on("/work").len(), 1);
    fleet.stop().await;
    hung.crash().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_a_scenario_never_changes_a_running_run() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/slow",
        vec![Reply::json(200, json!({})).after(Duration::from_millis(800))],
    );
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let version = |path: &str| {
        json!({
            "name": "pinned",
            "trigger": {"type": "manual"},
            "nodes": [http_node("first", &[], json!({"method": "POST", "url": url("/slow")})), http_node("second", &["first"], json!({"method": "POST", "url": url(path)}))]
        })
    };
    let (scenario, _) = fleet.active_scenario(&workspace, version("/old")).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while upstream.received_on("/slow").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first node never called upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = fleet
        .call(
            &workspace,
            "PUT",
            &format!("/api/v1/scenarios/{scenario}"),
            Some(version("/new")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(
        (run.summary.status, run.summary.version),
        (RunStatus::Completed, 1)
    );
    assert_eq!(
        upstream.received_on("/old").len(),
        1,
        "the run kept its version"
    );
    assert!(upstream.received_on("/new").is_empty());

    let (status, versions) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/scenarios/{scenario}/versions"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{versions}");
    let listed: Vec<&Value> = versions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(listed, [&json!(2), &json!(1)], "newest first");
    let next_run = fleet.start_run(&workspace, scenario, json!({})).await;
    let next = fleet.wait_for_run(&workspace, next_run, RUN_TIMEOUT).await;
    assert_eq!(next.summary.version, 2);
    assert_eq!(
        upstream.received_on("/new").len(),
        1,
        "new runs use the new version"
    );
    fleet.stop().await;
}
