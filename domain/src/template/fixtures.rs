//! Renders the template tests are written with, and the engine without its guards.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use super::render::{FUEL, RECURSION_LIMIT};
use super::{TemplateError, Templates, scope};

pub(super) fn render(source: &str, body: Value) -> Result<Value, TemplateError> {
    Templates::new().render_value(&json!(source), &scope(&json!({"trigger": {"body": body}})))
}

pub(super) fn error(source: &str) -> String {
    render(source, json!({}))
        .expect_err("must be refused")
        .to_string()
}

/// A plain engine configured as [`Templates::new`] is, without the guards.
pub(super) fn unguarded() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL * 4));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.remove_global("namespace");
    env
}

/// Renders `source` over a 64 KiB `trigger.body.s` and returns its error.
pub(super) fn refused_over_text(source: &str) -> String {
    render(source, json!({"s": "x".repeat(64 * 1024)}))
        .expect_err("must be refused")
        .to_string()
}
