//! Starting a run: the one path shared by manual runs and webhooks, and the heart of the
//! gateway's guarantee (DESIGN §2.1): **202 means recorded and confirmed.**
//!
//! 1. The run is inserted as `queued`, pinned to the scenario's current version.
//! 2. `RunRequested` is published and the broker's confirm awaited (durable queue).
//! 3. Only then is the run id returned, for the handler to answer 202.
//!
//! If the broker does not confirm, the run is marked `failed` ("not enqueued") and the
//! caller gets 503, so no 202 is ever given for a run that may not start. A gateway that
//! dies between 1 and 2 leaves a `queued` run, which the scheduler re-publishes.

use tokio_postgres::types::Json;
use uuid::Uuid;
use weft_shared::messages::{self, RunRequested};
use weft_shared::scenario::TriggerKind;

use crate::error::ApiError;
use crate::state::AppState;
use crate::trigger::Trigger;

/// The scenario a run is for.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub workspace_id: Uuid,
    pub scenario_id: Uuid,
}

/// Records and enqueues a run; returns its id once the broker confirmed it. `NotFound` if
/// the scenario is gone (or, for a webhook, no longer active) by the time of the insert.
pub async fn enqueue(
    state: &AppState,
    target: Target,
    kind: TriggerKind,
    trigger: &Trigger,
) -> Result<Uuid, ApiError> {
    let run_id = Uuid::now_v7();
    record(state, run_id, target, kind, trigger).await?;

    let message = RunRequested {
        v: messages::VERSION,
        run_id,
        workspace_id: target.workspace_id,
    };
    let runs = state.publisher.topology().runs();
    if let Err(e) = state.publisher.publish(&runs, &runs, &message).await {
        tracing::warn!(%run_id, error = %e, "run not enqueued: broker unavailable");
        mark_not_enqueued(state, run_id).await;
        return Err(ApiError::BrokerUnavailable);
    }
    state.metrics.run_started(kind);
    tracing::info!(%run_id, scenario_id = %target.scenario_id, trigger = kind.as_str(), "run enqueued");
    Ok(run_id)
}

/// Inserts the run in one statement that also checks the scenario, so a scenario
/// deleted (or paused) a moment ago cannot get a run. The connection goes back to the
/// pool before publishing: a slow broker must not hold database connections.
async fn record(
    state: &AppState,
    run_id: Uuid,
    target: Target,
    kind: TriggerKind,
    trigger: &Trigger,
) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO runs (id, workspace_id, scenario_id, version, status, trigger_kind, trigger)
             SELECT $1, s.workspace_id, s.id, s.current_version, 'queued', $4, $5
             FROM scenarios s
             WHERE s.id = $2 AND s.workspace_id = $3 AND s.deleted_at IS NULL
               AND (s.status = 'active' OR NOT $6)",
        )
        .await?;
    // Only active scenarios fire webhooks; a manual run is allowed in any status.
    let only_if_active = kind == TriggerKind::Webhook;
    let inserted = client
        .execute(
            &statement,
            &[
                &run_id,
                &target.scenario_id,
                &target.workspace_id,
                &kind.as_str(),
                &Json(trigger),
                &only_if_active,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(ApiError::NotFound("scenario"));
    }
    Ok(())
}

/// Marks a run the broker never took as failed, so it is not mistaken for one waiting to
/// start (and the scheduler does not re-publish a run its caller was told failed).
async fn mark_not_enqueued(state: &AppState, run_id: Uuid) {
    let error = serde_json::json!({
        "class": "permanent",
        "message": "not enqueued: the message broker was unavailable",
    });
    let updated = async {
        let client = state.pool.get().await?;
        let statement = client
            .prepare_cached(
                "UPDATE runs SET status = 'failed', finished_at = now(), error = $2
                 WHERE id = $1 AND status = 'queued'",
            )
            .await?;
        client.execute(&statement, &[&run_id, &error]).await?;
        Ok::<_, ApiError>(())
    };
    if let Err(e) = updated.await {
        tracing::error!(%run_id, error = ?e, "could not mark a run that was not enqueued as failed; the scheduler may start it later");
    }
}
