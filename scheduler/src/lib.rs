//! The scheduler: takes up recorded runs, walks each run's graph, dispatches node tasks to
//! the workers, records their results, and sweeps work that passed its deadline.
//!
//! - [`config`]: start-up configuration.
//! - [`store`]: the PostgreSQL adapter for runs and node runs.
//! - [`engine`]: the message handlers: one transaction per message, serialized per run.
//! - [`run_cache`]: running runs' node states kept between their results.
//! - [`connectors`]: connector actions at dispatch: pinned manifests, connections, rate limits.
//! - [`dispatch`]: publishing node tasks, immediately or through the delay tiers.
//! - [`sweeper`]: re-publishes forgotten runs, times out nodes and runs.
//! - [`triggered`]: runs the scheduler's triggers start: recorded with the trigger, announced after.
//! - [`schedules`]: fires the ticks of schedule triggers, once each across replicas.
//! - [`polls`]: polls for poll triggers; each new item starts one run, the baseline none.
//! - [`dead_letters`]: fails the runs and nodes whose messages were dead-lettered.
//! - [`metrics`]: the scheduler's Prometheus metrics.
//! - [`service`]: wires it all together and runs until shutdown.

pub mod config;
pub mod connectors;
pub mod dead_letters;
pub mod dispatch;
pub mod engine;
pub mod metrics;
pub mod polls;
pub mod run_cache;
pub mod schedules;
pub mod service;
pub mod store;
pub mod sweeper;
mod triggered;

pub use config::Config;
pub use service::{Scheduler, StartError};
