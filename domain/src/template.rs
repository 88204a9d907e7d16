//! Sandboxed template rendering for node inputs, transform outputs and conditions.
//!
//! A JSON string containing `{{ … }}` is a template. A string that is exactly one
//! `{{ expr }}` keeps the JSON type of the value (number, object, array); any other
//! template renders to a string. Rendering is bounded by MiniJinja's fuel (time), a
//! recursion limit (depth), a memory budget and a cap on the rendered size.
//!
//! Fuel counts instructions, not bytes: the built-in filters whose arguments make their
//! output grow without bound (`indent(1000000000)`, `replace("", …)` on a long text,
//! `batch(…, fill)`, a `%100000000s` format) are replaced by versions that refuse such
//! arguments first. A panic inside the engine becomes an error of the template, never of
//! the process rendering it.
//!
//! - `render`: the engine, its configuration, and rendering values and expressions.
//! - `memory`: the budget of one render and the guards that charge it.
//! - `filters`: the built-in filters replaced by versions that bound their output.
//! - `static_bound`: the bound on what compiling a template computes ahead.

mod filters;
mod memory;
mod render;
mod static_bound;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod hardening;

pub use filters::{MAX_GROUPS, MAX_PADDING};
pub use memory::{MAX_RENDER_MEMORY, MAX_RENDERED_BYTES};
pub use render::{MAX_OPERATORS, MAX_TEMPLATE_BYTES, TemplateError, Templates, is_template, scope};
