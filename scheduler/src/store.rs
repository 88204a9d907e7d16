//! The PostgreSQL adapter for runs and node runs. Every query is scoped to a workspace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::try_join_all;
use quick_cache::sync::Cache;
use serde_json::Value;
use weft_domain::graph::{AttemptRecord, ItemState, NodeState, NodeStatus, RunState};
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::messages::{ConnectionUpdate, NodeError};
use weft_domain::run::{RunStatus, UnknownRunStatus};
use weft_domain::scenario::{Catalog, Invalid, Scenario};

pub use weft_runtime::db::DbError;

/// A run row, locked for the current transaction.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub scenario_id: ScenarioId,
    pub version: i32,
    pub status: RunStatus,
    pub trigger: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// The run this one replays: it starts from the node runs recorded with it.
    pub replay_of: Option<RunId>,
    /// Workspace connector key → the manifest version id the run started with.
    pub connector_pins: Value,
    /// The reply queue of the gateway waiting for this run's end, if one is.
    pub reply_to: Option<String>,
    /// A test run: left out of the run metrics.
    pub test: bool,
    /// Bumped by every write of the run's node rows: tells whether a cached state is current.
    pub revision: i64,
}

/// Locks a run row (architecture §3.4: results of one run are serialized).
pub async fn lock_run(
    tx: &Transaction<'_>,
    run_id: RunId,
    workspace_id: WorkspaceId,
) -> Result<Option<Run>, DbError> {
    let statement = tx
        .prepare_cached(
            "SELECT scenario_id, version, status, trigger, created_at, started_at, replay_of, connector_pins, reply_to, \
                    trigger_kind = 'test', revision \
             FROM runs WHERE id = $1 AND workspace_id = $2 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&statement, &[&run_id, &workspace_id]).await? else {
        return Ok(None);
    };
    let status: &str = row.get(2);
    let status = status
        .parse()
        .map_err(|e: UnknownRunStatus| DbError::Stored {
            column: "runs.status",
            problem: e.to_string(),
        })?;
    Ok(Some(Run {
        id: run_id,
        workspace_id,
        scenario_id: row.get(0),
        version: row.get(1),
        status,
        trigger: row.get(3),
        created_at: row.get(4),
        started_at: row.get(5),
        replay_of: row.get(6),
        connector_pins: row.get(7),
        reply_to: row.get(8),
        test: row.get(9),
        revision: row.get(10),
    }))
}

/// Locks the rows of these runs (`(run, workspace)` pairs) in id order, so that
/// transactions locking overlapping sets wait for each other instead of deadlocking. The
/// statements are pipelined: sent together, run by the server one after the other, in
/// the order sent. (One statement for all, `id = ANY($1)`, was planned as a scan of the
/// table once its cached plan went generic.) Runs that do not exist (in that workspace)
/// are missing from the map.
pub async fn lock_runs(
    tx: &Transaction<'_>,
    keys: &[(RunId, WorkspaceId)],
) -> Result<HashMap<RunId, Run>, DbError> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let locked = try_join_all(
        keys.iter()
            .map(|(run_id, workspace_id)| lock_run(tx, *run_id, *workspace_id)),
    )
    .await?;
    Ok(locked
        .into_iter()
        .flatten()
        .map(|run| (run.id, run))
        .collect())
}

pub async fn start_run(
    tx: &Transaction<'_>,
    run: &Run,
    now: DateTime<Utc>,
    timeout: Duration,
) -> Result<(), DbError> {
    let deadline = now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let statement = tx
        .prepare_cached(
            "UPDATE runs SET status = 'running', started_at = $3, deadline_at = $4, connector_pins = $5 \
             WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &run.id,
            &run.workspace_id,
            &now,
            &deadline,
            &run.connector_pins,
        ],
    )
    .await?;
    Ok(())
}

pub async fn finish_run(
    tx: &Transaction<'_>,
    run: &Run,
    status: RunStatus,
    error: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let statement = tx
        .prepare_cached(
            "UPDATE runs SET status = $3, error = $4, finished_at = $5, deadline_at = NULL \
             WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    tx.execute(
        &statement,
        &[&run.id, &run.workspace_id, &status.as_str(), &error, &now],
    )
    .await?;
    Ok(())
}

/// The error recorded on a failed run: the failing node and its error.
pub fn run_error(node: &str, error: &NodeError) -> Value {
    let mut value = serde_json::to_value(error).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("node".into(), Value::from(node));
        fields.insert(
            "message".into(),
            Value::from(format!("node `{node}` failed: {}", error.message)),
        );
    }
    value
}

pub async fn load_nodes(tx: &Transaction<'_>, run: &Run) -> Result<RunState, DbError> {
    let statement = tx
        .prepare_cached(
            "SELECT node_id, status, attempts, input, output, raw_output, error, port, queued_at, started_at, finished_at, items, rate_limited \
             FROM node_runs WHERE run_id = $1 AND workspace_id = $2",
        )
        .await?;
    let rows = tx.query(&statement, &[&run.id, &run.workspace_id]).await?;
    let mut state = RunState::default();
    for row in rows {
        let error: Option<Value> = row.get(6);
        let items: Option<Value> = row.get(11);
        let node = NodeState {
            record: AttemptRecord {
                status: NodeStatus::parse(row.get(1)).unwrap_or(NodeStatus::Failed),
                attempts: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                rate_limited: u32::try_from(row.get::<_, i32>(12)).unwrap_or(0),
                input: row.get(3),
                output: row.get(4),
                raw_output: row.get(5),
                error: error.and_then(|e| serde_json::from_value(e).ok()),
                queued_at: row.get(8),
                started_at: row.get(9),
                finished_at: row.get(10),
            },
            port: row.get(7),
            items: items.map(parse_items),
            changed: false,
        };
        state.nodes.insert(row.get(0), node);
    }
    Ok(state)
}

/// Makes a state just written equal to what [`load_nodes`] would read back, so it can be
/// kept for the run's next result: nothing is left to write, and times have the
/// database's microsecond precision (item times are inside JSON and keep theirs).
pub fn as_stored(state: &mut RunState) {
    let micros = |time: &mut Option<DateTime<Utc>>| {
        if let Some(t) = time {
            *t = t.trunc_subsecs(6);
        }
    };
    for node in state.nodes.values_mut() {
        node.changed = false;
        micros(&mut node.record.queued_at);
        micros(&mut node.record.started_at);
        micros(&mut node.record.finished_at);
    }
}

/// The items of a `for_each` node as stored. (An item that does not parse, which only a
/// hand-edited row could hold, reads as failed.)
pub fn parse_items(items: Value) -> Vec<ItemState> {
    let Value::Array(items) = items else {
        return Vec::new();
    };
    items
        .into_iter()
        .map(|item| {
            serde_json::from_value(item).unwrap_or_else(|e| ItemState {
                record: AttemptRecord {
                    status: NodeStatus::Failed,
                    error: Some(NodeError::new(
                        weft_domain::messages::ErrorClass::Permanent,
                        format!("unreadable item state: {e}"),
                    )),
                    ..AttemptRecord::pending(None)
                },
                deadline_at: None,
            })
        })
        .collect()
}

/// Writes the nodes that changed and bumps the run's revision, in one statement; says
/// whether anything was written. `deadlines` holds the deadline of each node dispatched
/// in this step; a `for_each` node's deadline is the earliest of its items in flight
/// (each item carries its own).
pub async fn save_nodes(
    tx: &Transaction<'_>,
    run: &Run,
    scenario: &Scenario,
    state: &RunState,
    deadlines: &HashMap<String, DateTime<Utc>>,
) -> Result<bool, DbError> {
    let changed: Vec<(&String, &NodeState)> =
        state.nodes.iter().filter(|(_, n)| n.changed).collect();
    if changed.is_empty() {
        return Ok(false);
    }
    let mut ids = Vec::with_capacity(changed.len());
    let mut positions = Vec::with_capacity(changed.len());
    let mut statuses = Vec::with_capacity(changed.len());
    let mut attempts = Vec::with_capacity(changed.len());
    let mut rate_limited = Vec::with_capacity(changed.len());
    let mut inputs = Vec::with_capacity(changed.len());
    let mut outputs = Vec::with_capacity(changed.len());
    let mut raw_outputs = Vec::with_capacity(changed.len());
    let mut errors = Vec::with_capacity(changed.len());
    let mut ports = Vec::with_capacity(changed.len());
    let mut queued = Vec::with_capacity(changed.len());
    let mut started = Vec::with_capacity(changed.len());
    let mut finished = Vec::with_capacity(changed.len());
    let mut deadline = Vec::with_capacity(changed.len());
    let mut items = Vec::with_capacity(changed.len());
    for (id, node) in changed {
        let position = scenario.nodes.iter().position(|n| &n.id == id).unwrap_or(0);
        ids.push(id.as_str());
        positions.push(i32::try_from(position).unwrap_or(i32::MAX));
        statuses.push(node.record.status.as_str());
        attempts.push(i32::try_from(node.record.attempts).unwrap_or(i32::MAX));
        rate_limited.push(i32::try_from(node.record.rate_limited).unwrap_or(i32::MAX));
        inputs.push(node.record.input.clone());
        outputs.push(node.record.output.clone());
        raw_outputs.push(node.record.raw_output.clone());
        errors.push(
            node.record
                .error
                .as_ref()
                .and_then(|e| serde_json::to_value(e).ok()),
        );
        ports.push(node.port.as_deref());
        queued.push(node.record.queued_at);
        started.push(node.record.started_at);
        finished.push(node.record.finished_at);
        let in_flight = matches!(node.record.status, NodeStatus::Queued | NodeStatus::Running);
        deadline.push(match &node.items {
            _ if !in_flight => None,
            Some(items) => items
                .iter()
                .filter(|item| {
                    matches!(item.record.status, NodeStatus::Queued | NodeStatus::Running)
                })
                .filter_map(|item| item.deadline_at)
                .min(),
            None => deadlines.get(id).copied(),
        });
        items.push(
            node.items
                .as_ref()
                .and_then(|items| serde_json::to_value(items).ok()),
        );
    }
    let statement = tx
        .prepare_cached(
            "WITH bump AS (UPDATE runs SET revision = revision + 1 WHERE id = $1 AND workspace_id = $2) \
             INSERT INTO node_runs (run_id, workspace_id, node_id, position, status, attempts, input, output, raw_output, \
                                    error, port, queued_at, started_at, finished_at, deadline_at, items, rate_limited) \
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::int[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[], \
                                          $9::jsonb[], $10::jsonb[], $11::text[], $12::timestamptz[], \
                                          $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::jsonb[], \
                                          $17::int[]) \
             ON CONFLICT (run_id, node_id) DO UPDATE SET \
                 status = EXCLUDED.status, attempts = EXCLUDED.attempts, input = EXCLUDED.input, \
                 output = EXCLUDED.output, raw_output = EXCLUDED.raw_output, error = EXCLUDED.error, \
                 port = EXCLUDED.port, queued_at = EXCLUDED.queued_at, started_at = EXCLUDED.started_at, \
                 finished_at = EXCLUDED.finished_at, items = EXCLUDED.items, rate_limited = EXCLUDED.rate_limited, \
                 deadline_at = COALESCE(EXCLUDED.deadline_at, CASE WHEN EXCLUDED.status IN ('queued', 'running') \
                                                                    THEN node_runs.deadline_at END)",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &run.id,
            &run.workspace_id,
            &ids,
            &positions,
            &statuses,
            &attempts,
            &inputs,
            &outputs,
            &raw_outputs,
            &errors,
            &ports,
            &queued,
            &started,
            &finished,
            &deadline,
            &items,
            &rate_limited,
        ],
    )
    .await?;
    Ok(true)
}

/// The gateway checked every action against the workspace's connectors when the version
/// was saved; whether one is still usable is decided at dispatch, per run.
struct CheckedAtSave;

impl Catalog for CheckedAtSave {
    fn check_action(&self, _connector: &str, _action: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Immutable scenario versions, parsed once per process.
pub struct Definitions {
    cache: Cache<(ScenarioId, i32), Arc<Scenario>>,
}

/// Versions kept in memory; past that the least useful are evicted.
const DEFINITION_CACHE_SIZE: usize = 10_000;

impl Default for Definitions {
    fn default() -> Self {
        Self {
            cache: Cache::new(DEFINITION_CACHE_SIZE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("scenario version not found")]
    Missing,
    #[error("the stored scenario version is no longer valid: {0}")]
    Invalid(#[from] Invalid),
}

impl Definitions {
    pub async fn get(
        &self,
        tx: &Transaction<'_>,
        run: &Run,
    ) -> Result<Arc<Scenario>, DefinitionError> {
        let key = (run.scenario_id, run.version);
        if let Some(found) = self.cache.get(&key) {
            return Ok(found);
        }
        let statement = tx
            .prepare_cached(
                "SELECT definition FROM scenario_versions WHERE workspace_id = $1 AND scenario_id = $2 AND version = $3",
            )
            .await
            .map_err(DbError::from)?;
        let row = tx
            .query_opt(
                &statement,
                &[&run.workspace_id, &run.scenario_id, &run.version],
            )
            .await
            .map_err(DbError::from)?
            .ok_or(DefinitionError::Missing)?;
        let definition: Value = row.get(0);
        let scenario = Arc::new(Scenario::parse(&definition, &CheckedAtSave)?);
        self.cache.insert(key, scenario.clone());
        Ok(scenario)
    }
}

/// Stores what a worker learned about a connection: refreshed tokens make it `active`
/// again, a refused refresh puts it in `error` with the provider's message.
pub async fn update_connection(
    tx: &Transaction<'_>,
    workspace_id: WorkspaceId,
    update: &ConnectionUpdate,
) -> Result<(), DbError> {
    let statement = tx
        .prepare_cached(
            "UPDATE connections SET credentials = COALESCE($3, credentials), \
                 status = CASE WHEN $4::text IS NULL THEN 'active' ELSE 'error' END, \
                 last_error = $4, updated_at = now() \
             WHERE id = $1 AND workspace_id = $2",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &update.id,
            &workspace_id,
            &update.credentials,
            &update.error,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_state_as_stored_has_nothing_to_write_and_microsecond_times() {
        let mut state = RunState::default();
        let mut node = NodeState::pending();
        let time = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        node.record.started_at = Some(time);
        node.record.finished_at = Some(time);
        state.nodes.insert("a".into(), node);
        as_stored(&mut state);
        let node = &state.nodes["a"];
        assert!(!node.changed, "nothing is left to write");
        let stored = Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap();
        assert_eq!(node.record.started_at, Some(stored));
        assert_eq!(node.record.finished_at, Some(stored));
        assert_eq!(node.record.queued_at, None);
    }
}
