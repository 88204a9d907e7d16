//! A replay of a run: which recorded outcomes it reuses, and where it starts.

use std::collections::{BTreeMap, HashSet};

use super::attempt::NodeStatus;
use super::state::RunState;
use crate::scenario::Scenario;

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

impl RunState {
    /// The node a replay starts from by default: the first to fail.
    pub fn first_failed(&self) -> Option<&str> {
        self.nodes
            .iter()
            .filter(|(_, state)| state.record.status == NodeStatus::Failed)
            .min_by_key(|(id, state)| (state.record.finished_at, *id))
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
                matches!(
                    state.record.status,
                    NodeStatus::Completed | NodeStatus::Skipped
                )
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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use chrono::Utc;

    use super::*;
    use crate::graph::NodeState;
    use crate::graph::fixtures::*;
    /// A finished run where each node has the given status, finishing in the order given.
    fn finished(statuses: &[(&str, NodeStatus)]) -> RunState {
        let start = Utc::now();
        let nodes = statuses
            .iter()
            .zip(0..)
            .map(|(&(id, status), i)| {
                let mut state = NodeState::pending();
                state.record.status = status;
                state.record.attempts = 1;
                state.record.finished_at = Some(start + chrono::TimeDelta::seconds(i));
                state.changed = false;
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
}
