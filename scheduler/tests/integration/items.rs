//! for_each and delay nodes end to end, across gateway, scheduler and worker over the
//! real broker and database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_domain::run::RunStatus;
use weft_testkit::{
    FakeWorker, Fleet, NodeExt, OrNull, Recorded, Reply, RunExt, Upstream, eventually, http_node,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most requests that were in flight at the upstream at once, given how long it
/// took to answer each (the next item is only dispatched after a result came back).
fn most_in_flight(requests: &[Recorded], answer_time: impl Fn(&Recorded) -> Duration) -> usize {
    requests
        .iter()
        .map(|request| {
            requests
                .iter()
                .filter(|other| {
                    other.at <= request.at && request.at < other.at + answer_time(other)
                })
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn for_each_keeps_max_concurrency_items_in_flight_and_outputs_them_in_item_order() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    // The first item answers last, so results come back out of item order.
    let delays = [700, 200, 300, 200, 250].map(Duration::from_millis);
    for (index, delay) in delays.iter().enumerate() {
        upstream.script(&format!("/each/{index}"), vec![Reply::echo().after(*delay)]);
    }
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "for each",
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "each", "type": "action", "connector": "http", "action": "request",
             "for_each": "{{ trigger.body.people }}", "max_concurrency": 2,
             "input": {"method": "POST", "url": format!("{}/each/{{{{ index }}}}", upstream.url),
                       "body": {"name": "{{ item.name }}", "index": "{{ index }}"}},
             "outputs": {"name": "$.body.body.name", "index": "$.body.body.index"}},
            {"id": "after", "type": "action", "connector": "http", "action": "request", "after": ["each"],
             "input": {"method": "POST", "url": format!("{}/after", upstream.url),
                       "body": {"all": "{{ nodes.each.output }}"}}}
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let names = ["ada", "bob", "cy", "dee", "eve"];
    let people: Vec<Value> = names.iter().map(|name| json!({"name": name})).collect();
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"people": people}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let items = upstream
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with("/each/"))
        .collect::<Vec<_>>();
    assert_eq!(items.len(), 5, "one request per item");
    for request in &items {
        let index: usize = request.path["/each/".len()..].parse().expect("an index");
        assert_eq!(
            request.body,
            json!({"name": names[index], "index": index}),
            "each request carries its item"
        );
    }
    let answer_time = |r: &Recorded| {
        let index: usize = r.path["/each/".len()..].parse().expect("an index");
        delays[index]
    };
    assert_eq!(
        most_in_flight(&items, answer_time),
        2,
        "never more than max_concurrency at once (and that many at first)"
    );

    let expected: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(index, name)| json!({"name": name, "index": index}))
        .collect();
    let each = run.node("each");
    assert_eq!(each.status, "completed");
    assert_eq!(each.output, Some(json!(expected)), "in item order");
    let details = each.items();
    assert_eq!(details.len(), 5);
    for (index, item) in details.iter().enumerate() {
        assert_eq!(item.index, index);
        assert_eq!(item.status, "completed", "{item:?}");
        assert_eq!(item.attempts, 1);
        assert_eq!(item.output.or_null(), &expected[index]);
        assert_eq!(item.input.or_null()["body"]["name"], names[index]);
        assert!(item.duration_ms.is_some(), "{item:?}");
    }
    let after = upstream.received_on("/after");
    assert_eq!(after.len(), 1, "the successor runs once, after every item");
    assert!(
        after[0].at
            >= items
                .iter()
                .map(|r| r.at + answer_time(r))
                .max()
                .expect("items"),
        "fan-in waits for the last item"
    );
    assert_eq!(after[0].body, json!({"all": expected}));
    fleet.stop().await;
}

/// A for_each over three items whose second is refused by the upstream.
fn one_item_fails(upstream: &Upstream, on_error: &str) -> Value {
    json!({
        "name": format!("item failure, {on_error}"),
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "each", "type": "action", "connector": "http", "action": "request",
             "for_each": "{{ trigger.body.ids }}", "max_concurrency": 1, "on_error": on_error,
             "input": {"method": "POST", "url": format!("{}/item/{{{{ item }}}}", upstream.url)},
             "outputs": {"path": "$.body.path"}},
            {"id": "after", "type": "action", "connector": "http", "action": "request", "after": ["each"],
             "input": {"method": "POST", "url": format!("{}/after", upstream.url),
                       "body": {"all": "{{ nodes.each.output }}"}}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_item_holds_its_error_under_continue_and_fails_the_node_otherwise() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/item/2",
        vec![Reply::json(400, json!({"error": "bad id"}))],
    );
    let workspace = fleet.workspace().await;

    let (scenario, _) = fleet
        .active_scenario(&workspace, one_item_fails(&upstream, "continue"))
        .await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": [1, 2, 3]}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let each = run.node("each");
    assert_eq!(each.status, "completed");
    let output = each.output.or_null().as_array().expect("an array");
    assert_eq!(output.len(), 3);
    assert_eq!(output[0], json!({"path": "/item/1"}));
    assert_eq!(output[2], json!({"path": "/item/3"}));
    assert_eq!(
        output[1]["class"], "permanent",
        "the error object: {}",
        output[1]
    );
    assert_eq!(output[1]["status"], 400);
    assert_eq!(each.item(1).status, "failed");
    assert_eq!(each.item(1).error.or_null()["status"], 400);
    let after = upstream.received_on("/after");
    assert_eq!(after.len(), 1);
    assert_eq!(&after[0].body["all"], each.output.or_null());

    let (scenario, _) = fleet
        .active_scenario(&workspace, one_item_fails(&upstream, "fail"))
        .await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": [1, 2, 3]}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.summary.error.or_null()["node"], "each");
    let message = run.summary.error.or_null()["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("node `each` failed: item 1: "),
        "{message}"
    );
    let each = run.node("each");
    assert_eq!(each.status, "failed");
    assert_eq!(each.error.or_null()["status"], 400);
    let statuses: Vec<&str> = each
        .items()
        .iter()
        .map(|item| item.status.as_str())
        .collect();
    assert_eq!(statuses, ["completed", "failed", "cancelled"]);
    assert_eq!(run.node("after").status, "cancelled");
    assert_eq!(
        upstream.received_on("/item/3").len(),
        1,
        "only from the first run: the failed node dispatched no more items"
    );
    assert_eq!(
        upstream.received_on("/after").len(),
        1,
        "only the first run's"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_array_completes_the_node_at_once() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let (scenario, _) = fleet
        .active_scenario(&workspace, one_item_fails(&upstream, "fail"))
        .await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": []}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.node("each").output, Some(json!([])));
    assert_eq!(run.node("each").items, Some(vec![]));
    let after = upstream.received_on("/after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].body, json!({"all": []}));

    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": "1,2"}))
        .await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    assert_eq!(
        run.node("each").error.or_null()["message"],
        "node `each`, field `for_each`: must render to an array, got a string"
    );
    assert!(upstream.received_on("/item/1").is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_node_holds_the_next_call_back_through_the_tiers() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let url = |path: &str| format!("{}{path}", upstream.url);
    let definition = json!({
        "name": "delay",
        "trigger": {"type": "manual"},
        "nodes": [
            http_node("first", &[], json!({"method": "POST", "url": url("/first")})),
            {"id": "wait", "type": "delay", "after": ["first"], "duration": "1500ms"},
            http_node("second", &["wait"], json!({"method": "POST", "url": url("/second")}))
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    // A wait longer than its own timeout plus the deadline grace (2s in tests): its
    // deadline counts from the end of the wait, so the sweeper leaves it alone.
    let long = json!({
        "name": "long delay",
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "wait", "type": "delay", "duration": "3s", "timeout": "100ms"},
            http_node("done", &["wait"], json!({"method": "POST", "url": url("/done")}))
        ]
    });
    let (long, _) = fleet.active_scenario(&workspace, long).await;

    let started = Instant::now();
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let long_id = fleet.start_run(&workspace, long, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let first = upstream.received_on("/first");
    let second = upstream.received_on("/second");
    assert_eq!((first.len(), second.len()), (1, 1));
    let gap = second[0].at - first[0].at;
    assert!(gap >= Duration::from_millis(1500), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(5), "waited far too long: {gap:?}");
    let wait = run.node("wait");
    assert_eq!(wait.status, "completed");
    assert_eq!(wait.attempts, 1);
    let until = wait.input.or_null()["until"].as_str().expect("until");
    assert_eq!(wait.output, Some(json!({"waited_until": until})));
    chrono::DateTime::parse_from_rfc3339(until).expect("RFC 3339");

    let long = fleet.wait_for_run(&workspace, long_id, RUN_TIMEOUT).await;
    assert_eq!(long.summary.status, RunStatus::Completed, "{long:?}");
    assert_eq!(long.node("wait").attempts, 1, "not expired: {long:?}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(upstream.received_on("/done").len(), 1);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_whose_worker_never_answers_is_dispatched_again_after_its_deadline() {
    let mut fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "lost item",
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "each", "type": "action", "connector": "http", "action": "request",
             "for_each": "{{ trigger.body.ids }}", "timeout": "500ms",
             "retry": {"max_attempts": 3, "initial": "100ms"},
             "input": {"method": "POST", "url": format!("{}/item/{{{{ item }}}}", upstream.url)}}
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;

    // A worker that takes one task and then hangs: it never acks, never answers.
    let mut hung = FakeWorker::start(&fleet.topology()).await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": [1, 2]}))
        .await;
    let task = hung
        .take(Duration::from_secs(10))
        .await
        .expect("a task is delivered");
    let lost = task.item_index.expect("an item's task") as usize;
    assert_eq!(task.attempt, 1);

    fleet.add_worker().await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let items = run.node("each").items();
    assert_eq!(
        items[lost].attempts, 2,
        "retried after its deadline: {items:?}"
    );
    assert_eq!(
        items[1 - lost].attempts,
        1,
        "the other item ran once: {items:?}"
    );
    assert_eq!(
        upstream.received().len(),
        2,
        "each item reached the upstream once"
    );
    fleet.stop().await;
    hung.crash().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_cancels_the_items_and_records_a_late_item_result() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/item/1",
        vec![Reply::json(200, json!({"done": 1})).after(Duration::from_secs(1))],
    );
    let workspace = fleet.workspace().await;
    let (scenario, _) = fleet
        .active_scenario(&workspace, one_item_fails(&upstream, "fail"))
        .await;
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"ids": [1, 2, 3]}))
        .await;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while upstream.received_on("/item/1").is_empty() {
        assert!(Instant::now() < deadline, "the first item never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = fleet.cancel_run(&workspace, run_id).await;
    let each = cancelled.node("each");
    assert_eq!(each.status, "cancelled");
    let statuses: Vec<&str> = each
        .items()
        .iter()
        .map(|item| item.status.as_str())
        .collect();
    assert_eq!(statuses, ["cancelled", "cancelled", "cancelled"]);
    assert!(each.item(2).finished_at.is_some(), "{each:?}");

    // The first item's request finishes after the cancel: recorded, nothing follows.
    let run = fleet
        .wait_for_run_where(
            &workspace,
            run_id,
            RUN_TIMEOUT,
            "recorded the late item",
            |run| run.node("each").item(0).status == "completed",
        )
        .await;
    assert_eq!(run.summary.status, RunStatus::Cancelled);
    assert_eq!(run.node("each").status, "cancelled");
    assert_eq!(
        run.node("each").item(0).output,
        Some(json!({"path": null})),
        "mapped by `outputs`: {run:?}"
    );
    fleet
        .witness(&workspace, &format!("{}/witness", upstream.url))
        .await;
    assert!(upstream.received_on("/item/2").is_empty());
    assert!(upstream.received_on("/after").is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_for_each_over_100_items_never_has_more_than_10_in_flight() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let answer_after = Duration::from_millis(40);
    upstream.script("/many", vec![Reply::echo().after(answer_after)]);
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "a hundred items",
        "trigger": {"type": "manual"},
        "nodes": [{"id": "each", "type": "action", "connector": "http", "action": "request",
                   "for_each": "{{ trigger.body.items }}", "max_concurrency": 10,
                   "input": {"method": "POST", "url": format!("{}/many", upstream.url), "body": {"n": "{{ item }}"}},
                   "outputs": {"n": "$.body.body.n"}}]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let items: Vec<u32> = (0..100).collect();
    let run_id = fleet
        .start_run(&workspace, scenario, json!({"items": items}))
        .await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(60))
        .await;

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let requests = upstream.received_on("/many");
    assert_eq!(requests.len(), 100);
    let peak = most_in_flight(&requests, |_| answer_after);
    assert!(peak <= 10, "{peak} items in flight at once");
    assert!(peak >= 2, "items do run concurrently ({peak})");
    let expected: Vec<Value> = items.iter().map(|n| json!({"n": n})).collect();
    assert_eq!(run.node("each").output, Some(json!(expected)));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_delay_loses_nothing() {
    let mut fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "delay survives a crash",
        "trigger": {"type": "manual"},
        "nodes": [
            http_node("before", &[], json!({"method": "POST", "url": format!("{}/before", upstream.url)})),
            {"id": "wait", "type": "delay", "after": ["before"], "duration": "2s"},
            http_node("after", &["wait"], json!({"method": "POST", "url": format!("{}/after", upstream.url)}))
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.received_on("/before").is_empty() {
        assert!(Instant::now() < deadline, "the first call never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-delay: the delay's task was dispatched, and the worker took it off the queue.
    fleet
        .wait_for_run_where(
            &workspace,
            run_id,
            RUN_TIMEOUT,
            "dispatched the delay",
            |run| matches!(run.node("wait").status.as_str(), "queued" | "running"),
        )
        .await;
    let tasks = fleet.topology().tasks();
    eventually("the worker took the delay's task", RUN_TIMEOUT, || async {
        let ready = fleet.messages_ready(&tasks).await;
        (ready == 0)
            .then_some(())
            .ok_or(format!("{ready} tasks ready"))
    })
    .await;
    fleet.kill_worker(0);
    // The outage the crash leaves, before a worker is back: a fault's length, not a check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.add_worker().await;

    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let (before, after) = (
        upstream.received_on("/before"),
        upstream.received_on("/after"),
    );
    assert_eq!(before.len(), 1);
    assert!(!after.is_empty(), "the call after the delay was made");
    assert!(
        after[0].at - before[0].at >= Duration::from_secs(2),
        "the delay was kept"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_node_chain_completes() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let mut nodes: Vec<Value> = vec![json!({"id": "t0", "type": "transform", "output": {"n": 0}})];
    for i in 1..499 {
        nodes.push(
            json!({"id": format!("t{i}"), "type": "transform", "after": [format!("t{}", i - 1)],
                          "output": {"n": format!("{{{{ nodes.t{}.output.n + 1 }}}}", i - 1)}}),
        );
    }
    nodes.push(json!({"id": "report", "type": "action", "connector": "http", "action": "request", "after": ["t498"],
                      "input": {"method": "POST", "url": format!("{}/end", upstream.url), "body": {"n": "{{ nodes.t498.output.n }}"}}}));
    assert_eq!(nodes.len(), 500);
    let definition = json!({"name": "long chain", "trigger": {"type": "manual"}, "nodes": nodes});
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(60))
        .await;

    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let calls = upstream.received_on("/end");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, json!({"n": 498}));
    assert_eq!(run.nodes.len(), 500);
    fleet.stop().await;
}
