//! Evaluation of one run's graph, as a plain function over data.
//!
//! The scheduler loads a run's [`RunState`], applies a result or starts the run, calls
//! [`RunState::advance`], and persists what changed. `advance` evaluates pure nodes
//! (transform, condition) inline, decides which action nodes to dispatch, propagates
//! skips and decides when the run is over.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;
use uuid::Uuid;

use crate::messages::{ErrorClass, NodeError, NodeResult, Outcome};
use crate::scenario::{DEFAULT_CASE, ERROR_PORT, Node, NodeKind, OnError, Scenario};
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
    /// Set when this evaluation changed the node, so only changed rows are written.
    pub changed: bool,
}

impl NodeState {
    pub fn pending() -> Self {
        Self {
            status: NodeStatus::Pending,
            attempts: 0,
            input: None,
            output: None,
            raw_output: None,
            error: None,
            port: None,
            queued_at: None,
            started_at: None,
            finished_at: None,
            changed: true,
        }
    }
}

/// What a run's templates can see besides node outputs.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: Uuid,
    pub trigger: Value,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// An action node attempt to send to the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub node_id: String,
    pub attempt: u32,
    pub input: Value,
    /// How long to wait before the attempt (retry backoff).
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
                state.status = NodeStatus::Completed;
                state.error = None;
                match mapped {
                    Some(mapped) => {
                        state.output = Some(mapped);
                        state.raw_output = Some(output.clone());
                    }
                    None => state.output = Some(output.clone()),
                }
                Applied::Recorded
            }
            Outcome::Failure { error } => {
                if error.class.is_retryable() && state.attempts < node.retry.max_attempts {
                    let retry_after = error.retry_after_ms.map(Duration::from_millis);
                    let delay = node.retry.backoff(state.attempts, jitter, retry_after);
                    state.attempts += 1;
                    state.status = NodeStatus::Queued;
                    state.error = Some(error.clone());
                    state.finished_at = None;
                    return Applied::Retry(Dispatch {
                        node_id: node.id.clone(),
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
                } else if let Some(dispatch) = self.start(node, context, templates) {
                    step.dispatch.push(dispatch);
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
        template::scope(&json!({
            "trigger": context.trigger,
            "nodes": nodes,
            "run": {"id": context.run_id, "started_at": context.started_at},
        }))
    }

    /// Starts a reached node: evaluates pure nodes, prepares action nodes for dispatch.
    fn start(
        &mut self,
        node: &Node,
        context: &RunContext,
        templates: &Templates,
    ) -> Option<Dispatch> {
        let scope = self.scope(context);
        let now = context.now;
        let template_error = |field: &str, e: template::TemplateError| {
            NodeError::new(
                ErrorClass::Permanent,
                format!("node `{}`, field `{field}`: {e}", node.id),
            )
        };
        let evaluated: Result<(Value, Option<String>), NodeError> = match &node.kind {
            NodeKind::Action { input, .. } => {
                let state = self.state_mut(&node.id);
                state.changed = true;
                state.attempts = 1;
                state.queued_at = Some(now);
                return match templates.render_value(input, &scope) {
                    Ok(rendered) => {
                        state.status = NodeStatus::Queued;
                        state.input = Some(rendered.clone());
                        Some(Dispatch {
                            node_id: node.id.clone(),
                            attempt: 1,
                            input: rendered,
                            delay: Duration::ZERO,
                            timeout: node.timeout,
                        })
                    }
                    Err(e) => {
                        state.started_at = Some(now);
                        state.finished_at = Some(now);
                        fail(node, state, template_error("input", e));
                        None
                    }
                };
            }
            NodeKind::Transform { output } => templates
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
        None
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

fn fail(node: &Node, state: &mut NodeState, error: NodeError) {
    state.status = NodeStatus::Failed;
    state.changed = true;
    if node.on_error == OnError::Continue {
        state.output = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
    }
    state.error = Some(error);
}

/// Applies `outputs` mappings: no match gives `null`, one match its value, several an array.
pub fn map_outputs(outputs: &[(String, JsonPath)], raw: &Value) -> Value {
    let mapped = outputs
        .iter()
        .map(|(name, path)| {
            let mut found = path.query(raw).all();
            let value = match found.len() {
                0 => Value::Null,
                1 => found.remove(0).clone(),
                _ => Value::Array(found.into_iter().cloned().collect()),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            run_id: Uuid::nil(),
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
            run_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            node_id: node.into(),
            attempt,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome,
        }
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
}
