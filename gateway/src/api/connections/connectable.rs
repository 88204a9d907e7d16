//! What a connector key makes a connection for: its manifest, or why there is none.

use deadpool_postgres::GenericClient;
use weft_domain::ids::WorkspaceId;
use weft_domain::manifest::Manifest;

use super::checks::{FieldProblem, problem};
use crate::catalog::{self, Connector};
use crate::error::ApiError;

/// What a connection of a connector key would be made for.
pub(super) enum Connectable {
    Manifest(Box<Manifest>),
    /// Neither built in nor registered in this workspace.
    Unknown,
    /// The `http` connector, which takes no connection.
    Http,
}

impl Connectable {
    /// The manifest, or the problem on `connector` that says why there is none.
    pub(super) fn manifest(self, key: &str) -> Result<Manifest, FieldProblem> {
        match self {
            Self::Manifest(manifest) => Ok(*manifest),
            Self::Unknown => Err(problem(
                "connector",
                format!(
                    "unknown connector `{key}`: it is neither built in nor registered in this workspace"
                ),
            )),
            Self::Http => Err(problem(
                "connector",
                "the http connector takes no connection: put headers and credentials in each request's input",
            )),
        }
    }
}

/// What a connection of `key` in `workspace` is made for.
pub(super) async fn connectable(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    key: &str,
) -> Result<Connectable, ApiError> {
    Ok(match catalog::resolve(client, workspace, key).await? {
        None => Connectable::Unknown,
        Some(Connector::Http) => Connectable::Http,
        Some(connector) => Connectable::Manifest(Box::new(
            connector
                .manifest()
                .cloned()
                .expect("every connector but http has a manifest"),
        )),
    })
}
