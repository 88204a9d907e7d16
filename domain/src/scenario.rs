//! The scenario definition (architecture §5): parsed from JSON and validated when it is saved,
//! so that a stored version always runs. Every problem names the node, the field and the
//! cause.
//!
//! - `model`: the validated, typed scenario: nodes, edges, triggers.
//! - `spec`: the JSON shape, as users write it.
//! - `parse`: the checks that turn a definition into a [`Scenario`], or its problems.
//! - `trigger`: the parsing of triggers (webhook options, signatures, schedules, polls).
//! - `order`: the order nodes run in, and which always finish before which.

mod model;
mod order;
mod parse;
mod spec;
mod trigger;

#[cfg(test)]
mod hardening;

pub use model::{
    DEFAULT_CASE, ERROR_PORT, Edge, ForEach, Node, NodeKind, OnError, PollTrigger, Scenario,
    TriggerKind, Wait, WebhookOptions, WebhookSignature,
};
pub use order::topological_order;
pub use parse::{
    BuiltinCatalog, Catalog, DEFAULT_MAX_CONCURRENCY, DEFAULT_NODE_TIMEOUT, DEFAULT_RUN_TIMEOUT,
    Invalid, MAX_CONCURRENCY, MAX_NODES, Problem,
};
pub use trigger::{
    DEFAULT_RESPOND_TIMEOUT, MAX_RESPOND_TIMEOUT, MAX_SECRET_LEN, MIN_POLL_INTERVAL,
};
