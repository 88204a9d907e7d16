//! The scheduler keeps a running run's state between its results: used when current,
//! read again from the node rows when another scheduler moved the run on.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, OrNull, RunExt, Upstream, eventually, http_node};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const STEPS: usize = 6;

/// A chain of `STEPS` http nodes, each sending its run id and the previous node's status.
fn chain(upstream: &Upstream) -> Value {
    let nodes: Vec<Value> = (0..STEPS)
        .map(|i| {
            let after: Vec<String> = (i > 0).then(|| format!("s{}", i - 1)).into_iter().collect();
            let after: Vec<&str> = after.iter().map(String::as_str).collect();
            let previous = match i {
                0 => "\"none\"".to_owned(),
                _ => format!("\"{{{{ nodes.s{}.output.status }}}}\"", i - 1),
            };
            let body: Value = serde_json::from_str(&format!(
                r#"{{"run": "{{{{ run.id }}}}", "previous": {previous}}}"#
            ))
            .expect("body template is JSON");
            http_node(
                &format!("s{i}"),
                &after,
                json!({"method": "POST", "url": format!("{}/s{i}", upstream.url), "body": body}),
            )
        })
        .collect();
    json!({"name": "chain", "trigger": {"type": "webhook"}, "nodes": nodes})
}

/// A scheduler's metrics: each sample's value by its name and labels as exposed.
async fn scrape(fleet: &Fleet, scheduler: usize) -> HashMap<String, f64> {
    let text = fleet.metrics(&fleet.schedulers()[scheduler].ops).await;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            Some((sample.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn state_reads(metrics: &HashMap<String, f64>, source: &str) -> f64 {
    metrics[&format!("weft_run_state_reads_total{{source=\"{source}\"}}")]
}

#[tokio::test(flavor = "multi_thread")]
async fn one_scheduler_reads_a_running_runs_state_from_its_cache() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let (_, hook) = fleet.active_scenario(&workspace, chain(&upstream)).await;

    let run_id = fleet.fire(&hook, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.node(&format!("s{}", STEPS - 1)).input.or_null()["body"]["previous"],
        200
    );

    let metrics = scrape(&fleet, 0).await;
    assert_eq!(
        state_reads(&metrics, "cache"),
        STEPS as f64,
        "every result of the run found its state cached"
    );
    assert_eq!(state_reads(&metrics, "database"), 0.0);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schedulers_sharing_runs_never_act_on_a_stale_state() {
    let fleet = Fleet::with(2, 2).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let (_, hook) = fleet.active_scenario(&workspace, chain(&upstream)).await;

    let mut run_ids = Vec::new();
    for _ in 0..20 {
        run_ids.push(fleet.fire(&hook, json!({})).await);
    }
    for &run_id in &run_ids {
        let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
        assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
        for i in 1..STEPS {
            assert_eq!(
                run.node(&format!("s{i}")).input.or_null()["body"]["previous"],
                200,
                "{run:?}"
            );
        }
    }
    for i in 0..STEPS {
        let mut calls: HashMap<String, usize> = HashMap::new();
        for request in upstream.received_on(&format!("/s{i}")) {
            let run = request.body["run"].as_str().unwrap_or_default().to_owned();
            *calls.entry(run).or_default() += 1;
        }
        for &run_id in &run_ids {
            assert_eq!(
                calls.get(&run_id.to_string()),
                Some(&1),
                "s{i} of run {run_id} called once"
            );
        }
    }
    // Results of one run went to both schedulers: some states had to be read again.
    let mut database = 0.0;
    for scheduler in 0..2 {
        database += state_reads(&scrape(&fleet, scheduler).await, "database");
    }
    assert!(
        database > 0.0,
        "no state was found stale across two schedulers"
    );
    fleet.stop().await;
}

/// Results that queued up while no scheduler ran are recorded in batches, results of one
/// run within a batch each on the state the last one left.
#[tokio::test(flavor = "multi_thread")]
async fn results_that_queued_up_are_recorded_in_batches_exactly_once() {
    const RUNS: usize = 10;
    // No worker yet: the branches' tasks wait in the queue.
    let mut fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "fan-in",
        "trigger": {"type": "webhook"},
        "nodes": [
            http_node("a", &[], json!({"url": format!("{}/a", upstream.url)})),
            http_node("b", &[], json!({"url": format!("{}/b", upstream.url)})),
            http_node("join", &["a", "b"], json!({"method": "POST", "url": format!("{}/join", upstream.url), "body": {"run": "{{ run.id }}", "a": "{{ nodes.a.output.status }}"}}))
        ]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;
    let mut run_ids = Vec::new();
    for _ in 0..RUNS {
        run_ids.push(fleet.fire(&hook, json!({})).await);
    }
    for &run_id in &run_ids {
        fleet
            .wait_for_run_where(
                &workspace,
                run_id,
                RUN_TIMEOUT,
                "dispatched both branches",
                |run| run.nodes.iter().filter(|n| n.status == "queued").count() == 2,
            )
            .await;
    }
    // The scheduler stops; a worker answers every branch; the results wait in the queue.
    fleet.stop_scheduler(0).await;
    fleet.add_worker().await;
    eventually("every branch called", RUN_TIMEOUT, || async {
        let called = upstream.received().len();
        (called >= 2 * RUNS)
            .then_some(())
            .ok_or(format!("{called} calls"))
    })
    .await;
    let results = fleet.topology().results();
    eventually("every branch's result queued", RUN_TIMEOUT, || async {
        let ready = fleet.messages_ready(&results).await;
        (ready as usize == 2 * RUNS)
            .then_some(())
            .ok_or(format!("{ready} results ready"))
    })
    .await;
    fleet.add_scheduler().await;

    for &run_id in &run_ids {
        let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;
        assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
        assert_eq!(
            run.node("join").input.or_null()["body"]["a"],
            200,
            "{run:?}"
        );
    }
    let joins: Vec<String> = upstream
        .received_on("/join")
        .iter()
        .map(|request| request.body["run"].as_str().unwrap_or_default().to_owned())
        .collect();
    for &run_id in &run_ids {
        assert_eq!(
            joins.iter().filter(|r| **r == run_id.to_string()).count(),
            1,
            "join of {run_id} once"
        );
    }
    let metrics = scrape(&fleet, 0).await;
    let (results, batches) = (
        metrics["weft_result_batch_size_sum"],
        metrics["weft_result_batch_size_count"],
    );
    assert_eq!(
        results,
        (2 * RUNS + RUNS) as f64,
        "every result recorded once"
    );
    assert!(
        batches < results,
        "{results} results in {batches} batches: none was batched"
    );
    fleet.stop().await;
}
