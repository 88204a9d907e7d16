//! Publishing node tasks: straight to the workers, or through the delay tiers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use weft_shared::graph::Dispatch;
use weft_shared::messages::{BUILTIN_CONNECTOR, DELAY_ACTION, NodeTask, VERSION};
use weft_shared::queue::{Publisher, QueueError};
use weft_shared::scenario::{NodeKind, Scenario};

use crate::store::Run;

/// Attempts at publishing one task before the message that caused it is given back.
const PUBLISH_ATTEMPTS: u32 = 3;

pub struct Dispatcher {
    publisher: Arc<Publisher>,
}

impl Dispatcher {
    pub fn new(publisher: Arc<Publisher>) -> Self {
        Self { publisher }
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// The task for one dispatch decision: a connector action, or a delay node's
    /// built-in `weft.delay`, due when the wait is over.
    pub fn task(
        run: &Run,
        scenario: &Scenario,
        dispatch: &Dispatch,
        now: DateTime<Utc>,
    ) -> Option<NodeTask> {
        let node = scenario.node(&dispatch.node_id)?;
        let (connector, action) = match &node.kind {
            NodeKind::Action {
                connector, action, ..
            } => (connector.as_str(), action.as_str()),
            NodeKind::Delay { .. } => (BUILTIN_CONNECTOR, DELAY_ACTION),
            _ => return None,
        };
        let not_before = (!dispatch.delay.is_zero()).then(|| {
            chrono::Duration::from_std(dispatch.delay)
                .ok()
                .and_then(|delay| now.checked_add_signed(delay))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        });
        Some(NodeTask {
            v: VERSION,
            run_id: run.id,
            workspace_id: run.workspace_id,
            node_id: node.id.clone(),
            item_index: dispatch.item_index,
            attempt: dispatch.attempt,
            connector: connector.to_owned(),
            action: action.to_owned(),
            input: dispatch.input.clone(),
            timeout_ms: u64::try_from(dispatch.timeout.as_millis()).unwrap_or(u64::MAX),
            ready_at: not_before.unwrap_or(now),
            not_before,
            call: None,
            reply_to: None,
        })
    }

    /// Publishes every task with confirms in flight together.
    pub async fn send(&self, tasks: &[NodeTask]) -> Result<(), QueueError> {
        try_join_all(tasks.iter().map(|task| self.send_one(task))).await?;
        Ok(())
    }

    async fn send_one(&self, task: &NodeTask) -> Result<(), QueueError> {
        let mut attempt = 1;
        loop {
            let (exchange, routing_key) = self.publisher.topology().route_task(task, Utc::now());
            match self.publisher.publish(&exchange, &routing_key, task).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= PUBLISH_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "publishing a task failed; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }
}
