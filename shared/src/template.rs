//! Sandboxed template rendering for node inputs, transform outputs and conditions.
//!
//! A JSON string containing `{{ … }}` is a template. A string that is exactly one
//! `{{ expr }}` keeps the JSON type of the value (number, object, array); any other
//! template renders to a string. Rendering is bounded by MiniJinja's fuel (time), a
//! recursion limit (depth) and a cap on the rendered size.
//!
//! Fuel counts instructions, not bytes: the built-in filters whose arguments make their
//! output grow without bound (`indent(1000000000)`, `replace("", …)` on a long text,
//! `batch(…, fill)`, a `%100000000s` format) are replaced by versions that refuse such
//! arguments first. A panic inside the engine becomes an error of the template, never of
//! the process rendering it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use minijinja::value::{Kwargs, Rest, StringInput, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value as Scope, filters};
use serde_json::Value;

/// Fuel for one template or expression: enough for any reasonable mapping, small enough
/// that a runaway loop stops in milliseconds.
const FUEL: u64 = 100_000;
const RECURSION_LIMIT: usize = 32;
/// Largest rendered string, in bytes.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// Most bytes the templates of one value (a node's input, a transform's output) may
/// render in all.
pub const MAX_RENDERED_VALUE_BYTES: usize = 4 << 20;
/// Largest template source, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most operators in one tag of a template (see [`check_source`]). Real expressions hold
/// a handful; the engine's stack gives out at about a thousand.
pub const MAX_OPERATORS: usize = 256;
/// Widest indentation `indent` and `tojson` accept, and widest field or precision of a
/// `format` conversion.
pub const MAX_PADDING: usize = 256;
/// Most groups `batch` and `slice` may make.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl TemplateError {
    fn from_minijinja(err: &Error) -> Self {
        let mut message = err.to_string();
        if let Some(detail) = err.detail()
            && !message.contains(detail)
        {
            message = format!("{message}: {detail}");
        }
        Self(message)
    }
}

/// The template engine, configured once per process.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a string is a template at all (plain strings skip the engine).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%")
}

/// The expression of a string that is exactly one `{{ expr }}`, if it is one.
fn sole_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let is_single = !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%");
    is_single.then_some(inner.trim())
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The one mutable value of the engine: a namespace can be made to hold itself,
        // and printing or serializing it then recurses until the stack overflows.
        env.remove_global("namespace");
        env.add_filter("indent", indent);
        env.add_filter("tojson", tojson);
        env.add_filter("format", format);
        env.add_filter("replace", replace);
        env.add_filter("join", join);
        env.add_filter("batch", batch);
        env.add_filter("slice", slice);
        Self { env }
    }

    /// Parses a template string and returns the variables it reads, as dotted paths
    /// (`nodes.lookup.output.name`), so references can be checked at save time.
    pub fn variables(&self, source: &str) -> Result<Vec<String>, TemplateError> {
        check_source(source, false)?;
        let mut names: Vec<String> = guarded(|| match sole_expression(source) {
            Some(expr) => self
                .env
                .compile_expression(expr)
                .map(|compiled| compiled.undeclared_variables(true).into_iter().collect()),
            None => self
                .env
                .template_from_str(source)
                .map(|template| template.undeclared_variables(true).into_iter().collect()),
        })?;
        names.sort();
        Ok(names)
    }

    /// Parses a bare expression (a condition's `if`) and returns the variables it reads.
    pub fn expression_variables(&self, expr: &str) -> Result<Vec<String>, TemplateError> {
        check_source(expr, true)?;
        let mut names: Vec<String> = guarded(|| {
            self.env
                .compile_expression(expr)
                .map(|compiled| compiled.undeclared_variables(true).into_iter().collect())
        })?;
        names.sort();
        Ok(names)
    }

    /// Renders every template string inside a JSON value; other values are kept as they are.
    /// What the templates render adds up to at most [`MAX_RENDERED_VALUE_BYTES`]: many
    /// fields each copying a large value would otherwise multiply it.
    pub fn render_value(&self, value: &Value, scope: &Scope) -> Result<Value, TemplateError> {
        let mut rendered = 0;
        self.render_within(value, scope, &mut rendered)
    }

    fn render_within(
        &self,
        value: &Value,
        scope: &Scope,
        rendered: &mut usize,
    ) -> Result<Value, TemplateError> {
        match value {
            Value::String(source) if is_template(source) => {
                let (value, size) = self.render_string(source, scope)?;
                *rendered += size;
                if *rendered > MAX_RENDERED_VALUE_BYTES {
                    return Err(TemplateError(format!(
                        "the templates of this value render over {MAX_RENDERED_VALUE_BYTES} bytes in all, the limit"
                    )));
                }
                Ok(value)
            }
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_within(item, scope, rendered))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(fields) => fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_within(item, scope, rendered)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// The rendered value and its size as JSON text.
    fn render_string(&self, source: &str, scope: &Scope) -> Result<(Value, usize), TemplateError> {
        check_source(source, false)?;
        if let Some(expr) = sole_expression(source) {
            let value = self.eval(expr, scope)?;
            return to_json(&value);
        }
        let rendered = guarded(|| self.env.render_str(source, scope))?;
        if rendered.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError(format!(
                "rendered text is {} bytes, over the limit of {MAX_RENDERED_BYTES}",
                rendered.len()
            )));
        }
        let size = rendered.len();
        Ok((Value::String(rendered), size))
    }

    /// Evaluates a bare expression to a typed value.
    pub fn eval(&self, expr: &str, scope: &Scope) -> Result<Scope, TemplateError> {
        check_source(expr, true)?;
        guarded(|| {
            self.env
                .compile_expression(expr)
                .and_then(|compiled| compiled.eval(scope))
        })
    }

    /// Evaluates a bare expression for its truth (a condition's `if`).
    pub fn eval_bool(&self, expr: &str, scope: &Scope) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, scope)?.is_true())
    }
}

/// Runs the engine, turning its errors, and its panics (the engine's own bugs, found by
/// fuzzing, e.g. a slice step of `i64::MIN`), into errors of the template.
fn guarded<T>(run: impl FnOnce() -> Result<T, Error>) -> Result<T, TemplateError> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|e| TemplateError::from_minijinja(&e)),
        Err(panic) => {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_owned());
            Err(TemplateError(format!(
                "the template engine failed on this template ({cause}); rewrite the expression"
            )))
        }
    }
}

fn over_limit(what: &str, value: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} is {value}, over the limit of {limit}"),
    )
}

fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Scope, Error> {
    let requested = match width {
        Some(width) => Some(width),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    if let Some(width) = requested.filter(|&width| width > MAX_PADDING) {
        return Err(over_limit("the indent width", width, MAX_PADDING));
    }
    filters::indent(value, width, first, blank, kwargs)
}

fn tojson(value: &Scope, indent: Option<Scope>, kwargs: Kwargs) -> Result<Scope, Error> {
    let requested = match &indent {
        Some(indent) => Some(indent.clone()),
        None => kwargs.peek::<Option<Scope>>("indent")?,
    };
    if let Some(width) = requested
        .and_then(|indent| indent.as_usize())
        .filter(|&width| width > MAX_PADDING)
    {
        return Err(over_limit("the indent width", width, MAX_PADDING));
    }
    filters::tojson(value, indent, kwargs)
}

fn format(
    state: &mut State,
    format_str: &Scope,
    args: Rest<ValueOrKwargs>,
) -> Result<Scope, Error> {
    if let Some(text) = format_str.as_str()
        && let Some(widest) = widest_conversion(text)
        && widest > MAX_PADDING
    {
        return Err(over_limit(
            "a conversion's width or precision",
            widest,
            MAX_PADDING,
        ));
    }
    filters::format(state, format_str, args)
}

/// The largest width or precision in a printf-style format string's conversions
/// (`%-10.3f` → 10), saturating.
fn widest_conversion(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut widest = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        if bytes.get(i) == Some(&b'%') {
            i += 1;
            continue;
        }
        while bytes.get(i).is_some_and(|b| b"-+ #0".contains(b)) {
            i += 1;
        }
        loop {
            let mut number: usize = 0;
            let mut digits = false;
            while let Some(digit) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
                number = number
                    .saturating_mul(10)
                    .saturating_add(usize::from(digit - b'0'));
                digits = true;
                i += 1;
            }
            if digits {
                widest = Some(widest.map_or(number, |w: usize| w.max(number)));
            }
            if bytes.get(i) == Some(&b'.') {
                i += 1;
            } else {
                break;
            }
        }
    }
    widest
}

fn replace(
    state: &mut State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Scope, Error> {
    let (text, pattern) = (value.as_str(), from.as_str());
    let matches = if pattern.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(pattern).count()
    };
    let size = (text.len() - matches * pattern.len())
        .saturating_add(matches.saturating_mul(to.as_str().len()));
    if size > MAX_RENDERED_BYTES {
        return Err(over_limit(
            "the replaced text's size in bytes",
            size,
            MAX_RENDERED_BYTES,
        ));
    }
    filters::replace(state, value, from, to)
}

fn join(
    state: &mut State,
    value: &Scope,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Scope, Error> {
    let separator = match &joiner {
        Some(joiner) => joiner.as_str().len(),
        None => kwargs
            .peek::<Option<Scope>>("d")?
            .map_or(0, |d| d.as_str().map_or(0, str::len)),
    };
    let separators = value
        .len()
        .unwrap_or_default()
        .saturating_sub(1)
        .saturating_mul(separator);
    if separators > MAX_RENDERED_BYTES {
        return Err(over_limit(
            "the joined text's size in bytes",
            separators,
            MAX_RENDERED_BYTES,
        ));
    }
    filters::join(state, value, joiner, attribute, kwargs)
}

fn batch(state: &State, value: Scope, count: usize, fill: Option<Scope>) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the batch size", count, MAX_GROUPS));
    }
    filters::batch(state, value, count, fill)
}

fn slice(state: &State, value: Scope, count: usize, fill: Option<Scope>) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the number of slices", count, MAX_GROUPS));
    }
    filters::slice(state, value, count, fill)
}

/// Refuses a source over [`MAX_TEMPLATE_BYTES`], or one of whose tags (`{{ … }}`,
/// `{% … %}`; the whole source when `is_expression`) holds more than
/// [`MAX_OPERATORS`] operators. The engine parses and compiles chains of operators
/// (`a.b.c…`, `x|f|f…`, `1+1+…`, `- - -…`) recursively, and a chain some thousands long
/// overflows a thread's stack, which aborts the process: no panic to catch.
fn check_source(source: &str, is_expression: bool) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError(format!(
            "template is {} bytes, over the limit of {MAX_TEMPLATE_BYTES}",
            source.len()
        )));
    }
    let operators = most_operators_in_a_tag(source, is_expression);
    if operators > MAX_OPERATORS {
        return Err(TemplateError(format!(
            "an expression has {operators} operators, over the limit of {MAX_OPERATORS}; split it up"
        )));
    }
    Ok(())
}

/// The most operator characters and operator words (`and`, `not`, `is`, …) found in one
/// tag, outside its string literals. Counting `==` twice only errs on the safe side.
fn most_operators_in_a_tag(source: &str, is_expression: bool) -> usize {
    let bytes = source.as_bytes();
    let (mut most, mut count, mut brackets) = (0, 0, 0usize);
    let mut in_tag = is_expression;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if !in_tag {
            if byte == b'{' && matches!(bytes.get(i + 1), Some(b'{' | b'%')) {
                in_tag = true;
                count = 0;
                brackets = 0;
                i += 1;
            }
            i += 1;
            continue;
        }
        if let Some(open) = quote {
            match byte {
                b'\\' => i += 1,
                _ if byte == open => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'\'' | b'"' => quote = Some(byte),
            // A tag ends at the first `}}` or `%}` outside brackets: the latest the
            // engine can end it, so no operator of it escapes the count.
            b'}' | b'%' if brackets == 0 && !is_expression && bytes.get(i + 1) == Some(&b'}') => {
                most = usize::max(most, count);
                in_tag = false;
                i += 1;
            }
            b'{' => brackets += 1,
            b'}' | b')' | b']' => brackets = brackets.saturating_sub(1),
            b'[' | b'(' => {
                brackets += 1;
                count += 1;
            }
            b'.' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' => {
                count += 1
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while bytes
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    i += 1;
                }
                if matches!(
                    &bytes[start..=i],
                    b"and" | b"or" | b"not" | b"in" | b"is" | b"if" | b"else"
                ) {
                    count += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    usize::max(most, count)
}

fn to_json(value: &Scope) -> Result<(Value, usize), TemplateError> {
    if value.is_undefined() {
        return Ok((Value::Null, 0));
    }
    let json = serde_json::to_value(value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
    let size = serde_json::to_string(&json).map_or(0, |s| s.len());
    if size > MAX_RENDERED_BYTES {
        return Err(TemplateError(format!(
            "result is {size} bytes, over the limit of {MAX_RENDERED_BYTES}"
        )));
    }
    Ok((json, size))
}

/// Builds a template scope from a JSON object (`trigger`, `nodes`, `run`, …).
pub fn scope(value: &Value) -> Scope {
    Scope::from(minijinja::value::Serde(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: Value, scope_json: Value) -> Result<Value, TemplateError> {
        Templates::new().render_value(&template, &scope(&scope_json))
    }

    #[test]
    fn a_sole_expression_keeps_its_json_type() {
        let ctx = json!({"trigger": {"body": {"n": 41, "tags": ["a", "b"], "o": {"k": true}}}});
        assert_eq!(
            render(json!("{{ trigger.body.n + 1 }}"), ctx.clone()),
            Ok(json!(42))
        );
        assert_eq!(
            render(json!("{{ trigger.body.tags }}"), ctx.clone()),
            Ok(json!(["a", "b"]))
        );
        assert_eq!(
            render(json!(" {{trigger.body.o}} "), ctx),
            Ok(json!({"k": true}))
        );
    }

    #[test]
    fn mixed_text_renders_to_a_string_and_nested_values_are_walked() {
        let ctx = json!({"nodes": {"a": {"output": {"name": "Ada"}}}});
        let out = render(
            json!({"text": "Hi {{ nodes.a.output.name }}!", "list": [1, "{{ nodes.a.output.name | upper }}"], "plain": "no template"}),
            ctx,
        );
        assert_eq!(
            out,
            Ok(json!({"text": "Hi Ada!", "list": [1, "ADA"], "plain": "no template"}))
        );
    }

    #[test]
    fn undefined_variables_are_errors_that_name_them() {
        let err = render(
            json!("{{ trigger.body.missing.deeper }}"),
            json!({"trigger": {"body": {}}}),
        )
        .expect_err("undefined must fail");
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let err = render(
            json!(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
            ),
            json!({}),
        )
        .expect_err("must be bounded");
        assert!(err.to_string().to_lowercase().contains("fuel"), "{err}");
    }

    #[test]
    fn variables_lists_dotted_paths_for_reference_checks() {
        let templates = Templates::new();
        let vars = templates
            .variables("{{ nodes.lookup.output.name }} and {{ trigger.body.x }}")
            .expect("parses");
        assert!(
            vars.contains(&"nodes.lookup.output.name".to_string()),
            "{vars:?}"
        );
        assert!(vars.contains(&"trigger.body.x".to_string()), "{vars:?}");
        assert!(templates.variables("{{ unclosed").is_err());
    }

    #[test]
    fn conditions_evaluate_to_booleans() {
        let templates = Templates::new();
        let ctx = scope(&json!({"nodes": {"a": {"output": {"first_name": null}}}}));
        assert_eq!(
            templates.eval_bool("nodes.a.output.first_name is not none", &ctx),
            Ok(false)
        );
        assert_eq!(
            templates.eval_bool("nodes.a.output.first_name is none", &ctx),
            Ok(true)
        );
    }
}

/// Bad input never crashes the process rendering it: limits with their errors, and
/// properties over arbitrary sources and scopes.
#[cfg(test)]
mod hardening {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::testing::json_value;

    fn render(source: &str, body: Value) -> Result<Value, TemplateError> {
        Templates::new().render_value(&json!(source), &scope(&json!({"trigger": {"body": body}})))
    }

    fn error(source: &str) -> String {
        render(source, json!({}))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn filters_that_would_grow_without_bound_name_their_limit() {
        for (source, expected) in [
            (
                "{{ 'ab' | indent(1000000000) }}",
                "indent width is 1000000000, over the limit of 256",
            ),
            (
                "{{ 'a' | indent(width=100000) }}",
                "indent width is 100000, over the limit of 256",
            ),
            (
                "{{ [1] | tojson(indent=100000000) }}",
                "indent width is 100000000, over the limit of 256",
            ),
            (
                "{{ '%100000000s' | format('x') }}",
                "width or precision is 100000000, over the limit of 256",
            ),
            (
                "{{ '%.100000000f' | format(1.5) }}",
                "width or precision is 100000000, over the limit of 256",
            ),
            (
                "{{ ('x' * 60000) | replace('', 'y' * 60000) }}",
                "replaced text's size in bytes is 3600120000, over the limit of 1048576",
            ),
            (
                "{{ range(10000) | join('x' * 60000) }}",
                "joined text's size in bytes is 599940000, over the limit of 1048576",
            ),
            (
                "{{ [1] | batch(100000000, 0) }}",
                "batch size is 100000000, over the limit of 10000",
            ),
            (
                "{{ [1, 2, 3] | slice(100000000) }}",
                "number of slices is 100000000, over the limit of 10000",
            ),
        ] {
            let found = error(source);
            assert!(found.contains(expected), "{source}: {found}");
        }
        // Within the limits they work as the built-ins do.
        assert_eq!(
            render(
                "{{ 'a\nb' | indent(2) }}|{{ 'aXa' | replace('X', '-') }}|{{ [1, 2] | join(',') }}|{{ '%5s' | format('x') }}",
                json!({})
            ),
            Ok(json!("a\n  b|a-a|1,2|    x"))
        );
        assert_eq!(
            render("{{ [1, 2, 3] | batch(2, 0) }}", json!({})),
            Ok(json!([[1, 2], [3, 0]]))
        );
        assert_eq!(widest_conversion("%% %-10.3f %s %05d"), Some(10));
        assert_eq!(widest_conversion("100%% sure"), None);
    }

    #[test]
    fn long_operator_chains_are_refused_before_they_reach_the_parser() {
        let chain = format!("{{{{ x{} }}}}", ".a".repeat(5_000));
        assert!(
            error(&chain).contains("operators, over the limit of 256"),
            "{}",
            error(&chain)
        );
        let negations = format!("{}1", "- ".repeat(5_000));
        let found = Templates::new()
            .eval(&negations, &scope(&json!({})))
            .expect_err("refused");
        assert!(
            found.to_string().contains("over the limit of 256"),
            "{found}"
        );
        // Text outside tags and string literals inside them hold any number of symbols.
        let text = format!(
            "{}{{{{ '{}' }}}}{}",
            "-".repeat(5_000),
            "|".repeat(5_000),
            "=".repeat(5_000)
        );
        assert!(render(&text, json!({})).is_ok());
        // The count is per tag: many small tags are fine.
        let many = "{{ trigger.body.a | default(1) + 1 }}".repeat(200);
        assert!(render(&many, json!({"a": 1})).is_ok());
        // A tag does not end inside brackets, so a `}}` there hides nothing from the count.
        let hidden = format!("{{{{ [ }}}} {} ] }}}}", ".a".repeat(300));
        assert!(error(&hidden).contains("over the limit of 256"));
    }

    #[test]
    fn a_namespace_cannot_be_made_to_hold_itself() {
        let found = error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}");
        assert!(found.contains("namespace is unknown"), "{found}");
    }

    /// The engine negates a slice's step unchecked: an overflow panic in debug builds
    /// (release builds wrap), the one panic of it this test can trigger.
    #[cfg(debug_assertions)]
    #[test]
    fn a_panic_inside_the_engine_is_an_error_of_the_template() {
        let found = error("{{ 'abc'[::-9223372036854775808] }}");
        assert!(found.contains("template engine failed"), "{found}");
    }

    #[test]
    fn what_the_templates_of_one_value_render_is_bounded_in_all() {
        let body = json!({"s": "x".repeat(MAX_RENDERED_BYTES - 16)});
        let one = json!({"a": "{{ trigger.body.s }}"});
        let context = scope(&json!({"trigger": {"body": body}}));
        assert!(Templates::new().render_value(&one, &context).is_ok());
        let fields: serde_json::Map<String, Value> = (0..5)
            .map(|i| (format!("f{i}"), json!("{{ trigger.body.s }}")))
            .collect();
        let found = Templates::new()
            .render_value(&Value::Object(fields), &context)
            .expect_err("5 MiB in all");
        assert_eq!(
            found.to_string(),
            "the templates of this value render over 4194304 bytes in all, the limit"
        );
        let text = error(&format!("{{{{ x }}}}{}", "y".repeat(MAX_TEMPLATE_BYTES)));
        assert!(text.contains("over the limit of 65536"), "{text}");
        assert!(
            error("{{ 'x' * 2000000 }}").contains("over the limit of 1048576"),
            "a sole expression's value is bounded too"
        );
    }

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
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    fn check(source: &str, body: Value) -> Result<(), TestCaseError> {
        let templates = Templates::new();
        let context =
            scope(&json!({"trigger": {"body": body}, "nodes": {"a": {"output": [1, "x"]}}}));
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
}
