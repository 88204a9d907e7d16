//! Weft's domain: what scenarios, runs, connectors and messages are, and the rules over
//! them, as plain functions over data. No async runtime, database, broker or HTTP client:
//! everything here is unit-tested without services. The adapters that do I/O are in
//! `weft-runtime`.
//!
//! - [`access`]: roles in a workspace and the permissions each grants.
//! - [`ids`]: typed ids (`RunId`, `WorkspaceId`, …), UUIDs that cannot be swapped.
//! - [`run`]: a run's status.
//! - [`scenario`]: the scenario definition, parsed and validated at save time.
//! - [`graph`]: evaluation of a run's graph: what is ready, skipped, dispatched, finished.
//! - [`template`]: sandboxed MiniJinja rendering of node inputs and conditions.
//! - [`manifest`]: connector manifests: their format, schema and validation.
//! - [`connector`]: the declarative HTTP engine's pure half: a manifest action (or the
//!   `http` connector's input) rendered into a request, auth applied, the response
//!   interpreted, idempotency keys.
//! - [`oauth`]: OAuth2 authorize URLs with PKCE, and the reading of token responses.
//! - [`crypto`]: the master key ring and authenticated encryption of secrets.
//! - [`limits`]: limits on input (JSON nesting depth) shared by every service.
//! - [`retry`]: retry policies, backoff with jitter, and the delay tiers.
//! - [`messages`]: the versioned AMQP message types.
//! - [`signature`]: webhook signature schemes and their constant-time verification.
//! - [`schedule`]: cron schedules in a time zone: when they tick, across DST changes.
//! - [`poll`]: what a poll trigger asks and how its answers are read: items, cursors,
//!   intervals, backoff.

pub mod access;
pub mod connector;
pub mod crypto;
pub mod graph;
pub mod ids;
pub mod limits;
pub mod manifest;
pub mod messages;
pub mod oauth;
pub mod poll;
pub mod retry;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod signature;
pub mod template;
#[cfg(test)]
mod testing;
