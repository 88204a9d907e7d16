//! Schedule triggers (architecture §5): each pass finds the active scenarios whose current
//! version is scheduled and fires the ticks that came due, each exactly once however many
//! schedulers run.
//!
//! A scenario's ticks are fired in one transaction that locks its `schedule_state` row
//! (other schedulers skip it), claims each tick in `schedule_ticks` (its primary key
//! forbids a second run for a tick), records the runs `queued` and moves the state past
//! the ticks. `RunRequested` is published after the commit; a scheduler that dies in
//! between leaves queued runs, which the sweeper publishes again.
//!
//! Ticks are due after the latest of: the last tick dealt with, the scenario's
//! activation, and the save of its current version. So a schedule starts when it is
//! activated or changed, and ticks from while it was paused never fire. Ticks missed while
//! no scheduler ran are not replayed in a burst: see [`due`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::run::RunKind;
use weft_domain::scenario::TriggerKind;
use weft_domain::schedule::Schedule;
use weft_runtime::queue::Publisher;
use weft_runtime::runs::NewRun;

use crate::engine::EngineError;
use crate::metrics::Metrics;
use crate::triggered::{self, Fired, announce};

/// A tick no pass fired within this many intervals of its time was missed: no scheduler
/// was running (or every one was stalled). Ticks younger than that are on time, however
/// a pass happens to fall between them, and all fire.
const MISSED_AFTER_PASSES: u32 = 3;

/// Skipped ticks are counted, for the log, up to this many.
const MAX_COUNTED: usize = 10_000;

/// What to do with missed ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// A tick older than this when a pass sees it was missed.
    pub missed_after: TimeDelta,
    /// Missed ticks fired late: the most recent ones. Older ones are skipped.
    pub max: u32,
}

/// The ticks of one schedule that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The ticks to fire, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Missed ticks skipped (counted up to [`MAX_COUNTED`]).
    pub skipped: usize,
    /// The latest due tick, fired or skipped: the next pass starts after it.
    pub through: DateTime<Utc>,
}

/// The ticks of `schedule` after `after` and before `now`: all those on time, and of the
/// missed ones the `catch_up.max` most recent. `None` when no tick is due.
pub fn due(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
) -> Option<Due> {
    let through = schedule.last_before(now).filter(|tick| *tick > after)?;
    let newest_missed = schedule
        .last_before(now - catch_up.missed_after)
        .filter(|tick| *tick > after);
    // Missed ticks, newest first, found backwards: a long outage costs no more than the
    // ticks fired, plus the bounded count of those skipped.
    let mut missed = std::iter::successors(newest_missed, |tick| schedule.last_before(*tick))
        .take_while(|tick| *tick > after);
    let mut fire: Vec<_> = missed
        .by_ref()
        .take(usize::try_from(catch_up.max).unwrap_or(usize::MAX))
        .collect();
    fire.reverse();
    let skipped = missed.take(MAX_COUNTED).count();
    let on_time = std::iter::successors(
        schedule.next_after(newest_missed.unwrap_or(after)),
        |tick| schedule.next_after(*tick),
    )
    .take_while(|tick| *tick < now);
    fire.extend(on_time);
    Some(Due {
        fire,
        skipped,
        through,
    })
}

/// The payload of a scheduled run, shaped like every trigger (`trigger.body.scheduled_at`
/// in templates).
fn trigger(tick: DateTime<Utc>, fired_at: DateTime<Utc>) -> Value {
    json!({
        "body": {
            "scheduled_at": tick.to_rfc3339_opts(SecondsFormat::Secs, true),
            "fired_at": fired_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        },
        "headers": {},
        "query": {},
        "method": "SCHEDULE",
    })
}

/// A scheduled scenario as the database shows it.
struct Scheduled {
    scenario_id: ScenarioId,
    workspace_id: WorkspaceId,
    version: i32,
    cron: String,
    timezone: Option<String>,
    /// Ticks after this are due.
    after: DateTime<Utc>,
    /// The database's clock, the one every scheduler shares.
    now: DateTime<Utc>,
}

impl Scheduled {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            scenario_id: row.try_get("scenario_id")?,
            workspace_id: row.try_get("workspace_id")?,
            version: row.try_get("version")?,
            cron: row
                .try_get::<_, Option<String>>("cron")?
                .unwrap_or_default(),
            timezone: row.try_get("timezone")?,
            after: row.try_get("after")?,
            now: row.try_get("now")?,
        })
    }
}

/// The columns of [`Scheduled`]; `s` is the scenario, `v` its current version and `st`
/// its schedule state.
macro_rules! scheduled_columns {
    () => {
        "s.id AS scenario_id, s.workspace_id, s.current_version AS version,
         v.definition #>> '{trigger,cron}' AS cron, v.definition #>> '{trigger,timezone}' AS timezone,
         GREATEST(st.last_tick_at, s.activated_at, v.created_at) AS after, now() AS now"
    };
}

/// A scenario id and version number.
type ScenarioVersion = (ScenarioId, i32);

pub struct Schedules {
    pool: Pool,
    publisher: Arc<Publisher>,
    metrics: Metrics,
    catch_up: CatchUp,
    /// Parsed schedules by scenario version (`None`: the stored pattern no longer parses,
    /// reported once). Pruned each pass to the scenarios found, so it never outgrows them.
    parsed: Mutex<HashMap<ScenarioVersion, Option<Arc<Schedule>>>>,
}

impl Schedules {
    pub fn new(
        pool: Pool,
        publisher: Arc<Publisher>,
        metrics: Metrics,
        interval: Duration,
        max_catch_up: u32,
    ) -> Self {
        let missed_after = TimeDelta::from_std(interval.saturating_mul(MISSED_AFTER_PASSES))
            .unwrap_or(TimeDelta::MAX);
        Self {
            pool,
            publisher,
            metrics,
            catch_up: CatchUp {
                missed_after,
                max: max_catch_up,
            },
            parsed: Mutex::default(),
        }
    }

    /// One pass: fires the due ticks of every scheduled scenario.
    pub async fn pass(&self) -> Result<(), EngineError> {
        let scheduled = {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(concat!(
                    "SELECT ",
                    scheduled_columns!(),
                    " FROM scenarios s
                     JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
                     LEFT JOIN schedule_state st ON st.scenario_id = s.id
                     WHERE s.status = 'active' AND s.deleted_at IS NULL
                       AND v.definition #>> '{trigger,type}' = 'schedule'"
                ))
                .await?;
            client
                .query(&statement, &[])
                .await?
                .iter()
                .map(Scheduled::from_row)
                .collect::<Result<Vec<_>, _>>()?
        };
        self.forget_all_but(&scheduled);
        for found in scheduled {
            // Most scenarios have nothing due: only those that do cost a transaction.
            let is_due = self.schedule(&found).is_some_and(|schedule| {
                due(&schedule, found.after, found.now, self.catch_up).is_some()
            });
            if is_due {
                let fired = self.fire(found.scenario_id, found.workspace_id).await?;
                announce(&self.publisher, &self.metrics, TriggerKind::Schedule, fired).await;
            }
        }
        Ok(())
    }

    /// Fires the due ticks of one scenario, unless another scheduler is at it.
    async fn fire(
        &self,
        scenario_id: ScenarioId,
        workspace_id: WorkspaceId,
    ) -> Result<Vec<Fired>, EngineError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let ensure_state = tx
            .prepare_cached(
                "INSERT INTO schedule_state (scenario_id, workspace_id) VALUES ($1, $2)
                 ON CONFLICT (scenario_id) DO NOTHING",
            )
            .await?;
        tx.execute(&ensure_state, &[&scenario_id, &workspace_id])
            .await?;
        // Read again under the lock: the pass's read may be stale by now.
        let lock = tx
            .prepare_cached(concat!(
                "SELECT ",
                scheduled_columns!(),
                " FROM schedule_state st
                 JOIN scenarios s ON s.id = st.scenario_id
                 JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
                 WHERE st.scenario_id = $1 AND s.status = 'active' AND s.deleted_at IS NULL
                   AND v.definition #>> '{trigger,type}' = 'schedule'
                 FOR UPDATE OF st SKIP LOCKED"
            ))
            .await?;
        let Some(row) = tx.query_opt(&lock, &[&scenario_id]).await? else {
            // Another scheduler holds it, or the scenario was paused, changed or deleted.
            return Ok(Vec::new());
        };
        let found = Scheduled::from_row(&row)?;
        let Some(due) = self
            .schedule(&found)
            .and_then(|schedule| due(&schedule, found.after, found.now, self.catch_up))
        else {
            return Ok(Vec::new());
        };
        if due.skipped > 0 {
            tracing::warn!(
                %scenario_id,
                skipped = due.skipped,
                counted_up_to = MAX_COUNTED,
                caught_up = self.catch_up.max,
                "schedule ticks were missed while no scheduler ran: the most recent fire late, older ones are skipped"
            );
        }

        let claim = tx
            .prepare_cached(
                "INSERT INTO schedule_ticks (scenario_id, tick_at, run_id) VALUES ($1, $2, $3)
                 ON CONFLICT (scenario_id, tick_at) DO NOTHING",
            )
            .await?;
        let mut fired = Vec::with_capacity(due.fire.len());
        for tick in due.fire {
            let run_id = RunId::generate();
            if tx.execute(&claim, &[&scenario_id, &tick, &run_id]).await? == 0 {
                // The state lock makes this unreachable; the claim is the guarantee.
                tracing::warn!(%scenario_id, %tick, "schedule tick fired before; not firing it again");
                continue;
            }
            let trigger = trigger(tick, found.now);
            let run = NewRun {
                id: run_id,
                workspace_id: found.workspace_id,
                scenario_id,
                version: Some(found.version),
                kind: RunKind::Schedule,
                trigger: &trigger,
                reply_to: None,
                replay_of: None,
            };
            let Some(run) = triggered::record(&tx, &run).await? else {
                // Paused or deleted under the lock's feet: its ticks fire on reactivation.
                return Ok(Vec::new());
            };
            fired.push(run);
        }
        let advance = tx
            .prepare_cached(
                "UPDATE schedule_state SET last_tick_at = $2, updated_at = now() WHERE scenario_id = $1",
            )
            .await?;
        tx.execute(&advance, &[&scenario_id, &due.through]).await?;
        tx.commit().await?;
        Ok(fired)
    }

    /// The parsed schedule of a scenario version, parsed on first sight.
    fn schedule(&self, found: &Scheduled) -> Option<Arc<Schedule>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        parsed
            .entry((found.scenario_id, found.version))
            .or_insert_with(
                || match Schedule::new(&found.cron, found.timezone.as_deref()) {
                    Ok(schedule) => Some(Arc::new(schedule)),
                    Err(problems) => {
                        // Saved definitions were valid; this one no longer is (a newer cron
                        // parser?). Said once per version, not every pass.
                        let problems: Vec<String> =
                            problems.iter().map(ToString::to_string).collect();
                        tracing::error!(
                            scenario_id = %found.scenario_id, version = found.version,
                            problems = %problems.join("; "),
                            "stored schedule is not valid; it will not fire"
                        );
                        None
                    }
                },
            )
            .clone()
    }

    /// Drops the parsed schedules of versions no longer scheduled.
    fn forget_all_but(&self, scheduled: &[Scheduled]) {
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        let current: HashSet<ScenarioVersion> = scheduled
            .iter()
            .map(|found| (found.scenario_id, found.version))
            .collect();
        parsed.retain(|key, _| current.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 instant")
    }

    fn schedule(pattern: &str) -> Schedule {
        Schedule::new(pattern, None).expect("a valid schedule")
    }

    const CATCH_UP: CatchUp = CatchUp {
        missed_after: TimeDelta::seconds(3),
        max: 1,
    };

    fn fire(due: &Due) -> Vec<String> {
        due.fire
            .iter()
            .map(|tick| tick.to_rfc3339_opts(SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn nothing_is_due_before_the_next_tick() {
        let every_minute = schedule("* * * * *");
        let after = utc("2026-01-10T12:00:00Z");
        assert_eq!(
            due(
                &every_minute,
                after,
                utc("2026-01-10T12:00:59.9Z"),
                CATCH_UP
            ),
            None
        );
        // Activated within a minute: the tick before the activation is not due.
        let activated = utc("2026-01-10T12:00:30Z");
        assert_eq!(
            due(
                &every_minute,
                activated,
                utc("2026-01-10T12:00:45Z"),
                CATCH_UP
            ),
            None
        );
    }

    #[test]
    fn the_tick_that_came_due_fires_once_and_the_next_pass_starts_after_it() {
        let every_minute = schedule("* * * * *");
        let now = utc("2026-01-10T12:01:00.4Z");
        let found = due(&every_minute, utc("2026-01-10T12:00:00Z"), now, CATCH_UP).expect("due");
        assert_eq!(fire(&found), ["2026-01-10T12:01:00Z"]);
        assert_eq!(
            (found.skipped, found.through),
            (0, utc("2026-01-10T12:01:00Z"))
        );
        assert_eq!(
            due(
                &every_minute,
                found.through,
                utc("2026-01-10T12:01:01Z"),
                CATCH_UP
            ),
            None
        );
    }

    #[test]
    fn ticks_a_pass_fell_between_all_fire_when_on_time() {
        // A per-second schedule whose pass came 2.5 s after the last: both ticks are on
        // time (younger than `missed_after`), none is skipped.
        let every_second = schedule("* * * * * *");
        let found = due(
            &every_second,
            utc("2026-01-10T12:00:00Z"),
            utc("2026-01-10T12:00:02.5Z"),
            CATCH_UP,
        )
        .expect("due");
        assert_eq!(
            fire(&found),
            ["2026-01-10T12:00:01Z", "2026-01-10T12:00:02Z"]
        );
        assert_eq!(found.skipped, 0);
    }

    #[test]
    fn after_an_outage_only_the_latest_missed_tick_catches_up() {
        // Every scheduler was down from 12:00 to 12:59:30: 58 ticks were missed.
        let every_minute = schedule("* * * * *");
        let now = utc("2026-01-10T12:59:30Z");
        let found = due(&every_minute, utc("2026-01-10T12:00:00Z"), now, CATCH_UP).expect("due");
        assert_eq!(fire(&found), ["2026-01-10T12:59:00Z"]);
        assert_eq!(found.skipped, 58);
        assert_eq!(found.through, utc("2026-01-10T12:59:00Z"));

        let three = CatchUp { max: 3, ..CATCH_UP };
        let found = due(&every_minute, utc("2026-01-10T12:00:00Z"), now, three).expect("due");
        assert_eq!(
            fire(&found),
            [
                "2026-01-10T12:57:00Z",
                "2026-01-10T12:58:00Z",
                "2026-01-10T12:59:00Z"
            ]
        );
        assert_eq!(found.skipped, 56);

        let none = CatchUp { max: 0, ..CATCH_UP };
        let found = due(&every_minute, utc("2026-01-10T12:00:00Z"), now, none).expect("due");
        assert!(found.fire.is_empty());
        assert_eq!(
            (found.skipped, found.through),
            (59, utc("2026-01-10T12:59:00Z"))
        );
    }

    #[test]
    fn a_catch_up_comes_with_the_ticks_on_time() {
        // Down for ten seconds of a per-second schedule: the latest missed tick, then
        // the ones still on time.
        let every_second = schedule("* * * * * *");
        let found = due(
            &every_second,
            utc("2026-01-10T12:00:00Z"),
            utc("2026-01-10T12:00:10.5Z"),
            CATCH_UP,
        )
        .expect("due");
        assert_eq!(
            fire(&found),
            [
                "2026-01-10T12:00:07Z",
                "2026-01-10T12:00:08Z",
                "2026-01-10T12:00:09Z",
                "2026-01-10T12:00:10Z"
            ]
        );
        assert_eq!(found.skipped, 6);
    }

    #[test]
    fn skipped_ticks_are_counted_up_to_a_bound() {
        let every_second = schedule("* * * * * *");
        let found = due(
            &every_second,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-02-01T00:00:00Z"),
            CATCH_UP,
        )
        .expect("due");
        assert_eq!(found.skipped, MAX_COUNTED);
        assert_eq!(found.fire.len(), 1 + 3);
    }

    #[test]
    fn a_scheduled_run_is_triggered_like_any_other() {
        let payload = trigger(utc("2026-01-10T12:00:00Z"), utc("2026-01-10T12:00:00.25Z"));
        assert_eq!(
            payload,
            json!({"body": {"scheduled_at": "2026-01-10T12:00:00Z", "fired_at": "2026-01-10T12:00:00.250Z"},
                   "headers": {}, "query": {}, "method": "SCHEDULE"})
        );
    }
}
