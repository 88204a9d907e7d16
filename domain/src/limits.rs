//! Limits on what users and senders may send, shared by every service so that a value
//! accepted at the edge is never refused deeper in (where the only answer left would be
//! a failed run instead of a clear 4xx).
//!
//! The other limits live next to what they bound: `scenario::MAX_NODES`,
//! `template::MAX_TEMPLATE_BYTES` and `template::MAX_RENDERED_BYTES`, the gateway's body
//! and header limits, the worker's `WEFT_MAX_RESPONSE_BYTES`.

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted in a definition or a payload.
///
/// Messages between the services carry such values a few levels down (a task's `input`,
/// a result's `output`), and serde_json refuses to read more than 128 levels: a payload
/// accepted at 127 levels would make a task no worker can decode. 64 leaves that room and
/// is far deeper than any real payload.
pub const MAX_JSON_DEPTH: usize = 64;

/// Most nodes the JSONPaths of one output mapping may select in all. `$..*` selects every
/// node of a response, and each holds all that is under it: copying what it selects from
/// a response of 10 MiB nested 64 deep would take hundreds of MiB. Real mappings pick a
/// few fields, or the items of one list.
pub const MAX_SELECTED_NODES: usize = 10_000;

/// Most bytes the templates of one value (a node's input, a transform's output) may
/// render in all.
pub const MAX_RENDERED_VALUE_BYTES: usize = 4 << 20;

/// Most bytes, as JSON text, what the JSONPaths of one output mapping select may take in
/// all: as much as the templates of one value may render.
pub const MAX_SELECTED_BYTES: usize = MAX_RENDERED_VALUE_BYTES;

/// The nesting depth of a JSON value: a scalar is 0, `[]` and `{}` are 1, `[[1]]` is 2.
/// Iterative, so a value of any depth is measured without exhausting the stack.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// The nesting depth of JSON text, measured on the bytes before parsing (brackets inside
/// strings do not count), so that a body too deep is refused with the limit named rather
/// than with the parser's recursion error. Text that is not JSON gets some number; its
/// parse fails anyway.
pub fn json_text_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`]; the message names the limit.
pub fn check_json_depth(value: &Value) -> Result<(), TooDeep> {
    match json_depth(value) {
        depth if depth > MAX_JSON_DEPTH => Err(TooDeep { depth }),
        _ => Ok(()),
    }
}

/// A JSON value nested deeper than [`MAX_JSON_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH} levels of arrays and objects"
)]
pub struct TooDeep {
    pub depth: usize,
}

/// A value from a third party made storable: PostgreSQL cannot keep U+0000 in `jsonb`, so
/// each one, in a string or a key, becomes U+FFFD (as bytes that are not UTF-8 already
/// do). Nesting is bounded by [`MAX_JSON_DEPTH`], checked before.
pub fn without_nul(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(text_without_nul(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (text_without_nul(key), without_nul(value)))
                .collect(),
        ),
        other => other,
    }
}

/// Text made storable as [`without_nul`] makes values.
pub fn text_without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, level| {
            if level % 2 == 0 {
                json!([inner])
            } else {
                json!({ "k": inner })
            }
        })
    }

    #[test]
    fn nul_characters_become_replacement_characters_in_strings_and_keys() {
        let value = json!({"a\u{0}": ["x\u{0}y", 1, {"b": "\u{0}"}], "c": null});
        assert_eq!(
            without_nul(value),
            json!({"a\u{fffd}": ["x\u{fffd}y", 1, {"b": "\u{fffd}"}], "c": null})
        );
        assert_eq!(text_without_nul("plain".into()), "plain");
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        assert_eq!(json_depth(&nested(1_000)), 1_000);
        assert_eq!(json_text_depth(br#"{"a": "[[[{{", "b": [["\"]"]]}"#), 3);
        assert_eq!(json_text_depth(b"not json"), 0);
    }

    #[test]
    fn the_limit_is_inclusive_and_named() {
        assert_eq!(check_json_depth(&nested(MAX_JSON_DEPTH)), Ok(()));
        let error = check_json_depth(&nested(MAX_JSON_DEPTH + 1)).expect_err("too deep");
        assert_eq!(
            error.to_string(),
            "nested 65 levels deep, over the limit of 64 levels of arrays and objects"
        );
    }

    #[test]
    fn a_message_carrying_a_value_at_the_limit_still_decodes() {
        // The deepest place a payload lands in a message: a result's output inside an
        // item list inside the run's nodes. serde_json must still read it back.
        let envelope = json!({"v": 1, "outcome": {"success": {"output": {"items": [[nested(MAX_JSON_DEPTH)]]}}}});
        let text = serde_json::to_vec(&envelope).expect("serializes");
        assert!(serde_json::from_slice::<Value>(&text).is_ok());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[\\[\\]{}\"\\\\a ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\[\"{]{1,3}", inner, 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The byte scan and the parsed value agree on every JSON text, whatever brackets
        /// and escapes its strings hold.
        #[test]
        fn text_depth_matches_value_depth(value in json_value()) {
            let text = serde_json::to_vec(&value).expect("serializes");
            prop_assert_eq!(json_text_depth(&text), json_depth(&value));
        }
    }
}
