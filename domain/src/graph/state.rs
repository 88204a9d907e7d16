//! The recorded state of one run: every node's state, and for a `for_each` node every
//! item's. The scheduler stores it (architecture §9) and hands it back for each result.

use std::collections::BTreeMap;

use crate::ids::RunId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attempt::{AttemptRecord, Dispatch, NodeStatus};
use crate::messages::NodeError;
use crate::scenario::{Node, Scenario};

/// The recorded state of one node in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub record: AttemptRecord,
    /// The port a condition took (`true`, `false`, a case name, `default`).
    pub port: Option<String>,
    /// For a `for_each` node, once it started: one state per item, in item order.
    pub items: Option<Vec<ItemState>>,
    /// Set when this evaluation changed the node, so only changed rows are written.
    pub changed: bool,
}

/// The recorded state of one item of a `for_each` node, stored as one JSON object in the
/// node's row: the record's fields and the deadline side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    #[serde(flatten)]
    pub record: AttemptRecord,
    /// When the attempt in flight is given up on (set by the scheduler as it dispatches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<DateTime<Utc>>,
}

impl ItemState {
    pub(super) fn pending(input: Value) -> Self {
        Self {
            record: AttemptRecord::pending(Some(input)),
            deadline_at: None,
        }
    }

    pub(super) fn fail(&mut self, node: &Node, error: NodeError) {
        self.deadline_at = None;
        self.record.fail(node, error);
    }

    /// Cancels the item if it has not finished.
    pub(super) fn cancel(&mut self, now: DateTime<Utc>) {
        if !self.record.status.is_terminal() {
            self.record.status = NodeStatus::Cancelled;
            self.record.finished_at = Some(now);
            self.deadline_at = None;
        }
    }
}

impl NodeState {
    pub fn pending() -> Self {
        Self {
            record: AttemptRecord::pending(None),
            port: None,
            items: None,
            changed: true,
        }
    }

    /// Cancels the node if it has not finished, and every unfinished item of it.
    pub fn cancel(&mut self, now: DateTime<Utc>) {
        if self.record.status.is_terminal() {
            return;
        }
        self.record.status = NodeStatus::Cancelled;
        self.record.finished_at = Some(now);
        self.changed = true;
        for item in self.items.iter_mut().flatten() {
            item.cancel(now);
        }
    }

    pub(super) fn fail(&mut self, node: &Node, error: NodeError) {
        self.changed = true;
        self.record.fail(node, error);
    }
}

/// What a run's templates can see besides node outputs.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: RunId,
    pub trigger: Value,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Completed,
    Failed { node: String, error: NodeError },
}

/// What one evaluation decided.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub dispatch: Vec<Dispatch>,
    pub outcome: Option<RunOutcome>,
}

/// What applying a result did.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// A duplicate or stale result (another attempt, or the node already finished).
    Ignored,
    /// Recorded as the node's final outcome.
    Recorded,
    /// A retryable failure with attempts left: dispatch this next attempt.
    Retry(Dispatch),
}

/// Every node's state in one run, by node id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunState {
    pub nodes: BTreeMap<String, NodeState>,
}

impl RunState {
    /// A run that has not started: every node pending.
    pub fn new(scenario: &Scenario) -> Self {
        Self {
            nodes: scenario
                .nodes
                .iter()
                .map(|n| (n.id.clone(), NodeState::pending()))
                .collect(),
        }
    }

    /// A run that starts from recorded node states (a replay's reused nodes): states of
    /// nodes the scenario does not have are dropped, missing nodes are pending.
    pub fn resume(scenario: &Scenario, mut recorded: RunState) -> Self {
        let nodes = scenario
            .nodes
            .iter()
            .map(|n| {
                let state = recorded
                    .nodes
                    .remove(&n.id)
                    .unwrap_or_else(NodeState::pending);
                (n.id.clone(), state)
            })
            .collect();
        Self { nodes }
    }

    /// Marks every node that has not started as cancelled.
    pub fn cancel_pending(&mut self, now: DateTime<Utc>) {
        // (Nodes in flight are left to finish: their results are still recorded.)
        for state in self.nodes.values_mut() {
            if state.record.status == NodeStatus::Pending {
                state.record.status = NodeStatus::Cancelled;
                state.record.finished_at = Some(now);
                state.changed = true;
            }
        }
    }

    pub(super) fn state_mut(&mut self, id: &str) -> &mut NodeState {
        self.nodes
            .get_mut(id)
            .expect("every node of the scenario has a state")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::graph::fixtures::*;
    use crate::messages::ErrorClass;

    #[test]
    fn resuming_keeps_recorded_nodes_and_adds_the_missing_ones_as_pending() {
        let s = scenario(json!([http("a", &[]), http("b", &["a"])]));
        let mut recorded = RunState::default();
        let mut done = NodeState::pending();
        done.record.status = NodeStatus::Completed;
        done.record.output = Some(json!(1));
        done.changed = false;
        recorded.nodes.insert("a".into(), done.clone());
        recorded.nodes.insert("gone".into(), done.clone());
        let state = RunState::resume(&s, recorded);
        assert_eq!(
            state.nodes.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "a node the scenario does not have is dropped"
        );
        assert_eq!(state.nodes["a"], done);
        assert_eq!(state.nodes["b"], NodeState::pending());
    }

    /// Items as they were written before a node and an item shared one attempt record
    /// (captured from that code): stored items read back the same, and an item written now
    /// is the same text.
    const FULL: &str = r#"{"status":"queued","attempts":3,"rate_limited":1,"input":{"n":1},"output":[1,"a"],"raw_output":{"body":null},"error":{"class":"retryable","message":"boom"},"queued_at":"2023-11-14T22:13:20.123456789Z","started_at":"2023-11-14T22:13:20.123456789Z","finished_at":"2023-11-14T22:13:20.123456789Z","deadline_at":"2023-11-14T22:13:20.123456789Z"}"#;
    const PENDING: &str = r#"{"status":"pending","attempts":0,"input":"x"}"#;

    #[test]
    fn an_item_is_stored_as_the_same_json_as_before_the_shared_record() {
        let time = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        let full = ItemState {
            record: AttemptRecord {
                status: NodeStatus::Queued,
                attempts: 3,
                rate_limited: 1,
                input: Some(json!({"n": 1})),
                output: Some(json!([1, "a"])),
                raw_output: Some(json!({"body": null})),
                error: Some(NodeError::new(ErrorClass::Retryable, "boom")),
                queued_at: Some(time),
                started_at: Some(time),
                finished_at: Some(time),
            },
            deadline_at: Some(time),
        };
        let pending = ItemState::pending(json!("x"));
        assert_eq!(serde_json::to_string(&full).expect("serializes"), FULL);
        assert_eq!(
            serde_json::to_string(&pending).expect("serializes"),
            PENDING
        );
        assert_eq!(
            serde_json::from_str::<ItemState>(FULL).expect("reads"),
            full
        );
        assert_eq!(
            serde_json::from_str::<ItemState>(PENDING).expect("reads"),
            pending
        );
        let oldest: ItemState = serde_json::from_str(r#"{"status":"completed"}"#).expect("reads");
        assert_eq!(oldest.record.attempts, 0, "fields written later default");
        assert_eq!(oldest.record.status, NodeStatus::Completed);
    }
}
