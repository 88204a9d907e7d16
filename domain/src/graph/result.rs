//! A worker's result for one attempt of a node, recorded into the run: the node completes,
//! fails, or is tried again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::items::apply_item_result;
use super::state::{Applied, RunState};
use crate::messages::{NodeResult, Outcome};
use crate::scenario::{NodeKind, Scenario};

impl RunState {
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
        // A run that ended (cancelled, timed out) cancels the attempts it had out; their
        // result, when it still comes, is recorded.
        if !state.record.awaits(result.attempt) {
            return Applied::Ignored;
        }
        state.changed = true;
        state.record.started_at = Some(result.started_at);
        state.record.finished_at = Some(result.finished_at);
        match &result.outcome {
            Outcome::Success { output } => {
                state
                    .record
                    .complete(node, output, &format!("node `{}`", node.id));
                Applied::Recorded
            }
            Outcome::Failure { error } if state.record.may_retry(error, node) => {
                let mut delay = state.record.retry(node, error, jitter);
                if let NodeKind::Delay { .. } = node.kind {
                    // A delay retried (its task was lost) still waits until its time.
                    let input = state.record.input.as_ref();
                    delay = delay.max(remaining_wait(input, result.finished_at));
                }
                Applied::Retry(state.record.dispatch(node, None, delay))
            }
            Outcome::Failure { error } => {
                state.fail(node, error.clone());
                Applied::Recorded
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::fixtures::*;
    use crate::graph::{NodeStatus, RunOutcome};
    use crate::messages::{ErrorClass, NodeError};
    use crate::template::Templates;
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
        assert_eq!(state.nodes["a"].record.rate_limited, 4);
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
            state.nodes["after_b"].record.output,
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
            node.record.status = NodeStatus::Cancelled;
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
        assert_eq!(state.nodes["a"].record.output, Some(json!(1)));
        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(json!("again"))), 1.0),
            Applied::Ignored
        );
    }
}
