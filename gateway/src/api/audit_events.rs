//! Reading the audit log (architecture §11): filtered, paged newest first, or exported as
//! JSON Lines.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use weft_domain::ids::AuditEventId;

use crate::access::Workspace;
use crate::audit::ActorView;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::paging::{List, Page, parse_id};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: AuditEventId,
    pub occurred_at: DateTime<Utc>,
    pub actor: ActorView,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    /// `object.verb`: `scenario.updated`, `member.role_changed`, `session.login_failed`, …
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    /// The fields that changed and their non-secret values.
    #[schema(value_type = Object)]
    pub summary: Value,
}

/// Filters of `GET /api/v1/audit-events`; each left out matches everything.
// `utoipa::IntoParams` spelled out: `params(…)` expands to it, and an import would make
// that an "unnecessary qualification".
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events of this actor (a user's or an API key's id).
    pub actor_id: Option<String>,
    /// Only this action, e.g. `scenario.updated`.
    pub action: Option<String>,
    /// Only events about this kind of object, e.g. `connection`.
    pub target_kind: Option<String>,
    /// Only events about this object.
    pub target_id: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// `json` (default): a page. `jsonl`: every matching event, one JSON object per line,
    /// for export (paging ignored).
    pub format: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Rows an export reads per query.
const EXPORT_CHUNK: i64 = 1000;

/// The workspace's audit log, newest first.
#[utoipa::path(
    get,
    operation_id = "listAuditEvents",
    path = "/api/v1/audit-events",
    tag = "workspaces",
    security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events, or with `format=jsonl` all of them as JSON Lines", body = List<AuditEventView>),
        (status = 400, description = "A malformed filter, `limit` or `cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let actor = parse_id("actor_id", query.actor_id.as_deref())?;
    let export = match query.format.as_deref() {
        None | Some("" | "json") => false,
        Some("jsonl") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`format` must be `json` or `jsonl`",
            ));
        }
    };
    let filters = Filters {
        actor,
        action: query.action.filter(|text| !text.is_empty()),
        target_kind: query.target_kind.filter(|text| !text.is_empty()),
        target_id: query.target_id.filter(|text| !text.is_empty()),
        since: query.since,
        until: query.until,
    };
    let db = state.pool.get().await?;
    if export {
        let mut lines = String::new();
        let mut cursor = AuditEventId::max();
        loop {
            let events = read(&db, &workspace, &filters, cursor, EXPORT_CHUNK).await?;
            let Some(last) = events.last() else { break };
            cursor = last.id;
            for event in &events {
                lines.push_str(
                    &serde_json::to_string(event).map_err(|e| ApiError::Internal(Box::new(e)))?,
                );
                lines.push('\n');
            }
        }
        return Ok(([(header::CONTENT_TYPE, "application/jsonl")], lines).into_response());
    }
    let page = Page::<AuditEventId>::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let cursor = page.cursor.unwrap_or_else(AuditEventId::max);
    let events = read(&db, &workspace, &filters, cursor, page.fetch()).await?;
    Ok(Json(List::new(events, &page, |event| event.id)).into_response())
}

struct Filters {
    actor: Option<Uuid>,
    action: Option<String>,
    target_kind: Option<String>,
    target_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

async fn read(
    db: &deadpool_postgres::Client,
    workspace: &Workspace,
    filters: &Filters,
    before: AuditEventId,
    limit: i64,
) -> Result<Vec<AuditEventView>, ApiError> {
    let rows = db
        .query(
            "SELECT id, occurred_at, actor_kind, actor_id, client_address, user_agent, action, \
                    target_kind, target_id, summary \
             FROM audit_events \
             WHERE workspace_id = $1 AND id < $2 \
               AND ($3::uuid IS NULL OR actor_id = $3) \
               AND ($4::text IS NULL OR action = $4) \
               AND ($5::text IS NULL OR target_kind = $5) \
               AND ($6::text IS NULL OR target_id = $6) \
               AND ($7::timestamptz IS NULL OR occurred_at >= $7) \
               AND ($8::timestamptz IS NULL OR occurred_at < $8) \
             ORDER BY id DESC LIMIT $9",
            &[
                &workspace.id,
                &before,
                &filters.actor,
                &filters.action,
                &filters.target_kind,
                &filters.target_id,
                &filters.since,
                &filters.until,
                &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("actor_kind")?;
            let id: Option<Uuid> = row.try_get("actor_id")?;
            Ok(AuditEventView {
                id: row.try_get("id")?,
                occurred_at: row.try_get("occurred_at")?,
                actor: ActorView::of(&kind, id).ok_or_else(|| {
                    ApiError::Internal(
                        format!("unknown actor kind `{kind}` in the audit log").into(),
                    )
                })?,
                client_address: row.try_get("client_address")?,
                user_agent: row.try_get("user_agent")?,
                action: row.try_get("action")?,
                target_kind: row.try_get("target_kind")?,
                target_id: row.try_get("target_id")?,
                summary: row.try_get("summary")?,
            })
        })
        .collect()
}
