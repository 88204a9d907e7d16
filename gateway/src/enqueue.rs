//! Starting a run: the one path shared by manual runs and webhooks, and the heart of the
//! gateway's guarantee (architecture §3.1): **202 means recorded and confirmed.**
//!
//! 1. The run is inserted as `queued`, pinned to the scenario's current version.
//! 2. `RunRequested` is published and the broker's confirm awaited (durable queue).
//! 3. Only then is the run id returned, for the handler to answer 202.
//!
//! If the broker does not confirm, the run is marked `failed` ("not enqueued") and the
//! caller gets 503, so no 202 is ever given for a run that may not start. A gateway that
//! dies between 1 and 2 leaves a `queued` run, which the scheduler re-publishes.
//!
//! A webhook delivery with a key (its `Idempotency-Key`, or its scheme's delivery id) first
//! claims the key in the same transaction as step 1: a repeat within 24 hours finds it
//! claimed, starts nothing and is given the first delivery's run.

use deadpool_postgres::GenericClient;
use serde_json::json;
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::run::RunKind;
use weft_domain::scenario::TriggerKind;
use weft_runtime::runs::{self, NewRun, RecordError};
use weft_runtime::trace;

use crate::access::Workspace;
use crate::audit::{Action, Event};
use crate::error::ApiError;
use crate::state::AppState;
use crate::trigger::Trigger;

/// The scenario a run is for.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub workspace_id: WorkspaceId,
    pub scenario_id: ScenarioId,
}

/// What became of a delivery that may repeat an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new run, recorded and confirmed by the broker.
    Started(RunId),
    /// The delivery repeats one of the last 24 hours: nothing was started; this is the
    /// first delivery's run.
    Duplicate(RunId),
}

/// The run about to start: its id, chosen by the caller so it can wait for the run's end
/// before the run is announced, and the reply queue its end goes to, if any.
#[derive(Debug, Clone, Copy)]
pub struct PendingRun<'a> {
    pub id: RunId,
    pub reply_to: Option<&'a str>,
    /// A test run: recorded with trigger kind `test`, left out of the run metrics.
    pub test: bool,
    /// The caller who started it by hand, audited in the run's own transaction; `None`
    /// for triggers (webhooks, schedules), which are traffic rather than changes.
    pub started_by: Option<&'a Workspace>,
}

impl PendingRun<'_> {
    /// A run nobody waits for.
    pub fn new() -> Self {
        Self {
            id: RunId::generate(),
            reply_to: None,
            test: false,
            started_by: None,
        }
    }
}

/// Records and enqueues a run; returns its id once the broker confirmed it. `NotFound` if
/// the scenario is gone (or, for a webhook, no longer active) by the time of the insert.
pub async fn enqueue(
    state: &AppState,
    target: Target,
    kind: TriggerKind,
    trigger: &Trigger,
    run: PendingRun<'_>,
) -> Result<RunId, ApiError> {
    let run_id = run.id;
    {
        // Back to the pool before publishing: a slow broker must not hold connections.
        let mut client = state.pool.get().await?;
        match run.started_by {
            None => insert_run(&client, run, target, kind, trigger).await?,
            Some(caller) => {
                let transaction = client.transaction().await?;
                insert_run(&transaction, run, target, kind, trigger).await?;
                let event = Event::new(Action::RunStarted, "run", run_id).with_summary(json!({
                    "scenario_id": target.scenario_id,
                    "test": run.test,
                }));
                caller.audit(&transaction, event).await?;
                transaction.commit().await?;
            }
        }
    }
    publish(state, run_id, target, kind, run.test).await?;
    Ok(run_id)
}

/// Like [`enqueue`] for a webhook delivery that carries `key`: unless a delivery with
/// the same key reached the scenario in the last 24 hours, in which case nothing starts
/// and that delivery's run is returned. Concurrent deliveries with one key start one run.
pub async fn enqueue_delivery(
    state: &AppState,
    target: Target,
    trigger: &Trigger,
    key: &str,
    run: PendingRun<'_>,
) -> Result<Enqueued, ApiError> {
    let run_id = run.id;
    {
        let mut client = state.pool.get().await?;
        let transaction = client.transaction().await?;
        if let Some(first) = claim(&transaction, target, key, run_id).await? {
            transaction.rollback().await?;
            return Ok(Enqueued::Duplicate(first));
        }
        insert_run(&transaction, run, target, TriggerKind::Webhook, trigger).await?;
        transaction.commit().await?;
    }
    publish(state, run_id, target, TriggerKind::Webhook, false).await?;
    Ok(Enqueued::Started(run_id))
}

/// Claims `key` for `run_id`; or, if a delivery claimed it in the last 24 hours, returns
/// that delivery's run. A concurrent claim of the same key waits on the primary key until
/// the first transaction ends, then sees its row (or, if it rolled back, takes the key).
async fn claim(
    client: &impl GenericClient,
    target: Target,
    key: &str,
    run_id: RunId,
) -> Result<Option<RunId>, ApiError> {
    // A new key is inserted, an expired one taken over; a live one is left as it is but
    // locked, so it cannot expire between this statement and the next.
    let claim = client
        .prepare_cached(
            "INSERT INTO webhook_deliveries (scenario_id, delivery_key, workspace_id, run_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (scenario_id, delivery_key) DO UPDATE
             SET run_id = EXCLUDED.run_id, created_at = now()
             WHERE webhook_deliveries.created_at < now() - interval '24 hours'
             RETURNING run_id",
        )
        .await?;
    let claimed = client
        .query_opt(
            &claim,
            &[&target.scenario_id, &key, &target.workspace_id, &run_id],
        )
        .await?;
    if claimed.is_none() {
        let first = client
            .prepare_cached(
                "SELECT run_id FROM webhook_deliveries WHERE scenario_id = $1 AND delivery_key = $2",
            )
            .await?;
        let row = client
            .query_one(&first, &[&target.scenario_id, &key])
            .await?;
        return Ok(Some(row.try_get("run_id")?));
    }
    // Keeps the table at about 24 hours of deliveries: each claim deletes a few expired
    // rows of its scenario. Rows another transaction has locked are skipped, so this never
    // waits and, coming after the claim, never holds a lock while waiting (no deadlocks).
    let expire = client
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE (scenario_id, delivery_key) IN (
                 SELECT scenario_id, delivery_key FROM webhook_deliveries
                 WHERE scenario_id = $1 AND created_at < now() - interval '24 hours'
                 LIMIT 100 FOR UPDATE SKIP LOCKED)",
        )
        .await?;
    client.execute(&expire, &[&target.scenario_id]).await?;
    Ok(None)
}

/// Publishes the run's `RunRequested` and awaits the broker's confirm; if none comes, the
/// run is marked as never started and the caller gets 503.
async fn publish(
    state: &AppState,
    run_id: RunId,
    target: Target,
    kind: TriggerKind,
    test: bool,
) -> Result<(), ApiError> {
    trace::record_scenario(target.scenario_id);
    announce(state, target.workspace_id, run_id).await?;
    if !test {
        state.metrics.run_started(kind);
    }
    tracing::info!(%run_id, scenario_id = %target.scenario_id, trigger = kind.as_str(), "run enqueued");
    Ok(())
}

/// Publishes `RunRequested` for a recorded run and awaits the confirm (architecture §3.1). If
/// the broker does not take it, the run is marked as never started and the caller gets
/// 503, as for any other trigger.
pub async fn announce(
    state: &AppState,
    workspace_id: WorkspaceId,
    run_id: RunId,
) -> Result<(), ApiError> {
    trace::record_run(run_id, workspace_id);
    if let Err(e) = runs::announce(&state.publisher, run_id, workspace_id).await {
        tracing::warn!(%run_id, error = %e, "run not enqueued: broker unavailable");
        if let NotEnqueued::Failed = mark_not_enqueued(state, run_id).await {
            return Err(ApiError::BrokerUnavailable);
        }
        tracing::info!(%run_id, "run taken up although its confirm was lost: accepted");
    }
    Ok(())
}

/// Records the run through [`runs::record`]; `NotFound` if the scenario is gone (or, for
/// a webhook, no longer active).
async fn insert_run(
    client: &impl GenericClient,
    run: PendingRun<'_>,
    target: Target,
    kind: TriggerKind,
    trigger: &Trigger,
) -> Result<(), ApiError> {
    let new_run = NewRun {
        id: run.id,
        workspace_id: target.workspace_id,
        scenario_id: target.scenario_id,
        version: None,
        kind: if run.test { RunKind::Test } else { kind.into() },
        trigger,
        reply_to: run.reply_to,
        replay_of: None,
    };
    runs::record(client, &new_run).await.map_err(|e| match e {
        RecordError::ScenarioUnavailable => ApiError::NotFound("scenario"),
        RecordError::Db(e) => e.into(),
    })
}

/// Marks a run the broker never took as failed, so it is not mistaken for one waiting to
/// start (and the scheduler does not re-publish a run its caller was told failed). Its
/// delivery key, if any, is released: the sender was told 503 and will retry, and the
/// retry must start a run rather than be answered with this one.
async fn mark_not_enqueued(state: &AppState, run_id: RunId) -> NotEnqueued {
    let error = serde_json::json!({
        "class": "permanent",
        "message": "not enqueued: the message broker was unavailable",
    });
    let updated = async {
        let client = state.pool.get().await?;
        let statement = client
            .prepare_cached(
                "WITH failed AS (
                     UPDATE runs SET status = 'failed', finished_at = now(), error = $2
                     WHERE id = $1 AND status = 'queued' RETURNING id
                 ), released AS (
                     DELETE FROM webhook_deliveries WHERE run_id IN (SELECT id FROM failed)
                 )
                 SELECT count(*) FROM failed",
            )
            .await?;
        let failed: i64 = client
            .query_one(&statement, &[&run_id, &error])
            .await?
            .try_get(0)?;
        Ok::<_, ApiError>(failed)
    };
    match updated.await {
        Ok(0) => NotEnqueued::StartedAnyway,
        Ok(_) => NotEnqueued::Failed,
        Err(e) => {
            tracing::error!(%run_id, error = ?e, "could not mark a run that was not enqueued as failed; the scheduler may start it later");
            NotEnqueued::Failed
        }
    }
}

/// What became of a run whose `RunRequested` the broker did not confirm.
enum NotEnqueued {
    /// Marked failed (or, the database failing too, left for the caller to treat as so).
    Failed,
    /// The message reached the broker after all (only its confirm was lost) and a
    /// scheduler already took the run up: it is accepted, not refused.
    StartedAnyway,
}
