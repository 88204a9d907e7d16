//! A manifest request's `path`: literal text and `{{ … }}` placeholders, where every
//! placeholder renders to exactly one path segment, percent-encoded. A value such as
//! `x?admin=1` or `../jump` then reaches the upstream as one segment (`x%3Fadmin%3D1`,
//! `..%2Fjump`) and can never change which endpoint is called. A value that is exactly
//! `.` or `..` is refused: however it is encoded, servers (and URL parsers) take it as a
//! step within the path.
//!
//! A placeholder whose last filter is [`SEGMENTS`] (`{{ input.file | segments }}`) is a
//! path of several segments on purpose, such as a file path: it is split at `/` and each
//! part encoded on its own; `.` and `..` parts are refused all the same.
//!
//! Statements (`{% … %}`) are not part of a path: what a path needs to decide belongs in
//! the node's input, where it is data.

use minijinja::Value as Scope;
use minijinja::machinery::{self, Token};
use minijinja::syntax::SyntaxConfig;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::template::{Templates, is_template};

/// The filter that marks a placeholder as a path of several segments.
pub const SEGMENTS: &str = "segments";

/// What stays as it is in a segment: RFC 3986's unreserved characters. Everything else,
/// `/`, `?`, `#`, `%`, `\`, `;` and `@` among it, is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate<'s> {
    parts: Vec<Part<'s>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part<'s> {
    /// Text of the manifest, used as written.
    Text(&'s str),
    Placeholder(Placeholder<'s>),
}

/// One `{{ … }}` of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'s> {
    /// The expression whose value is substituted (without the [`SEGMENTS`] marker).
    pub expression: &'s str,
    /// Whether it is marked as a path of several segments.
    pub segments: bool,
}

impl Placeholder<'_> {
    /// How messages name it: `{{ input.id }}`.
    fn name(&self) -> String {
        if self.segments {
            format!("{{{{ {} | {SEGMENTS} }}}}", self.expression)
        } else {
            format!("{{{{ {} }}}}", self.expression)
        }
    }
}

impl<'s> PathTemplate<'s> {
    /// Parses a path, checking what can be checked before any value is known: only text
    /// and placeholders, and the [`SEGMENTS`] marker only as a placeholder's last filter.
    pub fn parse(source: &'s str) -> Result<Self, String> {
        if !is_template(source) {
            return Ok(Self {
                parts: vec![Part::Text(source)],
            });
        }
        let does_not_parse = |e: minijinja::Error| format!("template does not parse: {e}");
        machinery::parse(source, "<path>", SyntaxConfig::default()).map_err(does_not_parse)?;
        let mut parts = Vec::new();
        // The tokens of the placeholder being read, with where each starts and ends.
        let mut placeholder: Option<Vec<(Token<'s>, usize, usize)>> = None;
        for token in machinery::tokenize(source, false, SyntaxConfig::default()) {
            let (token, span) = token.map_err(does_not_parse)?;
            let (start, end) = (span.start_offset as usize, span.end_offset as usize);
            match (token, placeholder.as_mut()) {
                (Token::VariableEnd, Some(_)) => {
                    let tokens = placeholder.take().unwrap_or_default();
                    parts.push(Part::Placeholder(read_placeholder(source, &tokens)?));
                }
                (token, Some(tokens)) => tokens.push((token, start, end)),
                (Token::TemplateData(text), None) => parts.push(Part::Text(text)),
                (Token::VariableStart, None) => placeholder = Some(Vec::new()),
                (_, None) => {
                    return Err(
                        "a path holds only text and {{ }} placeholders, no {% %} statements: compute the value in the node's input"
                            .to_owned(),
                    );
                }
            }
        }
        Ok(Self { parts })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder<'s>> {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(placeholder) => Some(placeholder),
            Part::Text(_) => None,
        })
    }

    /// The path with every placeholder rendered over `scope` and encoded.
    pub fn render(&self, templates: &Templates, scope: &Scope) -> Result<String, String> {
        let mut path = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => path.push_str(text),
                Part::Placeholder(placeholder) => {
                    let source = Value::String(format!("{{{{ {} }}}}", placeholder.expression));
                    let value = templates
                        .render_value(&source, scope)
                        .map_err(|e| format!("{}: {e}", placeholder.name()))?;
                    push_value(&mut path, placeholder, &value)?;
                }
            }
        }
        Ok(path)
    }
}

/// The placeholder the tokens between a `{{` and its `}}` make: their text in `source`,
/// less a final `| segments`, which may be nowhere else.
fn read_placeholder<'s>(
    source: &'s str,
    tokens: &[(Token<'s>, usize, usize)],
) -> Result<Placeholder<'s>, String> {
    let marker_at = |index: usize| {
        matches!(
            (&tokens[index].0, tokens.get(index + 1).map(|t| &t.0)),
            (Token::Pipe, Some(Token::Ident(name))) if *name == SEGMENTS
        )
    };
    let markers: Vec<usize> = (0..tokens.len())
        .filter(|&index| marker_at(index))
        .collect();
    let (Some(&(_, start, _)), Some(&(_, _, end))) = (tokens.first(), tokens.last()) else {
        return Err("template does not parse: a placeholder needs an expression".to_owned());
    };
    let (end, segments) = match markers.as_slice() {
        [] => (end, false),
        [at] if at + 2 == tokens.len() => (tokens[*at].1, true),
        [at] if matches!(tokens.get(at + 2), Some((Token::ParenOpen, ..))) => {
            return Err(format!(
                "`{SEGMENTS}` takes no arguments: write {{{{ input.file | {SEGMENTS} }}}}"
            ));
        }
        _ => {
            return Err(format!(
                "`{SEGMENTS}` marks a whole placeholder as several path segments, so it comes last: {{{{ input.file | {SEGMENTS} }}}}"
            ));
        }
    };
    let expression = source
        .get(start..end)
        .map(str::trim)
        .filter(|expression| !expression.is_empty())
        .ok_or_else(|| "template does not parse: a placeholder needs an expression".to_owned())?;
    Ok(Placeholder {
        expression,
        segments,
    })
}

/// Appends a placeholder's value, encoded as one segment or, when marked, as several.
fn push_value(
    path: &mut String,
    placeholder: &Placeholder<'_>,
    value: &Value,
) -> Result<(), String> {
    let text = match value {
        Value::Null => {
            return Err(format!(
                "{} renders to null, and a path segment needs a value",
                placeholder.name()
            ));
        }
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if !placeholder.segments {
        if text.is_empty() {
            return Err(format!(
                "{} renders to an empty text, and a path segment needs a value",
                placeholder.name()
            ));
        }
        push_segment(path, placeholder, &text)?;
        return Ok(());
    }
    for (index, segment) in text.split('/').enumerate() {
        if index > 0 {
            path.push('/');
        }
        push_segment(path, placeholder, segment)?;
    }
    Ok(())
}

fn push_segment(
    path: &mut String,
    placeholder: &Placeholder<'_>,
    segment: &str,
) -> Result<(), String> {
    if segment == "." || segment == ".." {
        return Err(format!(
            "{} renders to a `{segment}` segment, which would move within the path: a path segment cannot be `.` or `..`",
            placeholder.name()
        ));
    }
    path.extend(utf8_percent_encode(segment, SEGMENT));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template;
    use serde_json::json;

    fn render(source: &str, input: Value) -> Result<String, String> {
        let scope = template::scope(&json!({ "input": input }));
        PathTemplate::parse(source)?.render(&Templates::new(), &scope)
    }

    #[test]
    fn each_value_becomes_one_encoded_segment() {
        for (value, encoded) in [
            (json!("x?admin=1"), "x%3Fadmin%3D1"),
            (json!("../jump"), "..%2Fjump"),
            (json!("a/b"), "a%2Fb"),
            (json!("a#frag"), "a%23frag"),
            (json!("100%"), "100%25"),
            (json!("%2e%2e"), "%252e%252e"),
            (json!("back\\slash"), "back%5Cslash"),
            (json!("ada@example.com"), "ada%40example.com"),
            (json!("a b;c"), "a%20b%3Bc"),
            (json!("ü"), "%C3%BC"),
            (json!("..."), "..."),
            (json!("a.b-c_d~e"), "a.b-c_d~e"),
            (json!(7), "7"),
            (json!(true), "true"),
        ] {
            assert_eq!(
                render("/items/{{ input.id }}/x", json!({ "id": value })),
                Ok(format!("/items/{encoded}/x")),
                "{value}"
            );
        }
    }

    #[test]
    fn dot_segments_empty_and_null_values_are_refused_naming_the_placeholder() {
        for (value, expected) in [
            (json!("."), "{{ input.id }} renders to a `.` segment"),
            (json!(".."), "{{ input.id }} renders to a `..` segment"),
            (json!(""), "{{ input.id }} renders to an empty text"),
            (json!(null), "{{ input.id }} renders to null"),
        ] {
            let error =
                render("/items/{{ input.id }}", json!({ "id": value })).expect_err("refused");
            assert!(error.starts_with(expected), "{value}: {error}");
        }
        let error = render("/items/{{ input.missing }}", json!({})).expect_err("undefined");
        assert!(
            error.starts_with("{{ input.missing }} renders to null"),
            "{error}"
        );
        let error = render("/items/{{ input.a.b }}", json!({})).expect_err("undefined");
        assert!(error.starts_with("{{ input.a.b }}: "), "{error}");
    }

    #[test]
    fn a_placeholder_marked_segments_keeps_its_slashes_but_not_dot_segments() {
        assert_eq!(
            render(
                "/contents/{{ input.file | segments }}",
                json!({"file": "docs/read me?.md"})
            ),
            Ok("/contents/docs/read%20me%3F.md".to_owned())
        );
        assert_eq!(
            render("/c/{{ input.file|segments }}", json!({"file": ""})),
            Ok("/c/".to_owned())
        );
        for file in ["../etc/passwd", "docs/./x", "docs/..", "."] {
            let error = render(
                "/contents/{{ input.file | segments }}",
                json!({ "file": file }),
            )
            .expect_err("dot segment");
            assert!(
                error.starts_with("{{ input.file | segments }} renders to a `"),
                "{file}: {error}"
            );
        }
        // An attribute of that name is no marker.
        assert_eq!(
            render("/{{ input.segments }}", json!({"segments": "a/b"})),
            Ok("/a%2Fb".to_owned())
        );
    }

    #[test]
    fn a_path_holds_text_and_placeholders_only() {
        let template = PathTemplate::parse("/repos/{{ input.owner }}/{{ input.file | segments }}")
            .expect("parses");
        let placeholders: Vec<(&str, bool)> = template
            .placeholders()
            .map(|p| (p.expression, p.segments))
            .collect();
        assert_eq!(placeholders, [("input.owner", false), ("input.file", true)]);
        for (source, expected) in [
            ("/{% if input.a %}a{% endif %}", "no {% %} statements"),
            ("/{{ input.f | segments | upper }}", "so it comes last"),
            ("/{{ (input.f | segments) ~ 'x' }}", "so it comes last"),
            ("/{{ input.f | segments(1) }}", "takes no arguments"),
            ("/{{ input.a ", "template does not parse"),
        ] {
            let error = PathTemplate::parse(source).expect_err(source);
            assert!(error.contains(expected), "{source}: {error}");
        }
    }
}
