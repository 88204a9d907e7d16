//! Schedule triggers across two schedulers, over the real broker and database: each tick
//! starts one run, pausing stops them, and an outage is caught up with one run, not many.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use futures_util::future::join_all;
use serde_json::{Value, json};
use weft_domain::ids::ScenarioId;
use weft_domain::run::{RunKind, RunStatus};
use weft_runtime::queue::Publisher;
use weft_scheduler::metrics::Metrics;
use weft_scheduler::schedules::Schedules;
use weft_testkit::{Fleet, RunDetail, Upstream, Workspace, eventually};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn scheduled(cron: &str, timezone: &str, upstream: &Upstream) -> Value {
    json!({
        "name": "scheduled",
        "trigger": {"type": "schedule", "cron": cron, "timezone": timezone},
        "nodes": [{"id": "ping", "type": "action", "connector": "http", "action": "request",
                   "input": {"method": "POST", "url": format!("{}/tick", upstream.url),
                             "body": {"at": "{{ trigger.body.scheduled_at }}"}}}]
    })
}

/// Every run of the scenario, read in full once it finished.
async fn finished_runs(
    fleet: &Fleet,
    workspace: &Workspace,
    scenario: ScenarioId,
) -> Vec<RunDetail> {
    let mut runs = Vec::new();
    for run in fleet.runs_of(workspace, scenario).await {
        runs.push(fleet.wait_for_run(workspace, run.id, RUN_TIMEOUT).await);
    }
    runs
}

fn scheduled_at(run: &RunDetail) -> DateTime<Utc> {
    run.trigger["body"]["scheduled_at"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a scheduled run says when it was due: {run:?}"))
}

/// Activates a second scenario scheduled every second and waits until it has `ticks`
/// finished runs: the schedulers' passes went on meanwhile, so a tick of another scenario
/// due in that time would have fired too. What a check that nothing fired waits on.
async fn witness_ticks(fleet: &Fleet, workspace: &Workspace, ticks: usize) {
    let definition = json!({
        "name": "witness",
        "trigger": {"type": "schedule", "cron": "* * * * * *", "timezone": "UTC"},
        "nodes": [{"id": "t", "type": "transform", "output": {}}]
    });
    let (witness, _) = fleet.active_scenario(workspace, definition).await;
    eventually("the witness schedule ticked", RUN_TIMEOUT, || async {
        let finished = fleet
            .runs_of(workspace, witness)
            .await
            .iter()
            .filter(|run| run.status.is_finished())
            .count();
        if finished >= ticks {
            Ok(())
        } else {
            Err(format!("{finished} finished witness runs"))
        }
    })
    .await;
}

/// `weft_runs_started_total{trigger="schedule"}` summed over the fleet's schedulers.
async fn schedule_runs_started(fleet: &Fleet) -> u64 {
    let mut total = 0;
    for scheduler in fleet.schedulers() {
        let text = fleet.metrics(&scheduler.ops).await;
        let series = "weft_runs_started_total{trigger=\"schedule\"} ";
        total += text
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in the scheduler's metrics"));
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn each_second_fires_once_across_two_schedulers_until_paused() {
    let fleet = Fleet::with(2, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let (scenario, hook) = fleet
        .active_scenario(
            &workspace,
            scheduled("* * * * * *", "Europe/Paris", &upstream),
        )
        .await;
    assert!(hook.is_empty(), "a scheduled scenario has no webhook");
    let pg = fleet.pg().await;
    let activated_at: DateTime<Utc> = pg
        .query_one(
            "SELECT activated_at FROM scenarios WHERE id = $1",
            &[&scenario],
        )
        .await
        .expect("scenario row")
        .get(0);

    // Time is what this test is about (a run for each second while active), so it stays
    // active for a fixed time rather than until an event.
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    let (status, paused) = fleet
        .call(
            &workspace,
            "POST",
            &format!("/api/v1/scenarios/{scenario}/pause"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{paused}");

    let runs = finished_runs(&fleet, &workspace, scenario).await;
    let ticks: Vec<DateTime<Utc>> = runs.iter().map(scheduled_at).collect();
    let distinct: BTreeSet<DateTime<Utc>> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    // About 4.2 s active, and a tick fires within a pass (1 s) of its time.
    assert!(
        (3..=6).contains(&ticks.len()),
        "{} runs in about 4 s: {ticks:?}",
        ticks.len()
    );
    let first = *distinct.first().expect("a tick");
    assert!(first > activated_at, "no tick from before the activation");
    assert_eq!(first.nanosecond(), 0, "ticks are whole seconds");
    let expected: BTreeSet<DateTime<Utc>> = (0..distinct.len())
        .map(|i| first + TimeDelta::seconds(i64::try_from(i).expect("small")))
        .collect();
    assert_eq!(distinct, expected, "one run for each second, none skipped");
    for run in &runs {
        assert_eq!(run.summary.status, RunStatus::Completed, "{run:?}");
        assert_eq!(run.summary.trigger_kind, RunKind::Schedule, "{run:?}");
        assert_eq!(run.trigger["method"], "SCHEDULE", "{run:?}");
        let fired_at: DateTime<Utc> = run.trigger["body"]["fired_at"]
            .as_str()
            .and_then(|text| text.parse().ok())
            .expect("fired_at");
        assert!(fired_at >= scheduled_at(run), "{run:?}");
    }
    let called: BTreeSet<String> = upstream
        .received_on("/tick")
        .iter()
        .map(|request| request.body["at"].as_str().expect("at").to_owned())
        .collect();
    let due: BTreeSet<String> = runs
        .iter()
        .map(|run| {
            run.trigger["body"]["scheduled_at"]
                .as_str()
                .expect("scheduled_at")
                .to_owned()
        })
        .collect();
    assert_eq!(called, due, "each run called the upstream with its tick");
    let claimed: i64 = pg
        .query_one("SELECT count(*) FROM schedule_ticks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(claimed, i64::try_from(runs.len()).expect("small"));
    assert_eq!(
        schedule_runs_started(&fleet).await,
        u64::try_from(runs.len()).expect("small")
    );

    // Paused: no new tick fires, while another schedule's ticks do.
    witness_ticks(&fleet, &workspace, 3).await;
    let after_pause = finished_runs(&fleet, &workspace, scenario).await;
    assert_eq!(
        after_pause.len(),
        runs.len(),
        "a paused schedule fires nothing"
    );
    fleet.stop().await;
}

/// Creates a scenario (a draft: no scheduler fires it) and makes it active as from `ago`
/// in the past, in one transaction, so that a pass finds ticks due at once.
async fn active_since(
    fleet: &Fleet,
    workspace: &Workspace,
    definition: Value,
    ago: &str,
) -> ScenarioId {
    let (status, created) = fleet
        .call(workspace, "POST", "/api/v1/scenarios", Some(definition))
        .await;
    assert_eq!(status, 201, "{created}");
    let id: ScenarioId = created["id"].as_str().expect("id").parse().expect("uuid");
    let mut pg = fleet.pg().await;
    let tx = pg.transaction().await.expect("transaction");
    tx.execute(
        "UPDATE scenario_versions SET created_at = now() - $2::text::interval WHERE scenario_id = $1",
        &[&id, &ago],
    )
    .await
    .expect("backdate the version");
    tx.execute(
        "UPDATE scenarios SET status = 'active', activated_at = now() - $2::text::interval WHERE id = $1",
        &[&id, &ago],
    )
    .await
    .expect("activate in the past");
    tx.commit().await.expect("commit");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_passes_fire_each_tick_once() {
    // No scheduler of the fleet's: the passes below are the only ones, all at once.
    let fleet = Fleet::with(0, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let id = active_since(
        &fleet,
        &workspace,
        scheduled("* * * * * *", "UTC", &upstream),
        "10 seconds",
    )
    .await;
    let url = fleet.db.url.parse().expect("database URL");
    let replicas: Vec<Schedules> = (0..8)
        .map(|i| {
            Schedules::new(
                weft_runtime::db::pool(&url, None, 2).expect("pool"),
                Publisher::new(
                    weft_testkit::broker(),
                    &format!("replica {i}"),
                    fleet.topology(),
                ),
                Metrics::new(),
                Duration::from_secs(1),
                1,
            )
        })
        .collect();
    for _ in 0..6 {
        for outcome in join_all(replicas.iter().map(Schedules::pass)).await {
            outcome.expect("a pass succeeds");
        }
        // Paces the rounds so that later ones find new ticks due: time drives this test.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let pg = fleet.pg().await;
    let row = pg
        .query_one(
            "SELECT count(*), count(DISTINCT trigger #>> '{body,scheduled_at}') FROM runs WHERE scenario_id = $1",
            &[&id],
        )
        .await
        .expect("count");
    let (runs, ticks): (i64, i64) = (row.get(0), row.get(1));
    // The first pass alone fires 1 catch-up and 3 on-time ticks; later passes add about
    // one tick each, fewer when the machine is slow, so only the first pass is counted on.
    assert!(runs >= 4, "{runs} runs");
    assert_eq!(runs, ticks, "each tick fired once");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ticks_missed_while_no_scheduler_ran_start_one_catch_up_run() {
    let fleet = Fleet::with(2, 1).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    // Daily, at a time about twelve hours from now: far from any tick's edge.
    let at = Utc::now() + TimeDelta::hours(12);
    let cron = format!("{} {} * * *", at.minute(), at.hour());
    // As if the scenario had been active for ten days, and every scheduler down since:
    // nine or ten daily ticks were missed.
    let id = active_since(
        &fleet,
        &workspace,
        scheduled(&cron, "UTC", &upstream),
        "10 days",
    )
    .await;
    let scenario = id;
    let pg = fleet.pg().await;

    // A pass fires it within a second or two; later passes (another schedule's ticks show
    // them) would show a wrong second run.
    eventually("the catch-up run started", RUN_TIMEOUT, || async {
        let started = fleet.runs_of(&workspace, scenario).await.len();
        if started > 0 {
            Ok(())
        } else {
            Err("no run yet")
        }
    })
    .await;
    witness_ticks(&fleet, &workspace, 2).await;
    let runs = finished_runs(&fleet, &workspace, scenario).await;
    assert_eq!(runs.len(), 1, "one catch-up run, not a burst: {runs:?}");
    assert_eq!(
        runs[0].summary.status,
        RunStatus::Completed,
        "{:?}",
        runs[0]
    );
    let latest_missed = at - TimeDelta::days(1);
    let expected = latest_missed
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("whole minute");
    assert_eq!(
        scheduled_at(&runs[0]),
        expected,
        "the most recent missed tick"
    );
    let last_tick: DateTime<Utc> = pg
        .query_one(
            "SELECT last_tick_at FROM schedule_state WHERE scenario_id = $1",
            &[&id],
        )
        .await
        .expect("state row")
        .get(0);
    assert_eq!(last_tick, expected, "the skipped ticks are dealt with");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_schedule_is_refused_naming_its_field() {
    let fleet = Fleet::with(0, 0).await;
    let upstream = Upstream::start().await;
    let workspace = fleet.workspace().await;
    let problems = |body: &Value| -> Vec<(String, String)> {
        body["error"]["details"]["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| {
                (
                    p["field"].as_str().expect("field").to_owned(),
                    p["message"].as_str().expect("message").to_owned(),
                )
            })
            .collect()
    };

    let (status, body) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(scheduled("61 * * * *", "UTC", &upstream)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_scenario");
    let found = problems(&body);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "trigger.cron");
    assert!(found[0].1.contains("`61 * * * *`"), "{found:?}");

    let (status, created) = fleet
        .call(
            &workspace,
            "POST",
            "/api/v1/scenarios",
            Some(scheduled("*/5 * * * *", "Europe/Paris", &upstream)),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let mut invalid = scheduled("* * * *", "Europe/Paris", &upstream);
    invalid["trigger"]["timezone"] = json!("Europe/Pariss");
    let (status, body) = fleet
        .call(
            &workspace,
            "PUT",
            &format!("/api/v1/scenarios/{id}"),
            Some(invalid),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let fields: Vec<String> = problems(&body)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(fields, ["trigger.timezone", "trigger.cron"], "{body}");
    fleet.stop().await;
}
