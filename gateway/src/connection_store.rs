//! The connections the gateway makes calls through (direct executions, connection
//! tests): loaded with their credentials still sealed, checked to be usable for a
//! connector, and marked used with what the worker learned about them.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{Manifest, RateLimit};
use weft_domain::messages::{ConnectionUpdate, SealedConnection};

use crate::error::ApiError;
use crate::state::AppState;

/// A connection as the gateway uses it to make calls.
pub(crate) struct StoredConnection {
    pub id: ConnectionId,
    pub connector: String,
    pub config: Value,
    pub credentials: Option<String>,
    pub credential_fields: Vec<String>,
    pub status: String,
    pub rate_limit: Option<RateLimit>,
}

impl StoredConnection {
    /// The connection as a task carries it: credentials still sealed.
    pub(crate) fn sealed(self) -> SealedConnection {
        SealedConnection {
            id: self.id,
            config: self.config,
            credentials: self.credentials,
        }
    }
}

/// The connection `id` of `workspace`, if it exists.
pub(crate) async fn load(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    id: ConnectionId,
) -> Result<Option<StoredConnection>, ApiError> {
    let statement = client
        .prepare_cached(
            "SELECT id, connector, config, credentials, credential_fields, status, rate_limit
             FROM connections WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&id, &workspace]).await? else {
        return Ok(None);
    };
    let rate_limit: Option<Value> = row.try_get("rate_limit")?;
    Ok(Some(StoredConnection {
        id: row.try_get("id")?,
        connector: row.try_get("connector")?,
        config: row.try_get("config")?,
        credentials: row.try_get("credentials")?,
        credential_fields: row.try_get("credential_fields")?,
        status: row.try_get("status")?,
        rate_limit: rate_limit.and_then(|value| serde_json::from_value(value).ok()),
    }))
}

/// Records that a call was made through connection `id`, and what the worker learned about
/// it: refreshed tokens are stored, a refused refresh marks it `error`.
pub(crate) async fn record_use(
    state: &AppState,
    workspace: WorkspaceId,
    id: ConnectionId,
    update: Option<&ConnectionUpdate>,
) -> Result<(), ApiError> {
    let update = update.filter(|update| {
        let ours = update.id == id;
        if !ours {
            tracing::warn!(connection_id = %id, other = %update.id, "a result updated another connection than the one called; ignored");
        }
        ours
    });
    let credentials = update.and_then(|u| u.credentials.as_deref());
    let error = update.and_then(|u| u.error.as_deref());
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "UPDATE connections SET last_used_at = now(),
                 credentials = COALESCE($3, credentials),
                 status = CASE WHEN $4::text IS NULL THEN status ELSE 'error' END,
                 last_error = COALESCE($4, last_error),
                 updated_at = CASE WHEN $3::text IS NULL AND $4::text IS NULL THEN updated_at ELSE now() END
             WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    client
        .execute(&statement, &[&id, &workspace, &credentials, &error])
        .await?;
    Ok(())
}

/// A connection that can make calls for `manifest`'s connector.
pub(crate) async fn usable_connection(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    id: ConnectionId,
    manifest: &Manifest,
) -> Result<StoredConnection, ApiError> {
    let connection = load(client, workspace, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    if connection.connector != manifest.key {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "connection {id} belongs to connector `{}`, not `{}`",
                connection.connector, manifest.key
            ),
        ));
    }
    if connection.status == "pending" {
        return Err(ApiError::Conflict {
            code: "connection_pending",
            message: format!(
                "connection {id} is not authorized yet: finish its OAuth flow at GET /api/v1/oauth/{}/start?connection_id={id}",
                manifest.key
            ),
        });
    }
    Ok(connection)
}
