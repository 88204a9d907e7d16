//! A node's `outputs` mapping end to end, across gateway, scheduler and worker over the
//! real broker and database: what its paths may select is bounded.

use std::time::Duration;

use serde_json::{Value, json};
use weft_domain::limits::MAX_SELECTED_BYTES;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, OrNull, Reply, RunExt, Upstream, http_node};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// `depth` nested objects, each with a string of `text_len` bytes.
fn nested(depth: usize, text_len: usize) -> Value {
    (0..depth).fold(
        json!({}),
        |inner, _| json!({"text": "x".repeat(text_len), "next": inner}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_selecting_over_the_limit_fail_the_node_for_good_and_the_run() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    // 1 MiB, 32 deep: `$..*` selects every level with all under it, some 16 MiB.
    upstream.script("/large", vec![Reply::json(200, nested(32, 32 << 10))]);
    let workspace = fleet.workspace().await;
    let mut fetch = http_node(
        "fetch",
        &[],
        json!({"method": "GET", "url": format!("{}/large", upstream.url)}),
    );
    fetch["outputs"] = json!({"all": "$..*"});
    fetch["retry"] = json!({"max_attempts": 3, "initial": "10ms"});
    let definition = json!({
        "name": "outputs over the limit",
        "trigger": {"type": "manual"},
        "nodes": [
            fetch,
            http_node("after", &["fetch"], json!({"method": "POST", "url": format!("{}/after", upstream.url)}))
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet.wait_for_run(&workspace, run_id, RUN_TIMEOUT).await;

    assert_eq!(run.summary.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.summary.error.or_null()["node"], "fetch");
    let fetched = run.node("fetch");
    assert_eq!(fetched.status, "failed");
    assert_eq!(fetched.attempts, 1, "not retried: {fetched:?}");
    assert_eq!(fetched.error.or_null()["class"], "permanent");
    let message = fetched.error.or_null()["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("node `fetch`, field `outputs.all`: what `$..")
            && message.ends_with(&format!(
                "` selects passes the limit of {MAX_SELECTED_BYTES} bytes of JSON for one mapping; select less"
            )),
        "{message}"
    );
    assert_eq!(
        upstream.received_on("/large").len(),
        1,
        "asked once: the same answer would select as much again"
    );
    assert_eq!(run.node("after").status, "cancelled");
    assert!(upstream.received_on("/after").is_empty());
    fleet.stop().await;
}
