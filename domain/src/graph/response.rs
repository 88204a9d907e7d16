//! The answer of a webhook that responds on completion, once its run is over.

use serde_json::{Value, json};

use super::attempt::NodeStatus;
use super::state::{RunOutcome, RunState};
use crate::scenario::{NodeKind, Scenario};

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
            (state.record.status == NodeStatus::Completed)
                .then(|| state.record.output.clone())
                .flatten()
        });
        if let Some(output) = responded {
            return output;
        }
        let last = self
            .nodes
            .values()
            .filter(|state| state.record.status == NodeStatus::Completed)
            .max_by_key(|state| state.record.finished_at)
            .and_then(|state| state.record.output.clone());
        json!({"status": 200, "headers": {}, "body": last})
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::fixtures::*;
    use crate::messages::{ErrorClass, NodeError};
    use crate::template::Templates;

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
}
