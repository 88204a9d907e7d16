//! A node's `outputs`: JSONPath mappings of its result, bounded in what they select.

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::connector::Selection;

/// Applies `outputs` mappings: no match gives `null`, one match its value, several an array.
/// All the paths of one node's `outputs` share one [`Selection`], so together they select
/// at most its limits, counted before anything is copied.
pub fn map_outputs(outputs: &[(String, JsonPath)], raw: &Value) -> Result<Value, OutputsError> {
    let mut selection = Selection::default();
    let mut mapped = serde_json::Map::with_capacity(outputs.len());
    for (field, path) in outputs {
        let mut found = selection.nodes(path, raw).map_err(|cause| OutputsError {
            field: field.clone(),
            cause,
        })?;
        let value = match found.len() {
            0 => Value::Null,
            1 => found.remove(0).clone(),
            _ => Value::Array(found.into_iter().cloned().collect()),
        };
        mapped.insert(field.clone(), value);
    }
    Ok(Value::Object(mapped))
}

/// A field of a node's `outputs` whose path selects more than one mapping may: the
/// cause names the path and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `outputs.{field}`: {cause}")]
pub struct OutputsError {
    pub field: String,
    pub cause: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::graph::fixtures::*;
    use crate::graph::{Applied, NodeStatus, RunOutcome, RunState};
    use crate::limits::{MAX_SELECTED_BYTES, MAX_SELECTED_NODES};
    use crate::messages::ErrorClass;
    use crate::template::Templates;
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
            state.nodes["a"].record.output,
            Some(json!({"first": "x", "all": ["x", "y"], "none": null}))
        );
        assert_eq!(state.nodes["a"].record.raw_output, Some(raw));
    }

    /// An http result whose body nests `depth` objects, each with a string of `text_len`
    /// bytes: `$..*` selects every level with all that is under it.
    fn nested_response(depth: usize, text_len: usize) -> Value {
        let body = (0..depth).fold(
            json!({}),
            |inner, _| json!({"text": "x".repeat(text_len), "next": inner}),
        );
        json!({"status": 200, "headers": {}, "body": body})
    }

    #[test]
    fn outputs_selecting_over_the_limit_fail_the_node_for_good_naming_field_path_and_limit() {
        let mut a = http("a", &[]);
        a["outputs"] = json!({"all": "$..*"});
        a["retry"] = json!({"max_attempts": 5});
        let s = scenario(json!([a, http("b", &["a"])]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        // 1 MiB of response, 32 deep: what `$..*` selects would take 16 MiB.
        let raw = nested_response(32, 32 << 10);

        assert_eq!(
            state.apply_result(&s, &result("a", 1, success(raw.clone())), 1.0),
            Applied::Recorded,
            "the same response would select as much again: no retry"
        );
        let a = &state.nodes["a"].record;
        assert_eq!((a.status, a.attempts), (NodeStatus::Failed, 1));
        assert_eq!(a.output, None);
        assert_eq!(a.raw_output.as_ref(), Some(&raw), "kept to see what came");
        let error = a.error.clone().expect("an error");
        assert_eq!(error.class, ErrorClass::Permanent);
        // The path as serde_json_path displays it (0.7.2 writes `$..*` as `$...*`).
        let every = JsonPath::parse("$..*").expect("a path");
        assert_eq!(
            error.message,
            format!(
                "node `a`, field `outputs.all`: what `{every}` selects passes the limit of {MAX_SELECTED_BYTES} bytes of JSON for one mapping; select less"
            )
        );
        let step = state.advance(&s, &ctx, &templates);
        assert!(step.dispatch.is_empty());
        assert_eq!(
            step.outcome,
            Some(RunOutcome::Failed {
                node: "a".into(),
                error: error.clone()
            })
        );
        assert_eq!(status(&state, "b"), NodeStatus::Cancelled);
    }

    #[test]
    fn under_on_error_continue_outputs_over_the_limit_pass_on_the_error() {
        let mut a = http("a", &[]);
        a["outputs"] = json!({"all": "$..*"});
        a["on_error"] = json!("continue");
        let s = scenario(json!([
            a,
            {"id": "after", "type": "transform", "after": ["a"], "output": {"class": "{{ nodes.a.output.class }}"}}
        ]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"n": 1}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        state.apply_result(
            &s,
            &result("a", 1, success(nested_response(32, 32 << 10))),
            1.0,
        );
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));
        assert_eq!(status(&state, "a"), NodeStatus::Failed);
        let error = state.nodes["a"].record.error.clone().expect("an error");
        assert_eq!(
            state.nodes["a"].record.output,
            Some(serde_json::to_value(&error).expect("serializes"))
        );
        assert_eq!(
            state.nodes["after"].record.output,
            Some(json!({"class": "permanent"}))
        );
    }

    #[test]
    fn the_paths_of_one_outputs_mapping_are_counted_together() {
        let ids: Vec<usize> = (0..MAX_SELECTED_NODES / 2 + 1).collect();
        let raw = json!({"body": {"ids": ids}});
        let one = [(
            "first".to_owned(),
            JsonPath::parse("$.body.ids[*]").expect("a path"),
        )];
        let mapped = map_outputs(&one, &raw).expect("half the limit fits");
        assert_eq!(mapped["first"].as_array().map(Vec::len), Some(ids.len()));

        let two = [one[0].clone(), ("second".to_owned(), one[0].1.clone())];
        let error = map_outputs(&two, &raw).expect_err("twice half the limit does not");
        assert_eq!(error.field, "second");
        assert!(
            error.to_string().starts_with(&format!(
                "field `outputs.second`: `$.body.ids[*]` selects {} nodes, {} with the mapping's other paths, over the limit of {MAX_SELECTED_NODES}",
                ids.len(),
                2 * ids.len()
            )),
            "{error}"
        );
    }

    #[test]
    fn a_for_each_item_whose_outputs_select_over_the_limit_fails_alone() {
        let mut node = each("each", 10);
        node["outputs"] = json!({"first": "$.body.ids[0]", "all": "$..*"});
        node["on_error"] = json!("continue");
        let s = scenario(json!([node]));
        let templates = Templates::new();
        let ctx = context(json!({"body": {"items": ["a", "b", "c"]}}));
        let mut state = RunState::new(&s);
        state.advance(&s, &ctx, &templates);
        let small = json!({"status": 200, "body": {"ids": [7]}});
        let large = json!({"status": 200, "body": {"ids": vec![7; MAX_SELECTED_NODES]}});
        state.apply_result(&s, &item_result("each", 0, 1, success(small.clone())), 1.0);
        assert_eq!(
            state.apply_result(&s, &item_result("each", 1, 1, success(large.clone())), 1.0),
            Applied::Recorded,
            "no retry"
        );
        state.apply_result(&s, &item_result("each", 2, 1, success(small.clone())), 1.0);
        let step = state.advance(&s, &ctx, &templates);
        assert_eq!(step.outcome, Some(RunOutcome::Completed));

        let items = state.nodes["each"].items.as_ref().expect("items");
        assert_eq!(
            item_status(&state, "each"),
            [
                NodeStatus::Completed,
                NodeStatus::Failed,
                NodeStatus::Completed
            ]
        );
        let error = items[1].record.error.as_ref().expect("an error");
        assert_eq!(
            (error.class, items[1].record.attempts),
            (ErrorClass::Permanent, 1)
        );
        let every = JsonPath::parse("$..*").expect("a path");
        assert!(
            error.message.starts_with(&format!(
                "node `each`, item 1, field `outputs.all`: `{every}` selects"
            )) && error
                .message
                .contains(&format!("over the limit of {MAX_SELECTED_NODES}")),
            "{}",
            error.message
        );
        assert_eq!(items[1].record.raw_output.as_ref(), Some(&large));
        let mapped = json!({"first": 7, "all": [{"ids": [7]}, 200, [7], 7]});
        let output = state.nodes["each"]
            .record
            .output
            .as_ref()
            .expect("an output");
        assert_eq!(output[0], mapped);
        assert_eq!(output[1], serde_json::to_value(error).expect("serializes"));
        assert_eq!(output[2], mapped);
    }
}

/// `outputs` mappings over arbitrary paths and results: a path either parses or is
/// refused, and a parsed path maps any result without panicking.
#[cfg(test)]
mod output_mapping {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::testing::json_value;

    /// Paths made of the pieces of RFC 9535, in any order.
    fn path_text() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "$",
            "$",
            ".",
            "..",
            "*",
            "[",
            "]",
            "[*]",
            "[0]",
            "[-1]",
            "[1:]",
            "[::-1]",
            "[::0]",
            "[-9223372036854775808]",
            "[9007199254740992]",
            "['a']",
            "[\"b\"]",
            "a",
            "b",
            "body",
            "?",
            "@",
            "@.a",
            "==",
            "!=",
            "<",
            "&&",
            "||",
            "!",
            "(",
            ")",
            ",",
            ":",
            "length(@)",
            "count(@.*)",
            "match(@, 'a.*')",
            "search(@, '[')",
            "value(@..a)",
            "'",
            "\\u0000",
            " ",
            "1",
            "true",
            "null",
        ];
        prop::collection::vec(prop::sample::select(PIECES), 0..16)
            .prop_map(|pieces| pieces.concat())
    }

    /// A position inside `value`, as the path to it and the value found there.
    fn positions(value: &Value) -> Vec<(String, Value)> {
        let mut found = Vec::new();
        let mut pending = vec![("$".to_owned(), value)];
        while let Some((path, value)) = pending.pop() {
            match value {
                Value::Array(items) => pending.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{path}[{i}]"), item)),
                ),
                Value::Object(fields) => pending.extend(
                    fields
                        .iter()
                        .map(|(key, item)| (format!("{path}[{}]", quoted(key)), item)),
                ),
                _ => {}
            }
            found.push((path, value.clone()));
        }
        found
    }

    /// A name selector for `key` (RFC 9535 §2.3.1.1): single-quoted, escaped.
    fn quoted(key: &str) -> String {
        let mut out = String::from("'");
        for c in key.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_path_parses_or_is_refused_and_maps_any_result(text in path_text(), raw in json_value()) {
            if let Ok(path) = JsonPath::parse(&text) {
                let mapped = map_outputs(&[("x".to_owned(), path)], &raw)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(mapped.get("x").is_some(), "every mapping has its field");
            }
        }

        /// A path to a position, however odd its keys, maps to exactly the value there.
        #[test]
        fn a_path_to_a_position_maps_to_its_value(raw in json_value(), pick in any::<prop::sample::Index>()) {
            let all = positions(&raw);
            let (text, expected) = pick.get(&all).clone();
            let path = JsonPath::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(map_outputs(&[("x".to_owned(), path)], &raw), Ok(json!({"x": expected})));
        }
    }
}
