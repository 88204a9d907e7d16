//! The items of a `for_each` node: one state per item, at most `max_concurrency` in
//! flight, the node finished when every item has finished (or one failed for good).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::advance::json_kind;
use super::attempt::{Dispatch, NodeStatus};
use super::state::{Applied, ItemState, NodeState, RunState};
use crate::messages::{ErrorClass, NodeError, NodeResult, Outcome};
use crate::scenario::{ForEach, Node, NodeKind, OnError};
use crate::template::{self, Templates};

/// Most items a `for_each` node may have: its item states live in one row, rewritten as
/// each item finishes.
pub const MAX_ITEMS: usize = 1_000;

impl RunState {
    /// Starts a `for_each` node: renders its array and every item's input, then
    /// dispatches the first window of items.
    pub(super) fn start_items(
        &mut self,
        node: &Node,
        for_each: &ForEach,
        input: &Value,
        scope: &minijinja::Value,
        now: DateTime<Utc>,
        templates: &Templates,
    ) -> Vec<Dispatch> {
        let fail_now = |state: &mut NodeState, message: String| {
            state.record.started_at = Some(now);
            state.record.finished_at = Some(now);
            let message = format!("node `{}`, field `for_each`: {message}", node.id);
            state.fail(node, NodeError::new(ErrorClass::Permanent, message));
        };
        let rendered = templates.render_value(&Value::String(for_each.items.clone()), scope);
        let state = self.state_mut(&node.id);
        state.changed = true;
        state.record.attempts = 1;
        state.record.queued_at = Some(now);
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
                        item.record.input = None;
                        item.record.attempts = 1;
                        item.record.started_at = Some(now);
                        item.record.finished_at = Some(now);
                        let message =
                            format!("node `{}`, item {index}, field `input`: {e}", node.id);
                        item.fail(node, NodeError::new(ErrorClass::Permanent, message));
                        item
                    }
                }
            })
            .collect();
        state.record.status = NodeStatus::Queued;
        state.record.input = Some(Value::Array(array));
        state.items = Some(items);
        self.progress_items(node, now)
    }

    /// Moves a `for_each` node in flight on: fails it when an item failed for good
    /// (unless `on_error: continue`), completes it when every item finished, or else
    /// dispatches pending items while fewer than `max_concurrency` are in flight.
    pub(super) fn progress_items(&mut self, node: &Node, now: DateTime<Utc>) -> Vec<Dispatch> {
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
        let latest = items
            .iter()
            .filter_map(|item| item.record.finished_at)
            .max();
        let failed = (node.on_error != OnError::Continue)
            .then(|| {
                items
                    .iter()
                    .enumerate()
                    .find(|(_, item)| item.record.status == NodeStatus::Failed)
            })
            .flatten()
            .map(|(index, item)| {
                let mut error = item
                    .record
                    .error
                    .clone()
                    .unwrap_or_else(|| NodeError::new(ErrorClass::Permanent, "failed"));
                error.message = format!("item {index}: {}", error.message);
                error
            });
        if let Some(error) = failed {
            // The node is over: its other items are not dispatched, or not waited for.
            for item in items.iter_mut() {
                item.cancel(now);
            }
            state.record.finished_at = latest.or(Some(now));
            state.fail(node, error);
            return Vec::new();
        }
        if items.iter().all(|item| item.record.status.is_terminal()) {
            let output = items
                .iter()
                .map(|item| item.record.output.clone().unwrap_or(Value::Null))
                .collect();
            state.record.status = NodeStatus::Completed;
            state.record.output = Some(Value::Array(output));
            state.record.error = None;
            state.record.started_at = state.record.started_at.or(Some(now));
            state.record.finished_at = latest.or(Some(now));
            state.changed = true;
            return Vec::new();
        }
        let in_flight = items
            .iter()
            .filter(|item| item.record.is_in_flight())
            .count();
        let free = usize::try_from(for_each.max_concurrency)
            .unwrap_or(usize::MAX)
            .saturating_sub(in_flight);
        let mut dispatch = Vec::new();
        for (index, item) in items
            .iter_mut()
            .enumerate()
            .filter(|(_, item)| item.record.status == NodeStatus::Pending)
            .take(free)
        {
            item.record.status = NodeStatus::Queued;
            item.record.attempts = 1;
            item.record.queued_at = Some(now);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            dispatch.push(item.record.dispatch(node, Some(index), Duration::ZERO));
        }
        if !dispatch.is_empty() {
            state.changed = true;
        }
        dispatch
    }
}

/// Records one attempt's result for one item of a `for_each` node. Finishing the node
/// (or dispatching the next items) is left to [`RunState::advance`].
pub(super) fn apply_item_result(
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
    // is still recorded when its result comes.
    if !item.record.awaits(result.attempt) {
        return Applied::Ignored;
    }
    // Only an item of a node still in flight is tried again.
    let may_retry_item = item.record.is_in_flight() && state.record.is_in_flight();
    state.changed = true;
    state.record.started_at = state
        .record
        .started_at
        .min(Some(result.started_at))
        .or(Some(result.started_at));
    item.record.started_at = Some(result.started_at);
    item.record.finished_at = Some(result.finished_at);
    item.deadline_at = None;
    match &result.outcome {
        Outcome::Success { output } => {
            let subject = format!("node `{}`, item {index}", node.id);
            item.record.complete(node, output, &subject);
            Applied::Recorded
        }
        Outcome::Failure { error } if may_retry_item && item.record.may_retry(error, node) => {
            let delay = item.record.retry(node, error, jitter);
            Applied::Retry(item.record.dispatch(node, Some(index), delay))
        }
        Outcome::Failure { error } => {
            item.fail(node, error.clone());
            Applied::Recorded
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::RunOutcome;
    use crate::graph::fixtures::*;
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
            state.nodes["each"].record.input,
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
                .filter(|item| item.record.status == NodeStatus::Queued)
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
        assert_eq!(state.nodes["each"].record.output, Some(output.clone()));
        assert_eq!(status(&state, "each"), NodeStatus::Completed);
        assert_eq!(
            state.nodes["join"].record.output,
            Some(json!({"all": output}))
        );
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
        assert_eq!(
            state.nodes["each"].record.output,
            Some(json!(["first", "second"]))
        );
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
            state.nodes["each"].record.output,
            Some(json!([{"id": 7}, {"class": "retryable", "message": "boom"}]))
        );
        let items = state.nodes["each"].items.as_ref().expect("items");
        assert_eq!(items[0].record.raw_output, Some(raw));
        assert_eq!(items[1].record.status, NodeStatus::Failed);
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
        assert_eq!(state.nodes["each"].record.output, Some(json!([])));
        assert_eq!(state.nodes["after"].record.output, Some(json!({"n": 0})));

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
        assert_eq!(items[1].record.status, NodeStatus::Failed);
        let message = &items[1].record.error.as_ref().expect("an error").message;
        assert!(
            message.starts_with("node `each`, item 1, field `input`"),
            "{message}"
        );
    }
}
