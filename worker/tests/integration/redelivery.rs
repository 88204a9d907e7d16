//! A worker that dies with a task unacknowledged loses nothing: the broker redelivers the
//! task to another worker and the run completes.

use std::time::Duration;

use serde_json::json;
use weft_domain::run::RunStatus;
use weft_testkit::{FakeWorker, Fleet, OrNull, Upstream};

#[tokio::test(flavor = "multi_thread")]
async fn a_task_left_unacked_by_a_dead_worker_is_redelivered_and_the_run_completes() {
    let mut fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "survives a worker crash",
        "trigger": {"type": "webhook"},
        "nodes": [{"id": "call", "type": "action", "connector": "http", "action": "request",
                   "input": {"url": format!("{}/work", upstream.url)}}]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;

    // A "worker" that takes the task and dies before acknowledging it.
    let mut doomed = FakeWorker::start(&fleet.topology()).await;
    let run_id = fleet.fire(&hook, json!({})).await;
    let task = doomed
        .take(Duration::from_secs(10))
        .await
        .expect("the task is delivered");
    assert_eq!(task.run_id, run_id);
    doomed.crash().await;

    fleet.add_worker().await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(20))
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        upstream.received_on("/work").len(),
        1,
        "the dead worker never called upstream; the live one did once"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_kills_every_worker_is_dead_lettered_and_its_node_fails_as_poison() {
    let fleet = Fleet::with(1, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "poison",
        "trigger": {"type": "webhook"},
        "nodes": [{"id": "call", "type": "action", "connector": "http", "action": "request",
                   "input": {"url": format!("{}/never", upstream.url)}}]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.fire(&hook, json!({})).await;

    // Every delivery "crashes" its worker, until the broker's delivery limit moves the
    // task to the dead-letter queue.
    let mut deliveries = 0;
    loop {
        let mut crashing = FakeWorker::start(&fleet.topology()).await;
        let taken = crashing.take(Duration::from_secs(2)).await;
        crashing.crash().await;
        if taken.is_none() {
            break;
        }
        deliveries += 1;
        assert!(
            deliveries <= 20,
            "the delivery limit never dead-lettered the task"
        );
    }
    assert_eq!(
        deliveries,
        1 + weft_runtime::queue::TASK_DELIVERY_LIMIT as usize,
        "first delivery plus the limit's redeliveries"
    );

    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(20))
        .await;
    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    let node = &run.nodes[0];
    assert_eq!(node.error.or_null()["class"], "poison", "{run:?}");
    assert!(
        node.error.or_null()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("poison message"),
        "{run:?}"
    );
    assert!(upstream.received().is_empty());
    fleet.stop().await;
}
