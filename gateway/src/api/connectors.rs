//! Connectors (architecture §6): the catalog a workspace sees (the `http` connector, the
//! built-in manifests, and its own), its own registered, updated and deleted through the
//! API, and one action executed directly through the workers.
//!
//! A workspace connector is a row in `connectors` naming its current version, and one
//! immutable row in `connector_versions` per save: runs pin the version they started with,
//! so an update changes the next run and never a running one. Deleting is soft, for the
//! same reason.
//!
//! Direct execution takes the path every run's action takes: a `NodeTask` on the tasks
//! queue, executed by a worker, whose result comes back on this process's reply queue
//! ([`crate::replies`]) instead of the results queue.
//!
//! - `view`: what a connector looks like in the API.
//! - `listing`: the catalog listed and read.
//! - `registration`: a workspace's own connectors registered, updated and deleted.
//! - `execution`: one action executed directly.

pub(super) mod execution;
pub(super) mod listing;
pub(super) mod registration;
mod view;
