//! Publishing node tasks: straight to the workers, or through the delay tiers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use weft_domain::graph::Dispatch;
use weft_domain::messages::{
    BUILTIN_CONNECTOR, DELAY_ACTION, NodeResult, NodeTask, RunFinished, VERSION,
};
use weft_domain::scenario::{NodeKind, Scenario};
use weft_runtime::queue::{Publisher, QueueError};

use crate::store::Run;

/// Attempts at publishing one task before the message that caused it is given back.
const PUBLISH_ATTEMPTS: u32 = 3;

/// What a handler publishes after its commit.
#[derive(Default)]
pub struct Next {
    pub tasks: Vec<NodeTask>,
    /// Attempts refused before dispatch, recorded as their failed results.
    pub refused: Vec<NodeResult>,
    /// The end of a run a gateway waits for, and its reply queue.
    pub reply: Option<(String, RunFinished)>,
}

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

    /// Publishes every task, and every attempt refused before dispatch as its failed
    /// result, with confirms in flight together.
    pub async fn send(&self, next: &Next) -> Result<(), QueueError> {
        let results = self.publisher.topology().results();
        let refused = try_join_all(
            next.refused
                .iter()
                .map(|result| self.publisher.publish(&results, &results, result)),
        );
        let tasks = try_join_all(next.tasks.iter().map(|task| self.send_one(task)));
        futures_util::future::try_join(refused, tasks).await?;
        if let Some((queue, finished)) = &next.reply {
            match self.publisher.publish("", queue, finished).await {
                // The gateway that waited is gone; its sender got a 202 on its time-out.
                Ok(()) | Err(QueueError::Unroutable(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, run_id = %finished.run_id, "could not send a run's end to the gateway waiting for it")
                }
            }
        }
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
