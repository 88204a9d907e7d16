//! The worker: stateless, no database. Pulls node tasks, executes them against external
//! APIs, classifies the outcome, publishes the result with a confirm, then acks.
//!
//! - [`config`]: start-up configuration.
//! - [`egress`]: which addresses actions may reach (no private networks by default).
//! - [`outcome`]: classification of HTTP outcomes into success, retryable, permanent.
//! - [`http`]: the built-in `http` connector's `request` action.
//! - [`execute`]: one task, from decoding to the published result.
//! - [`metrics`]: the worker's Prometheus metrics.
//! - [`service`]: wires it all together and runs until shutdown.

pub mod config;
pub mod egress;
pub mod execute;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod service;

pub use config::Config;
pub use service::Worker;
