//! The template engine: configured once, it renders the templates of a JSON value and
//! evaluates bare expressions, every run guarded and bounded.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use minijinja::machinery::ast::{Expr, Stmt};
use minijinja::machinery::{self, CodeGenerator, Instructions};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value as Scope};
use serde_json::Value;

use super::filters;
use super::memory::{
    CONCAT_GUARD, MAX_RENDERED_BYTES, Measure, REPEAT_GUARD, VALUE_GUARD, charged_output,
    guard_concat, guard_repeat, guard_value, guarded_program,
};
use super::static_bound::Folding;
use crate::limits::MAX_RENDERED_VALUE_BYTES;

/// Fuel for one template or expression: enough for any reasonable mapping, small enough
/// that a runaway loop stops in milliseconds. The memory guards (see `memory`) run
/// instructions too: a loop printing the fields of items runs about a
/// third more. So: 100,000 for the template's own, and two fifths on top for the guards.
pub(super) const FUEL: u64 = 140_000;
pub(super) const RECURSION_LIMIT: usize = 32;
/// Largest template source, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most operators in one tag of a template (see [`check_source`]). Real expressions hold
/// a handful; the engine's stack gives out at about a thousand.
pub const MAX_OPERATORS: usize = 256;

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
pub(super) fn sole_expression(source: &str) -> Option<&str> {
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
        env.set_formatter(charged_output);
        env.add_function(VALUE_GUARD, guard_value);
        env.add_function(CONCAT_GUARD, guard_concat);
        env.add_function(REPEAT_GUARD, guard_repeat);
        env.add_filter("indent", filters::indent);
        env.add_filter("tojson", filters::tojson);
        env.add_filter("pprint", filters::pprint);
        env.add_filter("format", filters::format);
        env.add_filter("replace", filters::replace);
        env.add_filter("join", filters::join);
        env.add_filter("batch", filters::batch);
        env.add_filter("slice", filters::slice);
        Self { env }
    }

    /// Parses a template string and returns the variables it reads, as dotted paths
    /// (`nodes.lookup.output.name`), so references can be checked at save time.
    pub fn variables(&self, source: &str) -> Result<Vec<String>, TemplateError> {
        check_source(source, false)?;
        let mut names: Vec<String> = guarded(|| match sole_expression(source) {
            Some(expr) => {
                parse_expression(expr)?;
                self.env
                    .compile_expression(expr)
                    .map(|compiled| compiled.undeclared_variables(true).into_iter().collect())
            }
            None => {
                self.parse_template(source)?;
                self.env
                    .template_from_str(source)
                    .map(|template| template.undeclared_variables(true).into_iter().collect())
            }
        })?;
        names.sort();
        Ok(names)
    }

    /// Parses a bare expression (a condition's `if`) and returns the variables it reads.
    pub fn expression_variables(&self, expr: &str) -> Result<Vec<String>, TemplateError> {
        check_source(expr, true)?;
        let mut names: Vec<String> = guarded(|| {
            parse_expression(expr)?;
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
        let rendered = guarded(|| {
            let template = self.parse_template(source)?;
            let mut generator = CodeGenerator::new(TEMPLATE_NAME, source);
            generator.compile_stmt(&template);
            let mut text = String::new();
            self.run(&generator.finish().0, scope, &mut text)?;
            Ok(text)
        })?;
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
            let expression = parse_expression(expr)?;
            let mut generator = CodeGenerator::new(EXPRESSION_NAME, expr);
            generator.compile_expr(&expression);
            let value = self.run(&generator.finish().0, scope, &mut String::new())?;
            value.ok_or_else(|| {
                Error::new(ErrorKind::InvalidOperation, "the expression gave no value")
            })
        })
    }

    /// Evaluates a bare expression for its truth (a condition's `if`).
    pub fn eval_bool(&self, expr: &str, scope: &Scope) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, scope)?.is_true())
    }

    /// Runs a compiled template or expression, guarded (see `memory::guarded_program`), writing
    /// into `text`; an expression leaves its value.
    fn run(
        &self,
        compiled: &Instructions<'_>,
        scope: &Scope,
        text: &mut String,
    ) -> Result<Option<Scope>, Error> {
        let (value, _) = machinery::eval(
            &self.env,
            &guarded_program(compiled),
            scope.clone(),
            &BTreeMap::new(),
            &mut machinery::make_string_output(text),
            AutoEscape::None,
        )?;
        Ok(value)
    }

    /// The syntax tree of a template, once its constant expressions are checked.
    fn parse_template<'s>(&self, source: &'s str) -> Result<Stmt<'s>, Error> {
        let template = machinery::parse(source, TEMPLATE_NAME, self.env.syntax().clone())?;
        Folding::default().statement(&template)?;
        Ok(template)
    }
}

/// The names the engine gives templates and expressions in its errors.
const TEMPLATE_NAME: &str = "<string>";
const EXPRESSION_NAME: &str = "<expression>";

/// The syntax tree of an expression, once its constant expressions are checked.
fn parse_expression(expr: &str) -> Result<Expr<'_>, Error> {
    let expression = machinery::parse_expr(expr)?;
    Folding::default().expr(&expression)?;
    Ok(expression)
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
    // Measured before it is converted, which takes several times the text's size.
    let mut measure = Measure::new(usize::MAX);
    serde_json::to_writer(&mut measure, value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
    let size = measure.bytes;
    if size > MAX_RENDERED_BYTES {
        return Err(TemplateError(format!(
            "result is {size} bytes, over the limit of {MAX_RENDERED_BYTES}"
        )));
    }
    let json = serde_json::to_value(value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
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

/// Bad input never crashes the process rendering it: limits of the source and of what
/// one value renders, and the engine's own failures.
#[cfg(test)]
mod hardening {
    use serde_json::json;

    use super::*;
    use crate::template::fixtures::{error, refused_over_text, render};
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
    fn the_engine_has_no_macros_to_recurse_through() {
        let found = refused_over_text(
            "{% macro f(x) %}{{ f(x ~ x) }}{% endmacro %}{{ f(trigger.body.s) }}",
        );
        assert!(found.contains("unknown statement macro"), "{found}");
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
}
