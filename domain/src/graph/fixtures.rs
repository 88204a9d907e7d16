//! Scenarios, contexts and results the graph's tests are written with.

use crate::ids::{RunId, WorkspaceId};
use chrono::Utc;
use serde_json::{Value, json};

use super::{Dispatch, NodeStatus, RunContext, RunState};
use crate::messages::{ErrorClass, NodeError, NodeResult, Outcome, VERSION};
use crate::scenario::{BuiltinCatalog, Scenario};

pub(super) fn scenario(nodes: Value) -> Scenario {
    Scenario::parse(
        &json!({"name": "t", "trigger": {"type": "manual"}, "nodes": nodes}),
        &BuiltinCatalog,
    )
    .expect("valid scenario")
}

pub(super) fn context(trigger: Value) -> RunContext {
    RunContext {
        run_id: RunId::nil(),
        trigger,
        started_at: Utc::now(),
        now: Utc::now(),
    }
}

pub(super) fn http(id: &str, after: &[&str]) -> Value {
    json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
           "input": {"method": "GET", "url": "http://up.test/{{ trigger.body.n }}"}})
}

pub(super) fn result(node: &str, attempt: u32, outcome: Outcome) -> NodeResult {
    NodeResult {
        v: VERSION,
        run_id: RunId::nil(),
        workspace_id: WorkspaceId::nil(),
        node_id: node.into(),
        item_index: None,
        attempt,
        started_at: Utc::now(),
        finished_at: Utc::now(),
        outcome,
        connection: None,
    }
}

pub(super) fn item_result(node: &str, index: u32, attempt: u32, outcome: Outcome) -> NodeResult {
    NodeResult {
        item_index: Some(index),
        ..result(node, attempt, outcome)
    }
}

/// An http node that runs once per item of `trigger.body.items`.
pub(super) fn each(id: &str, max_concurrency: u32) -> Value {
    json!({"id": id, "type": "action", "connector": "http", "action": "request",
           "for_each": "{{ trigger.body.items }}", "max_concurrency": max_concurrency,
           "input": {"method": "POST", "url": "http://up.test/{{ index }}", "body": {"item": "{{ item }}"}}})
}

/// (item index, attempt) of each dispatch.
pub(super) fn sent(step: &[Dispatch]) -> Vec<(Option<u32>, u32)> {
    step.iter().map(|d| (d.item_index, d.attempt)).collect()
}

pub(super) fn item_status(state: &RunState, id: &str) -> Vec<NodeStatus> {
    state.nodes[id]
        .items
        .iter()
        .flatten()
        .map(|item| item.record.status)
        .collect()
}

pub(super) fn success(output: Value) -> Outcome {
    Outcome::Success { output }
}

pub(super) fn failure(class: ErrorClass) -> Outcome {
    Outcome::Failure {
        error: NodeError::new(class, "boom"),
    }
}

pub(super) fn status(state: &RunState, id: &str) -> NodeStatus {
    state.nodes[id].record.status
}
