//! The sweeper: nothing waits forever (architecture §3.6). Safe on every replica at once: each
//! action goes through the engine, which locks the run and re-checks its state.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use weft_domain::graph::NodeStatus;
use weft_domain::ids::RunId;
use weft_domain::messages::{ErrorClass, NodeError};
use weft_runtime::queue::Publisher;
use weft_runtime::runs;

use crate::engine::{Engine, EngineError};
use crate::store;

/// Rows handled per sweep and kind, so one sweep stays short.
const BATCH: i64 = 500;

pub struct Sweeper {
    pub engine: Arc<Engine>,
    pub publisher: Arc<Publisher>,
    /// A run still `queued` this long is published again.
    pub requeue_after: Duration,
}

impl Sweeper {
    /// One pass over the three kinds of forgotten work.
    pub async fn sweep(&self) -> Result<(), EngineError> {
        self.requeue_forgotten_runs().await?;
        self.expire_nodes().await?;
        self.expire_runs().await?;
        Ok(())
    }

    /// Runs a gateway recorded but never managed to announce (it died between its commit
    /// and its publish). Taking a run up is idempotent, so a duplicate is harmless.
    async fn requeue_forgotten_runs(&self) -> Result<(), EngineError> {
        let client = self.engine.pool().get().await?;
        let statement = client
            .prepare_cached(
                "UPDATE runs SET requeued_at = now() WHERE id IN ( \
                     SELECT id FROM runs \
                     WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1) \
                       AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => $1)) \
                     ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, workspace_id",
            )
            .await?;
        let rows = client
            .query(&statement, &[&self.requeue_after.as_secs_f64(), &BATCH])
            .await?;
        for row in rows {
            let (run_id, workspace_id) = (row.get(0), row.get(1));
            tracing::info!(%run_id, "re-publishing a run left queued");
            runs::announce(&self.publisher, run_id, workspace_id).await?;
        }
        Ok(())
    }

    /// Node attempts with no result by their deadline (a worker vanished, a task was
    /// lost): recorded as timed out, which retries them or fails the node. For a
    /// `for_each` node, each item in flight past its own deadline.
    async fn expire_nodes(&self) -> Result<(), EngineError> {
        let client = self.engine.pool().get().await?;
        let statement = client
            .prepare_cached(
                "SELECT n.run_id, n.workspace_id, n.node_id, n.attempts, n.items FROM node_runs n \
                 JOIN runs r ON r.id = n.run_id AND r.workspace_id = n.workspace_id \
                 WHERE n.status IN ('queued', 'running') AND n.deadline_at < now() AND r.status = 'running' \
                 LIMIT $1",
            )
            .await?;
        let rows = client.query(&statement, &[&BATCH]).await?;
        drop(client);
        let now = Utc::now();
        for row in rows {
            let run_id: RunId = row.get(0);
            let node_id: String = row.get(2);
            let expired: Vec<(Option<u32>, u32)> = match row.get::<_, Option<Value>>(4) {
                None => vec![(None, u32::try_from(row.get::<_, i32>(3)).unwrap_or(0))],
                Some(items) => store::parse_items(items)
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| {
                        matches!(item.record.status, NodeStatus::Queued | NodeStatus::Running)
                            && item.deadline_at.is_some_and(|at| at < now)
                    })
                    .map(|(index, item)| (u32::try_from(index).ok(), item.record.attempts))
                    .collect(),
            };
            for (item_index, attempt) in expired {
                tracing::warn!(%run_id, %node_id, ?item_index, attempt, "node attempt passed its deadline");
                let error =
                    NodeError::new(ErrorClass::Timeout, "no result before the node's deadline");
                self.engine
                    .fail_attempt(run_id, row.get(1), (&node_id, item_index), attempt, error)
                    .await?;
            }
        }
        Ok(())
    }

    async fn expire_runs(&self) -> Result<(), EngineError> {
        let client = self.engine.pool().get().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, workspace_id FROM runs WHERE status = 'running' AND deadline_at < now() LIMIT $1",
            )
            .await?;
        let rows = client.query(&statement, &[&BATCH]).await?;
        drop(client);
        for row in rows {
            let run_id: RunId = row.get(0);
            tracing::warn!(%run_id, "run passed its timeout");
            self.engine.time_out(run_id, row.get(1)).await?;
        }
        Ok(())
    }
}
