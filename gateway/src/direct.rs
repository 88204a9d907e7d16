//! Executing one action now, outside any run: the task takes the path every run's action
//! takes (the tasks queue, a worker), and its result comes back on this process's reply
//! queue ([`crate::replies`]) instead of the results queue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use weft_domain::ids::{RunId, WorkspaceId};
use weft_domain::messages::{self, ActionCall, NodeResult, NodeTask};
use weft_domain::scenario::DEFAULT_NODE_TIMEOUT;
use weft_runtime::config::parse_duration;

use crate::error::ApiError;
use crate::replies::Reply;
use crate::state::AppState;

/// Time a directly executed action may take beyond its own timeout: queueing, and an
/// OAuth token refresh before the request.
const REPLY_MARGIN: Duration = Duration::from_secs(10);

/// An action's own timeout (checked at registration), or the default.
pub(crate) fn action_timeout(timeout: Option<&str>) -> Duration {
    timeout
        .and_then(|text| parse_duration(text).ok())
        .unwrap_or(DEFAULT_NODE_TIMEOUT)
}

/// One call to run through a worker.
pub(crate) struct Call<'a> {
    pub connector: &'a str,
    pub action: &'a str,
    pub input: Value,
    /// `None` for `http.request`, whose input is the request.
    pub call: Option<ActionCall>,
    pub timeout: Duration,
    /// Not before this instant (a rate-limit slot).
    pub not_before: Option<DateTime<Utc>>,
}

/// Sends the call to the workers as a one-node run of its own and waits for the result.
pub(crate) async fn dispatch(
    state: &AppState,
    workspace: WorkspaceId,
    call: Call<'_>,
) -> Result<NodeResult, ApiError> {
    let now = Utc::now();
    let delay = call
        .not_before
        .and_then(|at| (at - now).to_std().ok())
        .unwrap_or_default();
    let task = NodeTask {
        v: messages::VERSION,
        run_id: RunId::generate(),
        workspace_id: workspace,
        node_id: "execute".to_owned(),
        item_index: None,
        attempt: 1,
        connector: call.connector.to_owned(),
        action: call.action.to_owned(),
        input: call.input,
        timeout_ms: u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX),
        ready_at: now,
        not_before: call.not_before.filter(|_| !delay.is_zero()),
        call: call.call.map(Box::new),
        reply_to: None,
    };
    execute(state, task, call.timeout + delay + REPLY_MARGIN).await
}

/// Runs one task through the workers, as the scheduler would dispatch it, and waits up to
/// `wait` for its result on this process's reply queue.
async fn execute(
    state: &AppState,
    mut task: NodeTask,
    wait: Duration,
) -> Result<NodeResult, ApiError> {
    if !state.replies.until_ready().await {
        return Err(ApiError::BrokerUnavailable);
    }
    task.reply_to = Some(state.replies.queue().to_owned());
    let pending = state.replies.expect(task.run_id);
    let (exchange, routing_key) = state.publisher.topology().route_task(&task, Utc::now());
    if let Err(e) = state
        .publisher
        .publish(&exchange, &routing_key, &task)
        .await
    {
        tracing::warn!(run_id = %task.run_id, error = %e, "direct execution not enqueued: broker unavailable");
        return Err(ApiError::BrokerUnavailable);
    }
    match pending.wait(wait).await {
        Some(Reply::Result(result)) => Ok(result),
        Some(Reply::Finished(_)) => Err(ApiError::Internal(
            "a run's end was replied for a direct execution".into(),
        )),
        None => Err(ApiError::Timeout(format!(
            "no worker answered within {}s: check that workers are running and the broker is healthy (a worker that takes the task up later still runs it)",
            wait.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_timeout_is_its_own_or_the_default() {
        assert_eq!(action_timeout(Some("5s")), Duration::from_secs(5));
        assert_eq!(action_timeout(None), DEFAULT_NODE_TIMEOUT);
    }
}
