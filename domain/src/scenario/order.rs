//! The order a scenario's nodes run in: every node after its predecessors.

use std::collections::{HashMap, HashSet};

use super::model::Scenario;

/// Node ids in an order where every node comes after its predecessors, or the id of a
/// node on a cycle.
pub fn topological_order(scenario: &Scenario) -> Result<Vec<String>, String> {
    let mut remaining: HashMap<&str, usize> = scenario
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.after.len()))
        .collect();
    let mut successors: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in &scenario.nodes {
        for edge in &node.after {
            successors
                .entry(edge.from.as_str())
                .or_default()
                .push(&node.id);
        }
    }
    let mut ready: Vec<&str> = scenario
        .nodes
        .iter()
        .filter(|n| n.after.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    let mut order = Vec::with_capacity(scenario.nodes.len());
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for next in successors.get(id).into_iter().flatten() {
            let count = remaining.get_mut(next).expect("every successor is a node");
            *count -= 1;
            if *count == 0 {
                ready.push(next);
            }
        }
    }
    if order.len() == scenario.nodes.len() {
        Ok(order)
    } else {
        let on_cycle = scenario
            .nodes
            .iter()
            .find(|n| remaining[n.id.as_str()] > 0)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        Err(on_cycle)
    }
}

/// For every node, the set of nodes that always finish before it.
pub(super) fn ancestors(scenario: &Scenario) -> HashMap<String, HashSet<String>> {
    let order = topological_order(scenario).unwrap_or_default();
    let mut result: HashMap<String, HashSet<String>> = HashMap::new();
    for id in order {
        let node = scenario.node(&id).expect("ordered ids are nodes");
        let mut set = HashSet::new();
        for edge in &node.after {
            set.insert(edge.from.clone());
            if let Some(upstream) = result.get(&edge.from) {
                set.extend(upstream.iter().cloned());
            }
        }
        result.insert(id, set);
    }
    result
}
