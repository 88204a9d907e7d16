//! The scenarios under test, as Weft definitions calling the mock upstream.
//!
//! Each profile's last upstream call goes to a path ending in `/last`: the mock counts
//! those, which tells the driver how many runs reached their end without asking the
//! fleet (see [`crate::mock`]).

use serde_json::{Value, json};

/// Items of the `fanout` profile's `for_each`.
pub const FANOUT_ITEMS: usize = 50;
/// Steps of the `chain40` profile.
const CHAIN40_STEPS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// webhook → transform → http GET → condition → http POST (the enrichment flow).
    Chain4,
    /// 40 sequential http steps.
    Chain40,
    /// One http action `for_each` over 50 items (all in flight at once), then a joining
    /// http POST that reads the array of their results.
    Fanout,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chain4 => "chain4",
            Self::Chain40 => "chain40",
            Self::Fanout => "fanout",
        }
    }

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
                     "input": {"method": "POST", "url": format!("{upstream}/notify/last"), "body": {"name": "{{ nodes.lookup.output.first_name }}"}}}
                ]
            }),
            Self::Chain40 => {
                let nodes: Vec<Value> = (0..CHAIN40_STEPS)
                    .map(|i| {
                        let after: Vec<String> = if i == 0 { vec![] } else { vec![format!("step{}", i - 1)] };
                        let path = if i + 1 == CHAIN40_STEPS { "last".to_owned() } else { i.to_string() };
                        json!({"id": format!("step{i}"), "type": "action", "connector": "http", "action": "request",
                               "after": after, "input": {"method": "GET", "url": format!("{upstream}/step/{path}")}})
                    })
                    .collect();
                json!({"name": "loadtest chain40", "trigger": {"type": "webhook"}, "nodes": nodes})
            }
            Self::Fanout => json!({
                "name": "loadtest fanout",
                "trigger": {"type": "webhook"},
                "nodes": [
                    {"id": "each", "type": "action", "connector": "http", "action": "request",
                     "for_each": "{{ trigger.body.items }}", "max_concurrency": FANOUT_ITEMS,
                     "input": {"method": "GET", "url": format!("{upstream}/item?i={{{{ item }}}}")}},
                    {"id": "join", "type": "action", "connector": "http", "action": "request", "after": ["each"],
                     "input": {"method": "POST", "url": format!("{upstream}/join/last"),
                               "body": {"count": "{{ nodes.each.output | length }}"}}}
                ]
            }),
        }
    }

    /// The webhook body of the `n`-th run.
    pub fn payload(self, n: usize) -> Value {
        match self {
            Self::Chain4 | Self::Chain40 => json!({"phone": "555-0100", "n": n}),
            Self::Fanout => json!({"n": n, "items": (0..FANOUT_ITEMS).collect::<Vec<_>>()}),
        }
    }

    /// Upstream calls one run makes (node steps executed by workers).
    pub fn steps(self) -> usize {
        match self {
            Self::Chain4 => 2,
            Self::Chain40 => CHAIN40_STEPS,
            Self::Fanout => FANOUT_ITEMS + 1,
        }
    }

    /// Pairs of action nodes where the second starts when the first's result is
    /// recorded: the hops whose gap is the step overhead.
    pub fn hops(self) -> Vec<(String, String)> {
        match self {
            Self::Chain4 => vec![("lookup".into(), "notify".into())],
            Self::Chain40 => (1..CHAIN40_STEPS)
                .map(|i| (format!("step{}", i - 1), format!("step{i}")))
                .collect(),
            // `each` finishes with its last item; `join` starts after it.
            Self::Fanout => vec![("each".into(), "join".into())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(definition: &Value) -> Vec<String> {
        definition["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|node| node["input"]["url"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn only_the_last_call_of_each_profile_goes_to_a_last_path() {
        for profile in [Profile::Chain4, Profile::Chain40, Profile::Fanout] {
            let urls = urls(&profile.definition("http://up"));
            let last: Vec<&String> = urls.iter().filter(|u| u.ends_with("/last")).collect();
            assert_eq!(last.len(), 1, "{profile:?}: {urls:?}");
            assert_eq!(urls.last(), last.first().copied(), "{profile:?}");
        }
    }

    #[test]
    fn hops_name_nodes_of_the_definition_in_order() {
        for profile in [Profile::Chain4, Profile::Chain40, Profile::Fanout] {
            let definition = profile.definition("http://up");
            let ids: Vec<&str> = definition["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["id"].as_str())
                .collect();
            for (before, after) in profile.hops() {
                let (b, a) = (
                    ids.iter().position(|id| *id == before),
                    ids.iter().position(|id| *id == after),
                );
                assert!(
                    b.is_some() && a.is_some() && b < a,
                    "{profile:?} {before}→{after}"
                );
            }
        }
        assert_eq!(Profile::Chain40.hops().len(), 39);
    }

    #[test]
    fn the_fanout_payload_carries_its_items() {
        let payload = Profile::Fanout.payload(3);
        assert_eq!(
            payload["items"].as_array().map(Vec::len),
            Some(FANOUT_ITEMS)
        );
        assert_eq!(Profile::Fanout.steps(), FANOUT_ITEMS + 1);
    }
}
