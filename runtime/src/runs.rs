//! Recording and announcing a run (architecture §3.1): the one place that inserts into
//! `runs` and the one that publishes `RunRequested`. Every trigger comes through here —
//! manual and test runs and webhooks (the gateway's enqueue), replays (the gateway),
//! schedule ticks and polled items (the scheduler) — and the sweeper re-announces runs
//! that stayed queued.

use std::fmt::Debug;

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Json;
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::messages::{self, RunRequested};
use weft_domain::run::RunKind;

use crate::db::DbError;
use crate::queue::{Publisher, QueueError};

/// A run to record as `queued`. `T` is what started it, as the trigger kind stores it
/// (a webhook's request, a tick, a polled item): written to `runs.trigger` as JSON.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a, T = Value> {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub scenario_id: ScenarioId,
    /// The scenario version the run pins; `None` pins the version current at the insert.
    pub version: Option<i32>,
    pub kind: RunKind,
    pub trigger: &'a T,
    /// The reply queue of a gateway waiting for the run's end (a webhook that responds
    /// on completion).
    pub reply_to: Option<&'a str>,
    /// The run this one replays.
    pub replay_of: Option<RunId>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The scenario is deleted, or not active for a kind of run that needs it to be
    /// ([`RunKind::requires_active_scenario`]); nothing was recorded.
    #[error("the scenario is deleted or does not take this kind of run while paused")]
    ScenarioUnavailable,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RecordError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error.into())
    }
}

/// Inserts the run in one statement that also checks its scenario, so a scenario deleted
/// (or paused) a moment ago cannot get a run. Part of the caller's transaction, if any.
pub async fn record<T: Serialize + Debug + Sync>(
    client: &impl GenericClient,
    run: &NewRun<'_, T>,
) -> Result<(), RecordError> {
    let statement = client
        .prepare_cached(
            "INSERT INTO runs (id, workspace_id, scenario_id, version, status, trigger_kind,
                               trigger, reply_to, replay_of)
             SELECT $1, s.workspace_id, s.id, COALESCE($4::integer, s.current_version), 'queued',
                    $5, $6, $7, $8
             FROM scenarios s
             WHERE s.id = $2 AND s.workspace_id = $3 AND s.deleted_at IS NULL
               AND (s.status = 'active' OR NOT $9)",
        )
        .await?;
    let inserted = client
        .execute(
            &statement,
            &[
                &run.id,
                &run.scenario_id,
                &run.workspace_id,
                &run.version,
                &run.kind.as_str(),
                &Json(run.trigger),
                &run.reply_to,
                &run.replay_of,
                &run.kind.requires_active_scenario(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(RecordError::ScenarioUnavailable);
    }
    Ok(())
}

/// Publishes `RunRequested` for a recorded run and awaits the broker's confirm. What a
/// refusal means is the caller's: the gateway fails the run and answers 503, a trigger
/// in the scheduler leaves it queued for the sweeper.
pub async fn announce(
    publisher: &Publisher,
    run_id: RunId,
    workspace_id: WorkspaceId,
) -> Result<(), QueueError> {
    let message = RunRequested {
        v: messages::VERSION,
        run_id,
        workspace_id,
    };
    let runs = publisher.topology().runs();
    publisher.publish(&runs, &runs, &message).await
}
