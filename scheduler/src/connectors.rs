//! Connector actions at dispatch (architecture §6): the manifest version the run pinned, the
//! connection's sealed credentials, the input checked against the action's schema, and a
//! fleet-wide rate-limit slot. A task that cannot be sent (unknown action, missing
//! connection, invalid input) becomes a permanent failure recorded like a worker's result,
//! so nothing is ever called upstream for it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use quick_cache::sync::Cache;
use serde_json::Value;
use uuid::Uuid;
use weft_domain::ids::{ConnectionId, ConnectorVersionId, WorkspaceId};
use weft_domain::manifest::{
    self, Action, HTTP_CONNECTOR, InputSchemas, Manifest, RateLimit, RequestSpec, ResponseSpec,
};
use weft_domain::messages::{
    ActionCall, BUILTIN_CONNECTOR, ErrorClass, NodeError, NodeResult, NodeTask, Outcome,
    SealedConnection,
};
use weft_domain::scenario::{NodeKind, Scenario};
use weft_runtime::rate_limit::{limit_of, reserve_slot};

use crate::dispatch::Next;
use crate::store::{DbError, Run};

/// Why a task cannot be sent. It is recorded as the attempt's permanent failure (for a
/// poll, as the poll's error), so nothing is called upstream for it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("connector `{0}` is not registered in this workspace")]
    UnknownConnector(String),
    #[error("connector `{connector}` has no action `{action}`")]
    UnknownAction { connector: String, action: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("connection `{0}` is not a connection id")]
    NotAConnectionId(String),
    #[error("connector `{connector}` needs a connection: set `connection` on {set_on}")]
    ConnectionNeeded {
        connector: String,
        set_on: &'static str,
    },
    #[error("connection {id} of connector `{connector}` does not exist in this workspace")]
    NoSuchConnection { id: ConnectionId, connector: String },
    #[error("connection {0} is not authorized yet: finish its OAuth flow")]
    ConnectionPending(ConnectionId),
}

/// A call that could not be prepared: refused (the task fails), or the database failed
/// (the message being handled is redelivered).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for CallError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Custom manifest versions kept in memory before the cache starts over.
const VERSION_CACHE_SIZE: usize = 10_000;

/// A manifest found for a run or a poll: built-ins live as long as the process.
pub enum Found {
    Builtin(&'static Manifest),
    Custom(Arc<Manifest>),
}

impl std::ops::Deref for Found {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        match self {
            Self::Builtin(manifest) => manifest,
            Self::Custom(manifest) => manifest,
        }
    }
}

/// Resolves connector actions for tasks; versions are immutable, so they are cached.
pub struct Connectors {
    versions: Cache<ConnectorVersionId, Arc<Manifest>>,
    input_schemas: InputSchemas,
}

impl Default for Connectors {
    fn default() -> Self {
        Self {
            versions: Cache::new(VERSION_CACHE_SIZE),
            input_schemas: InputSchemas::default(),
        }
    }
}

/// What a call goes through: its connection, and the rate-limit key and slot interval
/// when calls are limited.
struct Through {
    connection: Option<SealedConnection>,
    limit: Option<(String, Duration)>,
}

/// A poll trigger's request, ready for its task.
pub struct PollCall {
    pub call: ActionCall,
    /// The rate limit's slot, when the connection's calls are limited.
    pub not_before: Option<DateTime<Utc>>,
}

/// A connection row, as dispatch needs it.
struct Connection {
    config: Value,
    credentials: Option<String>,
    status: String,
    rate_limit: Option<RateLimit>,
}

/// Whether a connector is a manifest (built-in or the workspace's), not code.
fn is_manifest_connector(connector: &str) -> bool {
    connector != HTTP_CONNECTOR && connector != BUILTIN_CONNECTOR
}

impl Connectors {
    /// The versions a run starting now pins: the current version of each workspace
    /// connector its scenario uses (built-ins ship with the binaries).
    pub async fn pins(
        &self,
        tx: &Transaction<'_>,
        workspace_id: WorkspaceId,
        scenario: &Scenario,
    ) -> Result<Value, DbError> {
        let keys: Vec<&str> = scenario
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                NodeKind::Action { connector, .. }
                    if is_manifest_connector(connector)
                        && manifest::builtin(connector).is_none() =>
                {
                    Some(connector.as_str())
                }
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if keys.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        let statement = tx
            .prepare_cached(
                "SELECT c.key, v.id FROM connectors c \
                 JOIN connector_versions v ON v.workspace_id = c.workspace_id AND v.key = c.key \
                                          AND v.version = c.current_version \
                 WHERE c.workspace_id = $1 AND c.key = ANY($2) AND c.deleted_at IS NULL",
            )
            .await?;
        let rows = tx.query(&statement, &[&workspace_id, &keys]).await?;
        Ok(Value::Object(
            rows.iter()
                .map(|row| {
                    let id: Uuid = row.get(1);
                    (row.get::<_, String>(0), Value::from(id.to_string()))
                })
                .collect(),
        ))
    }

    /// Completes the tasks of manifest connectors: what to call, with which connection,
    /// not before the rate limit allows.
    pub async fn resolve(
        &self,
        tx: &Transaction<'_>,
        run: &Run,
        scenario: &Scenario,
        tasks: Vec<NodeTask>,
        now: DateTime<Utc>,
    ) -> Result<Next, DbError> {
        let mut resolved = Next::default();
        let mut limited = Vec::new();
        for mut task in tasks {
            if !is_manifest_connector(&task.connector) {
                resolved.tasks.push(task);
                continue;
            }
            match self.call_for(tx, run, scenario, &mut task).await {
                Ok(limit) => {
                    if let Some(limit) = limit {
                        limited.push((limit, resolved.tasks.len()));
                    }
                    resolved.tasks.push(task);
                }
                Err(CallError::Refused(refused)) => {
                    resolved
                        .refused
                        .push(refusal(&task, refused.to_string(), now));
                }
                Err(CallError::Db(e)) => return Err(e),
            }
        }
        // Slots are reserved in key order so two transactions never wait on each other.
        limited.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        for ((key, interval), index) in limited {
            let slot = reserve_slot(tx, &key, interval).await?;
            let task = &mut resolved.tasks[index];
            if slot > task.not_before.unwrap_or(now) {
                task.not_before = Some(slot);
            }
        }
        Ok(resolved)
    }

    /// Fills `task.call`, and returns the rate-limit key and slot interval when the call
    /// is limited.
    async fn call_for(
        &self,
        tx: &Transaction<'_>,
        run: &Run,
        scenario: &Scenario,
        task: &mut NodeTask,
    ) -> Result<Option<(String, Duration)>, CallError> {
        let Some(manifest) = self.manifest(tx, run, &task.connector).await? else {
            return Err(Refusal::UnknownConnector(task.connector.clone()).into());
        };
        let Some(action) = manifest.action(&task.action) else {
            return Err(Refusal::UnknownAction {
                connector: task.connector.clone(),
                action: task.action.clone(),
            }
            .into());
        };
        if let Err(problem) = self.input_schemas.check(&action.input_schema, &task.input) {
            return Err(Refusal::InvalidInput(problem).into());
        }
        let connection_id = match scenario.node(&task.node_id).map(|node| &node.kind) {
            Some(NodeKind::Action {
                connection: Some(id),
                ..
            }) => Some(parse_connection_id(id)?),
            _ => None,
        };
        let through = self
            .through(tx, run.workspace_id, &manifest, connection_id, "the node")
            .await?;
        task.call = Some(Box::new(ActionCall::new(
            &manifest,
            action,
            through.connection,
        )));
        Ok(through.limit)
    }

    /// The connection a call of `manifest` goes through, and its rate limit (`set_on`
    /// names where `connection` is set, for the refusal).
    async fn through(
        &self,
        tx: &Transaction<'_>,
        workspace_id: WorkspaceId,
        manifest: &Manifest,
        connection_id: Option<ConnectionId>,
        set_on: &'static str,
    ) -> Result<Through, CallError> {
        let Some(connection_id) = connection_id else {
            if manifest.auth != manifest::Auth::None {
                return Err(Refusal::ConnectionNeeded {
                    connector: manifest.key.clone(),
                    set_on,
                }
                .into());
            }
            return Ok(Through {
                connection: None,
                limit: limit_of(workspace_id, manifest, None),
            });
        };
        let Some(connection) =
            load_connection(tx, workspace_id, connection_id, &manifest.key).await?
        else {
            return Err(Refusal::NoSuchConnection {
                id: connection_id,
                connector: manifest.key.clone(),
            }
            .into());
        };
        if connection.status == "pending" {
            return Err(Refusal::ConnectionPending(connection_id).into());
        }
        let limit = limit_of(
            workspace_id,
            manifest,
            Some((connection_id, connection.rate_limit.as_ref())),
        );
        Ok(Through {
            connection: Some(SealedConnection {
                id: connection_id,
                config: connection.config,
                credentials: connection.credentials,
            }),
            limit,
        })
    }

    /// The manifest a poll of `key` reads with, and its version id (`None` for a
    /// built-in): the workspace's version `version`, or its current one when `None`.
    pub async fn poll_manifest(
        &self,
        tx: &Transaction<'_>,
        workspace_id: WorkspaceId,
        key: &str,
        version: Option<ConnectorVersionId>,
    ) -> Result<Option<(Option<ConnectorVersionId>, Found)>, DbError> {
        if let Some(builtin) = manifest::builtin(key) {
            return Ok(Some((None, Found::Builtin(builtin))));
        }
        let version_id = match version {
            Some(id) => id,
            None => {
                let statement = tx
                    .prepare_cached(
                        "SELECT v.id FROM connectors c \
                         JOIN connector_versions v ON v.workspace_id = c.workspace_id AND v.key = c.key \
                                                  AND v.version = c.current_version \
                         WHERE c.workspace_id = $1 AND c.key = $2 AND c.deleted_at IS NULL",
                    )
                    .await?;
                match tx.query_opt(&statement, &[&workspace_id, &key]).await? {
                    Some(row) => row.get(0),
                    None => return Ok(None),
                }
            }
        };
        Ok(self
            .version(tx, workspace_id, version_id)
            .await?
            .map(|manifest| (Some(version_id), Found::Custom(manifest))))
    }

    /// A poll trigger's `request` through `connection_id`, as a task carries it, with its
    /// rate-limit slot reserved.
    pub async fn poll_call(
        &self,
        tx: &Transaction<'_>,
        workspace_id: WorkspaceId,
        manifest: &Manifest,
        request: &RequestSpec,
        connection_id: Option<ConnectionId>,
    ) -> Result<PollCall, CallError> {
        let through = self
            .through(tx, workspace_id, manifest, connection_id, "the trigger")
            .await?;
        // The trigger's request, called like an action whose output is the whole
        // response: the poll reads its items out of it.
        let action = Action {
            key: String::new(),
            name: String::new(),
            description: None,
            input_schema: Value::Null,
            output_schema: Value::Null,
            request: request.clone(),
            response: ResponseSpec::default(),
            idempotency: None,
        };
        let not_before = match through.limit {
            Some((key, interval)) => Some(reserve_slot(tx, &key, interval).await?),
            None => None,
        };
        Ok(PollCall {
            call: ActionCall::new(manifest, &action, through.connection),
            not_before,
        })
    }

    /// The manifest of `key` for this run: a built-in, or the version the run pinned.
    async fn manifest(
        &self,
        tx: &Transaction<'_>,
        run: &Run,
        key: &str,
    ) -> Result<Option<Found>, DbError> {
        if let Some(builtin) = manifest::builtin(key) {
            return Ok(Some(Found::Builtin(builtin)));
        }
        let Some(version_id) = run
            .connector_pins
            .get(key)
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<ConnectorVersionId>().ok())
        else {
            return Ok(None);
        };
        Ok(self
            .version(tx, run.workspace_id, version_id)
            .await?
            .map(Found::Custom))
    }

    /// A workspace connector's version, from the cache or the database.
    async fn version(
        &self,
        tx: &Transaction<'_>,
        workspace_id: WorkspaceId,
        version_id: ConnectorVersionId,
    ) -> Result<Option<Arc<Manifest>>, DbError> {
        if let Some(found) = self.versions.get(&version_id) {
            return Ok(Some(found));
        }
        let statement = tx
            .prepare_cached(
                "SELECT manifest FROM connector_versions WHERE id = $1 AND workspace_id = $2",
            )
            .await?;
        let Some(row) = tx
            .query_opt(&statement, &[&version_id, &workspace_id])
            .await?
        else {
            return Ok(None);
        };
        // Checked when it was registered; a version that no longer parses is unusable.
        let Ok(parsed) = serde_json::from_value::<Manifest>(row.get(0)) else {
            return Ok(None);
        };
        let parsed = Arc::new(parsed);
        self.versions.insert(version_id, parsed.clone());
        Ok(Some(parsed))
    }
}

/// A connection id as a scenario writes it (a string).
pub fn parse_connection_id(text: &str) -> Result<ConnectionId, Refusal> {
    text.parse()
        .map_err(|_| Refusal::NotAConnectionId(text.to_owned()))
}

async fn load_connection(
    tx: &Transaction<'_>,
    workspace_id: WorkspaceId,
    id: ConnectionId,
    connector: &str,
) -> Result<Option<Connection>, DbError> {
    // One round trip: the read, and `last_used_at` moved on when it is over 10 seconds
    // old, so it is written at most that often per connection (the read sees the row as
    // it was, which is all it needs).
    let statement = tx
        .prepare_cached(
            "WITH touched AS (UPDATE connections SET last_used_at = now() \
                 WHERE id = $1 AND workspace_id = $2 AND connector = $3 \
                   AND (last_used_at IS NULL OR last_used_at < now() - interval '10 seconds')) \
             SELECT config, credentials, status, rate_limit FROM connections \
             WHERE id = $1 AND workspace_id = $2 AND connector = $3",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&statement, &[&id, &workspace_id, &connector])
        .await?
    else {
        return Ok(None);
    };
    let rate_limit: Option<Value> = row.get(3);
    Ok(Some(Connection {
        config: row.get(0),
        credentials: row.get(1),
        status: row.get(2),
        rate_limit: rate_limit.and_then(|value| serde_json::from_value(value).ok()),
    }))
}

/// A permanent failure of the task's attempt, recorded through the results queue.
fn refusal(task: &NodeTask, message: String, now: DateTime<Utc>) -> NodeResult {
    task.result(
        now,
        now,
        Outcome::Failure {
            error: NodeError::new(ErrorClass::Permanent, message),
        },
    )
}
