//! Evaluation of one run's graph, as a plain function over data.
//!
//! The scheduler loads a run's [`RunState`], applies a result or starts the run, calls
//! [`RunState::advance`], and persists what changed. `advance` evaluates pure nodes
//! (transform, condition) inline, decides which action nodes to dispatch, propagates
//! skips and decides when the run is over.
//!
//! An action node with `for_each` keeps one [`ItemState`] per item: `advance` keeps at
//! most `max_concurrency` of them in flight, and finishes the node when every item has
//! finished (or one failed for good). A `delay` node is dispatched as the built-in
//! `weft.delay` task, due when the wait is over.
//!
//! - `attempt`: what a node or an item records of its attempts, shared by both, and the
//!   attempt sent to the workers.
//! - `state`: the recorded state of a run, its nodes and their items.
//! - `advance`: what is ready, skipped, evaluated inline or dispatched, and when the run
//!   is over.
//! - `result`: how a worker's result for a node changes the run.
//! - `items`: the items of a `for_each` node: started, kept in flight, finished.
//! - `replay`: which recorded outcomes a replay reuses.
//! - `outputs`: a node's `outputs`, JSONPath mappings of its result.
//! - `response`: the answer of a webhook that responds on completion.

mod advance;
mod attempt;
mod items;
mod outputs;
mod replay;
mod response;
mod result;
mod state;

#[cfg(test)]
mod fixtures;

pub use attempt::{AttemptRecord, Dispatch, NodeStatus};
pub use items::MAX_ITEMS;
pub use outputs::{OutputsError, map_outputs};
pub use replay::{Replay, ReplayError};
pub use state::{Applied, ItemState, NodeState, RunContext, RunOutcome, RunState, Step};
