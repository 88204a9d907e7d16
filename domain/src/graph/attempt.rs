//! What a node, or one item of a `for_each` node, records of its attempts. A (node,
//! item, attempt) names one task; a result for any other attempt changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::outputs::map_outputs;
use crate::messages::{ErrorClass, NodeError};
use crate::scenario::{Node, NodeKind, OnError};

/// Where a node or an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Pending,
    Queued,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

/// An action node attempt to send to the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub node_id: String,
    /// For a `for_each` node: the item.
    pub item_index: Option<u32>,
    pub attempt: u32,
    pub input: Value,
    /// How long to wait before the attempt (retry backoff, or a delay node's wait).
    pub delay: Duration,
    pub timeout: Duration,
}

/// What a node, or one item of a `for_each` node, records of its attempts. Stored inside
/// an item's JSON as its own fields (hence the names serde skips when empty); a node's
/// fields are columns of its row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// An item is only ever `pending` (not dispatched yet), `queued` (in flight),
    /// `completed`, `failed` or `cancelled`.
    pub status: NodeStatus,
    #[serde(default)]
    pub attempts: u32,
    /// Attempts the upstream answered 429: they do not count against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limited: u32,
    /// The node's `input` as rendered (for an item, with its `item` and `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The result (mapped by `outputs` when the node has them), or the error object of
    /// a failure under `on_error: continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The full result, when `outputs` mapped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<NodeError>,
    /// When it became ready (queued for a worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl AttemptRecord {
    /// Nothing attempted yet.
    pub fn pending(input: Option<Value>) -> Self {
        Self {
            status: NodeStatus::Pending,
            attempts: 0,
            rate_limited: 0,
            input,
            output: None,
            raw_output: None,
            error: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Queued for a worker, or running.
    pub fn is_in_flight(&self) -> bool {
        matches!(self.status, NodeStatus::Queued | NodeStatus::Running)
    }

    /// Whether a result of `attempt` is one this record waits for: the attempt in flight,
    /// or one cancelled in flight (the node or the run ended), whose result is still
    /// recorded when it comes, as its side effect did happen.
    pub(super) fn awaits(&self, attempt: u32) -> bool {
        let cancelled_in_flight = self.status == NodeStatus::Cancelled && self.queued_at.is_some();
        (self.is_in_flight() || cancelled_in_flight) && self.attempts == attempt
    }

    /// Completes the attempt with its result, mapped by the node's `outputs` when it has
    /// them. A mapping that selects over its limits fails it for good (the same response
    /// would select as much again), naming `subject` (the node, and the item).
    pub(super) fn complete(&mut self, node: &Node, output: &Value, subject: &str) {
        let mapped = match &node.kind {
            NodeKind::Action { outputs, .. } if !outputs.is_empty() => {
                Some(map_outputs(outputs, output))
            }
            _ => None,
        };
        match mapped {
            Some(Ok(mapped)) => {
                self.status = NodeStatus::Completed;
                self.error = None;
                self.output = Some(mapped);
                self.raw_output = Some(output.clone());
            }
            Some(Err(e)) => {
                self.raw_output = Some(output.clone());
                let message = format!("{subject}, {e}");
                self.fail(node, NodeError::new(ErrorClass::Permanent, message));
            }
            None => {
                self.status = NodeStatus::Completed;
                self.error = None;
                self.output = Some(output.clone());
            }
        }
    }

    /// Fails the attempt for good; under `on_error: continue` its error is its output.
    pub(super) fn fail(&mut self, node: &Node, error: NodeError) {
        self.status = NodeStatus::Failed;
        if node.on_error == OnError::Continue {
            self.output = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
        }
        self.error = Some(error);
    }

    /// Whether a failed attempt is tried again: a 429 always is (it waits per
    /// `Retry-After` and is bounded by the run's timeout); other retryable failures while
    /// the attempts not answered 429 stay under `max_attempts`.
    pub(super) fn may_retry(&self, error: &NodeError, node: &Node) -> bool {
        error.class == ErrorClass::RateLimited
            || (error.class.is_retryable()
                && self.attempts.saturating_sub(self.rate_limited) < node.retry.max_attempts)
    }

    /// Queues the next attempt after a failure that [`Self::may_retry`]; returns the
    /// backoff before it.
    pub(super) fn retry(&mut self, node: &Node, error: &NodeError, jitter: f64) -> Duration {
        let retry_after = error.retry_after_ms.map(Duration::from_millis);
        let delay = node.retry.backoff(
            self.attempts.saturating_sub(self.rate_limited),
            jitter,
            retry_after,
        );
        self.attempts += 1;
        if error.class == ErrorClass::RateLimited {
            self.rate_limited += 1;
        }
        self.status = NodeStatus::Queued;
        self.error = Some(error.clone());
        self.finished_at = None;
        delay
    }

    /// The task of the attempt queued last, sent after `delay`.
    pub(super) fn dispatch(
        &self,
        node: &Node,
        item_index: Option<u32>,
        delay: Duration,
    ) -> Dispatch {
        Dispatch {
            node_id: node.id.clone(),
            item_index,
            attempt: self.attempts,
            input: self.input.clone().unwrap_or(Value::Null),
            delay,
            timeout: node.timeout,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
