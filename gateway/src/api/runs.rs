//! Runs: starting one by hand, listing them, and reading one with its nodes.

use std::str::FromStr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;
use uuid::Uuid;
use weft_shared::scenario::TriggerKind;

use crate::auth::Workspace;
use crate::enqueue::{Target, enqueue};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, OptionalJson};
use crate::paging::{List, Page, parse_id};
use crate::state::AppState;
use crate::trigger::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|status| status.as_str()).collect();
                format!(
                    "unknown run status `{text}`: expected one of {}",
                    known.join(", ")
                )
            })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: Uuid,
}

/// A run without its nodes, as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub scenario_id: Uuid,
    /// The scenario version the run is pinned to.
    pub version: i32,
    pub status: RunStatus,
    /// `webhook` or `manual`.
    pub trigger_kind: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run failed: `{"class", "message", ...}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

/// A run with its trigger and the state of each node.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// What started the run: `{"body", "headers", "query", "method"}`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    pub nodes: Vec<NodeRunView>,
}

#[derive(Debug, Serialize, ToSchema)]
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

const SUMMARY_COLUMNS: &str =
    "id, scenario_id, version, status, trigger_kind, created_at, started_at, finished_at, error";

impl RunSummary {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let status: &str = row.try_get("status")?;
        Ok(Self {
            id: row.try_get("id")?,
            scenario_id: row.try_get("scenario_id")?,
            version: row.try_get("version")?,
            status: status
                .parse()
                .map_err(|e: String| ApiError::Internal(e.into()))?,
            trigger_kind: row.try_get("trigger_kind")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            error: row.try_get("error")?,
        })
    }
}

impl NodeRunView {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let started_at: Option<DateTime<Utc>> = row.try_get("started_at")?;
        let finished_at: Option<DateTime<Utc>> = row.try_get("finished_at")?;
        Ok(Self {
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

/// Start a run of a scenario now, with a JSON payload as the trigger body.
#[utoipa::path(
    post,
    path = "/api/v1/scenarios/{id}/runs",
    tag = "runs",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    request_body(content = Object, description = "Any JSON: the run's `trigger.body`. An empty body is `{}`."),
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
    ApiPath(scenario_id): ApiPath<Uuid>,
    OptionalJson(payload): OptionalJson,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let target = Target {
        workspace_id: workspace.id,
        scenario_id,
    };
    let run_id = enqueue(
        &state,
        target,
        TriggerKind::Manual,
        &Trigger::manual(payload),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })))
}

/// List runs, newest first.
#[utoipa::path(
    get,
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
    let page = Page::<Uuid>::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let scenario_id = parse_id("scenario_id", query.scenario_id.as_deref())?;
    let status = match query.status.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<RunStatus>()
                .map_err(|e| ApiError::bad_request("invalid_query", e))?,
        ),
    };

    // Without a cursor, start below the largest possible id: the condition stays a range
    // on the `(workspace_id, [scenario_id,] id DESC)` indexes.
    let before = page.cursor.unwrap_or(Uuid::max());
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
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<RunDetail>, ApiError> {
    let client = state.pool.get().await?;
    let run = client
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, trigger FROM runs WHERE id = $1 AND workspace_id = $2"
        ))
        .await?;
    let row = client
        .query_opt(&run, &[&id, &workspace.id])
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let nodes = client
        .prepare_cached(
            "SELECT node_id, status, attempts, input, output, error, started_at, finished_at
             FROM node_runs WHERE run_id = $1 AND workspace_id = $2 ORDER BY position",
        )
        .await?;
    let nodes = client
        .query(&nodes, &[&id, &workspace.id])
        .await?
        .iter()
        .map(NodeRunView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(RunDetail {
        summary: RunSummary::from_row(&row)?,
        trigger: row.try_get("trigger")?,
        nodes,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn statuses_parse_from_their_names_only() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).expect("serializes"),
                Value::from(status.as_str())
            );
        }
        assert!("done".parse::<RunStatus>().is_err());
        assert!("Queued".parse::<RunStatus>().is_err());
    }

    #[test]
    fn durations_need_both_ends() {
        let start = Utc::now();
        let end = start + TimeDelta::milliseconds(1500);
        assert_eq!(duration_ms(Some(start), Some(end)), Some(1500));
        assert_eq!(duration_ms(Some(start), None), None);
        assert_eq!(duration_ms(None, Some(end)), None);
    }
}
