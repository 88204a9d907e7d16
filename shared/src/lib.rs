//! Weft's shared domain and edges, used by the gateway, the scheduler and the worker.
//!
//! Pure domain (no I/O, unit-tested on data):
//! - [`scenario`]: the scenario definition, parsed and validated at save time.
//! - [`template`]: sandboxed MiniJinja rendering of node inputs and conditions.
//! - [`manifest`]: connector manifests: their format, schema and validation.
//! - [`connector`]: the declarative HTTP engine's pure half: a manifest action (or the
//!   `http` connector's input) rendered into a request, auth applied, the response
//!   interpreted, idempotency keys.
//! - [`limits`]: limits on input (JSON nesting depth) shared by every service.
//! - [`graph`]: evaluation of a run's graph: what is ready, skipped, dispatched, finished.
//! - [`retry`]: retry policies, backoff with jitter, and the delay tiers.
//! - [`messages`]: the versioned AMQP message types.
//! - [`signature`]: webhook signature schemes and their constant-time verification.
//! - [`schedule`]: cron schedules in a time zone: when they tick, across DST changes.
//!
//! Edges (thin adapters over I/O):
//! - [`queue`]: RabbitMQ topology, confirmed publishing and supervised consumers.
//! - [`rate_limit`]: fleet-wide rate-limit slots, reserved in PostgreSQL.
//! - [`db`]: PostgreSQL pools and migrations under an advisory lock.
//! - [`crypto`]: the master key ring (XChaCha20-Poly1305).
//! - [`egress`]: the HTTP client that reaches only where the egress policy permits.
//! - [`oauth`]: OAuth2 token endpoints (code exchange, refresh, client credentials), PKCE.
//! - [`config`]: start-up configuration shared by every binary.
//! - [`telemetry`]: logs, traces, Prometheus registry and the operations HTTP server.
//! - [`trace`]: the trace context across messages and upstream requests.

pub mod config;
pub mod connector;
pub mod crypto;
pub mod db;
pub mod egress;
pub mod graph;
pub mod limits;
pub mod manifest;
pub mod messages;
pub mod oauth;
pub mod queue;
pub mod rate_limit;
pub mod retry;
pub mod scenario;
pub mod schedule;
pub mod signature;
pub mod telemetry;
pub mod template;
#[cfg(test)]
mod testing;
pub mod trace;
