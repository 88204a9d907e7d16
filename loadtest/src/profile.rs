//! The scenarios under test, as Weft definitions calling the mock upstream.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Profile {
    /// webhook → transform → http GET → condition → http POST (the enrichment flow).
    Chain4,
    /// 40 sequential http steps.
    Chain40,
}

impl Profile {
    pub fn definition(self, upstream: &str) -> Value {
        match self {
            Self::Chain4 => json!({
                "name": "loadtest chain4",
                "trigger": {"type": "webhook"},
                "nodes": [
                    {"id": "prepare", "type": "transform", "output": {"phone": "{{ trigger.body.phone }}"}},
                    {"id": "lookup", "type": "action", "connector": "http", "action": "request", "after": ["prepare"],
                     "input": {"method": "GET", "url": format!("{upstream}/people"), "query": {"phone": "{{ nodes.prepare.output.phone }}"}},
                     "outputs": {"first_name": "$.body.identities[0].firstName"}},
                    {"id": "is_known", "type": "condition", "after": ["lookup"], "if": "nodes.lookup.output.first_name is not none"},
                    {"id": "notify", "type": "action", "connector": "http", "action": "request", "after": ["is_known:true"],
                     "input": {"method": "POST", "url": format!("{upstream}/notify"), "body": {"name": "{{ nodes.lookup.output.first_name }}"}}}
                ]
            }),
            Self::Chain40 => {
                let nodes: Vec<Value> = (0..40)
                    .map(|i| {
                        let after: Vec<String> = if i == 0 { vec![] } else { vec![format!("step{}", i - 1)] };
                        json!({"id": format!("step{i}"), "type": "action", "connector": "http", "action": "request",
                               "after": after, "input": {"method": "GET", "url": format!("{upstream}/step")}})
                    })
                    .collect();
                json!({"name": "loadtest chain40", "trigger": {"type": "webhook"}, "nodes": nodes})
            }
        }
    }

    /// Upstream calls one run makes (node steps executed by workers).
    pub fn steps(self) -> usize {
        match self {
            Self::Chain4 => 2,
            Self::Chain40 => 40,
        }
    }
}
