//! Properties over arbitrary sources and scopes: any template yields a value or an error
//! that says what failed, never a crash, and the guards change no result.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::fixtures::{render, unguarded};
use super::render::sole_expression;
use super::{Templates, is_template, scope};
use crate::testing::json_value;

/// Pieces templates are made of, so that random sequences of them reach deep into
/// the parser and the evaluator rather than failing on the first character.
fn template_source() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        " ",
        " ",
        "trigger",
        "body",
        "nodes",
        "item",
        "run",
        "x",
        ".",
        "[",
        "]",
        "(",
        ")",
        ",",
        ":",
        "|",
        "0",
        "1",
        "-1",
        "2.5",
        "1e308",
        "100000000",
        "9223372036854775807",
        "'s'",
        "\"t\"",
        "'",
        "\"",
        "\\",
        "+",
        "-",
        "*",
        "/",
        "//",
        "%",
        "**",
        "~",
        "==",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "not",
        "is",
        "in",
        "none",
        "true",
        "defined",
        "number",
        "if",
        "else",
        "endif",
        "for",
        "endfor",
        "set",
        "=",
        "range",
        "upper",
        "length",
        "join",
        "replace",
        "indent",
        "tojson",
        "default",
        "int",
        "list",
        "batch",
        "slice",
        "format",
        "first",
        "sort",
        "namespace",
        "loop",
        "raw",
        "endraw",
        "with",
        "endwith",
        "filter",
        "endfilter",
        "\n",
        "\u{e9}",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|pieces| pieces.concat())
}

fn check(source: &str, body: Value) -> Result<(), TestCaseError> {
    let templates = Templates::new();
    let context = scope(&json!({"trigger": {"body": body}, "nodes": {"a": {"output": [1, "x"]}}}));
    let outcomes = [
        templates.render_value(&json!(source), &context).map(|_| ()),
        templates.variables(source).map(|_| ()),
        templates.expression_variables(source).map(|_| ()),
        templates.eval_bool(source, &context).map(|_| ()),
    ];
    for outcome in outcomes {
        if let Err(e) = outcome {
            prop_assert!(!e.to_string().is_empty(), "an error says what failed");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_template_of_template_pieces_yields_a_value_or_an_error(
        source in template_source(),
        body in json_value(),
    ) {
        check(&source, body)?;
    }

    #[test]
    fn any_text_yields_a_value_or_an_error(source in any::<String>(), body in json_value()) {
        check(&source, body)?;
    }

    /// Fuel bounds time: however large the ranges, nested loops end with their output
    /// or an error naming what stopped them.
    #[test]
    fn nested_loops_end_in_their_output_or_a_named_limit(
        outer in prop_oneof![0u64..50, 0u64..10_000_000_000],
        inner in prop_oneof![0u64..50, 0u64..10_000_000_000],
    ) {
        let source = format!("{{% for i in range({outer}) %}}{{% for j in range({inner}) %}}x{{% endfor %}}{{% endfor %}}");
        match render(&source, json!({})) {
            Ok(Value::String(text)) => prop_assert_eq!(text.len() as u64, outer * inner),
            Ok(other) => prop_assert!(false, "a string was expected, not {}", other),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains("fuel") || message.contains("too many elements"),
                    "{}", message
                );
            }
        }
    }

    /// The guards change what a template renders only by refusing it, and then for
    /// running out of fuel or passing a limit.
    #[test]
    fn the_guards_change_no_result_of_any_template(
        source in template_source(),
        body in json_value(),
    ) {
        prop_assume!(sole_expression(&source).is_none() && is_template(&source));
        let context = scope(&json!({"trigger": {"body": body}, "nodes": {"a": {"output": [1, "x"]}}}));
        let plain = unguarded().render_str(&source, context.clone());
        match (plain, Templates::new().render_value(&json!(source), &context)) {
            (Ok(expected), Ok(found)) => prop_assert_eq!(found, json!(expected)),
            (Err(e), Ok(found)) => prop_assert!(false, "only guarded, {} renders {}, not {}", source, found, e),
            (Ok(_), Err(e)) => {
                let message = e.to_string();
                prop_assert!(message.contains("fuel") || message.contains("limit"), "{}: {}", source, message);
            }
            (Err(_), Err(_)) => {}
        }
    }

    /// A string that is exactly one expression keeps the JSON value it reads.
    #[test]
    fn a_sole_expression_returns_the_value_it_reads(body in json_value()) {
        prop_assert_eq!(render("{{ trigger.body }}", body.clone()), Ok(body));
    }

    /// Chains of any operator and any length are refused or evaluated, never left to
    /// overflow the stack of a 2 MiB thread (tokio's worker threads have that much).
    #[test]
    fn operator_chains_of_any_length_stay_within_a_small_stack(
        piece in prop::sample::select(&[".a", "[0]", "()", "|abs", "+1", "~1", " and 1", "- ", "not ", "(", "["][..]),
        length in 0usize..4_000,
    ) {
        let prefix = matches!(piece, "- " | "not " | "(" | "[");
        let chain = piece.repeat(length);
        let source = if prefix { format!("{{{{ {chain}x }}}}") } else { format!("{{{{ x{chain} }}}}") };
        let finished = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let _ = Templates::new().render_value(&json!(source), &scope(&json!({"x": 1})));
            })
            .expect("thread starts")
            .join();
        prop_assert!(finished.is_ok());
    }
}
