//! Weft's runtime: the thin adapters over I/O that the gateway, the scheduler and the
//! worker share. The rules they carry out live in `weft-domain`.
//!
//! - [`config`]: start-up configuration shared by every binary.
//! - [`db`]: PostgreSQL pools and migrations under an advisory lock.
//! - [`queue`]: RabbitMQ topology, confirmed publishing and supervised consumers.
//! - [`runs`]: recording a new run and announcing it (`RunRequested`), for every trigger.
//! - [`egress`]: the HTTP client that reaches only where the egress policy permits.
//! - [`token_endpoint`]: the OAuth2 token endpoint's grants (code exchange, refresh,
//!   client credentials), through the egress-guarded client.
//! - [`rate_limit`]: fleet-wide rate-limit slots, reserved in PostgreSQL.
//! - [`telemetry`]: logs, traces, Prometheus registry and the operations HTTP server.
//! - [`trace`]: the trace context across messages and upstream requests.
//! - [`tls`]: PostgreSQL's `sslmode` over rustls, and CA files for the database and broker.

pub mod config;
pub mod db;
pub mod egress;
pub mod queue;
pub mod rate_limit;
pub mod runs;
pub mod telemetry;
pub mod tls;
pub mod token_endpoint;
pub mod trace;
