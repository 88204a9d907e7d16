//! One action executed directly through the workers, outside any run.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use weft_domain::connector::prepare_http;
use weft_domain::ids::ConnectionId;
use weft_domain::manifest::{Auth, HTTP_CONNECTOR, HTTP_REQUEST_ACTION};
use weft_domain::messages::{ActionCall, NodeResult, Outcome};
use weft_domain::scenario::DEFAULT_NODE_TIMEOUT;
use weft_runtime::rate_limit;

use crate::access::Workspace;
use crate::audit::{Action as AuditAction, Event};
use crate::catalog::resolve;
use crate::connection_store::{self, StoredConnection};
use crate::direct::{self, Call, action_timeout};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Body of a direct execution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The connection to call with; required unless the connector's auth is `none`. The
    /// `http` connector takes none.
    pub connection_id: Option<ConnectionId>,
    /// The action's input, checked against its `input_schema` (for `http.request`: the
    /// request, architecture §7).
    #[serde(default = "crate::extract::empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Completed,
    Failed,
}

/// What one directly executed action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResult {
    pub status: ExecutionStatus,
    /// The action's output; null when it failed.
    #[schema(value_type = Object, nullable)]
    pub output: Value,
    /// `{class, message, status, body, retry_after_ms}` when it failed, else null.
    #[schema(value_type = Object, nullable)]
    pub error: Value,
    /// The worker's time for the attempt.
    pub duration_ms: i64,
}

impl ExecutionResult {
    fn from_result(result: &NodeResult) -> Self {
        let duration_ms = (result.finished_at - result.started_at).num_milliseconds();
        match &result.outcome {
            Outcome::Success { output } => Self {
                status: ExecutionStatus::Completed,
                output: output.clone(),
                error: Value::Null,
                duration_ms,
            },
            Outcome::Failure { error } => Self {
                status: ExecutionStatus::Failed,
                output: Value::Null,
                error: serde_json::to_value(error).unwrap_or(Value::Null),
                duration_ms,
            },
        }
    }
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_input", message)
}

/// Run one action now, through a worker, and return its result.
#[utoipa::path(
    post,
    operation_id = "executeAction",
    path = "/api/v1/connectors/{key}/actions/{action}/execute",
    tag = "connectors",
    security(("api_key" = [])),
    params(
        ("key" = String, Path, description = "Connector key"),
        ("action" = String, Path, description = "Action key"),
    ),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The action ran (`completed`) or failed upstream (`failed`, with `error`)", body = ExecutionResult),
        (status = 400, description = "Input that fails the action's `input_schema` (`invalid_input`, naming the field), or a connection missing or of another connector", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector, action or connection in this workspace", body = ErrorBody),
        (status = 409, description = "The connection still waits for its OAuth authorization (`connection_pending`)", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was run", body = ErrorBody),
        (status = 504, description = "No worker answered in time (`timeout`)", body = ErrorBody),
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath((key, action_key)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<ExecutionResult>, ApiError> {
    let client = state.pool.get().await?;
    let connector = resolve(&client, workspace.id, &key)
        .await?
        .ok_or(ApiError::NotFound("connector"))?;
    let Some(manifest) = connector.manifest() else {
        if action_key != HTTP_REQUEST_ACTION {
            return Err(ApiError::NotFound("action"));
        }
        if request.connection_id.is_some() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "the http connector takes no connection: put headers and credentials in the request input",
            ));
        }
        let prepared = prepare_http(&request.input).map_err(|e| invalid_input(e.message))?;
        let timeout = prepared.timeout.unwrap_or(DEFAULT_NODE_TIMEOUT);
        drop(client);
        let call = Call {
            connector: HTTP_CONNECTOR,
            action: HTTP_REQUEST_ACTION,
            input: request.input,
            call: None,
            timeout,
            not_before: None,
        };
        let result = direct::dispatch(&state, workspace.id, call).await?;
        let result = ExecutionResult::from_result(&result);
        record(
            &state,
            &workspace,
            HTTP_CONNECTOR,
            HTTP_REQUEST_ACTION,
            None,
            &result,
        )
        .await?;
        return Ok(Json(result));
    };
    let action = manifest
        .action(&action_key)
        .ok_or(ApiError::NotFound("action"))?;
    state
        .input_schemas
        .check(&action.input_schema, &request.input)
        .map_err(invalid_input)?;
    let connection = match request.connection_id {
        Some(id) => {
            Some(connection_store::usable_connection(&client, workspace.id, id, manifest).await?)
        }
        None if manifest.auth == Auth::None => None,
        None => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`connection_id` is required: connector `{}` uses {} auth",
                    manifest.key,
                    manifest.auth.kind()
                ),
            ));
        }
    };
    let timeout = action_timeout(action.request.timeout.as_deref());
    let limit = rate_limit::limit_of(
        workspace.id,
        manifest,
        connection.as_ref().map(|c| (c.id, c.rate_limit.as_ref())),
    );
    let not_before = match limit {
        Some((key, interval)) => Some(rate_limit::reserve_slot(&client, &key, interval).await?),
        None => None,
    };
    let connection_id = connection.as_ref().map(|c| c.id);
    let call = ActionCall::new(manifest, action, connection.map(StoredConnection::sealed));
    drop(client);
    let result = direct::dispatch(
        &state,
        workspace.id,
        Call {
            connector: &manifest.key,
            action: &action.key,
            input: request.input,
            call: Some(call),
            timeout,
            not_before,
        },
    )
    .await?;
    if let Some(id) = connection_id {
        connection_store::record_use(&state, workspace.id, id, result.connection.as_ref()).await?;
    }
    let result = ExecutionResult::from_result(&result);
    record(
        &state,
        &workspace,
        &manifest.key,
        &action.key,
        connection_id,
        &result,
    )
    .await?;
    Ok(Json(result))
}

/// The audit event of a direct execution: which action, through which connection, and
/// how it ended; never its input or output, which may carry credentials and personal data.
async fn record(
    state: &AppState,
    workspace: &Workspace,
    connector: &str,
    action: &str,
    connection: Option<ConnectionId>,
    result: &ExecutionResult,
) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    let event = Event::new(AuditAction::ConnectorActionExecuted, "connector", connector)
        .with_summary(json!({
            "action": action,
            "connection_id": connection,
            "status": result.status,
            "duration_ms": result.duration_ms,
        }));
    workspace.audit(&client, event).await?;
    Ok(())
}
