//! The worker: stateless, no database. Pulls node tasks, executes them against external
//! APIs, classifies the outcome, publishes the result with a confirm, then acks.
//!
//! - [`config`]: start-up configuration.
//! - [`outcome`]: classification of HTTP outcomes into success, retryable, rate limited,
//!   permanent.
//! - [`http`]: the one place a request is sent upstream (egress guard, limits, span).
//! - [`engine`]: the declarative HTTP engine: every connector action, auth, OAuth2 tokens.
//! - [`execute`]: one task, from decoding to the published result.
//! - [`metrics`]: the worker's Prometheus metrics.
//! - [`service`]: wires it all together and runs until shutdown.

pub mod config;
pub mod engine;
pub mod execute;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod service;

pub use config::Config;
pub use service::Worker;
/// Which addresses actions may reach; shared with the gateway's OAuth code exchange.
pub use weft_runtime::egress;
