//! PostgreSQL cannot store U+0000 in `jsonb`. An upstream may answer with it anyway: the
//! run must go on, with U+FFFD in its place, never a result that cannot be recorded.

use std::time::Duration;

use serde_json::json;
use weft_domain::run::RunStatus;
use weft_testkit::{Fleet, OrNull, Reply, RunExt, Upstream, http_node};

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_from_an_upstream_is_replaced_and_the_run_completes() {
    let fleet = Fleet::start().await;
    let upstream = Upstream::start().await;
    upstream.script(
        "/nul",
        vec![Reply::json(200, json!({"name": "a\u{0}b", "k\u{0}": 1}))],
    );
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "nul",
        "trigger": {"type": "manual"},
        "nodes": [
            http_node("fetch", &[], json!({"method": "GET", "url": format!("{}/nul", upstream.url)})),
            http_node("after", &["fetch"], json!({"method": "POST", "url": format!("{}/after", upstream.url), "body": {"name": "{{ nodes.fetch.output.body.name }}"}}))
        ]
    });
    let (scenario, _) = fleet.active_scenario(&workspace, definition).await;
    let run_id = fleet.start_run(&workspace, scenario, json!({})).await;
    let run = fleet
        .wait_for_run(&workspace, run_id, Duration::from_secs(20))
        .await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
    let body = &run.node("fetch").output.or_null()["body"];
    assert_eq!(body["name"], "a\u{fffd}b", "{body}");
    assert_eq!(body["k\u{fffd}"], 1, "{body}");
    assert_eq!(upstream.received_on("/after")[0].body["name"], "a\u{fffd}b");
}
