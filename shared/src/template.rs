//! Sandboxed template rendering for node inputs, transform outputs and conditions.
//!
//! A JSON string containing `{{ … }}` is a template. A string that is exactly one
//! `{{ expr }}` keeps the JSON type of the value (number, object, array); any other
//! template renders to a string. Rendering is bounded by MiniJinja's fuel (time), a
//! recursion limit (depth) and a cap on the rendered size.

use minijinja::{Environment, UndefinedBehavior, Value as Scope};
use serde_json::Value;

/// Fuel for one template or expression: enough for any reasonable mapping, small enough
/// that a runaway loop stops in milliseconds.
const FUEL: u64 = 100_000;
const RECURSION_LIMIT: usize = 32;
/// Largest rendered string, in bytes.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// Largest template source, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl TemplateError {
    fn from_minijinja(err: &minijinja::Error) -> Self {
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
        Self { env }
    }

    /// Parses a template string and returns the variables it reads, as dotted paths
    /// (`nodes.lookup.output.name`), so references can be checked at save time.
    pub fn variables(&self, source: &str) -> Result<Vec<String>, TemplateError> {
        check_size(source)?;
        let mut names: Vec<String> = match sole_expression(source) {
            Some(expr) => self
                .env
                .compile_expression(expr)
                .map_err(|e| TemplateError::from_minijinja(&e))?
                .undeclared_variables(true)
                .into_iter()
                .collect(),
            None => self
                .env
                .template_from_str(source)
                .map_err(|e| TemplateError::from_minijinja(&e))?
                .undeclared_variables(true)
                .into_iter()
                .collect(),
        };
        names.sort();
        Ok(names)
    }

    /// Parses a bare expression (a condition's `if`) and returns the variables it reads.
    pub fn expression_variables(&self, expr: &str) -> Result<Vec<String>, TemplateError> {
        check_size(expr)?;
        let mut names: Vec<String> = self
            .env
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_minijinja(&e))?
            .undeclared_variables(true)
            .into_iter()
            .collect();
        names.sort();
        Ok(names)
    }

    /// Renders every template string inside a JSON value; other values are kept as they are.
    pub fn render_value(&self, value: &Value, scope: &Scope) -> Result<Value, TemplateError> {
        match value {
            Value::String(source) if is_template(source) => self.render_string(source, scope),
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_value(item, scope))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(fields) => fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_value(item, scope)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn render_string(&self, source: &str, scope: &Scope) -> Result<Value, TemplateError> {
        check_size(source)?;
        if let Some(expr) = sole_expression(source) {
            let value = self.eval(expr, scope)?;
            return to_json(&value);
        }
        let rendered = self
            .env
            .render_str(source, scope)
            .map_err(|e| TemplateError::from_minijinja(&e))?;
        if rendered.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError(format!(
                "rendered text is {} bytes, over the limit of {MAX_RENDERED_BYTES}",
                rendered.len()
            )));
        }
        Ok(Value::String(rendered))
    }

    /// Evaluates a bare expression to a typed value.
    pub fn eval(&self, expr: &str, scope: &Scope) -> Result<Scope, TemplateError> {
        check_size(expr)?;
        self.env
            .compile_expression(expr)
            .and_then(|compiled| compiled.eval(scope))
            .map_err(|e| TemplateError::from_minijinja(&e))
    }

    /// Evaluates a bare expression for its truth (a condition's `if`).
    pub fn eval_bool(&self, expr: &str, scope: &Scope) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, scope)?.is_true())
    }
}

fn check_size(source: &str) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError(format!(
            "template is {} bytes, over the limit of {MAX_TEMPLATE_BYTES}",
            source.len()
        )));
    }
    Ok(())
}

fn to_json(value: &Scope) -> Result<Value, TemplateError> {
    if value.is_undefined() {
        return Ok(Value::Null);
    }
    let json = serde_json::to_value(value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
    let size = serde_json::to_string(&json).map_or(0, |s| s.len());
    if size > MAX_RENDERED_BYTES {
        return Err(TemplateError(format!(
            "result is {size} bytes, over the limit of {MAX_RENDERED_BYTES}"
        )));
    }
    Ok(json)
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
