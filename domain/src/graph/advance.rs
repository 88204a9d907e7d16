//! One evaluation of a run: what is ready, skipped, evaluated inline or dispatched, and
//! whether the run is over.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::attempt::{Dispatch, NodeStatus};
use super::state::{RunContext, RunOutcome, RunState, Step};
use crate::messages::{ErrorClass, NodeError};
use crate::scenario::{DEFAULT_CASE, ERROR_PORT, Node, NodeKind, OnError, Scenario, Wait};
use crate::template::{self, Templates};

impl RunState {
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
            if state.items.is_some() && state.record.status == NodeStatus::Queued {
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
                if self.nodes[&node.id].record.status != NodeStatus::Pending {
                    continue;
                }
                let Some(runs) = self.is_reached(node) else {
                    continue;
                };
                if !runs {
                    let state = self.state_mut(&node.id);
                    state.record.status = NodeStatus::Skipped;
                    state.record.finished_at = Some(context.now);
                    state.changed = true;
                } else {
                    step.dispatch.extend(self.start(node, context, templates));
                }
                continue 'evaluate;
            }
            break;
        }
        let finished = self.nodes.values().all(|s| s.record.status.is_terminal());
        step.outcome = finished.then_some(RunOutcome::Completed);
        step
    }

    /// `None` while a predecessor is unfinished; then whether any incoming edge was taken.
    fn is_reached(&self, node: &Node) -> Option<bool> {
        let mut taken = node.after.is_empty();
        for edge in &node.after {
            let from = &self.nodes[&edge.from];
            if !from.record.status.is_terminal() {
                return None;
            }
            let fired = match (from.record.status, edge.port.as_deref()) {
                (NodeStatus::Completed, None) => true,
                (NodeStatus::Completed, Some(port)) => from.port.as_deref() == Some(port),
                (NodeStatus::Failed, Some(ERROR_PORT)) => true,
                // A failure with `on_error: continue` carries its error as output.
                (NodeStatus::Failed, None) => from.record.output.is_some(),
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
            .filter(|(_, state)| state.record.status.is_terminal())
            .map(|(id, state)| {
                let view =
                    json!({"output": state.record.output, "status": state.record.status, "error": state.record.error});
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
                state.record.attempts = 1;
                state.record.queued_at = Some(now);
                return match templates.render_value(input, &scope) {
                    Ok(rendered) => {
                        state.record.status = NodeStatus::Queued;
                        state.record.input = Some(rendered);
                        vec![state.record.dispatch(node, None, Duration::ZERO)]
                    }
                    Err(e) => {
                        state.record.started_at = Some(now);
                        state.record.finished_at = Some(now);
                        state.fail(node, template_error("input", e));
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
        state.record.attempts = 1;
        state.record.started_at = Some(now);
        state.record.finished_at = Some(now);
        match evaluated {
            Ok((output, port)) => {
                state.record.status = NodeStatus::Completed;
                state.record.output = Some(output);
                state.port = port;
            }
            Err(error) => state.fail(node, error),
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
        state.record.attempts = 1;
        state.record.queued_at = Some(now);
        let until = match until {
            Ok(until) => until.max(now),
            Err(message) => {
                state.record.started_at = Some(now);
                state.record.finished_at = Some(now);
                let message = format!("node `{}`, {message}", node.id);
                state.fail(node, NodeError::new(ErrorClass::Permanent, message));
                return None;
            }
        };
        let at = until.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        state.record.input = Some(json!({ "until": at }));
        let delay = (until - now).to_std().unwrap_or_default();
        if delay.is_zero() {
            // A time already past: no wait, nothing to dispatch.
            state.record.status = NodeStatus::Completed;
            state.record.output = Some(json!({ "waited_until": at }));
            state.record.started_at = Some(now);
            state.record.finished_at = Some(now);
            return None;
        }
        state.record.status = NodeStatus::Queued;
        Some(state.record.dispatch(node, None, delay))
    }

    /// The first failed node that neither `on_error: continue` nor an error port handles.
    fn unhandled_failure(&self, scenario: &Scenario) -> Option<RunOutcome> {
        scenario.nodes.iter().find_map(|node| {
            let state = &self.nodes[&node.id];
            let handled = node.on_error == OnError::Continue || scenario.has_error_branch(&node.id);
            (state.record.status == NodeStatus::Failed && !handled).then(|| RunOutcome::Failed {
                node: node.id.clone(),
                error: state
                    .record
                    .error
                    .clone()
                    .unwrap_or_else(|| NodeError::new(ErrorClass::Permanent, "failed")),
            })
        })
    }
}

/// How a JSON value is named in errors.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::Applied;
    use crate::graph::fixtures::*;
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
        assert_eq!(state.nodes["wait"].record.output, Some(done));
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
            state.nodes["wait"].record.output,
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
