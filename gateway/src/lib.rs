//! The gateway: Weft's HTTP front door (architecture §1, §7). It serves the REST API and the
//! webhook endpoints, records runs in PostgreSQL and hands them to the scheduler over
//! RabbitMQ, answering 202 only once the broker has confirmed the message.
//!
//! - [`config`]: start-up configuration.
//! - [`server`]: [`Gateway`]: builds the pool, the publisher and the metrics, then serves
//!   the API and the operations endpoints until shutdown.
//! - `api`: the routes, one module per resource, and the OpenAPI document. The run views
//!   it answers with ([`RunAccepted`], [`RunSummary`], [`RunDetail`], [`NodeRunView`],
//!   [`ItemView`]) are exported, and deserialize, for the integration tests to read.
//! - `enqueue`: records a run and publishes its `RunRequested`; the one way runs start.
//! - `replies`: this process's reply queue, through which actions executed directly (and
//!   connection tests) get their worker's result back, and webhooks that respond on
//!   completion their run's end.
//! - `catalog`: what a connector key names in a workspace, and what a scenario refers to.
//! - `connection_store`: the connections calls are made through, credentials sealed.
//! - `direct`: one action executed now through the workers, outside any run.
//! - `trigger`: what a run was started with, captured from a webhook request.
//! - [`setup`]: what `weft-gateway create-user` does.
//! - [`secrets`]: the secrets the gateway stores encrypted, and their key rotation.
//! - `auth`: who is calling: an API key, a session cookie (with its CSRF check), the admin
//!   token.
//! - `access`: what they may do: every route's rule in one table, checked by one
//!   middleware, which hands handlers the `Workspace`, `Person` or `Admin` it decided.
//! - `identity`: people: passwords (Argon2id), sessions, issued secrets, login back-off.
//! - `audit`: the audit log, written in the transaction of each change.
//! - `mail`: invitations and password resets mailed, when SMTP is configured.
//! - [`housekeeping`]: the hourly sweep of audit events past retention and of expired
//!   sessions, links and sign-in flows.
//! - `extract`: request extractors whose rejections are JSON errors.
//! - `paging`: `limit`/`cursor` parameters and the `{items, next_cursor}` list shape.
//! - `error`: every way a request fails, mapped to a status and a JSON body.
//! - `metrics`: the gateway's Prometheus metrics.
//! - `layers`: what wraps every request: request id, timeout, panics, compression.
//! - `spans`: the server span of every request.
//! - `state`: what every handler shares.

mod access;
mod api;
mod audit;
mod auth;
mod catalog;
pub mod config;
mod connection_store;
mod direct;
mod enqueue;
mod error;
mod extract;
pub mod housekeeping;
mod identity;
mod layers;
mod mail;
mod metrics;
mod paging;
mod replies;
pub mod secrets;
pub mod server;
pub mod setup;
mod spans;
mod state;
mod trigger;

pub use api::{ItemView, NodeRunView, RunAccepted, RunDetail, RunSummary};
pub use config::{Command, Config};
pub use server::{Gateway, StartError};
