//! Evaluation of one run's graph, as a plain function over data.
//!
//! The scheduler loads a run's [`RunState`], applies a result or starts the run, calls
//! [`RunState::advance`], and persists what changed. `advance` evaluates pure nodes
//! (transform, condition) inline, decides which action nodes to dispatch, propagates
//! skips and decides when the run is over.
//!
//! An action node with `for_each` keeps one [`ItemState`] per item: `advance` keeps at
//! most `max_concurrency` of them in flight, and finishes the node when every item has
//! finished (or one failed for good). A `delay` node is dispatched as the built-in
//! `weft.delay` task, due when the wait is over.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use crate::connector::Selection;
use crate::ids::RunId;
use crate::messages::{ErrorClass, NodeError, NodeResult, Outcome};
use crate::scenario::{DEFAULT_CASE, ERROR_PORT, ForEach, Node, NodeKind, OnError, Scenario, Wait};
use crate::template::{self, Templates};

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

/// The recorded state of one node in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub status: NodeStatus,
    pub attempts: u32,
    /// Attempts the upstream answered 429: they do not count against `max_attempts`.
    pub rate_limited: u32,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub raw_output: Option<Value>,
    pub error: Option<NodeError>,
    /// The port a condition took (`true`, `false`, a case name, `default`).
    pub port: Option<String>,
    /// When the node became ready (queued for a worker).
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For a `for_each` node, once it started: one state per item, in item order.
    pub items: Option<Vec<ItemState>>,
    /// Set when this evaluation changed the node, so only changed rows are written.
    pub changed: bool,
}

/// Most items a `for_each` node may have: its item states live in one row, rewritten as
/// each item finishes.
pub const MAX_ITEMS: usize = 1_000;

/// The recorded state of one item of a `for_each` node. A (node, item, attempt) names one
/// task; a result for any other attempt of the item changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// `pending` (not dispatched yet), `queued` (in flight), `completed`, `failed` or
    /// `cancelled`.
    pub status: NodeStatus,
    #[serde(default)]
    pub attempts: u32,
    /// Attempts the upstream answered 429: they do not count against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limited: u32,
    /// The node's `input`, rendered with this `item` and `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The item's result (mapped by `outputs` when the node has them), or its error
    /// object when it failed under `on_error: continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The full result, when `outputs` mapped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<NodeError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the attempt in flight is given up on (set by the scheduler as it dispatches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<DateTime<Utc>>,
}

impl ItemState {
    fn pending(input: Value) -> Self {
        Self {
            status: NodeStatus::Pending,
            attempts: 0,
            rate_limited: 0,
            input: Some(input),
            output: None,
            raw_output: None,
            error: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            deadline_at: None,
        }
    }

    fn is_in_flight(&self) -> bool {
        matches!(self.status, NodeStatus::Queued | NodeStatus::Running)
    }

    fn fail(&mut self, node: &Node, error: NodeError) {
        self.status = NodeStatus::Failed;
        self.deadline_at = None;
        if node.on_error == OnError::Continue {
            self.output = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
        }
        self.error = Some(error);
    }
}

impl NodeState {
    pub fn pending() -> Self {
        Self {
            status: NodeStatus::Pending,
            attempts: 0,
            rate_limited: 0,
            input: None,
            output: None,
            raw_output: None,
            error: None,
            port: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            items: None,
            changed: true,
        }
    }

    /// Cancels the node if it has not finished, and every unfinished item of it.
    pub fn cancel(&mut self, now: DateTime<Utc>) {
        if self.status.is_terminal() {
            return;
        }
        self.status = NodeStatus::Cancelled;
        self.finished_at = Some(now);
        self.changed = true;
        for item in self.items.iter_mut().flatten() {
            if !item.status.is_terminal() {
                item.status = NodeStatus::Cancelled;
                item.finished_at = Some(now);
                item.deadline_at = None;
            }
        }
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

/// How a replay starts (see [`RunState::replay`]).
#[derive(Debug, PartialEq)]
pub struct Replay {
    /// The node it starts from.
    pub from: String,
    /// The nodes whose outcome is reused, in scenario order.
    pub reused: Vec<String>,
}

/// Why a run cannot be replayed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the run has no failed node to replay from; name one with `from_node`")]
    NothingFailed,
    #[error("node `{0}` does not exist in the scenario version to replay on")]
    UnknownNode(String),
}

/// Every node's state in one run, by node id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunState {
    pub nodes: BTreeMap<String, NodeState>,
}

impl RunState {
    /// The answer of a webhook that responds on completion, once the run is over: the
    /// output of a completed `respond` node, or else the output of the node that finished
    /// last, as a 200; a failed run answers 500 with the failing node's error.
    pub fn response(&self, scenario: &Scenario, outcome: &RunOutcome) -> Value {
        if let RunOutcome::Failed { node, error } = outcome {
            return json!({
                "status": 500,
                "headers": {},
                "body": {"error": {"node": node, "class": error.class, "message": error.message}},
            });
        }
        let responded = scenario.nodes.iter().find_map(|node| {
            let NodeKind::Respond { .. } = node.kind else {
                return None;
            };
            let state = self.nodes.get(&node.id)?;
            (state.status == NodeStatus::Completed)
                .then(|| state.output.clone())
                .flatten()
        });
        if let Some(output) = responded {
            return output;
        }
        let last = self
            .nodes
            .values()
            .filter(|state| state.status == NodeStatus::Completed)
            .max_by_key(|state| state.finished_at)
            .and_then(|state| state.output.clone());
        json!({"status": 200, "headers": {}, "body": last})
    }

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

    /// The node a replay starts from by default: the first to fail.
    pub fn first_failed(&self) -> Option<&str> {
        self.nodes
            .iter()
            .filter(|(_, state)| state.status == NodeStatus::Failed)
            .min_by_key(|(id, state)| (state.finished_at, *id))
            .map(|(id, _)| id.as_str())
    }

    /// What a replay of this run on `scenario` starts with: the nodes whose recorded
    /// outcome it reuses, to be copied into the new run before it is taken up (every
    /// other node runs again). Only statuses and finishing times are read here.
    ///
    /// The replay starts at `from`, or at the first failed node. That node and everything
    /// after it run again; so does every node that did not complete or was not skipped
    /// here (it has no output to reuse), and everything after such a node.
    pub fn replay(&self, scenario: &Scenario, from: Option<&str>) -> Result<Replay, ReplayError> {
        let from = match from {
            Some(from) => from,
            None => self.first_failed().ok_or(ReplayError::NothingFailed)?,
        };
        if scenario.node(from).is_none() {
            return Err(ReplayError::UnknownNode(from.to_owned()));
        }
        let mut successors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for node in &scenario.nodes {
            for edge in &node.after {
                successors.entry(&edge.from).or_default().push(&node.id);
            }
        }
        let reusable = |id: &str| {
            self.nodes.get(id).is_some_and(|state| {
                matches!(state.status, NodeStatus::Completed | NodeStatus::Skipped)
            })
        };
        let mut again: Vec<&str> = scenario
            .nodes
            .iter()
            .map(|n| n.id.as_str())
            .filter(|id| *id == from || !reusable(id))
            .collect();
        let mut runs_again: HashSet<&str> = again.iter().copied().collect();
        while let Some(id) = again.pop() {
            for next in successors.get(id).into_iter().flatten() {
                if runs_again.insert(next) {
                    again.push(next);
                }
            }
        }
        let reused = scenario
            .nodes
            .iter()
            .filter(|n| !runs_again.contains(n.id.as_str()))
            .map(|n| n.id.clone())
            .collect();
        Ok(Replay {
            from: from.to_owned(),
            reused,
        })
    }

    /// Records one attempt's result.
    pub fn apply_result(
        &mut self,
        scenario: &Scenario,
        result: &NodeResult,
        jitter: f64,
    ) -> Applied {
        let (Some(node), Some(state)) = (
            scenario.node(&result.node_id),
            self.nodes.get_mut(&result.node_id),
        ) else {
            return Applied::Ignored;
        };
        match (result.item_index, state.items.is_some()) {
            (Some(index), true) => return apply_item_result(node, state, index, result, jitter),
            (None, false) => {}
            // An item result for a node without items, or the reverse: not ours.
            _ => return Applied::Ignored,
        }
        let in_flight = matches!(state.status, NodeStatus::Queued | NodeStatus::Running);
        // A run that ended (cancelled, timed out) cancels the attempts it had out; their
        // result, when it still comes, is recorded, as the side effect did happen.
        let cancelled_in_flight =
            state.status == NodeStatus::Cancelled && state.queued_at.is_some();
        if !(in_flight || cancelled_in_flight) || state.attempts != result.attempt {
            return Applied::Ignored;
        }
        state.changed = true;
        state.started_at = Some(result.started_at);
        state.finished_at = Some(result.finished_at);
        match &result.outcome {
            Outcome::Success { output } => {
                let mapped = match &node.kind {
                    NodeKind::Action { outputs, .. } if !outputs.is_empty() => {
                        Some(map_outputs(outputs, output))
                    }
                    _ => None,
                };
                match mapped {
                    Some(Ok(mapped)) => {
                        state.status = NodeStatus::Completed;
                        state.error = None;
                        state.output = Some(mapped);
                        state.raw_output = Some(output.clone());
                    }
                    // The same response would select as much again: no retry.
                    Some(Err(e)) => {
                        state.raw_output = Some(output.clone());
                        let message = format!("node `{}`, {e}", node.id);
                        fail(node, state, NodeError::new(ErrorClass::Permanent, message));
                    }
                    None => {
                        state.status = NodeStatus::Completed;
                        state.error = None;
                        state.output = Some(output.clone());
                    }
                }
                Applied::Recorded
            }
            Outcome::Failure { error } => {
                if may_retry(error, state.attempts, state.rate_limited, node) {
                    let retry_after = error.retry_after_ms.map(Duration::from_millis);
                    let mut delay = node.retry.backoff(
                        state.attempts.saturating_sub(state.rate_limited),
                        jitter,
                        retry_after,
                    );
                    if let NodeKind::Delay { .. } = node.kind {
                        // A delay retried (its task was lost) still waits until its time.
                        delay = delay.max(remaining_wait(state.input.as_ref(), result.finished_at));
                    }
                    state.attempts += 1;
                    if error.class == ErrorClass::RateLimited {
                        state.rate_limited += 1;
                    }
                    state.status = NodeStatus::Queued;
                    state.error = Some(error.clone());
                    state.finished_at = None;
                    return Applied::Retry(Dispatch {
                        node_id: node.id.clone(),
                        item_index: None,
                        attempt: state.attempts,
                        input: state.input.clone().unwrap_or(Value::Null),
                        delay,
                        timeout: node.timeout,
                    });
                }
                fail(node, state, error.clone());
                Applied::Recorded
            }
        }
    }

    /// Evaluates everything that can be decided now.
    pub fn advance(
        &mut self,
        scenario: &Scenario,
        context: &RunContext,
        templates: &Templates,
    ) -> Step {
        let mut step = Step::default();
        // `for_each` nodes in flight: refill their windows, or finish them.
        for node in &scenario.nodes {
            let state = &self.nodes[&node.id];
            if state.items.is_some() && state.status == NodeStatus::Queued {
                step.dispatch.extend(self.progress_items(node, context.now));
            }
        }
        'evaluate: loop {
            if let Some(failed) = self.unhandled_failure(scenario) {
                // A failure nobody handles ends the run at once.
                self.cancel_pending(context.now);
                step.dispatch.clear();
                step.outcome = Some(failed);
                return step;
            }
            for node in &scenario.nodes {
                if self.nodes[&node.id].status != NodeStatus::Pending {
                    continue;
                }
                let Some(runs) = self.is_reached(node) else {
                    continue;
                };
                if !runs {
                    let state = self.state_mut(&node.id);
                    state.status = NodeStatus::Skipped;
                    state.finished_at = Some(context.now);
                    state.changed = true;
                } else {
                    step.dispatch.extend(self.start(node, context, templates));
                }
                continue 'evaluate;
            }
            break;
        }
        let finished = self.nodes.values().all(|s| s.status.is_terminal());
        step.outcome = finished.then_some(RunOutcome::Completed);
        step
    }

    /// Marks every node that has not started as cancelled.
    pub fn cancel_pending(&mut self, now: DateTime<Utc>) {
        // (Nodes in flight are left to finish: their results are still recorded.)
        for state in self.nodes.values_mut() {
            if state.status == NodeStatus::Pending {
                state.status = NodeStatus::Cancelled;
                state.finished_at = Some(now);
                state.changed = true;
            }
        }
    }

    fn state_mut(&mut self, id: &str) -> &mut NodeState {
        self.nodes
            .get_mut(id)
            .expect("every node of the scenario has a state")
    }

    /// `None` while a predecessor is unfinished; then whether any incoming edge was taken.
    fn is_reached(&self, node: &Node) -> Option<bool> {
        let mut taken = node.after.is_empty();
        for edge in &node.after {
            let from = &self.nodes[&edge.from];
            if !from.status.is_terminal() {
                return None;
            }
            let fired = match (from.status, edge.port.as_deref()) {
                (NodeStatus::Completed, None) => true,
                (NodeStatus::Completed, Some(port)) => from.port.as_deref() == Some(port),
                (NodeStatus::Failed, Some(ERROR_PORT)) => true,
                // A failure with `on_error: continue` carries its error as output.
                (NodeStatus::Failed, None) => from.output.is_some(),
                _ => false,
            };
            taken |= fired;
        }
        Some(taken)
    }

    fn scope(&self, context: &RunContext) -> minijinja::Value {
        template::scope(&self.scope_json(context))
    }

    fn scope_json(&self, context: &RunContext) -> Value {
        let nodes: serde_json::Map<String, Value> = self
            .nodes
            .iter()
            .filter(|(_, state)| state.status.is_terminal())
            .map(|(id, state)| {
                let view =
                    json!({"output": state.output, "status": state.status, "error": state.error});
                (id.clone(), view)
            })
            .collect();
        json!({
            "trigger": context.trigger,
            "nodes": nodes,
            "run": {"id": context.run_id, "started_at": context.started_at},
        })
    }

    /// Starts a reached node: evaluates pure nodes, prepares action and delay nodes for
    /// dispatch.
    fn start(&mut self, node: &Node, context: &RunContext, templates: &Templates) -> Vec<Dispatch> {
        let scope = self.scope(context);
        let now = context.now;
        let template_error = |field: &str, e: template::TemplateError| {
            NodeError::new(
                ErrorClass::Permanent,
                format!("node `{}`, field `{field}`: {e}", node.id),
            )
        };
        let evaluated: Result<(Value, Option<String>), NodeError> = match &node.kind {
            NodeKind::Action {
                input,
                for_each: Some(for_each),
                ..
            } => return self.start_items(node, for_each, input, &scope, now, templates),
            NodeKind::Delay { wait } => {
                return self
                    .start_delay(node, wait, &scope, now, templates)
                    .into_iter()
                    .collect();
            }
            NodeKind::Action { input, .. } => {
                let state = self.state_mut(&node.id);
                state.changed = true;
                state.attempts = 1;
                state.queued_at = Some(now);
                return match templates.render_value(input, &scope) {
                    Ok(rendered) => {
                        state.status = NodeStatus::Queued;
                        state.input = Some(rendered.clone());
                        vec![Dispatch {
                            node_id: node.id.clone(),
                            item_index: None,
                            attempt: 1,
                            input: rendered,
                            delay: Duration::ZERO,
                            timeout: node.timeout,
                        }]
                    }
                    Err(e) => {
                        state.started_at = Some(now);
                        state.finished_at = Some(now);
                        fail(node, state, template_error("input", e));
                        Vec::new()
                    }
                };
            }
            NodeKind::Transform { output } | NodeKind::Respond { output } => templates
                .render_value(output, &scope)
                .map(|rendered| (rendered, None))
                .map_err(|e| template_error("output", e)),
            NodeKind::If { condition } => templates
                .eval_bool(condition, &scope)
                .map(|result| (json!({"result": result}), Some(result.to_string())))
                .map_err(|e| template_error("if", e)),
            NodeKind::Switch { cases } => {
                let mut chosen = Ok(DEFAULT_CASE.to_owned());
                for (name, condition) in cases {
                    match templates.eval_bool(condition, &scope) {
                        Ok(true) => {
                            chosen = Ok(name.clone());
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            chosen = Err(template_error(&format!("switch.{name}"), e));
                            break;
                        }
                    }
                }
                chosen.map(|case| (json!({"case": case}), Some(case)))
            }
        };
        let state = self.state_mut(&node.id);
        state.changed = true;
        state.attempts = 1;
        state.started_at = Some(now);
        state.finished_at = Some(now);
        match evaluated {
            Ok((output, port)) => {
                state.status = NodeStatus::Completed;
                state.output = Some(output);
                state.port = port;
            }
            Err(error) => fail(node, state, error),
        }
        Vec::new()
    }

    /// Starts a delay node: dispatched to wait until its time, or done at once when that
    /// time has passed.
    fn start_delay(
        &mut self,
        node: &Node,
        wait: &Wait,
        scope: &minijinja::Value,
        now: DateTime<Utc>,
        templates: &Templates,
    ) -> Option<Dispatch> {
        let until = match wait {
            Wait::For(duration) => chrono::Duration::from_std(*duration)
                .ok()
                .and_then(|duration| now.checked_add_signed(duration))
                .ok_or_else(|| format!("field `duration`: {duration:?} is too long")),
            Wait::Until(source) => {
                match templates.render_value(&Value::String(source.clone()), scope) {
                    Ok(Value::String(text)) => DateTime::parse_from_rfc3339(text.trim())
                        .map(|at| at.with_timezone(&Utc))
                        .map_err(|e| {
                            format!("field `until`: `{text}` is not an RFC 3339 timestamp: {e}")
                        }),
                    Ok(other) => Err(format!(
                        "field `until`: renders {}, not an RFC 3339 timestamp",
                        json_kind(&other)
                    )),
                    Err(e) => Err(format!("field `until`: {e}")),
                }
            }
        };
        let state = self.state_mut(&node.id);
        state.changed = true;
        state.attempts = 1;
        state.queued_at = Some(now);
        let until = match until {
            Ok(until) => until.max(now),
            Err(message) => {
                state.started_at = Some(now);
                state.finished_at = Some(now);
                let message = format!("node `{}`, {message}", node.id);
                fail(node, state, NodeError::new(ErrorClass::Permanent, message));
                return None;
            }
        };
        let at = until.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        state.input = Some(json!({ "until": at }));
        let delay = (until - now).to_std().unwrap_or_default();
        if delay.is_zero() {
            // A time already past: no wait, nothing to dispatch.
            state.status = NodeStatus::Completed;
            state.output = Some(json!({ "waited_until": at }));
            state.started_at = Some(now);
            state.finished_at = Some(now);
            return None;
        }
        state.status = NodeStatus::Queued;
        Some(Dispatch {
            node_id: node.id.clone(),
            item_index: None,
            attempt: 1,
            input: json!({ "until": at }),
            delay,
            timeout: node.timeout,
        })
    }

    /// Starts a `for_each` node: renders its array and every item's input, then
    /// dispatches the first window of items.
    fn start_items(
        &mut self,
        node: &Node,
        for_each: &ForEach,
        input: &Value,
        scope: &minijinja::Value,
        now: DateTime<Utc>,
        templates: &Templates,
    ) -> Vec<Dispatch> {
        let fail_now = |state: &mut NodeState, message: String| {
            state.started_at = Some(now);
            state.finished_at = Some(now);
            let message = format!("node `{}`, field `for_each`: {message}", node.id);
            fail(node, state, NodeError::new(ErrorClass::Permanent, message));
        };
        let rendered = templates.render_value(&Value::String(for_each.items.clone()), scope);
        let state = self.state_mut(&node.id);
        state.changed = true;
        state.attempts = 1;
        state.queued_at = Some(now);
        let array = match rendered {
            Ok(Value::Array(array)) if array.len() <= MAX_ITEMS => array,
            Ok(Value::Array(array)) => {
                let message = format!("{} items, over the limit of {MAX_ITEMS}", array.len());
                fail_now(state, message);
                return Vec::new();
            }
            Ok(other) => {
                let message = format!("must render to an array, got {}", json_kind(&other));
                fail_now(state, message);
                return Vec::new();
            }
            Err(e) => {
                fail_now(state, e.to_string());
                return Vec::new();
            }
        };
        let items = array
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let scope = minijinja::value::merge_maps([
                    minijinja::context! { item => template::scope(item), index => index },
                    scope.clone(),
                ]);
                match templates.render_value(input, &scope) {
                    Ok(rendered) => ItemState::pending(rendered),
                    Err(e) => {
                        let mut item = ItemState::pending(Value::Null);
                        item.input = None;
                        item.attempts = 1;
                        item.started_at = Some(now);
                        item.finished_at = Some(now);
                        let message =
                            format!("node `{}`, item {index}, field `input`: {e}", node.id);
                        item.fail(node, NodeError::new(ErrorClass::Permanent, message));
                        item
                    }
                }
            })
            .collect();
        state.status = NodeStatus::Queued;
        state.input = Some(Value::Array(array));
        state.items = Some(items);
        self.progress_items(node, now)
    }

    /// Moves a `for_each` node in flight on: fails it when an item failed for good
    /// (unless `on_error: continue`), completes it when every item finished, or else
    /// dispatches pending items while fewer than `max_concurrency` are in flight.
    fn progress_items(&mut self, node: &Node, now: DateTime<Utc>) -> Vec<Dispatch> {
        let NodeKind::Action {
            for_each: Some(for_each),
            ..
        } = &node.kind
        else {
            return Vec::new();
        };
        let state = self.state_mut(&node.id);
        let Some(items) = state.items.as_mut() else {
            return Vec::new();
        };
        let latest = items.iter().filter_map(|item| item.finished_at).max();
        let failed = (node.on_error != OnError::Continue)
            .then(|| {
                items
                    .iter()
                    .enumerate()
                    .find(|(_, item)| item.status == NodeStatus::Failed)
            })
            .flatten()
            .map(|(index, item)| {
                let mut error = item
                    .error
                    .clone()
                    .unwrap_or_else(|| NodeError::new(ErrorClass::Permanent, "failed"));
                error.message = format!("item {index}: {}", error.message);
                error
            });
        if let Some(error) = failed {
            // The node is over: its other items are not dispatched, or not waited for.
            for item in items.iter_mut().filter(|item| !item.status.is_terminal()) {
                item.status = NodeStatus::Cancelled;
                item.finished_at = Some(now);
                item.deadline_at = None;
            }
            state.finished_at = latest.or(Some(now));
            fail(node, state, error);
            return Vec::new();
        }
        if items.iter().all(|item| item.status.is_terminal()) {
            let output = items
                .iter()
                .map(|item| item.output.clone().unwrap_or(Value::Null))
                .collect();
            state.status = NodeStatus::Completed;
            state.output = Some(Value::Array(output));
            state.error = None;
            state.started_at = state.started_at.or(Some(now));
            state.finished_at = latest.or(Some(now));
            state.changed = true;
            return Vec::new();
        }
        let in_flight = items.iter().filter(|item| item.is_in_flight()).count();
        let free = usize::try_from(for_each.max_concurrency)
            .unwrap_or(usize::MAX)
            .saturating_sub(in_flight);
        let mut dispatch = Vec::new();
        for (index, item) in items
            .iter_mut()
            .enumerate()
            .filter(|(_, item)| item.status == NodeStatus::Pending)
            .take(free)
        {
            item.status = NodeStatus::Queued;
            item.attempts = 1;
            item.queued_at = Some(now);
            dispatch.push(Dispatch {
                node_id: node.id.clone(),
                item_index: Some(u32::try_from(index).unwrap_or(u32::MAX)),
                attempt: 1,
                input: item.input.clone().unwrap_or(Value::Null),
                delay: Duration::ZERO,
                timeout: node.timeout,
            });
        }
        if !dispatch.is_empty() {
            state.changed = true;
        }
        dispatch
    }

    /// The first failed node that neither `on_error: continue` nor an error port handles.
    fn unhandled_failure(&self, scenario: &Scenario) -> Option<RunOutcome> {
        scenario.nodes.iter().find_map(|node| {
            let state = &self.nodes[&node.id];
            let handled = node.on_error == OnError::Continue || scenario.has_error_branch(&node.id);
            (state.status == NodeStatus::Failed && !handled).then(|| RunOutcome::Failed {
                node: node.id.clone(),
                error: state
                    .error
                    .clone()
                    .unwrap_or_else(|| NodeError::new(ErrorClass::Permanent, "failed")),
            })
        })
    }
}

/// Records one attempt's result for one item of a `for_each` node. Finishing the node
/// (or dispatching the next items) is left to [`RunState::advance`].
fn apply_item_result(
    node: &Node,
    state: &mut NodeState,
    index: u32,
    result: &NodeResult,
    jitter: f64,
) -> Applied {
    let Some(item) = state
        .items
        .as_mut()
        .and_then(|items| items.get_mut(usize::try_from(index).ok()?))
    else {
        return Applied::Ignored;
    };
    // As for a whole node: an attempt cancelled in flight (the node or the run ended)
    // is still recorded when its result comes, as its side effect did happen.
    let cancelled_in_flight = item.status == NodeStatus::Cancelled && item.queued_at.is_some();
    if !(item.is_in_flight() || cancelled_in_flight) || item.attempts != result.attempt {
        return Applied::Ignored;
    }
    // Only an item of a node still in flight is tried again.
    let may_retry_item =
        item.is_in_flight() && matches!(state.status, NodeStatus::Queued | NodeStatus::Running);
    state.changed = true;
    state.started_at = state
        .started_at
        .min(Some(result.started_at))
        .or(Some(result.started_at));
    item.started_at = Some(result.started_at);
    item.finished_at = Some(result.finished_at);
    item.deadline_at = None;
    match &result.outcome {
        Outcome::Success { output } => {
            let mapped = match &node.kind {
                NodeKind::Action { outputs, .. } if !outputs.is_empty() => {
                    Some(map_outputs(outputs, output))
                }
                _ => None,
            };
            match mapped {
                Some(Ok(mapped)) => {
                    item.status = NodeStatus::Completed;
                    item.error = None;
                    item.output = Some(mapped);
                    item.raw_output = Some(output.clone());
                }
                Some(Err(e)) => {
                    item.raw_output = Some(output.clone());
                    let message = format!("node `{}`, item {index}, {e}", node.id);
                    item.fail(node, NodeError::new(ErrorClass::Permanent, message));
                }
                None => {
                    item.status = NodeStatus::Completed;
                    item.error = None;
                    item.output = Some(output.clone());
                }
            }
            Applied::Recorded
        }
        Outcome::Failure { error } => {
            if may_retry_item && may_retry(error, item.attempts, item.rate_limited, node) {
                let retry_after = error.retry_after_ms.map(Duration::from_millis);
                let delay = node.retry.backoff(
                    item.attempts.saturating_sub(item.rate_limited),
                    jitter,
                    retry_after,
                );
                item.attempts += 1;
                if error.class == ErrorClass::RateLimited {
                    item.rate_limited += 1;
                }
                item.status = NodeStatus::Queued;
                item.error = Some(error.clone());
                item.finished_at = None;
                return Applied::Retry(Dispatch {
                    node_id: node.id.clone(),
                    item_index: Some(index),
                    attempt: item.attempts,
                    input: item.input.clone().unwrap_or(Value::Null),
                    delay,
                    timeout: node.timeout,
                });
            }
            item.fail(node, error.clone());
            Applied::Recorded
        }
    }
}

/// Whether a failed attempt is tried again: a 429 always is (it waits per `Retry-After`
/// and is bounded by the run's timeout); other retryable failures while the attempts not
/// answered 429 stay under `max_attempts`.
fn may_retry(error: &NodeError, attempts: u32, rate_limited: u32, node: &Node) -> bool {
    error.class == ErrorClass::RateLimited
        || (error.class.is_retryable()
            && attempts.saturating_sub(rate_limited) < node.retry.max_attempts)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What is left of a delay node's wait at `now`, from the `until` of its input.
fn remaining_wait(input: Option<&Value>, now: DateTime<Utc>) -> Duration {
    input
        .and_then(|input| input.get("until"))
        .and_then(Value::as_str)
        .and_then(|until| DateTime::parse_from_rfc3339(until).ok())
        .and_then(|until| (until.with_timezone(&Utc) - now).to_std().ok())
        .unwrap_or_default()
}

/// How a JSON value is named in errors.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn fail(node: &Node, state: &mut NodeState, error: NodeError) {
    state.status = NodeStatus::Failed;
    state.changed = true;
    if node.on_error == OnError::Continue {
        state.output = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
    }
    state.error = Some(error);
}

/// Applies `outputs` mappings: no match gives `null`, one match its value, several an array.
/// All the paths of one node's `outputs` share one [`Selection`], so together they select
/// at most its limits, counted before anything is copied.
pub fn map_outputs(outputs: &[(String, JsonPath)], raw: &Value) -> Result<Value, OutputsError> {
    let mut selection = Selection::default();
    let mut mapped = serde_json::Map::with_capacity(outputs.len());
    for (field, path) in outputs {
        let mut found = selection.nodes(path, raw).map_err(|cause| OutputsError {
            field: field.clone(),
            cause,
        })?;
        let value = match found.len() {
            0 => Value::Null,
            1 => found.remove(0).clone(),
            _ => Value::Array(found.into_iter().cloned().collect()),
        };
        mapped.insert(field.clone(), value);
    }
    Ok(Value::Object(mapped))
}

/// A field of a node's `outputs` whose path selects more than one mapping may: the
/// cause names the path and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `outputs.{field}`: {cause}")]
pub struct OutputsError {
    pub field: String,
    pub cause: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkspaceId;
    use crate::limits::{MAX_SELECTED_BYTES, MAX_SELECTED_NODES};
    use crate::messages::VERSION;
    use crate::scenario::BuiltinCatalog;

    fn scenario(nodes: Value) -> Scenario {
        Scenario::parse(
            &json!({"name": "t", "trigger": {"type": "manual"}, "nodes": nodes}),
            &BuiltinCatalog,
        )
        .expect("valid scenario")
    }

    fn context(trigger: Value) -> RunContext {
        RunContext {
            run_id: RunId::nil(),
            trigger,
            started_at: Utc::now(),
            now: Utc::now(),
        }
    }

    fn http(id: &str, after: &[&str]) -> Value {
        json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
               "input": {"method": "GET", "url": "http://up.test/{{ trigger.body.n }}"}})
    }

    fn result(node: &str, attempt: u32, outcome: Outcome) -> NodeResult {
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

    fn item_result(node: &str, index: u32, attempt: u32, outcome: Outcome) -> NodeResult {
        NodeResult {
            item_index: Some(index),
            ..result(node, attempt, outcome)
        }
    }

    /// An http node that runs once per item of `trigger.body.items`.
    fn each(id: &str, max_concurrency: u32) -> Value {
        json!({"id": id, "type": "action", "connector": "http", "action": "request",
               "for_each": "{{ trigger.body.items }}", "max_concurrency": max_concurrency,
               "input": {"method": "POST", "url": "http://up.test/{{ index }}", "body": {"item": "{{ item }}"}}})
    }

    /// (item index, attempt) of each dispatch.
    fn sent(step: &[Dispatch]) -> Vec<(Option<u32>, u32)> {
        step.iter().map(|d| (d.item_index, d.attempt)).collect()
    }

    fn item_status(state: &RunState, id: &str) -> Vec<NodeStatus> {
        state.nodes[id]
            .items
            .iter()
            .flatten()
            .map(|item| item.status)
            .collect()
    }

    fn success(output: Value) -> Outcome {
        Outcome::Success { output }
    }

    fn failure(class: ErrorClass) -> Outcome {
        Outcome::Failure {
            error: NodeError::new(class, "boom"),
        }
    }

    fn status(state: &RunState, id: &str) -> NodeStatus {
        state.nodes[id].status
    }

    #[test]
    fn transform_then_action_renders_typed_input() {
        let s = scenario(json!([
            {"id": "t", "type": "transform", "output": {"double": "{{ trigger.body.n * 2 }}"}},
            {"id": "a", "type": "action", "connector": "http", "action": "request", "after": ["t"],
             "input": {"method": "POST", "url": "http://up.test/", "body": {"v": "{{ nodes.t.output.double }}"}}}
        ]));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &context(json!({"body": {"n": 21}})), &Templates::new());
        assert_eq!(step.dispatch.len(), 1);
        assert_eq!(step.dispatch[0].input["body"]["v"], json!(42));
        assert_eq!(status(&state, "t"), NodeStatus::Completed);
        assert_eq!(status(&state, "a"), NodeStatus::Queued);
        assert_eq!(step.outcome, None);
    }

    #[test]
    fn the_branch_not_taken_is_skipped_and_the_join_runs() {
        let s = scenario(json!([
            {"id": "c", "type": "condition", "if": "trigger.body.n > 10"},
            http("big", &["c:true"]),
            http("small", &["c:false"]),
            {"id": "join", "type": "transform", "after": ["big", "small"], "output": {"done": true}}
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 50}}));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(
            step.dispatch
                .iter()
                .map(|d| d.node_id.as_str())
                .collect::<Vec<_>>(),
            ["big"]
        );
        assert_eq!(status(&state, "small"), NodeStatus::Skipped);
        assert_eq!(status(&state, "join"), NodeStatus::Pending);

        assert_eq!(
            state.apply_result(&s, &result("big", 1, success(json!({"status": 200}))), 1.0),
            Applied::Recorded
        );
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(status(&state, "join"), NodeStatus::Completed);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
    }

    #[test]
    fn skipping_propagates_through_a_chain() {
        let s = scenario(json!([
            {"id": "c", "type": "condition", "if": "false"},
            http("a", &["c:true"]),
            http("b", &["a"])
        ]));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &context(json!({})), &Templates::new());
        assert!(step.dispatch.is_empty());
        assert_eq!(status(&state, "b"), NodeStatus::Skipped);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
    }

    #[test]
    fn switch_takes_the_first_true_case_or_default() {
        let s = scenario(json!([
            {"id": "s", "type": "condition", "switch": [
                {"name": "huge", "if": "trigger.body.n > 100"},
                {"name": "big", "if": "trigger.body.n > 10"}]},
            http("h", &["s:huge"]), http("b", &["s:big"]), http("d", &["s:default"])
        ]));
        let templates = Templates::new();
        for (n, expected) in [(500, "h"), (50, "b"), (1, "d")] {
            let mut state = RunState::new(&s);
            let step = state.advance(&s, &context(json!({"body": {"n": n}})), &templates);
            let sent: Vec<_> = step.dispatch.iter().map(|d| d.node_id.as_str()).collect();
            assert_eq!(sent, [expected], "n = {n}");
        }
    }

    #[test]
    fn retryable_failures_retry_until_attempts_run_out_then_fail_the_run() {
        let s = scenario(json!([http("a", &[]), http("b", &["a"])]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);

        let Applied::Retry(retry) =
            state.apply_result(&s, &result("a", 1, failure(ErrorClass::Retryable)), 1.0)
        else {
            panic!("first failure retries");
        };
        assert_eq!((retry.attempt, retry.delay), (2, Duration::from_secs(1)));
        // A late duplicate of attempt 1 changes nothing.
        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(json!(1))), 1.0),
            Applied::Ignored
        );
        assert!(matches!(
            state.apply_result(&s, &result("a", 2, failure(ErrorClass::Timeout)), 1.0),
            Applied::Retry(_)
        ));
        assert_eq!(
            state.apply_result(&s, &result("a", 3, failure(ErrorClass::Retryable)), 1.0),
            Applied::Recorded
        );

        let step = state.advance(&s, &ctx, &templates);
        assert!(matches!(step.outcome, Some(RunOutcome::Failed { ref node, .. }) if node == "a"));
        assert_eq!(status(&state, "b"), NodeStatus::Cancelled);
    }

    #[test]
    fn permanent_failures_do_not_retry_and_retry_after_is_honoured() {
        let s = scenario(json!([http("a", &[])]));
        let mut state = RunState::new(&s);
        state.advance(&s, &context(json!({"body": {"n": 1}})), &Templates::new());
        let mut asked = NodeError::new(ErrorClass::Retryable, "slow down");
        asked.retry_after_ms = Some(7_000);
        let Applied::Retry(retry) =
            state.apply_result(&s, &result("a", 1, Outcome::Failure { error: asked }), 1.0)
        else {
            panic!("429 retries");
        };
        assert_eq!(retry.delay, Duration::from_secs(7));
        assert_eq!(
            state.apply_result(&s, &result("a", 2, failure(ErrorClass::Permanent)), 1.0),
            Applied::Recorded
        );
        assert_eq!(status(&state, "a"), NodeStatus::Failed);
    }

    #[test]
    fn answers_429_wait_per_retry_after_without_using_up_attempts() {
        let mut a = http("a", &[]);
        a["retry"] = json!({"max_attempts": 2});
        let s = scenario(json!([a]));
        let mut state = RunState::new(&s);
        state.advance(&s, &context(json!({"body": {"n": 1}})), &Templates::new());
        let mut slow_down = NodeError::new(ErrorClass::RateLimited, "429");
        slow_down.retry_after_ms = Some(3_000);
        for attempt in 1..=4 {
            let rate_limited = result(
                "a",
                attempt,
                Outcome::Failure {
                    error: slow_down.clone(),
                },
            );
            let Applied::Retry(retry) = state.apply_result(&s, &rate_limited, 1.0) else {
                panic!("a 429 on attempt {attempt} is tried again");
            };
            assert_eq!(retry.delay, Duration::from_secs(3));
        }
        assert_eq!(state.nodes["a"].rate_limited, 4);
        assert!(
            matches!(
                state.apply_result(&s, &result("a", 5, failure(ErrorClass::Retryable)), 1.0),
                Applied::Retry(_)
            ),
            "the first real failure is attempt 1 of 2"
        );
        assert_eq!(
            state.apply_result(&s, &result("a", 6, failure(ErrorClass::Retryable)), 1.0),
            Applied::Recorded,
            "the second real failure uses up max_attempts"
        );
        assert_eq!(status(&state, "a"), NodeStatus::Failed);
    }

    #[test]
    fn error_ports_and_continue_handle_failures() {
        let mut a = http("a", &[]);
        a["retry"] = json!({"max_attempts": 1});
        let mut b = http("b", &[]);
        b["on_error"] = json!("continue");
        let s = scenario(json!([
            a, b,
            {"id": "on_fail", "type": "transform", "after": ["a:error"], "output": {"msg": "{{ nodes.a.status }}"}},
            {"id": "after_a", "type": "transform", "after": ["a"], "output": {}},
            {"id": "after_b", "type": "transform", "after": ["b"], "output": {"class": "{{ nodes.b.output.class }}"}}
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        state.apply_result(&s, &result("a", 1, failure(ErrorClass::Permanent)), 1.0);
        state.apply_result(&s, &result("b", 1, failure(ErrorClass::Permanent)), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(status(&state, "on_fail"), NodeStatus::Completed);
        assert_eq!(status(&state, "after_a"), NodeStatus::Skipped);
        assert_eq!(
            state.nodes["after_b"].output,
            Some(json!({"class": "permanent"}))
        );
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
    }

    #[test]
    fn a_late_result_for_an_attempt_cancelled_in_flight_is_recorded_once() {
        let s = scenario(json!([http("a", &[]), http("b", &["a"])]));
        let mut state = RunState::new(&s);
        state.advance(&s, &context(json!({"body": {"n": 1}})), &Templates::new());
        // What ending the run does: everything unfinished is cancelled.
        for node in state.nodes.values_mut() {
            node.status = NodeStatus::Cancelled;
        }
        assert_eq!(
            state.apply_result(&s, &result("b", 1, success(json!(2))), 1.0),
            Applied::Ignored,
            "b was never dispatched"
        );
        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(json!(1))), 1.0),
            Applied::Recorded
        );
        assert_eq!(status(&state, "a"), NodeStatus::Completed);
        assert_eq!(state.nodes["a"].output, Some(json!(1)));
        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(json!("again"))), 1.0),
            Applied::Ignored
        );
    }

    #[test]
    fn resuming_keeps_recorded_nodes_and_adds_the_missing_ones_as_pending() {
        let s = scenario(json!([http("a", &[]), http("b", &["a"])]));
        let mut recorded = RunState::default();
        let done = NodeState {
            status: NodeStatus::Completed,
            output: Some(json!(1)),
            changed: false,
            ..NodeState::pending()
        };
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

    #[test]
    fn a_webhook_response_comes_from_the_respond_node_or_else_the_last_node() {
        let s = scenario(json!([
            {"id": "a", "type": "transform", "output": {"n": "{{ trigger.body.n }}"}},
            {"id": "reply", "type": "respond", "after": ["a"], "status": 201,
             "headers": {"x-n": "{{ nodes.a.output.n }}"}, "body": {"got": "{{ nodes.a.output.n }}"}},
            {"id": "z", "type": "transform", "after": ["reply"], "output": {"late": true}}
        ]));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &context(json!({"body": {"n": 7}})), &Templates::new());
        let outcome = step.outcome.expect("inline nodes finish the run");
        assert_eq!(
            state.response(&s, &outcome),
            json!({"status": 201, "headers": {"x-n": 7}, "body": {"got": 7}})
        );

        let without = scenario(json!([
            {"id": "a", "type": "transform", "output": {"first": true}},
            {"id": "b", "type": "transform", "after": ["a"], "output": {"last": "{{ trigger.body.n }}"}}
        ]));
        let mut state = RunState::new(&without);
        let outcome = state
            .advance(
                &without,
                &context(json!({"body": {"n": 2}})),
                &Templates::new(),
            )
            .outcome
            .expect("finished");
        assert_eq!(
            state.response(&without, &outcome),
            json!({"status": 200, "headers": {}, "body": {"last": 2}})
        );
        let failed = RunOutcome::Failed {
            node: "b".into(),
            error: NodeError::new(ErrorClass::Permanent, "no"),
        };
        assert_eq!(state.response(&without, &failed)["status"], 500);
        assert_eq!(
            state.response(&without, &failed)["body"]["error"]["node"],
            "b"
        );
    }

    /// A finished run where each node has the given status, finishing in the order given.
    fn finished(statuses: &[(&str, NodeStatus)]) -> RunState {
        let start = Utc::now();
        let nodes = statuses
            .iter()
            .zip(0..)
            .map(|(&(id, status), i)| {
                let state = NodeState {
                    status,
                    attempts: 1,
                    finished_at: Some(start + chrono::TimeDelta::seconds(i)),
                    changed: false,
                    ..NodeState::pending()
                };
                (id.to_owned(), state)
            })
            .collect();
        RunState { nodes }
    }

    #[test]
    fn a_replay_reuses_what_came_before_the_first_failed_node() {
        use NodeStatus::{Cancelled, Completed, Failed, Skipped};
        let s = scenario(json!([
            http("a", &[]),
            {"id": "c", "type": "condition", "after": ["a"], "if": "true"},
            http("no", &["c:false"]),
            http("b", &["c:true"]),
            http("d", &["b"]),
            http("side", &[]),
            http("after_side", &["side"])
        ]));
        let original = finished(&[
            ("a", Completed),
            ("c", Completed),
            ("no", Skipped),
            ("side", Failed),
            ("b", Failed),
            ("d", Cancelled),
            ("after_side", Cancelled),
        ]);
        let replay = original.replay(&s, None).expect("replayable");
        assert_eq!(replay.from, "side", "the first node to fail");
        assert_eq!(
            replay.reused,
            ["a", "c", "no"],
            "a skipped node is reused; b failed too and d never ran: both run again"
        );

        let replay = original.replay(&s, Some("c")).expect("replayable");
        assert_eq!(replay.reused, ["a"]);
    }

    #[test]
    fn a_replay_needs_a_failed_node_or_a_known_one() {
        let s = scenario(json!([http("a", &[]), http("b", &["a"])]));
        let original = finished(&[("a", NodeStatus::Completed), ("b", NodeStatus::Completed)]);
        assert_eq!(original.replay(&s, None), Err(ReplayError::NothingFailed));
        assert_eq!(
            original.replay(&s, Some("nope")),
            Err(ReplayError::UnknownNode("nope".into()))
        );
        let replay = original.replay(&s, Some("b")).expect("replayable");
        assert_eq!(replay.reused, ["a"]);

        // On a newer version without the failed node, the default start is unknown there.
        let failed = finished(&[("a", NodeStatus::Completed), ("old", NodeStatus::Failed)]);
        assert_eq!(
            failed.replay(&s, None),
            Err(ReplayError::UnknownNode("old".into()))
        );
    }

    #[test]
    fn outputs_are_mapped_by_jsonpath_and_the_raw_result_kept() {
        let mut a = http("a", &[]);
        a["outputs"] = json!({"first": "$.body.items[0].name", "all": "$.body.items[*].name", "none": "$.body.nope"});
        let s = scenario(json!([a]));
        let mut state = RunState::new(&s);
        state.advance(&s, &context(json!({"body": {"n": 1}})), &Templates::new());
        let raw = json!({"status": 200, "body": {"items": [{"name": "x"}, {"name": "y"}]}});
        state.apply_result(&s, &result("a", 1, success(raw.clone())), 1.0);
        assert_eq!(
            state.nodes["a"].output,
            Some(json!({"first": "x", "all": ["x", "y"], "none": null}))
        );
        assert_eq!(state.nodes["a"].raw_output, Some(raw));
    }

    /// An http result whose body nests `depth` objects, each with a string of `text_len`
    /// bytes: `$..*` selects every level with all that is under it.
    fn nested_response(depth: usize, text_len: usize) -> Value {
        let body = (0..depth).fold(
            json!({}),
            |inner, _| json!({"text": "x".repeat(text_len), "next": inner}),
        );
        json!({"status": 200, "headers": {}, "body": body})
    }

    #[test]
    fn outputs_selecting_over_the_limit_fail_the_node_for_good_naming_field_path_and_limit() {
        let mut a = http("a", &[]);
        a["outputs"] = json!({"all": "$..*"});
        a["retry"] = json!({"max_attempts": 5});
        let s = scenario(json!([a, http("b", &["a"])]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        // 1 MiB of response, 32 deep: what `$..*` selects would take 16 MiB.
        let raw = nested_response(32, 32 << 10);

        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(raw.clone())), 1.0),
            Applied::Recorded,
            "the same response would select as much again: no retry"
        );
        let a = &state.nodes["a"];
        assert_eq!((a.status, a.attempts), (NodeStatus::Failed, 1));
        assert_eq!(a.output, None);
        assert_eq!(a.raw_output.as_ref(), Some(&raw), "kept to see what came");
        let error = a.error.clone().expect("an error");
        assert_eq!(error.class, ErrorClass::Permanent);
        // The path as serde_json_path displays it (0.7.2 writes `$..*` as `$...*`).
        let every = JsonPath::parse("$..*").expect("a path");
        assert_eq!(
            error.message,
            format!(
                "node `a`, field `outputs.all`: what `{every}` selects passes the limit of {MAX_SELECTED_BYTES} bytes of JSON for one mapping; select less"
            )
        );
        let step = state.advance(&s, &ctx, &templates);
        assert!(step.dispatch.is_empty());
        assert_eq!(
            step.outcome,
            Some(RunOutcome::Failed {
                node: "a".into(),
                error: error.clone()
            })
        );
        assert_eq!(status(&state, "b"), NodeStatus::Cancelled);
    }

    #[test]
    fn under_on_error_continue_outputs_over_the_limit_pass_on_the_error() {
        let mut a = http("a", &[]);
        a["outputs"] = json!({"all": "$..*"});
        a["on_error"] = json!("continue");
        let s = scenario(json!([
            a,
            {"id": "after", "type": "transform", "after": ["a"], "output": {"class": "{{ nodes.a.output.class }}"}}
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        state.apply_result(
            &s,
            &result("a", 1, success(nested_response(32, 32 << 10))),
            1.0,
        );
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
        assert_eq!(status(&state, "a"), NodeStatus::Failed);
        let error = state.nodes["a"].error.clone().expect("an error");
        assert_eq!(
            state.nodes["a"].output,
            Some(serde_json::to_value(&error).expect("serializes"))
        );
        assert_eq!(
            state.nodes["after"].output,
            Some(json!({"class": "permanent"}))
        );
    }

    #[test]
    fn the_paths_of_one_outputs_mapping_are_counted_together() {
        let ids: Vec<usize> = (0..MAX_SELECTED_NODES / 2 + 1).collect();
        let raw = json!({"body": {"ids": ids}});
        let one = [(
            "first".to_owned(),
            JsonPath::parse("$.body.ids[*]").expect("a path"),
        )];
        let mapped = map_outputs(&one, &raw).expect("half the limit fits");
        assert_eq!(mapped["first"].as_array().map(Vec::len), Some(ids.len()));

        let two = [one[0].clone(), ("second".to_owned(), one[0].1.clone())];
        let error = map_outputs(&two, &raw).expect_err("twice half the limit does not");
        assert_eq!(error.field, "second");
        assert!(
            error.to_string().starts_with(&format!(
                "field `outputs.second`: `$.body.ids[*]` selects {} nodes, {} with the mapping's other paths, over the limit of {MAX_SELECTED_NODES}",
                ids.len(),
                2 * ids.len()
            )),
            "{error}"
        );
    }

    #[test]
    fn a_for_each_item_whose_outputs_select_over_the_limit_fails_alone() {
        let mut node = each("each", 10);
        node["outputs"] = json!({"first": "$.body.ids[0]", "all": "$..*"});
        node["on_error"] = json!("continue");
        let s = scenario(json!([node]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": ["a", "b", "c"]}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        let small = json!({"status": 200, "body": {"ids": [7]}});
        let large = json!({"status": 200, "body": {"ids": vec![7; MAX_SELECTED_NODES]}});
        state.apply_result(&s, &item_result("each", 0, 1, success(small.clone())), 1.0);
        assert_eq!(
            state.apply_result(&s, &item_result("each", 1, 1, success(large.clone())), 1.0),
            Applied::Recorded,
            "no retry"
        );
        state.apply_result(&s, &item_result("each", 2, 1, success(small.clone())), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));

        let items = state.nodes["each"].items.as_ref().expect("items");
        assert_eq!(
            item_status(&state, "each"),
            [
                NodeStatus::Completed,
                NodeStatus::Failed,
                NodeStatus::Completed
            ]
        );
        let error = items[1].error.as_ref().expect("an error");
        assert_eq!((error.class, items[1].attempts), (ErrorClass::Permanent, 1));
        let every = JsonPath::parse("$..*").expect("a path");
        assert!(
            error.message.starts_with(&format!(
                "node `each`, item 1, field `outputs.all`: `{every}` selects"
            )) && error
                .message
                .contains(&format!("over the limit of {MAX_SELECTED_NODES}")),
            "{}",
            error.message
        );
        assert_eq!(items[1].raw_output.as_ref(), Some(&large));
        let mapped = json!({"first": 7, "all": [{"ids": [7]}, 200, [7], 7]});
        let output = state.nodes["each"].output.as_ref().expect("an output");
        assert_eq!(output[0], mapped);
        assert_eq!(output[1], serde_json::to_value(error).expect("serializes"));
        assert_eq!(output[2], mapped);
    }

    #[test]
    fn a_template_error_fails_the_node_and_names_the_field() {
        let s = scenario(json!([http("a", &[])]));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &context(json!({"body": {}})), &Templates::new());
        let Some(RunOutcome::Failed { node, error }) = step.outcome else {
            panic!("undefined trigger.body.n must fail the run");
        };
        assert_eq!(node, "a");
        assert!(
            error.message.starts_with("node `a`, field `input`"),
            "{}",
            error.message
        );
        assert_eq!(error.class, ErrorClass::Permanent);
    }

    #[test]
    fn for_each_keeps_at_most_max_concurrency_items_in_flight_and_outputs_in_item_order() {
        let s = scenario(json!([
            each("each", 2),
            {"id": "join", "type": "transform", "after": ["each"], "output": {"all": "{{ nodes.each.output }}"}}
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": ["a", "b", "c", "d", "e"]}}));
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(sent(&step.dispatch), [(Some(0), 1), (Some(1), 1)]);
        assert_eq!(step.dispatch[1].input["url"], json!("http://up.test/1"));
        assert_eq!(step.dispatch[1].input["body"], json!({"item": "b"}));
        assert_eq!(status(&state, "each"), NodeStatus::Queued);
        assert_eq!(
            state.nodes["each"].input,
            Some(json!(["a", "b", "c", "d", "e"]))
        );

        // Items finish out of order; each frees one slot for the next pending item.
        let mut order = vec![1, 0, 3, 2, 4].into_iter();
        let mut dispatched = vec![0, 1];
        while let Some(index) = order.next() {
            let done = item_result("each", index, 1, success(json!(format!("r{index}"))));
            assert_eq!(state.apply_result(&s, &done, 1.0), Applied::Recorded);
            let step = state.advance(&s, &ctx, &templates);
            dispatched.extend(step.dispatch.iter().filter_map(|d| d.item_index));
            let in_flight = state.nodes["each"]
                .items
                .iter()
                .flatten()
                .filter(|item| item.status == NodeStatus::Queued)
                .count();
            assert!(in_flight <= 2, "{in_flight} items in flight");
            if order.len() > 0 {
                assert_eq!(status(&state, "join"), NodeStatus::Pending, "fan-in waits");
                assert_eq!(step.outcome, None);
            } else {
                assert_eq!(step.outcome, Some(RunOutcome::Completed));
            }
        }
        assert_eq!(dispatched, [0, 1, 2, 3, 4], "in item order, each once");
        let output = json!(["r0", "r1", "r2", "r3", "r4"]);
        assert_eq!(state.nodes["each"].output, Some(output.clone()));
        assert_eq!(status(&state, "each"), NodeStatus::Completed);
        assert_eq!(state.nodes["join"].output, Some(json!({"all": output})));
    }

    #[test]
    fn duplicate_stale_and_misaddressed_item_results_change_nothing() {
        let s = scenario(json!([each("each", 10), http("plain", &[])]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": [1, 2], "n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        let first = item_result("each", 0, 1, success(json!("first")));
        assert_eq!(state.apply_result(&s, &first, 1.0), Applied::Recorded);
        let before = state.clone();
        for ignored in [
            item_result("each", 0, 1, success(json!("again"))),
            item_result("each", 1, 2, success(json!("a later attempt"))),
            item_result("each", 7, 1, success(json!("no such item"))),
            result("each", 1, success(json!("no item index"))),
            item_result("plain", 0, 1, success(json!("not a for_each node"))),
        ] {
            assert_eq!(state.apply_result(&s, &ignored, 1.0), Applied::Ignored);
        }
        assert_eq!(state, before);
        state.apply_result(
            &s,
            &item_result("each", 1, 1, success(json!("second"))),
            1.0,
        );
        state.advance(&s, &ctx, &templates);
        assert_eq!(state.nodes["each"].output, Some(json!(["first", "second"])));
    }

    #[test]
    fn a_failed_item_retries_on_its_own_then_fails_the_node() {
        let s = scenario(json!([each("each", 2), http("after", &["each"])]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": ["a", "b", "c"], "n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);

        let Applied::Retry(retry) = state.apply_result(
            &s,
            &item_result("each", 1, 1, failure(ErrorClass::Retryable)),
            1.0,
        ) else {
            panic!("a retryable item failure retries the item");
        };
        assert_eq!((retry.item_index, retry.attempt), (Some(1), 2));
        assert_eq!(retry.input["body"], json!({"item": "b"}));
        state.apply_result(&s, &item_result("each", 0, 1, success(json!(0))), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(
            sent(&step.dispatch),
            [(Some(2), 1)],
            "the retrying item keeps its slot"
        );

        assert_eq!(
            state.apply_result(
                &s,
                &item_result("each", 1, 2, failure(ErrorClass::Permanent)),
                1.0
            ),
            Applied::Recorded
        );
        let step = state.advance(&s, &ctx, &templates);
        let Some(RunOutcome::Failed { node, error }) = step.outcome else {
            panic!("a failed item fails the node and the run: {step:?}");
        };
        assert_eq!(node, "each");
        assert_eq!(error.message, "item 1: boom");
        assert_eq!(status(&state, "each"), NodeStatus::Failed);
        assert_eq!(
            item_status(&state, "each"),
            [
                NodeStatus::Completed,
                NodeStatus::Failed,
                NodeStatus::Cancelled
            ]
        );
        assert_eq!(status(&state, "after"), NodeStatus::Cancelled);

        // The cancelled item's late result is recorded, and retries nothing.
        assert_eq!(
            state.apply_result(
                &s,
                &item_result("each", 2, 1, failure(ErrorClass::Retryable)),
                1.0
            ),
            Applied::Recorded
        );
        assert_eq!(status(&state, "each"), NodeStatus::Failed);
    }

    #[test]
    fn with_on_error_continue_a_failed_item_holds_its_error_and_the_node_completes() {
        let mut node = each("each", 10);
        node["on_error"] = json!("continue");
        node["retry"] = json!({"max_attempts": 1});
        node["outputs"] = json!({"id": "$.body.id"});
        let s = scenario(json!([node]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": ["a", "b"]}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        state.apply_result(
            &s,
            &item_result("each", 1, 1, failure(ErrorClass::Retryable)),
            1.0,
        );
        let raw = json!({"status": 200, "body": {"id": 7}});
        state.apply_result(&s, &item_result("each", 0, 1, success(raw.clone())), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
        assert_eq!(status(&state, "each"), NodeStatus::Completed);
        assert_eq!(
            state.nodes["each"].output,
            Some(json!([{"id": 7}, {"class": "retryable", "message": "boom"}]))
        );
        let items = state.nodes["each"].items.as_ref().expect("items");
        assert_eq!(items[0].raw_output, Some(raw));
        assert_eq!(items[1].status, NodeStatus::Failed);
    }

    #[test]
    fn an_empty_array_completes_at_once_and_a_non_array_fails_naming_the_field() {
        let s = scenario(json!([
            each("each", 3),
            {"id": "after", "type": "transform", "after": ["each"], "output": {"n": "{{ nodes.each.output | length }}"}}
        ]));
        let templates = Templates::new();
        let mut state = RunState::new(&s);
        let step = state.advance(&s, &context(json!({"body": {"items": []}})), &templates);
        assert!(step.dispatch.is_empty());
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
        assert_eq!(state.nodes["each"].output, Some(json!([])));
        assert_eq!(state.nodes["after"].output, Some(json!({"n": 0})));

        let mut state = RunState::new(&s);
        let step = state.advance(
            &s,
            &context(json!({"body": {"items": {"a": 1}}})),
            &templates,
        );
        let Some(RunOutcome::Failed { node, error }) = step.outcome else {
            panic!("an object is not an array");
        };
        assert_eq!(node, "each");
        assert_eq!(
            error.message,
            "node `each`, field `for_each`: must render to an array, got an object"
        );
        assert_eq!(error.class, ErrorClass::Permanent);
    }

    #[test]
    fn an_item_whose_input_does_not_render_fails_alone() {
        let mut node = each("each", 10);
        node["input"]["body"] = json!({"name": "name: {{ item.name }}"});
        node["on_error"] = json!("continue");
        let s = scenario(json!([node]));
        let mut state = RunState::new(&s);
        let ctx = context(json!({"body": {"items": [{"name": "x"}, {}]}}));
        let step = state.advance(&s, &ctx, &Templates::new());
        assert_eq!(sent(&step.dispatch), [(Some(0), 1)]);
        let items = state.nodes["each"].items.as_ref().expect("items");
        assert_eq!(items[1].status, NodeStatus::Failed);
        let message = &items[1].error.as_ref().expect("an error").message;
        assert!(
            message.starts_with("node `each`, item 1, field `input`"),
            "{message}"
        );
    }

    fn delay(wait: Value) -> Value {
        let mut node = json!({"id": "wait", "type": "delay", "after": ["a"]});
        for (key, value) in wait.as_object().expect("an object") {
            node[key] = value.clone();
        }
        node
    }

    #[test]
    fn a_delay_is_dispatched_to_wait_its_duration_and_records_its_result() {
        let s = scenario(json!([
            http("a", &[]),
            delay(json!({"duration": "90s"})),
            http("b", &["wait"])
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        state.apply_result(&s, &result("a", 1, success(json!(1))), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.dispatch.len(), 1);
        let wait = &step.dispatch[0];
        assert_eq!(
            (wait.node_id.as_str(), wait.delay),
            ("wait", Duration::from_secs(90))
        );
        let until =
            (ctx.now + chrono::TimeDelta::seconds(90)).to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(wait.input, json!({"until": until}));
        assert_eq!(status(&state, "wait"), NodeStatus::Queued);
        assert_eq!(status(&state, "b"), NodeStatus::Pending);

        // Its task lost, it is tried again, still waiting until its time.
        let mut lost = result("wait", 1, failure(ErrorClass::Timeout));
        lost.finished_at = ctx.now + chrono::TimeDelta::seconds(30);
        let Applied::Retry(retry) = state.apply_result(&s, &lost, 1.0) else {
            panic!("a lost delay is retried");
        };
        assert_eq!(retry.delay, Duration::from_secs(60));

        let done = json!({"waited_until": until});
        state.apply_result(&s, &result("wait", 2, success(done.clone())), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(state.nodes["wait"].output, Some(done));
        assert_eq!(
            step.dispatch
                .iter()
                .map(|d| d.node_id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn a_delay_until_a_past_time_completes_at_once_and_a_bad_time_fails() {
        let s = scenario(json!([
            http("a", &[]),
            delay(json!({"until": "{{ trigger.body.at }}"})),
            http("b", &["wait"])
        ]));
        let templates = Templates::new();
        let run = |at: Value| {
            let ctx = context(json!({"body": {"n": 1, "at": at}}));
            let mut state = RunState::new(&s);
            state.advance(&s, &ctx, &templates);
            state.apply_result(&s, &result("a", 1, success(json!(1))), 1.0);
            let step = state.advance(&s, &ctx, &templates);
            (state, step, ctx.now)
        };

        let (state, step, now) = run(json!("2001-02-03T04:05:06Z"));
        let now = now.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(status(&state, "wait"), NodeStatus::Completed);
        assert_eq!(
            state.nodes["wait"].output,
            Some(json!({"waited_until": now}))
        );
        assert_eq!(sent(&step.dispatch), [(None, 1)], "b runs at once");
        assert_eq!(step.dispatch[0].node_id, "b");

        let later = Utc::now() + chrono::TimeDelta::hours(2);
        let (_, step, now) = run(json!(later.to_rfc3339()));
        assert_eq!(step.dispatch[0].node_id, "wait");
        let expected = (later - now).to_std().expect("in the future");
        assert!(
            step.dispatch[0].delay.abs_diff(expected) < Duration::from_millis(1),
            "{:?}",
            step.dispatch[0].delay
        );

        let (_, step, _) = run(json!("tomorrow"));
        let Some(RunOutcome::Failed { node, error }) = step.outcome else {
            panic!("not a timestamp");
        };
        assert_eq!(node, "wait");
        assert!(
            error
                .message
                .starts_with("node `wait`, field `until`: `tomorrow` is not an RFC 3339 timestamp"),
            "{}",
            error.message
        );
    }
}

/// `outputs` mappings over arbitrary paths and results: a path either parses or is
/// refused, and a parsed path maps any result without panicking.
#[cfg(test)]
mod output_mapping {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::testing::json_value;

    /// Paths made of the pieces of RFC 9535, in any order.
    fn path_text() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "$",
            "$",
            ".",
            "..",
            "*",
            "[",
            "]",
            "[*]",
            "[0]",
            "[-1]",
            "[1:]",
            "[::-1]",
            "[::0]",
            "[-9223372036854775808]",
            "[9007199254740992]",
            "['a']",
            "[\"b\"]",
            "a",
            "b",
            "body",
            "?",
            "@",
            "@.a",
            "==",
            "!=",
            "<",
            "&&",
            "||",
            "!",
            "(",
            ")",
            ",",
            ":",
            "length(@)",
            "count(@.*)",
            "match(@, 'a.*')",
            "search(@, '[')",
            "value(@..a)",
            "'",
            "\\u0000",
            " ",
            "1",
            "true",
            "null",
        ];
        prop::collection::vec(prop::sample::select(PIECES), 0..16)
            .prop_map(|pieces| pieces.concat())
    }

    /// A position inside `value`, as the path to it and the value found there.
    fn positions(value: &Value) -> Vec<(String, Value)> {
        let mut found = Vec::new();
        let mut pending = vec![("$".to_owned(), value)];
        while let Some((path, value)) = pending.pop() {
            match value {
                Value::Array(items) => pending.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{path}[{i}]"), item)),
                ),
                Value::Object(fields) => pending.extend(
                    fields
                        .iter()
                        .map(|(key, item)| (format!("{path}[{}]", quoted(key)), item)),
                ),
                _ => {}
            }
            found.push((path, value.clone()));
        }
        found
    }

    /// A name selector for `key` (RFC 9535 §2.3.1.1): single-quoted, escaped.
    fn quoted(key: &str) -> String {
        let mut out = String::from("'");
        for c in key.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_path_parses_or_is_refused_and_maps_any_result(text in path_text(), raw in json_value()) {
            if let Ok(path) = JsonPath::parse(&text) {
                let mapped = map_outputs(&[("x".to_owned(), path)], &raw)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(mapped.get("x").is_some(), "every mapping has its field");
            }
        }

        /// A path to a position, however odd its keys, maps to exactly the value there.
        #[test]
        fn a_path_to_a_position_maps_to_its_value(raw in json_value(), pick in any::<prop::sample::Index>()) {
            let all = positions(&raw);
            let (text, expected) = pick.get(&all).clone();
            let path = JsonPath::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(map_outputs(&[("x".to_owned(), path)], &raw), Ok(json!({"x": expected})));
        }
    }
}
