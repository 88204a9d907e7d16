//! Strategies shared by the property tests of the domain modules.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value a sender could send, a few levels deep, with keys and strings that
/// mean something to templates and paths (dots, brackets, quotes, braces).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |n| n.is_finite())
            .prop_map(Value::from),
        "[a-z0-9 .\\[\\]{}'\"$@*\\\\%-]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object key: usually a plain name, sometimes anything.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_][a-z0-9_]{0,6}",
        1 => any::<String>(),
    ]
}
