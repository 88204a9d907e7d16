//! Runs: starting one by hand, listing them, reading one with its nodes, cancelling one
//! and replaying one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;

use weft_domain::graph::{NodeState, NodeStatus, ReplayError, RunState};
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::run::{RunKind, RunStatus, UnknownRunKind, UnknownRunStatus};
use weft_domain::scenario::{BuiltinCatalog, Scenario, TriggerKind};

use weft_runtime::runs::{self, NewRun, RecordError};

use crate::access::Workspace;
use crate::audit::{Action as AuditAction, Event};
use crate::enqueue::{self, PendingRun, Target, enqueue};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, OptionalJson};
use crate::paging::{List, Page, parse_id};
use crate::state::AppState;
use crate::trigger::Trigger;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: RunId,
}

/// A run without its nodes, as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: RunId,
    pub scenario_id: ScenarioId,
    /// The scenario version the run is pinned to.
    pub version: i32,
    pub status: RunStatus,
    /// What started the run.
    pub trigger_kind: RunKind,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run failed: `{"class", "message", ...}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// The run this one replays.
    pub replay_of: Option<RunId>,
}

/// A run with its trigger and the state of each node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// What started the run: `{"body", "headers", "query", "method"}`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    pub nodes: Vec<NodeRunView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRunView {
    /// The node's id in the scenario.
    pub id: String,
    /// `pending`, `queued`, `running`, `completed`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    pub attempts: i32,
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to finish; null until both are known.
    pub duration_ms: Option<i64>,
    /// For a `for_each` node that started: each item, in item order. Its `output` is
    /// the array of the items' outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemView>>,
}

/// One item of a `for_each` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    /// The item's position in the array, from 0.
    #[serde(default)]
    pub index: usize,
    /// `pending` (waiting for a free slot), `queued`, `completed`, `failed` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub attempts: i32,
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
}

/// The filters and paging of the run list, as they come in the query string.
// Spelled out: `params(RunsQuery)` expands to `utoipa::IntoParams`, which an import here
// would turn into an "unnecessary qualification".
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this scenario.
    #[param(value_type = Option<Uuid>)]
    pub scenario_id: Option<String>,
    /// Only runs in this status.
    #[param(value_type = Option<RunStatus>)]
    pub status: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const SUMMARY_COLUMNS: &str = "id, scenario_id, version, status, trigger_kind, created_at, \
                               started_at, finished_at, error, replay_of";

impl RunSummary {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: row.try_get("id")?,
            scenario_id: row.try_get("scenario_id")?,
            version: row.try_get("version")?,
            status: parse_status(row.try_get("status")?)?,
            trigger_kind: parse_kind(row.try_get("trigger_kind")?)?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            error: row.try_get("error")?,
            replay_of: row.try_get("replay_of")?,
        })
    }
}

impl NodeRunView {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let started_at: Option<DateTime<Utc>> = row.try_get("started_at")?;
        let finished_at: Option<DateTime<Utc>> = row.try_get("finished_at")?;
        let items = row
            .try_get::<_, Option<Value>>("items")?
            .and_then(|items| serde_json::from_value::<Vec<ItemView>>(items).ok())
            .map(|items| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| ItemView {
                        index,
                        duration_ms: duration_ms(item.started_at, item.finished_at),
                        ..item
                    })
                    .collect()
            });
        Ok(Self {
            items,
            id: row.try_get("node_id")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            input: row.try_get("input")?,
            output: row.try_get("output")?,
            error: row.try_get("error")?,
            duration_ms: duration_ms(started_at, finished_at),
            started_at,
            finished_at,
        })
    }
}

fn duration_ms(
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
) -> Option<i64> {
    Some((finished_at? - started_at?).num_milliseconds())
}

/// What a manual run is started with: any JSON, its `trigger.body`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RunPayload(pub Value);

/// Start a run of a scenario now, with a JSON payload as the trigger body.
#[utoipa::path(
    post,
    operation_id = "startRun",
    path = "/api/v1/scenarios/{id}/runs",
    tag = "runs",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    request_body(content = RunPayload, description = "Any JSON: the run's `trigger.body`. An empty body is `{}`. `{\"test\": true, \"payload\": …}` starts a test run (any scenario status, draft included) whose `trigger.body` is `payload`: it is recorded with trigger kind `test` and left out of the run metrics."),
    responses(
        (status = 202, description = "Recorded and enqueued; read it at /api/v1/runs/{run_id}", body = RunAccepted),
        (status = 400, description = "Malformed JSON or id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was started", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(scenario_id): ApiPath<ScenarioId>,
    OptionalJson(RunPayload(payload)): OptionalJson<RunPayload>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let target = Target {
        workspace_id: workspace.id,
        scenario_id,
    };
    let (payload, test) = match payload {
        Value::Object(mut fields) if fields.get("test") == Some(&Value::Bool(true)) => (
            fields
                .remove("payload")
                .unwrap_or_else(|| Value::Object(Default::default())),
            true,
        ),
        payload => (payload, false),
    };
    let run_id = enqueue(
        &state,
        target,
        TriggerKind::Manual,
        &Trigger::manual(payload),
        PendingRun {
            test,
            started_by: Some(&workspace),
            ..PendingRun::new()
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })))
}

/// List runs, newest first.
#[utoipa::path(
    get,
    operation_id = "listRuns",
    path = "/api/v1/runs",
    tag = "runs",
    security(("api_key" = [])),
    params(RunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = List<RunSummary>),
        (status = 400, description = "Bad filter, `limit` or `cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<List<RunSummary>>, ApiError> {
    let page = Page::<RunId>::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let scenario_id = parse_id("scenario_id", query.scenario_id.as_deref())?;
    let status = match query.status.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<RunStatus>()
                .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?,
        ),
    };

    // Without a cursor, start below the largest possible id: the condition stays a range
    // on the `(workspace_id, [scenario_id,] id DESC)` indexes.
    let before = page.cursor.unwrap_or(RunId::max());
    let limit = page.fetch();
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE workspace_id = $1 AND id < $2");
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&workspace.id, &before];
    if let Some(scenario_id) = &scenario_id {
        params.push(scenario_id);
        sql.push_str(&format!(" AND scenario_id = ${}", params.len()));
    }
    let status = status.map(RunStatus::as_str);
    if let Some(status) = &status {
        params.push(status);
        sql.push_str(&format!(" AND status = ${}", params.len()));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len()));

    let client = state.pool.get().await?;
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &params).await?;
    let items = rows
        .iter()
        .map(RunSummary::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(List::new(items, &page, |run| run.id)))
}

/// Read a run: its status, trigger, timings and nodes.
#[utoipa::path(
    get,
    operation_id = "getRun",
    path = "/api/v1/runs/{id}",
    tag = "runs",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Json<RunDetail>, ApiError> {
    let client = state.pool.get().await?;
    read(&client, workspace.id, id).await.map(Json)
}

async fn read(
    client: &deadpool_postgres::Client,
    workspace_id: WorkspaceId,
    id: RunId,
) -> Result<RunDetail, ApiError> {
    let run = client
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, trigger FROM runs WHERE id = $1 AND workspace_id = $2"
        ))
        .await?;
    let row = client
        .query_opt(&run, &[&id, &workspace_id])
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let nodes = client
        .prepare_cached(
            "SELECT node_id, status, attempts, input, output, error, started_at, finished_at, items
             FROM node_runs WHERE run_id = $1 AND workspace_id = $2 ORDER BY position",
        )
        .await?;
    let nodes = client
        .query(&nodes, &[&id, &workspace_id])
        .await?
        .iter()
        .map(NodeRunView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunDetail {
        summary: RunSummary::from_row(&row)?,
        trigger: row.try_get("trigger")?,
        nodes,
    })
}

/// Cancel a queued or running run: nothing more is dispatched, and its unfinished nodes
/// are `cancelled`. A result that arrives later for a node already sent to a worker is
/// still recorded, but starts nothing.
#[utoipa::path(
    post,
    operation_id = "cancelRun",
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The cancelled run", body = RunDetail),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run in this workspace", body = ErrorBody),
        (status = 409, description = "The run already finished (`run_finished`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Json<RunDetail>, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // The run row's lock serializes the cancel with the scheduler, which takes the same
    // lock to record each result: no dispatch decision can slip in after it.
    let lock = tx
        .prepare_cached("SELECT status FROM runs WHERE id = $1 AND workspace_id = $2 FOR UPDATE")
        .await?;
    let row = tx
        .query_opt(&lock, &[&id, &workspace.id])
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let status = parse_status(row.try_get(0)?)?;
    if !matches!(status, RunStatus::Queued | RunStatus::Running) {
        return Err(ApiError::Conflict {
            code: "run_finished",
            message: format!(
                "the run is already {}: only a queued or running run can be cancelled",
                status.as_str()
            ),
        });
    }
    let error = serde_json::json!({"class": "cancelled", "message": "cancelled through the API"});
    let finish_run = tx
        .prepare_cached(
            "UPDATE runs SET status = 'cancelled', finished_at = now(), deadline_at = NULL, error = $3
             WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    tx.execute(&finish_run, &[&id, &workspace.id, &error])
        .await?;
    // A for_each node's unfinished items are cancelled with it.
    let cancel_nodes = tx
        .prepare_cached(
            "UPDATE node_runs SET status = 'cancelled', finished_at = now(), deadline_at = NULL,
                 items = (SELECT jsonb_agg(CASE WHEN item->>'status' IN ('pending', 'queued', 'running')
                                                THEN (item - 'deadline_at') || jsonb_build_object(
                                                    'status', 'cancelled', 'finished_at', now())
                                                ELSE item END ORDER BY ordinal)
                          FROM jsonb_array_elements(items) WITH ORDINALITY AS i (item, ordinal))
             WHERE run_id = $1 AND workspace_id = $2 AND status IN ('pending', 'queued', 'running')",
        )
        .await?;
    tx.execute(&cancel_nodes, &[&id, &workspace.id]).await?;
    workspace
        .audit(&tx, Event::new(AuditAction::RunCancelled, "run", id))
        .await?;
    tx.commit().await?;
    state.metrics.run_cancelled();
    tracing::info!(run_id = %id, "run cancelled");
    read(&client, workspace.id, id).await.map(Json)
}

/// Where a replay starts and on which version; an empty body replays from the first
/// failed node on the run's own version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The node to start from: it and every node after it run again. By default, the
    /// first node that failed.
    pub from_node: Option<String>,
    /// `latest` replays on the scenario's newest version; by default, the run's own.
    pub version: Option<ReplayVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayVersion {
    Latest,
}

/// Replay a finished run: a new run of the same scenario, with the same trigger, that
/// starts from `from_node` (by default the first failed node) and reuses the recorded
/// outcome of the nodes before it; it is linked to the original by `replay_of`.
#[utoipa::path(
    post,
    operation_id = "replayRun",
    path = "/api/v1/runs/{id}/replay",
    tag = "runs",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Id of the run to replay")),
    request_body(content = ReplayRequest, description = "Optional; an empty body is `{}`."),
    responses(
        (status = 202, description = "The replay is recorded and enqueued", body = RunAccepted),
        (status = 400, description = "No failed node to start from (`nothing_to_replay`), or `from_node` is not in that version (`unknown_node`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run, or its scenario was deleted", body = ErrorBody),
        (status = 409, description = "The run has not finished (`run_not_finished`)", body = ErrorBody),
        (status = 422, description = "The body does not have the expected shape", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was started", body = ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<RunId>,
    OptionalJson(body): OptionalJson,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let request: ReplayRequest = serde_json::from_value(body).map_err(|e| {
        ApiError::Unprocessable(format!("the body does not have the expected shape: {e}"))
    })?;
    let run_id = RunId::generate();
    record_replay(&state, &workspace, id, run_id, &request).await?;
    enqueue::announce(&state, workspace.id, run_id).await?;
    state.metrics.replay_started();
    tracing::info!(%run_id, replay_of = %id, "replay enqueued");
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })))
}

/// Records the replay as a queued run together with the node runs it reuses (copied from
/// the original), in one transaction: the scheduler starts it from those.
async fn record_replay(
    state: &AppState,
    caller: &Workspace,
    original_id: RunId,
    run_id: RunId,
    request: &ReplayRequest,
) -> Result<(), ApiError> {
    let workspace_id = caller.id;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let original = tx
        .prepare_cached(
            "SELECT r.status, r.scenario_id, r.version, r.trigger, s.current_version,
                    s.deleted_at IS NULL AS live
             FROM runs r JOIN scenarios s ON s.id = r.scenario_id
             WHERE r.id = $1 AND r.workspace_id = $2",
        )
        .await?;
    let original = tx
        .query_opt(&original, &[&original_id, &workspace_id])
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let status = parse_status(original.try_get("status")?)?;
    if !status.is_finished() {
        return Err(ApiError::Conflict {
            code: "run_not_finished",
            message: format!(
                "the run is still {}: wait for it to finish, or cancel it, before replaying it",
                status.as_str()
            ),
        });
    }
    if !original.try_get::<_, bool>("live")? {
        return Err(ApiError::NotFound("scenario"));
    }
    let scenario_id: ScenarioId = original.try_get("scenario_id")?;
    let version: i32 = match request.version {
        Some(ReplayVersion::Latest) => original.try_get("current_version")?,
        None => original.try_get("version")?,
    };
    let definition = tx
        .prepare_cached(
            "SELECT definition FROM scenario_versions
             WHERE workspace_id = $1 AND scenario_id = $2 AND version = $3",
        )
        .await?;
    let definition: Value = tx
        .query_one(&definition, &[&workspace_id, &scenario_id, &version])
        .await?
        .try_get(0)?;
    let scenario =
        Scenario::parse(&definition, &BuiltinCatalog).map_err(|e| ApiError::Conflict {
            code: "invalid_version",
            message: format!("version {version} of the scenario can no longer run: {e}"),
        })?;

    let nodes = tx
        .prepare_cached(
            "SELECT node_id, status, finished_at FROM node_runs WHERE run_id = $1 AND workspace_id = $2",
        )
        .await?;
    let mut recorded = RunState::default();
    for row in tx.query(&nodes, &[&original_id, &workspace_id]).await? {
        let mut node = NodeState::pending();
        node.record.status = NodeStatus::parse(row.try_get(1)?).unwrap_or(NodeStatus::Failed);
        node.record.finished_at = row.try_get(2)?;
        recorded.nodes.insert(row.try_get(0)?, node);
    }
    let replay = recorded
        .replay(&scenario, request.from_node.as_deref())
        .map_err(|e| {
            let code = match e {
                ReplayError::NothingFailed => "nothing_to_replay",
                ReplayError::UnknownNode(_) => "unknown_node",
            };
            ApiError::bad_request(code, e.to_string())
        })?;

    let trigger: Value = original.try_get("trigger")?;
    let run = NewRun {
        id: run_id,
        workspace_id,
        scenario_id,
        version: Some(version),
        kind: RunKind::Replay,
        trigger: &trigger,
        reply_to: None,
        replay_of: Some(original_id),
    };
    runs::record(&tx, &run).await.map_err(|e| match e {
        RecordError::ScenarioUnavailable => ApiError::NotFound("scenario"),
        RecordError::Db(e) => e.into(),
    })?;
    // Copied in the database: outputs can be large, and need not pass through here.
    let positions: Vec<i32> = replay
        .reused
        .iter()
        .map(|id| {
            let position = scenario.nodes.iter().position(|n| &n.id == id).unwrap_or(0);
            i32::try_from(position).unwrap_or(i32::MAX)
        })
        .collect();
    let copy_nodes = tx
        .prepare_cached(
            "INSERT INTO node_runs (run_id, workspace_id, node_id, position, status, attempts, input, output,
                                    raw_output, error, port, queued_at, started_at, finished_at, items)
             SELECT $1, n.workspace_id, n.node_id, p.position, n.status, n.attempts, n.input, n.output,
                    n.raw_output, n.error, n.port, n.queued_at, n.started_at, n.finished_at, n.items
             FROM node_runs n JOIN UNNEST($4::text[], $5::int[]) AS p (node_id, position) USING (node_id)
             WHERE n.run_id = $2 AND n.workspace_id = $3",
        )
        .await?;
    tx.execute(
        &copy_nodes,
        &[
            &run_id,
            &original_id,
            &workspace_id,
            &replay.reused,
            &positions,
        ],
    )
    .await?;
    let event = Event::new(AuditAction::RunReplayed, "run", run_id).with_summary(json!({
        "replay_of": original_id,
        "from_node": replay.from,
        "version": version,
    }));
    caller.audit(&tx, event).await?;
    tx.commit().await?;
    tracing::debug!(%run_id, from = %replay.from, reused = replay.reused.len(), "replay recorded");
    Ok(())
}

fn parse_status(text: &str) -> Result<RunStatus, ApiError> {
    text.parse()
        .map_err(|e: UnknownRunStatus| ApiError::Internal(e.into()))
}

fn parse_kind(text: &str) -> Result<RunKind, ApiError> {
    text.parse()
        .map_err(|e: UnknownRunKind| ApiError::Internal(e.into()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn durations_need_both_ends() {
        let start = Utc::now();
        let end = start + TimeDelta::milliseconds(1500);
        assert_eq!(duration_ms(Some(start), Some(end)), Some(1500));
        assert_eq!(duration_ms(Some(start), None), None);
        assert_eq!(duration_ms(None, Some(end)), None);
    }
}
