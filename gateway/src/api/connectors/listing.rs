//! The catalog a workspace sees, read: the `http` connector, the built-ins and its own.

use axum::Json;
use axum::extract::State;
use weft_domain::manifest::{self, HTTP_CONNECTOR};

use super::view::ConnectorView;
use crate::access::Workspace;
use crate::catalog::{
    Connector, registered_columns, registered_from, registered_from_row, resolve,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::paging::{List, PageQuery};
use crate::state::AppState;

/// List the connectors this workspace can use: the built-ins and its own, by key.
#[utoipa::path(
    get,
    operation_id = "listConnectors",
    path = "/api/v1/connectors",
    tag = "connectors",
    security(("api_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of connectors, by key; `cursor` is the last key of the previous page", body = List<ConnectorView>),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<ConnectorView>>, ApiError> {
    let page = query.page::<String>()?;
    let after = page.cursor.clone().unwrap_or_default();
    let mut connectors: Vec<(String, Connector)> = std::iter::once(Connector::Http)
        .chain(manifest::builtins().iter().map(Connector::Builtin))
        .map(|connector| (connector_key(&connector).to_owned(), connector))
        .filter(|(key, _)| *key > after)
        .collect();
    let client = state.pool.get().await?;
    // Byte order ("C"), the order of Rust strings, so pages of both sources interleave.
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            registered_columns!(),
            registered_from!(),
            r#"WHERE c.workspace_id = $1 AND c.deleted_at IS NULL AND c.key COLLATE "C" > $2
               ORDER BY c.key COLLATE "C" LIMIT $3"#
        ))
        .await?;
    let rows = client
        .query(&statement, &[&workspace.id, &after, &page.fetch()])
        .await?;
    for row in &rows {
        let registered = registered_from_row(row)?;
        connectors.push((
            registered.manifest.key.clone(),
            Connector::Registered(Box::new(registered)),
        ));
    }
    connectors.sort_by(|a, b| a.0.cmp(&b.0));
    connectors.truncate(usize::try_from(page.fetch()).unwrap_or(usize::MAX));
    let items = connectors
        .iter()
        .map(|(_, connector)| connector.view(false))
        .collect();
    Ok(Json(List::new(items, &page, |view: &ConnectorView| {
        view.key.clone()
    })))
}

fn connector_key(connector: &Connector) -> &str {
    connector
        .manifest()
        .map_or(HTTP_CONNECTOR, |m| m.key.as_str())
}

/// Read a connector, with its full manifest.
#[utoipa::path(
    get,
    operation_id = "getConnector",
    path = "/api/v1/connectors/{key}",
    tag = "connectors",
    security(("api_key" = [])),
    params(("key" = String, Path, description = "Connector key")),
    responses(
        (status = 200, description = "The connector and its manifest", body = ConnectorView),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    let client = state.pool.get().await?;
    let connector = resolve(&client, workspace.id, &key)
        .await?
        .ok_or(ApiError::NotFound("connector"))?;
    Ok(Json(connector.view(true)))
}
