//! Limits of a definition, and properties over arbitrary and mutated definitions: any
//! JSON yields a scenario or problems that say what is wrong, never a panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::limits::MAX_JSON_DEPTH;
use crate::template::MAX_TEMPLATE_BYTES;
use crate::testing::{json_value, key};

fn http(id: &str, after: &[&str]) -> Value {
    json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
           "input": {"method": "GET", "url": "http://example.test/"}})
}

fn definition(nodes: Value) -> Value {
    json!({"name": "t", "trigger": {"type": "manual"}, "nodes": nodes})
}

fn problems(definition: &Value) -> Vec<String> {
    Scenario::parse(definition, &BuiltinCatalog)
        .expect_err("must be invalid")
        .0
        .iter()
        .map(Problem::to_string)
        .collect()
}

#[test]
fn the_number_of_nodes_is_limited() {
    let chain = |n: usize| -> Value {
        (0..n)
            .map(|i| {
                let after = if i == 0 {
                    vec![]
                } else {
                    vec![format!("n{}", i - 1)]
                };
                let after: Vec<&str> = after.iter().map(String::as_str).collect();
                http(&format!("n{i}"), &after)
            })
            .collect()
    };
    let scenario = Scenario::parse(&definition(chain(MAX_NODES)), &BuiltinCatalog)
        .expect("the limit itself is allowed");
    assert_eq!(scenario.nodes.len(), MAX_NODES);
    assert_eq!(
        problems(&definition(chain(MAX_NODES + 1))),
        vec!["field `nodes`: 501 nodes, over the limit of 500"]
    );
}

#[test]
fn a_template_over_its_size_limit_is_named_with_its_field() {
    let mut node = http("a", &[]);
    node["input"]["body"] = json!(format!(
        "{{{{ trigger.body }}}}{}",
        "x".repeat(MAX_TEMPLATE_BYTES)
    ));
    let found = problems(&definition(json!([node])));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("node `a`, field `input.body`: template does not parse: template is 65554 bytes, over the limit of 65536"),
        "{found:?}"
    );
}

/// Found by the fuzzer: a duplicate id pointed the id's index past the nodes kept,
/// and the next lookup of it panicked.
#[test]
fn a_duplicate_id_referenced_later_is_a_problem_not_a_panic() {
    let found = problems(&definition(json!([
        http("a", &[]),
        http("b", &["a"]),
        http("b", &["a"]),
        http("c", &["b"])
    ])));
    assert_eq!(found, vec!["node `b`, field `id`: duplicate node id"]);
}

#[test]
fn a_definition_nested_too_deep_is_refused_naming_the_limit() {
    let deep = |depth: usize| (0..depth).fold(json!("leaf"), |inner, _| json!([inner]));
    let mut node = http("a", &[]);
    // The node's input sits 4 levels down: `{nodes: [{input: {body: …}}]}`.
    node["input"]["body"] = deep(MAX_JSON_DEPTH - 4);
    assert!(Scenario::parse(&definition(json!([node.clone()])), &BuiltinCatalog).is_ok());
    node["input"]["body"] = deep(MAX_JSON_DEPTH - 3);
    assert_eq!(
        problems(&definition(json!([node]))),
        vec![
            "field `definition`: nested 65 levels deep, over the limit of 64 levels of arrays and objects"
        ]
    );
}

/// Valid definitions using every kind of node, trigger and edge.
fn valid_definitions() -> Vec<Value> {
    let mut each = http("each", &["lookup"]);
    each["for_each"] = json!("{{ nodes.lookup.output.items }}");
    each["input"]["body"] = json!({"item": "{{ item }}", "at": "{{ index }}"});
    each["on_error"] = json!("continue");
    let mut lookup = http("lookup", &[]);
    lookup["outputs"] = json!({"items": "$.body.items[*]", "first": "$.body.items[0].name"});
    lookup["retry"] = json!({"max_attempts": 3, "initial": "1s", "max": "10s"});
    lookup["timeout"] = json!("5s");
    vec![
        json!({
            "name": "every kind",
            "description": "d",
            "trigger": {"type": "webhook", "signature": {"scheme": "github", "secret": "s"}},
            "settings": {"timeout": "1m", "retry": {"max_attempts": 2}},
            "nodes": [
                lookup,
                {"id": "known", "type": "condition", "after": ["lookup"], "if": "nodes.lookup.output.first is not none"},
                {"id": "route", "type": "condition", "after": ["known:true"],
                 "switch": [{"name": "big", "if": "trigger.body.n > 10"}]},
                {"id": "shape", "type": "transform", "after": ["route:big"], "output": {"n": "{{ trigger.body.n }}"}},
                {"id": "wait", "type": "delay", "after": ["route:default"], "duration": "1s"},
                {"id": "later", "type": "delay", "after": ["wait"], "until": "{{ trigger.body.at }}"},
                each,
                http("recover", &["lookup:error"]),
            ]
        }),
        json!({
            "name": "scheduled", "trigger": {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris"},
            "nodes": [http("a", &[]), http("b", &["a"]), http("c", &["a", "b"])]
        }),
        json!({
            "name": "generic", "trigger": {"type": "webhook", "signature": {"scheme": "hmac-sha256", "secret": "k", "header": "X-Sig", "encoding": "base64", "prefix": "v1="}},
            "nodes": [{"id": "t", "type": "transform", "output": {"all": "{{ trigger }}"}}]
        }),
    ]
}

/// Values that mean something at the places a mutation may put them.
fn meaningful() -> impl Strategy<Value = Value> {
    const WORDS: &[&str] = &[
        "a",
        "lookup",
        "known",
        "route",
        "each",
        "ghost",
        "lookup:error",
        "known:true",
        "known:maybe",
        "route:default",
        "each:error",
        "action",
        "transform",
        "condition",
        "delay",
        "webhook",
        "schedule",
        "manual",
        "http",
        "request",
        "weft",
        "delay",
        "continue",
        "fail",
        "github",
        "stripe",
        "slack",
        "hmac-sha256",
        "hex",
        "base64",
        "0s",
        "1s",
        "soon",
        "99999999999999999999s",
        "* * * * *",
        "61 * * * *",
        "Mars/Olympus",
        "{{ nodes.lookup.output }}",
        "{{ nodes.each.output }}",
        "{{ item }}",
        "{{ index }}",
        "{{ run.id }}",
        "{{ trigger.body.x ",
        "{% for %}",
        "nodes.known.output is none",
        "$..*",
        "$.body[",
        "$[?@.a == 1]",
        "",
        "2030-01-01T00:00:00Z",
    ];
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(Value::from),
        1 => prop::collection::vec(prop::sample::select(WORDS).prop_map(Value::from), 0..4)
            .prop_map(Value::Array),
        1 => json_value(),
        1 => (0u32..2000).prop_map(Value::from),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Insert(prop::sample::Index, String, Value),
    /// Copies an item of an array (a node, an edge) to the array's end.
    Duplicate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    const FIELDS: &[&str] = &[
        "id",
        "type",
        "after",
        "connector",
        "action",
        "input",
        "outputs",
        "output",
        "if",
        "switch",
        "retry",
        "timeout",
        "on_error",
        "for_each",
        "max_concurrency",
        "duration",
        "until",
        "signature",
        "secret",
        "header",
        "cron",
        "name",
        "nodes",
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), meaningful()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (
            any::<prop::sample::Index>(),
            prop_oneof![prop::sample::select(FIELDS).prop_map(str::to_owned), key()],
            meaningful()
        )
            .prop_map(|(at, k, v)| Mutation::Insert(at, k, v)),
        any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
    ]
}

/// Every position in a value, as JSON pointers, the root first.
fn pointers(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), value)];
    while let Some((pointer, value)) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{pointer}/{i}"), item)),
            ),
            Value::Object(fields) => pending.extend(fields.iter().map(|(k, item)| {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                (format!("{pointer}/{escaped}"), item)
            })),
            _ => {}
        }
        found.push(pointer);
    }
    found
}

fn apply(definition: &mut Value, mutation: Mutation) {
    let all = pointers(definition);
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(target) = definition.pointer_mut(at.get(&all).as_str()) {
                *target = value;
            }
        }
        Mutation::Remove(at) => {
            let pointer = at.get(&all).as_str();
            let Some((parent, last)) = pointer.rsplit_once('/') else {
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match definition.pointer_mut(parent) {
                Some(Value::Object(fields)) => {
                    fields.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        Mutation::Duplicate(at) => {
            let pointer = at.get(&all).as_str();
            let Some((parent, _)) = pointer.rsplit_once('/') else {
                return;
            };
            let copy = definition.pointer(pointer).cloned();
            if let (Some(copy), Some(Value::Array(items))) = (copy, definition.pointer_mut(parent))
            {
                items.push(copy);
            }
        }
        Mutation::Insert(at, key, value) => match definition.pointer_mut(at.get(&all).as_str()) {
            Some(Value::Object(fields)) => {
                fields.insert(key, value);
            }
            Some(Value::Array(items)) => items.push(value),
            _ => {}
        },
    }
}

fn check(definition: &Value) -> Result<(), TestCaseError> {
    match Scenario::parse(definition, &BuiltinCatalog) {
        Ok(scenario) => {
            // A valid scenario is a DAG whose edges all resolve, and it stays valid.
            let order = topological_order(&scenario);
            prop_assert!(order.is_ok(), "a valid scenario has no cycle");
            prop_assert_eq!(order.map(|o| o.len()).ok(), Some(scenario.nodes.len()));
            for node in &scenario.nodes {
                for edge in &node.after {
                    prop_assert!(scenario.node(&edge.from).is_some());
                }
            }
            prop_assert!(Scenario::parse(definition, &BuiltinCatalog).is_ok());
        }
        Err(Invalid(problems)) => {
            prop_assert!(
                !problems.is_empty(),
                "an invalid definition names a problem"
            );
            for problem in &problems {
                prop_assert!(
                    !problem.field.is_empty() && !problem.message.is_empty(),
                    "{:?}",
                    problem
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_json_yields_a_scenario_or_named_problems(definition in json_value()) {
        check(&definition)?;
    }

    #[test]
    fn definition_shaped_json_yields_a_scenario_or_named_problems(
        name in meaningful(),
        trigger in meaningful(),
        nodes in prop::collection::vec(
            prop::collection::btree_map(
                prop::sample::select(&["id", "type", "after", "connector", "action", "input", "outputs",
                    "output", "if", "switch", "for_each", "duration", "until", "on_error", "retry"][..]),
                meaningful(),
                0..8,
            ),
            0..6,
        ),
    ) {
        let nodes: Vec<Value> = nodes
            .into_iter()
            .map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            .collect();
        check(&json!({"name": name, "trigger": trigger, "nodes": nodes}))?;
    }

    #[test]
    fn mutated_valid_definitions_yield_a_scenario_or_named_problems(
        base in prop::sample::select(valid_definitions()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        prop_assert!(Scenario::parse(&base, &BuiltinCatalog).is_ok(), "the base is valid");
        let mut definition = base;
        for mutation in mutations {
            apply(&mut definition, mutation);
        }
        check(&definition)?;
    }
}
