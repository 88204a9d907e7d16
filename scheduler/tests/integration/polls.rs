//! Poll triggers end to end, over the real broker and database: a workspace connector
//! registered through the API whose poll trigger lists a local server's items. The first
//! poll records a baseline and starts nothing; each item added later starts one run with
//! the item as `trigger.body`, however often it is listed or its answer is delivered; a
//! failing poll backs off and marks its connection; pages are followed through the cursor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;
use weft_domain::messages::{NodeResult, Outcome, VERSION};
use weft_domain::run::RunStatus;
use weft_runtime::queue::Publisher;
use weft_testkit::{FakeWorker, Fleet, Reply, RunExt, Upstream, Workspace, broker, eventually};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "feed_token_never_shown";

/// A connector with one poll trigger: `GET /items` lists `body.items`, each identified by
/// `id`; pages go on while `body.next` has a cursor, sent back as `?after=`.
fn manifest() -> Value {
    json!({
        "key": "feed", "name": "Feed", "version": "1.0.0",
        "base_url": "https://feed.example",
        "auth": {"type": "bearer"},
        "actions": [{"key": "get", "name": "Get", "request": {"method": "GET", "path": "/items"}}],
        "triggers": [{
            "kind": "poll", "key": "new_item", "name": "New item", "interval": "60s",
            "request": {"method": "GET", "path": "/items", "query": {"limit": 10}},
            "items": "$.body.items", "id": "$.id",
            "cursor": {"param": "after", "next": "$.body.next"}
        }]
    })
}

/// Registers the connector and a connection to `upstream`; returns the connection id.
async fn feed(fleet: &Fleet, workspace: &Workspace, upstream: &Upstream) -> String {
    let (status, body) = fleet
        .call(workspace, "POST", "/api/v1/connectors", Some(manifest()))
        .await;
    assert_eq!(status, 201, "connector registration: {body}");
    let (status, created) = fleet
        .call(
            workspace,
            "POST",
            "/api/v1/connections",
            Some(json!({
                "connector": "feed", "name": "feed test",
                "config": {"base_url": upstream.url},
                "credentials": {"token": TOKEN}
            })),
        )
        .await;
    assert_eq!(status, 201, "connection: {created}");
    created["id"].as_str().expect("connection id").to_owned()
}

/// Activates a scenario polling the feed every second; its one node echoes the item.
async fn polling(fleet: &Fleet, workspace: &Workspace, connection: &str) -> Uuid {
    let definition = json!({
        "name": "new items",
        "trigger": {"type": "poll", "connector": "feed", "trigger": "new_item",
                    "connection": connection, "interval": "1s"},
        "nodes": [{"id": "echo", "type": "transform",
                   "output": {"title": "{{ trigger.body.title }}", "method": "{{ trigger.method }}"}}]
    });
    let (id, _) = fleet.active_scenario(workspace, definition).await;
    id.into()
}

fn items(list: &[(u32, &str)]) -> Value {
    let items: Vec<Value> = list
        .iter()
        .map(|(id, title)| json!({"id": id, "title": title}))
        .collect();
    json!({ "items": items })
}

/// The triggers of the scenario's runs, oldest first.
async fn run_triggers(fleet: &Fleet, scenario: Uuid) -> Vec<(Uuid, Value)> {
    fleet
        .pg()
        .await
        .query(
            "SELECT id, trigger FROM runs WHERE scenario_id = $1 ORDER BY id",
            &[&scenario],
        )
        .await
        .expect("runs query")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The ids of the items whose runs were started, oldest run first.
async fn started_items(fleet: &Fleet, scenario: Uuid) -> Vec<u64> {
    run_triggers(fleet, scenario)
        .await
        .iter()
        .map(|(_, trigger)| {
            trigger["body"]["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("a polled run's body is its item: {trigger}"))
        })
        .collect()
}

/// Whether the scenario's baseline is recorded.
async fn baseline_done(fleet: &Fleet, scenario: Uuid) -> bool {
    fleet
        .pg()
        .await
        .query_opt(
            "SELECT baseline_done FROM poll_state WHERE scenario_id = $1",
            &[&scenario],
        )
        .await
        .expect("poll state query")
        .is_some_and(|row| row.get(0))
}

/// Waits for `polls` more requests to the upstream's `/items` after the `seen` first.
async fn more_polls(upstream: &Upstream, seen: usize, polls: usize) -> usize {
    eventually("more polls", WAIT, || async {
        let count = upstream.received_on("/items").len();
        (count >= seen + polls)
            .then_some(count)
            .ok_or(format!("{count} polls"))
    })
    .await
}

/// `weft_polls_total{outcome}` summed over the fleet's schedulers.
async fn polls_counted(fleet: &Fleet, outcome: &str) -> u64 {
    let series = format!("weft_polls_total{{outcome=\"{outcome}\"}} ");
    let mut total = 0;
    for scheduler in fleet.schedulers() {
        let text = fleet.metrics(&scheduler.ops).await;
        total += text
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in the scheduler's metrics"));
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn the_baseline_starts_nothing_and_each_new_item_starts_one_run_across_two_schedulers() {
    let fleet = Fleet::with(2, 1).await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/items",
        vec![Reply::json(200, items(&[(2, "b"), (1, "a")]))],
    );
    let workspace = fleet.workspace().await;
    let connection = feed(&fleet, &workspace, &upstream).await;
    let scenario = polling(&fleet, &workspace, &connection).await;

    eventually("the baseline", WAIT, || async {
        baseline_done(&fleet, scenario)
            .await
            .then_some(())
            .ok_or("no baseline recorded")
    })
    .await;
    let seen = more_polls(&upstream, 0, 3).await;
    assert!(
        run_triggers(&fleet, scenario).await.is_empty(),
        "the items there at activation start nothing"
    );
    let first = &upstream.received_on("/items")[0];
    assert_eq!(
        first.headers["authorization"],
        format!("Bearer {TOKEN}").as_str(),
        "polls go through the connection"
    );
    assert_eq!(first.query, "limit=10");

    // Newest first, like most APIs list.
    upstream.script(
        "/items",
        vec![Reply::json(
            200,
            items(&[(4, "d"), (3, "c"), (2, "b"), (1, "a")]),
        )],
    );
    eventually("runs of the two new items", WAIT, || async {
        let started = started_items(&fleet, scenario).await;
        (started.len() >= 2)
            .then_some(())
            .ok_or(format!("runs of {started:?}"))
    })
    .await;
    let seen = more_polls(&upstream, seen, 3).await;
    let mut started = started_items(&fleet, scenario).await;
    started.sort_unstable();
    assert_eq!(
        started,
        [3, 4],
        "one run per new item, none again however often it is listed"
    );

    upstream.script(
        "/items",
        vec![Reply::json(
            200,
            items(&[(5, "e"), (4, "d"), (3, "c"), (2, "b"), (1, "a")]),
        )],
    );
    eventually("the run of the fifth item", WAIT, || async {
        let started = started_items(&fleet, scenario).await;
        (started.len() >= 3)
            .then_some(())
            .ok_or(format!("runs of {started:?}"))
    })
    .await;
    more_polls(&upstream, seen, 3).await;
    let runs = run_triggers(&fleet, scenario).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    let (run_id, trigger) = runs.last().expect("the last run");
    assert_eq!(
        *trigger,
        json!({"body": {"id": 5, "title": "e"}, "headers": {}, "query": {}, "method": "POLL"})
    );
    let run = fleet
        .wait_for_run(&workspace, (*run_id).into(), RUN_TIMEOUT)
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.node("echo").output,
        Some(json!({"title": "e", "method": "POLL"})),
        "the item is the run's trigger.body"
    );
    assert_eq!(polls_counted(&fleet, "baseline").await, 1);
    assert!(polls_counted(&fleet, "success").await >= 6);
    assert_eq!(polls_counted(&fleet, "failure").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_delivered_twice_or_listed_again_never_starts_a_second_run() {
    // No worker: the test plays it, and delivers each answer twice.
    let fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let connection = feed(&fleet, &workspace, &upstream).await;
    let mut worker = FakeWorker::start(&fleet.topology()).await;
    let scenario = polling(&fleet, &workspace, &connection).await;
    let publisher = Publisher::new(broker(), "test poll answers", fleet.topology());
    let answer_twice = |task: &weft_domain::messages::NodeTask, body: Value| {
        let result = NodeResult {
            v: VERSION,
            run_id: task.run_id,
            workspace_id: task.workspace_id,
            node_id: task.node_id.clone(),
            item_index: task.item_index,
            attempt: task.attempt,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome: Outcome::Success {
                output: json!({"status": 200, "headers": {}, "body": body}),
            },
            connection: None,
        };
        let reply_to = task
            .reply_to
            .clone()
            .expect("a poll's answer goes to the polls queue");
        let publisher = publisher.clone();
        async move {
            for _ in 0..2 {
                publisher
                    .publish("", &reply_to, &result)
                    .await
                    .expect("the answer is published");
            }
            result
        }
    };

    let baseline = worker.take(WAIT).await.expect("the first poll");
    assert_eq!(
        (
            baseline.connector.as_str(),
            baseline.action.as_str(),
            baseline.item_index
        ),
        ("feed", "new_item", Some(0))
    );
    assert_eq!(
        fleet.topology().polls(),
        baseline.reply_to.clone().unwrap_or_default()
    );
    let call = baseline.call.as_deref().expect("the poll's request");
    assert_eq!(call.base_url, upstream.url, "the connection's base URL");
    assert!(
        !serde_json::to_string(&baseline)
            .expect("JSON")
            .contains(TOKEN),
        "the credentials travel sealed"
    );
    answer_twice(&baseline, items(&[(1, "a")])).await;
    worker.done().await;
    eventually("the baseline", WAIT, || async {
        baseline_done(&fleet, scenario)
            .await
            .then_some(())
            .ok_or("no baseline recorded")
    })
    .await;

    let second = worker.take(WAIT).await.expect("the second poll");
    assert_ne!(second.run_id, baseline.run_id, "each poll has its own id");
    let late = answer_twice(&second, items(&[(2, "b"), (1, "a")])).await;
    worker.done().await;
    eventually("the run of the new item", WAIT, || async {
        let runs = run_triggers(&fleet, scenario).await;
        (!runs.is_empty()).then_some(()).ok_or("no run")
    })
    .await;

    // The next poll lists the same items, and the second poll's answer comes once more.
    let third = worker.take(WAIT).await.expect("the third poll");
    answer_twice(&third, items(&[(2, "b"), (1, "a")])).await;
    publisher
        .publish("", &fleet.topology().polls(), &late)
        .await
        .expect("a late copy is published");
    worker.done().await;
    let fourth = worker.take(WAIT).await.expect("the fourth poll");
    answer_twice(&fourth, items(&[(3, "c"), (2, "b"), (1, "a")])).await;
    worker.done().await;
    eventually("the run of the third item", WAIT, || async {
        let runs = run_triggers(&fleet, scenario).await;
        (runs.len() >= 2)
            .then_some(())
            .ok_or(format!("{} runs", runs.len()))
    })
    .await;
    // One more poll answered: everything before it has been handled.
    let fifth = worker.take(WAIT).await.expect("the fifth poll");
    answer_twice(&fifth, items(&[(3, "c"), (2, "b"), (1, "a")])).await;
    worker.done().await;
    worker.take(WAIT).await.expect("the sixth poll");
    assert_eq!(started_items(&fleet, scenario).await, [2, 3]);
    worker.crash().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_poll_backs_off_marks_its_connection_and_recovers() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/items",
        vec![
            Reply::json(500, json!({"message": "down for maintenance"})),
            Reply::json(503, json!({"message": "still down"})),
            Reply::json(200, items(&[(1, "a")])),
        ],
    );
    let workspace = fleet.workspace().await;
    let connection = feed(&fleet, &workspace, &upstream).await;
    let scenario = polling(&fleet, &workspace, &connection).await;

    let marked = eventually("the connection's last_error", WAIT, || async {
        let (status, body) = fleet
            .call(
                &workspace,
                "GET",
                &format!("/api/v1/connections/{connection}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["last_error"].as_str().map(str::to_owned).ok_or(body)
    })
    .await;
    assert!(marked.contains("500"), "{marked}");

    eventually("the poll after the failures", WAIT, || async {
        baseline_done(&fleet, scenario)
            .await
            .then_some(())
            .ok_or("no baseline recorded")
    })
    .await;
    let polls = upstream.received_on("/items");
    assert!(polls.len() >= 3, "{}", polls.len());
    // The interval is 1 s: doubled after the first failure, doubled again after the second.
    let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(1900), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(3900), "{gaps:?}");
    assert!(
        run_triggers(&fleet, scenario).await.is_empty(),
        "failed polls start nothing, and the first one that works is the baseline"
    );
    let (_, body) = fleet
        .call(
            &workspace,
            "GET",
            &format!("/api/v1/connections/{connection}"),
            None,
        )
        .await;
    assert_eq!(
        body["last_error"],
        Value::Null,
        "cleared by the poll that worked"
    );
    let state = fleet
        .pg()
        .await
        .query_one(
            "SELECT failures, last_error FROM poll_state WHERE scenario_id = $1",
            &[&scenario],
        )
        .await
        .expect("poll state");
    assert_eq!(state.get::<_, i32>(0), 0);
    assert_eq!(state.get::<_, Option<String>>(1), None);
    assert_eq!(polls_counted(&fleet, "failure").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_followed_through_the_cursor_for_the_baseline_and_after() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let grown = Arc::new(Mutex::new(false));
    let pages = grown.clone();
    upstream.respond("/items", move |request| {
        let grown = *pages.lock().expect("flag");
        let after = request
            .query
            .split('&')
            .find_map(|pair| pair.strip_prefix("after="))
            .unwrap_or_default();
        let body = match (after, grown) {
            ("", false) => json!({"items": [{"id": 2}, {"id": 1}], "next": "p2"}),
            ("", true) => json!({"items": [{"id": 5}, {"id": 2}, {"id": 1}], "next": "p2"}),
            ("p2", _) => json!({"items": [{"id": 3}], "next": 3}),
            ("3", false) => json!({"items": [{"id": 4}], "next": null}),
            ("3", true) => json!({"items": [{"id": 4}, {"id": 6}]}),
            (other, _) => panic!("unexpected cursor {other}"),
        };
        Reply::json(200, body)
    });
    let workspace = fleet.workspace().await;
    let connection = feed(&fleet, &workspace, &upstream).await;
    let scenario = polling(&fleet, &workspace, &connection).await;

    eventually("the baseline of every page", WAIT, || async {
        baseline_done(&fleet, scenario)
            .await
            .then_some(())
            .ok_or("no baseline recorded")
    })
    .await;
    let queries: Vec<String> = upstream
        .received_on("/items")
        .iter()
        .take(3)
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        queries,
        ["limit=10", "after=p2&limit=10", "after=3&limit=10"]
    );
    let seen = more_polls(&upstream, 3, 3).await;
    assert!(
        run_triggers(&fleet, scenario).await.is_empty(),
        "items on later pages of the baseline start nothing either"
    );

    *grown.lock().expect("flag") = true;
    eventually(
        "runs of the items new on the first and the last page",
        WAIT,
        || async {
            let runs = run_triggers(&fleet, scenario).await;
            (runs.len() >= 2)
                .then_some(())
                .ok_or(format!("{} runs", runs.len()))
        },
    )
    .await;
    more_polls(&upstream, seen, 6).await;
    let mut started = started_items(&fleet, scenario).await;
    started.sort_unstable();
    assert_eq!(started, [5, 6]);
}
