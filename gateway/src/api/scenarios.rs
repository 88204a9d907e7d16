//! Scenarios: definitions validated when saved, stored as immutable versions; activation;
//! and the webhook token and signature secret of webhook-triggered scenarios.
//!
//! A signature secret never stays in a definition: it is encrypted into
//! `webhook_signatures`, and the stored definition shows `"secret_set": true` instead.

use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Json as Jsonb;
use utoipa::ToSchema;

use weft_domain::crypto::KeyRing;
use weft_domain::ids::{ScenarioId, WorkspaceId};
use weft_domain::scenario::{Invalid, Problem, Scenario, TriggerKind, WebhookSignature};

use crate::access::Workspace;
use crate::audit::{Action as AuditAction, ActorView, Event};
use crate::catalog::WorkspaceCatalog;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::paging::{List, PageQuery};
use crate::secrets::webhook_signature_aad;
use crate::state::AppState;

/// The columns of a scenario as the API shows it; `s` is the `scenarios` row. A macro so
/// that the queries below stay compile-time strings.
macro_rules! scenario_columns {
    () => {
        "s.id, s.name, s.current_version, s.status, s.created_at, s.updated_at,
         s.created_by_kind, s.created_by_id, s.updated_by_kind, s.updated_by_id,
         (SELECT t.token FROM webhook_tokens t WHERE t.scenario_id = s.id) AS webhook_token"
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioStatus {
    /// Saved, never activated: fires nothing (manual runs are still allowed).
    Draft,
    /// Its trigger starts runs: webhooks are accepted, schedules tick.
    Active,
    /// Fires nothing until activated again.
    Paused,
}

impl ScenarioStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
        }
    }
}

impl FromStr for ScenarioStatus {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::Draft, Self::Active, Self::Paused]
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                ApiError::Internal(
                    format!("unknown scenario status `{text}` in the database").into(),
                )
            })
    }
}

/// A scenario definition (DESIGN §4): `name`, `trigger`, `settings`, `nodes`. Checked as
/// a whole when saved.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct ScenarioDefinition(pub Value);

/// A scenario as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Scenario)]
pub struct ScenarioView {
    pub id: ScenarioId,
    pub name: String,
    /// The current version: each save creates a new one.
    pub version: i32,
    pub status: ScenarioStatus,
    /// Where to send webhooks; only for webhook-triggered scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookEndpoint>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who created it; null for scenarios older than people and keys of their own.
    pub created_by: Option<ActorView>,
    /// Who changed it last (saved, activated or paused it).
    pub updated_by: Option<ActorView>,
    /// The current version's definition; only in `GET /api/v1/scenarios/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    pub token: String,
    /// `/hooks/<token>`, relative to the gateway's address.
    pub path: String,
    /// The whole URL to give the sender: `<WEFT_PUBLIC_URL>/hooks/<token>`.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: i32,
    pub created_at: DateTime<Utc>,
    /// Who saved it.
    pub created_by: Option<ActorView>,
}

impl ScenarioView {
    /// `public_url` is `WEFT_PUBLIC_URL`, which webhook URLs start with.
    fn from_row(row: &Row, public_url: &str) -> Result<Self, ApiError> {
        let token: Option<String> = row.try_get("webhook_token")?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            version: row.try_get("current_version")?,
            status: row.try_get::<_, &str>("status")?.parse()?,
            webhook: token.map(|token| {
                let path = format!("/hooks/{token}");
                WebhookEndpoint {
                    url: format!("{public_url}{path}"),
                    path,
                    token,
                }
            }),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            created_by: ActorView::read(row, "created_by")?,
            updated_by: ActorView::read(row, "updated_by")?,
            definition: None,
        })
    }
}

/// Validates a definition (architecture §5) against the connectors and connections of the
/// workspace and the longest run timeout allowed (`WEFT_MAX_RUN_TIMEOUT`); a 400 lists
/// every problem found.
async fn validate(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    definition: &Value,
    max_run_timeout: Duration,
) -> Result<Scenario, ApiError> {
    let catalog = WorkspaceCatalog::load(client, workspace, definition).await?;
    check(definition, &catalog, max_run_timeout)
}

fn check(
    definition: &Value,
    catalog: &WorkspaceCatalog,
    max_run_timeout: Duration,
) -> Result<Scenario, ApiError> {
    let scenario = Scenario::parse(definition, catalog).map_err(invalid_scenario)?;
    let mut problems = catalog.check_references(&scenario);
    problems.extend(scenario.run_timeout_over(max_run_timeout));
    if !problems.is_empty() {
        return Err(invalid_scenario(Invalid(problems)));
    }
    Ok(scenario)
}

fn invalid_scenario(invalid: Invalid) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_scenario",
        message: invalid.to_string(),
        details: json!({ "problems": invalid.0 }),
    }
}

/// The definition as it is stored and shown: a signature's secret is replaced by
/// `"secret_set": true`.
fn without_secret(mut definition: Value) -> Value {
    if let Some(signature) = definition
        .pointer_mut("/trigger/signature")
        .and_then(Value::as_object_mut)
    {
        signature.remove("secret");
        signature.insert("secret_set".into(), Value::Bool(true));
    }
    definition
}

/// Webhook tokens are the only secret in a webhook URL: 192 random bits.
fn new_webhook_token() -> String {
    let bytes: [u8; 24] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Keeps the rule "a scenario has a webhook token exactly when its current version is
/// triggered by webhooks". An existing token is kept, so senders need no reconfiguring.
async fn sync_webhook_token(
    transaction: &Transaction<'_>,
    workspace: WorkspaceId,
    scenario_id: ScenarioId,
    trigger: TriggerKind,
) -> Result<(), ApiError> {
    match trigger {
        TriggerKind::Webhook => {
            transaction
                .execute(
                    "INSERT INTO webhook_tokens (token, workspace_id, scenario_id) VALUES ($1, $2, $3)
                     ON CONFLICT (scenario_id) DO NOTHING",
                    &[&new_webhook_token(), &workspace, &scenario_id],
                )
                .await?;
        }
        TriggerKind::Schedule | TriggerKind::Poll | TriggerKind::Manual => {
            transaction
                .execute(
                    "DELETE FROM webhook_tokens WHERE scenario_id = $1 AND workspace_id = $2",
                    &[&scenario_id, &workspace],
                )
                .await?;
        }
    }
    Ok(())
}

/// Keeps the rule "a scenario has a `webhook_signatures` row exactly when its current
/// version requires signed webhooks". A secret given is encrypted and stored. Without one
/// the stored secret is kept, as long as the scheme stays the same: a definition read from
/// the API and saved again carries none.
async fn sync_signature(
    transaction: &Transaction<'_>,
    keys: &KeyRing,
    workspace: WorkspaceId,
    scenario_id: ScenarioId,
    signature: Option<&WebhookSignature>,
) -> Result<(), ApiError> {
    let Some(signature) = signature else {
        transaction
            .execute(
                "DELETE FROM webhook_signatures WHERE scenario_id = $1 AND workspace_id = $2",
                &[&scenario_id, &workspace],
            )
            .await?;
        return Ok(());
    };
    let scheme = Jsonb(&signature.scheme);
    let Some(secret) = &signature.secret else {
        let kept = transaction
            .execute(
                "UPDATE webhook_signatures SET scheme = $3, updated_at = now()
                 WHERE scenario_id = $1 AND workspace_id = $2 AND scheme->>'scheme' = $4",
                &[&scenario_id, &workspace, &scheme, &signature.scheme.name()],
            )
            .await?;
        if kept == 0 {
            return Err(invalid_scenario(Invalid(vec![Problem {
                node: None,
                field: "trigger.signature.secret".into(),
                message: format!(
                    "required: no {} secret is stored for this scenario (a stored secret is kept only while the scheme stays the same)",
                    signature.scheme.name()
                ),
            }])));
        }
        return Ok(());
    };
    let ciphertext = keys.encrypt(
        secret.as_bytes(),
        &webhook_signature_aad(workspace, scenario_id),
    );
    transaction
        .execute(
            "INSERT INTO webhook_signatures (scenario_id, workspace_id, scheme, ciphertext)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (scenario_id) DO UPDATE
             SET scheme = EXCLUDED.scheme, ciphertext = EXCLUDED.ciphertext, updated_at = now()",
            &[&scenario_id, &workspace, &scheme, &ciphertext],
        )
        .await?;
    Ok(())
}

/// Create a scenario (version 1, status `draft`).
#[utoipa::path(
    post,
    operation_id = "createScenario",
    path = "/api/v1/scenarios",
    tag = "scenarios",
    security(("api_key" = [])),
    request_body(content = ScenarioDefinition, description = "A scenario definition (DESIGN §4): `name`, `trigger`, `settings`, `nodes`. A `trigger.signature.secret` is stored encrypted and never shown: reads show `\"secret_set\": true`"),
    responses(
        (status = 201, description = "Scenario created", body = ScenarioView),
        (status = 400, description = "Invalid definition (`invalid_scenario`, with `details.problems`) or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(ScenarioDefinition(definition)): ApiJson<ScenarioDefinition>,
) -> Result<(StatusCode, Json<ScenarioView>), ApiError> {
    let mut client = state.pool.get().await?;
    let scenario = validate(&client, workspace.id, &definition, state.max_run_timeout).await?;
    let id = ScenarioId::generate();

    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO scenarios (id, workspace_id, name, current_version,
                 created_by_kind, created_by_id, updated_by_kind, updated_by_id)
             VALUES ($1, $2, $3, 1, $4, $5, $4, $5)",
            &[
                &id,
                &workspace.id,
                &scenario.name,
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?;
    transaction
        .execute(
            "INSERT INTO scenario_versions (workspace_id, scenario_id, version, definition, created_by_kind, created_by_id)
             VALUES ($1, $2, 1, $3, $4, $5)",
            &[&workspace.id, &id, &without_secret(definition), &workspace.actor.kind().as_str(), &workspace.actor.id()],
        )
        .await?;
    sync_webhook_token(&transaction, workspace.id, id, scenario.trigger).await?;
    sync_signature(
        &transaction,
        &state.keys,
        workspace.id,
        id,
        scenario.signature.as_ref(),
    )
    .await?;
    let row = transaction
        .query_one(
            concat!(
                "SELECT ",
                scenario_columns!(),
                " FROM scenarios s WHERE s.id = $1"
            ),
            &[&id],
        )
        .await?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ScenarioCreated, "scenario", id)
                .with_summary(json!({ "name": scenario.name, "version": 1 })),
        )
        .await?;
    transaction.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ScenarioView::from_row(&row, &state.public_url)?),
    ))
}

/// List scenarios, newest first.
#[utoipa::path(
    get,
    operation_id = "listScenarios",
    path = "/api/v1/scenarios",
    tag = "scenarios",
    security(("api_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of scenarios", body = List<ScenarioView>),
        (status = 400, description = "Bad `limit` or `cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<ScenarioView>>, ApiError> {
    let page = query.page::<ScenarioId>()?;
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            scenario_columns!(),
            " FROM scenarios s
             WHERE s.workspace_id = $1 AND s.deleted_at IS NULL AND s.id < $2
             ORDER BY s.id DESC LIMIT $3"
        ))
        .await?;
    // Without a cursor, start below the largest possible id: one query shape, always a
    // range scan of the (workspace_id, id DESC) index.
    let before = page.cursor.unwrap_or(ScenarioId::max());
    let rows = client
        .query(&statement, &[&workspace.id, &before, &page.fetch()])
        .await?;
    let items = rows
        .iter()
        .map(|row| ScenarioView::from_row(row, &state.public_url))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(List::new(items, &page, |scenario| scenario.id)))
}

/// Read a scenario, with its current definition.
#[utoipa::path(
    get,
    operation_id = "getScenario",
    path = "/api/v1/scenarios/{id}",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    responses(
        (status = 200, description = "The scenario and its current definition", body = ScenarioView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
) -> Result<Json<ScenarioView>, ApiError> {
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            scenario_columns!(),
            ", v.definition
             FROM scenarios s
             JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
             WHERE s.id = $1 AND s.workspace_id = $2 AND s.deleted_at IS NULL"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&id, &workspace.id])
        .await?
        .ok_or(ApiError::NotFound("scenario"))?;
    let mut scenario = ScenarioView::from_row(&row, &state.public_url)?;
    scenario.definition = Some(row.try_get("definition")?);
    Ok(Json(scenario))
}

/// Save a new version of a scenario.
#[utoipa::path(
    put,
    operation_id = "updateScenario",
    path = "/api/v1/scenarios/{id}",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    request_body(content = ScenarioDefinition, description = "The new definition (DESIGN §4). Without `trigger.signature.secret`, the stored secret is kept if the scheme is unchanged"),
    responses(
        (status = 200, description = "Saved as a new version", body = ScenarioView),
        (status = 400, description = "Invalid definition (`invalid_scenario`, with `details.problems`), malformed JSON or id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
    ApiJson(ScenarioDefinition(definition)): ApiJson<ScenarioDefinition>,
) -> Result<Json<ScenarioView>, ApiError> {
    let mut client = state.pool.get().await?;
    let scenario = validate(&client, workspace.id, &definition, state.max_run_timeout).await?;

    let transaction = client.transaction().await?;
    // The row lock serializes concurrent saves, so each gets its own version number.
    let current: i32 = transaction
        .query_opt(
            "SELECT current_version FROM scenarios
             WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL FOR UPDATE",
            &[&id, &workspace.id],
        )
        .await?
        .ok_or(ApiError::NotFound("scenario"))?
        .try_get("current_version")?;
    let version = current + 1;
    transaction
        .execute(
            "INSERT INTO scenario_versions (workspace_id, scenario_id, version, definition, created_by_kind, created_by_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&workspace.id, &id, &version, &without_secret(definition), &workspace.actor.kind().as_str(), &workspace.actor.id()],
        )
        .await?;
    sync_webhook_token(&transaction, workspace.id, id, scenario.trigger).await?;
    sync_signature(
        &transaction,
        &state.keys,
        workspace.id,
        id,
        scenario.signature.as_ref(),
    )
    .await?;
    let row = transaction
        .query_one(
            concat!(
                "UPDATE scenarios s SET name = $3, current_version = $4, updated_at = now(),
                     updated_by_kind = $5, updated_by_id = $6
                 WHERE s.id = $1 AND s.workspace_id = $2 RETURNING ",
                scenario_columns!()
            ),
            &[
                &id,
                &workspace.id,
                &scenario.name,
                &version,
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ScenarioUpdated, "scenario", id)
                .with_summary(json!({ "name": scenario.name, "version": version })),
        )
        .await?;
    transaction.commit().await?;
    Ok(Json(ScenarioView::from_row(&row, &state.public_url)?))
}

/// Delete a scenario. Its runs stay readable; its webhook stops at once.
#[utoipa::path(
    delete,
    operation_id = "deleteScenario",
    path = "/api/v1/scenarios/{id}",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
) -> Result<StatusCode, ApiError> {
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    // Soft delete: runs keep pointing at the scenario's versions.
    let deleted = transaction
        .execute(
            "UPDATE scenarios SET deleted_at = now(), updated_at = now()
             WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            &[&id, &workspace.id],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("scenario"));
    }
    // Its webhook stops, and its signature secret and delivery records go with it.
    for statement in [
        "DELETE FROM webhook_tokens WHERE scenario_id = $1 AND workspace_id = $2",
        "DELETE FROM webhook_signatures WHERE scenario_id = $1 AND workspace_id = $2",
        "DELETE FROM webhook_deliveries WHERE scenario_id = $1 AND workspace_id = $2",
    ] {
        transaction
            .execute(statement, &[&id, &workspace.id])
            .await?;
    }
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ScenarioDeleted, "scenario", id),
        )
        .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Activate a scenario: its webhook starts runs, or its schedule starts ticking from now
/// (ticks from before the activation, e.g. while it was paused, never fire).
#[utoipa::path(
    post,
    operation_id = "activateScenario",
    path = "/api/v1/scenarios/{id}/activate",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    responses(
        (status = 200, description = "The scenario, now active", body = ScenarioView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
) -> Result<Json<ScenarioView>, ApiError> {
    set_status(
        &state,
        &workspace,
        id,
        ScenarioStatus::Active,
        AuditAction::ScenarioActivated,
    )
    .await
    .map(Json)
}

/// Pause a scenario: its webhook answers 404 and its schedule fires nothing until it is
/// activated again.
#[utoipa::path(
    post,
    operation_id = "pauseScenario",
    path = "/api/v1/scenarios/{id}/pause",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id")),
    responses(
        (status = 200, description = "The scenario, now paused", body = ScenarioView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
) -> Result<Json<ScenarioView>, ApiError> {
    set_status(
        &state,
        &workspace,
        id,
        ScenarioStatus::Paused,
        AuditAction::ScenarioPaused,
    )
    .await
    .map(Json)
}

async fn set_status(
    state: &AppState,
    workspace: &Workspace,
    id: ScenarioId,
    status: ScenarioStatus,
    action: AuditAction,
) -> Result<ScenarioView, ApiError> {
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare_cached(concat!(
            // `activated_at` marks where a schedule starts: set when the scenario becomes
            // active, kept when an active one is activated again (no tick is lost).
            "UPDATE scenarios s SET status = $3, updated_at = now(),
                 updated_by_kind = $4, updated_by_id = $5,
                 activated_at = CASE WHEN $3 = 'active' AND s.status <> 'active' THEN now() ELSE s.activated_at END
             WHERE s.id = $1 AND s.workspace_id = $2 AND s.deleted_at IS NULL RETURNING ",
            scenario_columns!()
        ))
        .await?;
    let row = transaction
        .query_opt(
            &statement,
            &[
                &id,
                &workspace.id,
                &status.as_str(),
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?
        .ok_or(ApiError::NotFound("scenario"))?;
    workspace
        .audit(&transaction, Event::new(action, "scenario", id))
        .await?;
    transaction.commit().await?;
    ScenarioView::from_row(&row, &state.public_url)
}

/// List a scenario's versions, newest first.
#[utoipa::path(
    get,
    operation_id = "listScenarioVersions",
    path = "/api/v1/scenarios/{id}/versions",
    tag = "scenarios",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Scenario id"), PageQuery),
    responses(
        (status = 200, description = "A page of versions", body = List<VersionView>),
        (status = 400, description = "Malformed id, bad `limit` or `cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such scenario in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn versions(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ScenarioId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<VersionView>>, ApiError> {
    let page = query.page::<i32>()?;
    let client = state.pool.get().await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM scenarios WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            &[&id, &workspace.id],
        )
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound("scenario"));
    }
    let rows = client
        .query(
            "SELECT version, created_at, created_by_kind, created_by_id FROM scenario_versions
             WHERE scenario_id = $1 AND workspace_id = $2 AND version < $3
             ORDER BY version DESC LIMIT $4",
            &[
                &id,
                &workspace.id,
                &page.cursor.unwrap_or(i32::MAX),
                &page.fetch(),
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(VersionView {
                version: row.try_get("version")?,
                created_at: row.try_get("created_at")?,
                created_by: ActorView::read(row, "created_by")?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(List::new(items, &page, |version| version.version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WEFT_MAX_RUN_TIMEOUT's default.
    const DEFAULT_MAX_RUN_TIMEOUT: Duration = Duration::from_secs(3600);

    #[test]
    fn invalid_definitions_list_their_problems() {
        let error = check(
            &json!({"name": "", "trigger": {"type": "webhook"}, "nodes": []}),
            &WorkspaceCatalog::default(),
            DEFAULT_MAX_RUN_TIMEOUT,
        )
        .expect_err("invalid");
        let ApiError::BadRequest { code, details, .. } = &error else {
            panic!("expected a 400, got {error:?}");
        };
        assert_eq!(*code, "invalid_scenario");
        let problems = details["problems"].as_array().expect("problems");
        assert!(
            problems.iter().any(|p| p["field"] == "name"),
            "{problems:?}"
        );
    }

    #[test]
    fn nodes_of_authenticated_connectors_without_a_connection_are_refused() {
        let slack = weft_domain::manifest::builtin("slack").expect("slack ships");
        let definition = json!({
            "name": "n", "trigger": {"type": "manual"},
            "nodes": [{"id": "post", "type": "action", "connector": "slack", "action": slack.actions[0].key}]
        });
        let error = check(
            &definition,
            &WorkspaceCatalog::default(),
            DEFAULT_MAX_RUN_TIMEOUT,
        )
        .expect_err("no connection");
        let ApiError::BadRequest { details, .. } = &error else {
            panic!("expected a 400, got {error:?}");
        };
        assert_eq!(details["problems"][0]["node"], "post");
        assert_eq!(details["problems"][0]["field"], "connection");
    }

    #[test]
    fn stored_definitions_say_a_secret_is_set_but_never_hold_it() {
        let stored = without_secret(json!({
            "name": "n",
            "trigger": {"type": "webhook", "signature": {"scheme": "github", "secret": "s3cret"}},
            "nodes": []
        }));
        assert_eq!(
            stored["trigger"]["signature"],
            json!({"scheme": "github", "secret_set": true})
        );
        assert!(!stored.to_string().contains("s3cret"));
        let unsigned = json!({"name": "n", "trigger": {"type": "webhook"}, "nodes": []});
        assert_eq!(without_secret(unsigned.clone()), unsigned);
    }

    #[test]
    fn webhook_tokens_are_url_safe_and_random() {
        let token = new_webhook_token();
        assert_eq!(token.len(), 32, "24 bytes in unpadded base64url");
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(token, new_webhook_token());
    }

    #[test]
    fn statuses_round_trip_through_the_database_text() {
        for status in [
            ScenarioStatus::Draft,
            ScenarioStatus::Active,
            ScenarioStatus::Paused,
        ] {
            assert_eq!(
                status.as_str().parse::<ScenarioStatus>().expect("known"),
                status
            );
        }
        assert!("archived".parse::<ScenarioStatus>().is_err());
    }
}
