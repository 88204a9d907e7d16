//! Runs the scheduler's own triggers start (schedule ticks, polled items): recorded in
//! the trigger's transaction through [`weft_runtime::runs`], announced once it commits.

use deadpool_postgres::Transaction;
use serde_json::Value;
use weft_domain::ids::{RunId, WorkspaceId};
use weft_domain::scenario::TriggerKind;
use weft_runtime::queue::Publisher;
use weft_runtime::runs::{self, NewRun, RecordError};

use crate::engine::EngineError;
use crate::metrics::Metrics;

/// A run recorded by a trigger, to announce after the commit.
pub(crate) struct Fired {
    pub(crate) run_id: RunId,
    pub(crate) workspace_id: WorkspaceId,
}

/// Records `run` in the trigger's transaction. `None` when its scenario was paused or
/// deleted since the trigger read it: nothing was recorded.
pub(crate) async fn record(
    tx: &Transaction<'_>,
    run: &NewRun<'_, Value>,
) -> Result<Option<Fired>, EngineError> {
    match runs::record(tx, run).await {
        Ok(()) => Ok(Some(Fired {
            run_id: run.id,
            workspace_id: run.workspace_id,
        })),
        Err(RecordError::ScenarioUnavailable) => {
            tracing::info!(run_id = %run.id, scenario_id = %run.scenario_id, "scenario paused or deleted meanwhile; the trigger starts no run");
            Ok(None)
        }
        Err(RecordError::Db(e)) => Err(e.into()),
    }
}

/// Announces runs a trigger just recorded. A run the broker does not take stays queued,
/// and the sweeper announces it again.
pub(crate) async fn announce(
    publisher: &Publisher,
    metrics: &Metrics,
    trigger: TriggerKind,
    fired: Vec<Fired>,
) {
    for Fired {
        run_id,
        workspace_id,
    } in fired
    {
        match runs::announce(publisher, run_id, workspace_id).await {
            Ok(()) => {
                metrics
                    .runs_started
                    .with_label_values(&[trigger.as_str()])
                    .inc();
                tracing::info!(%run_id, trigger = trigger.as_str(), "triggered run enqueued");
            }
            Err(e) => tracing::warn!(
                %run_id, trigger = trigger.as_str(), error = %e,
                "triggered run recorded but not enqueued; the sweeper will publish it again"
            ),
        }
    }
}
