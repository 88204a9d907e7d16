//! An upstream's answer read into the action's output, or the provider's error.

use serde_json::{Map, Value, json};

use super::request::{permanent, text};
use super::select::{Selection, select};
use crate::manifest::ResponseSpec;
use crate::messages::{NodeError, truncate_body};
use crate::template::{self, Templates};

/// The provider's error message in a response, by the action's `error` JSONPath.
pub fn error_message(spec: &ResponseSpec, response: &Value) -> Option<String> {
    let path = spec.error.as_deref()?;
    match select(path, response).ok()? {
        Value::Null => None,
        Value::String(message) if message.is_empty() => None,
        Value::String(message) => Some(message),
        other => Some(other.to_string()),
    }
}

/// Turns an upstream answer `{status, headers, body}` (already classified as not an HTTP
/// failure) into the action's output, or a permanent error when `success_if` says the
/// call failed (Slack answers 200 with `"ok": false`).
pub fn interpret(
    spec: &ResponseSpec,
    response: Value,
    templates: &Templates,
) -> Result<Value, NodeError> {
    if let Some(condition) = &spec.success_if {
        let scope = template::scope(&json!({ "response": response }));
        let verdict = templates.eval_bool(condition, &scope);
        if verdict != Ok(true) {
            let message = match (error_message(spec, &response), verdict) {
                (Some(message), _) => message,
                (None, Err(e)) => {
                    format!("the response does not fit response.success_if `{condition}`: {e}")
                }
                (None, Ok(_)) => {
                    format!("the response does not satisfy response.success_if `{condition}`")
                }
            };
            return Err(NodeError {
                status: response
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok()),
                body: response.get("body").map(|body| truncate_body(&text(body))),
                ..permanent(message)
            });
        }
    }
    let Some(mapping) = &spec.output else {
        return Ok(response);
    };
    let mut output = Map::new();
    let mut selection = Selection::default();
    for (field, path) in mapping {
        let value = selection
            .select(path, &response)
            .map_err(|e| permanent(format!("response.output.{field}: {e}")))?;
        output.insert(field.clone(), value);
    }
    Ok(Value::Object(output))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::collections::BTreeMap;

    use serde_json_path::JsonPath;

    use super::*;
    use crate::limits::{MAX_SELECTED_BYTES, MAX_SELECTED_NODES};
    use crate::messages::ErrorClass;
    fn response(status: u16, body: Value) -> Value {
        json!({"status": status, "headers": {"content-type": "application/json"}, "body": body})
    }

    #[test]
    fn success_if_false_fails_permanently_with_the_providers_message() {
        let spec = ResponseSpec {
            success_if: Some("response.body.ok".into()),
            error: Some("$.body.error".into()),
            output: Some(BTreeMap::from([("ts".to_owned(), "$.body.ts".to_owned())])),
        };
        let templates = Templates::new();
        let error = interpret(
            &spec,
            response(200, json!({"ok": false, "error": "channel_not_found"})),
            &templates,
        )
        .expect_err("ok is false");
        assert_eq!(
            (error.class, error.message.as_str(), error.status),
            (ErrorClass::Permanent, "channel_not_found", Some(200))
        );
        let output = interpret(
            &spec,
            response(200, json!({"ok": true, "ts": "1.2"})),
            &templates,
        )
        .expect("ok");
        assert_eq!(output, json!({"ts": "1.2"}));

        let no_error_path = ResponseSpec {
            error: None,
            ..spec.clone()
        };
        let error = interpret(&no_error_path, response(200, json!("text")), &templates)
            .expect_err("no ok field");
        assert!(
            error.message.contains("response.success_if"),
            "{}",
            error.message
        );
    }

    #[test]
    fn output_mapping_uses_jsonpath_and_defaults_to_the_whole_response() {
        let templates = Templates::new();
        let whole = response(201, json!({"id": 1}));
        assert_eq!(
            interpret(&ResponseSpec::default(), whole.clone(), &templates),
            Ok(whole)
        );
        let spec = ResponseSpec {
            output: Some(BTreeMap::from([
                ("ids".to_owned(), "$.body.items[*].id".to_owned()),
                ("first".to_owned(), "$.body.items[0].id".to_owned()),
                ("odd".to_owned(), "$.body['a,b']".to_owned()),
                ("missing".to_owned(), "$.body.nope".to_owned()),
                ("status".to_owned(), "$.status".to_owned()),
            ])),
            ..ResponseSpec::default()
        };
        let output = interpret(
            &spec,
            response(200, json!({"items": [{"id": 1}], "a,b": "x"})),
            &templates,
        )
        .expect("maps");
        assert_eq!(
            output,
            json!({"ids": [1], "first": 1, "odd": "x", "missing": null, "status": 200})
        );
        let bad = ResponseSpec {
            output: Some(BTreeMap::from([("x".to_owned(), "body".to_owned())])),
            ..ResponseSpec::default()
        };
        let error = interpret(&bad, response(200, json!({})), &templates).expect_err("bad path");
        assert!(
            error.message.starts_with("response.output.x:"),
            "{}",
            error.message
        );
    }

    fn mapping(fields: &[(&str, &str)]) -> ResponseSpec {
        ResponseSpec {
            output: Some(
                fields
                    .iter()
                    .map(|(field, path)| ((*field).to_owned(), (*path).to_owned()))
                    .collect(),
            ),
            ..ResponseSpec::default()
        }
    }

    /// Objects nested `depth` deep, each holding `text` besides the next one.
    fn nested(depth: usize, text: &str) -> Value {
        (0..depth).fold(json!(text), |inner, _| json!({"text": text, "next": inner}))
    }

    #[test]
    fn a_path_selecting_everything_of_a_large_deep_response_is_refused_naming_the_limit() {
        let templates = Templates::new();
        // 64 levels of 64 KiB: `$..*` would copy each level with all under it, ~130 MiB.
        let deep = response(200, nested(64, &"x".repeat(64 * 1024)));
        let error = interpret(&mapping(&[("all", "$..*")]), deep.clone(), &templates)
            .expect_err("too large");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(
            error.message,
            "response.output.all: what `$..*` selects passes the limit of 4194304 bytes of JSON for one mapping; select less"
        );
        // A wide one is refused on its count of nodes, before any is measured.
        let wide = response(200, json!({"items": vec![json!({"id": 1}); 6_000]}));
        let error =
            interpret(&mapping(&[("all", "$..*")]), wide, &templates).expect_err("too many");
        assert!(
            error.message.starts_with(
                "response.output.all: `$..*` selects 12005 nodes, over the limit of 10000 for one mapping"
            ),
            "{}",
            error.message
        );
        // What a real mapping picks out of the same response is fine.
        let picked = interpret(
            &mapping(&[("top", "$.body.text"), ("ids", "$.body.next.next..text")]),
            deep,
            &templates,
        )
        .expect("a few nodes");
        assert_eq!(picked["top"].as_str().map(str::len), Some(64 * 1024));
        assert_eq!(picked["ids"].as_array().map(Vec::len), Some(62));
    }

    #[test]
    fn the_mapping_limits_are_inclusive_and_count_all_of_its_paths() {
        let templates = Templates::new();
        let items = |count: usize| response(200, json!({"items": vec![0; count]}));
        let all_items = mapping(&[("items", "$.body.items[*]")]);
        let output = interpret(&all_items, items(MAX_SELECTED_NODES), &templates)
            .expect("exactly at the limit");
        assert_eq!(
            output["items"].as_array().map(Vec::len),
            Some(MAX_SELECTED_NODES)
        );
        let error =
            interpret(&all_items, items(MAX_SELECTED_NODES + 1), &templates).expect_err("one over");
        assert!(
            error.message.starts_with(
                "response.output.items: `$.body.items[*]` selects 10001 nodes, over the limit of 10000"
            ),
            "{}",
            error.message
        );
        // A text whose JSON (its quotes included) is exactly the byte limit, then one more.
        let text = |length: usize| response(200, json!({"s": "x".repeat(length)}));
        let one_text = mapping(&[("s", "$.body.s")]);
        assert!(interpret(&one_text, text(MAX_SELECTED_BYTES - 2), &templates).is_ok());
        let error = interpret(&one_text, text(MAX_SELECTED_BYTES - 1), &templates)
            .expect_err("one byte over");
        assert_eq!(
            error.message,
            "response.output.s: what `$.body.s` selects passes the limit of 4194304 bytes of JSON for one mapping; select less"
        );
        // The limits hold for the mapping in all, not for each of its paths.
        let twice = mapping(&[("a", "$.body.s"), ("b", "$.body.s")]);
        let error = interpret(&twice, text(MAX_SELECTED_BYTES / 2), &templates)
            .expect_err("twice the half");
        assert!(
            error.message.starts_with("response.output.b: what `$.body.s` selects passes the limit of 4194304 bytes of JSON for one mapping with the 2097154 bytes of the mapping's other paths"),
            "{}",
            error.message
        );
        let error = interpret(
            &mapping(&[("a", "$.body.items[*]"), ("b", "$.body.items[*]")]),
            items(MAX_SELECTED_NODES / 2 + 1),
            &templates,
        )
        .expect_err("twice over half the nodes");
        assert!(
            error.message.starts_with("response.output.b: `$.body.items[*]` selects 5001 nodes, 10002 with the mapping's other paths, over the limit of 10000"),
            "{}",
            error.message
        );
        // Paths parsed ahead are counted the same way.
        let parsed = JsonPath::parse("$.items[*]").expect("a path");
        let mut selection = Selection::default();
        let value = json!({"items": vec![0; MAX_SELECTED_NODES - 1]});
        assert_eq!(
            selection.nodes(&parsed, &value).map(|nodes| nodes.len()),
            Ok(MAX_SELECTED_NODES - 1)
        );
        let error = selection.nodes(&parsed, &value).expect_err("twice");
        assert!(
            error.starts_with(
                "`$.items[*]` selects 9999 nodes, 19998 with the mapping's other paths"
            ),
            "{error}"
        );
        // `select` alone is bounded as one path of a mapping.
        assert!(select("$..*", &nested(64, &"x".repeat(64 * 1024))).is_err());
        assert_eq!(select("$.a[*]", &json!({"a": [1, 2]})), Ok(json!([1, 2])));
    }
}
