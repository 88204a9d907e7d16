//! Running runs' node states kept between their results, so a result does not read every
//! node row of its run again (work that grows with the run's length at every step).
//!
//! An entry is only a shortcut: it is used when the locked run row's revision is the one
//! it was stored at (see `migrations/V10__run_revision.sql`), and taken out of the cache
//! while its result is handled, so a failed transaction leaves nothing stale behind.

use std::sync::{Mutex, MutexGuard, PoisonError};

use quick_cache::unsync::Cache;
use weft_domain::graph::RunState;
use weft_domain::ids::RunId;

/// A result message larger than this makes its run's state too big to keep: the run
/// reads its node rows for every result from then on, as it would without a cache.
pub const LARGEST_CACHED_RESULT: usize = 256 * 1024;

enum Entry {
    State {
        revision: i64,
        state: RunState,
    },
    /// A run that has had a large result: never cached again.
    TooLarge,
}

pub struct RunCache {
    capacity: usize,
    /// Behind one lock: `take` and `put` read and change an entry in one step.
    entries: Mutex<Cache<RunId, Entry>>,
}

impl RunCache {
    /// A cache of at most `capacity` runs (0 turns it off).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Cache::new(capacity.max(1))),
        }
    }

    /// The state stored for `run` at `revision`, taken out of the cache; `None` when
    /// there is none or it is stale.
    pub fn take(&self, run: RunId, revision: i64) -> Option<RunState> {
        let mut entries = self.lock();
        match entries.remove(&run)?.1 {
            Entry::State {
                revision: stored,
                state,
            } if stored == revision => Some(state),
            Entry::State { .. } => None,
            Entry::TooLarge => {
                entries.insert(run, Entry::TooLarge);
                None
            }
        }
    }

    /// Keeps `state` as of `revision` (already committed), unless the run was marked too
    /// large or a newer revision is already stored.
    pub fn put(&self, run: RunId, revision: i64, state: RunState) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        match entries.peek(&run) {
            Some(Entry::TooLarge) => return,
            Some(Entry::State { revision: held, .. }) if *held > revision => return,
            _ => {}
        }
        // When full, the cache evicts a run it expects to be least useful; that run reads
        // its rows next time.
        entries.insert(run, Entry::State { revision, state });
    }

    /// Stops caching `run`: its results are too large to keep in memory.
    pub fn too_large(&self, run: RunId) {
        if self.capacity > 0 {
            self.lock().insert(run, Entry::TooLarge);
        }
    }

    /// Forgets a run that is over.
    pub fn forget(&self, run: RunId) {
        self.lock().remove(&run);
    }

    fn lock(&self) -> MutexGuard<'_, Cache<RunId, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_domain::graph::NodeState;

    fn state_with(node: &str) -> RunState {
        let mut state = RunState::default();
        state.nodes.insert(node.to_owned(), NodeState::pending());
        state
    }

    #[test]
    fn a_state_is_returned_once_and_only_at_its_revision() {
        let cache = RunCache::new(10);
        let run = RunId::generate();
        cache.put(run, 3, state_with("a"));
        assert!(
            cache.take(run, 2).is_none(),
            "a stale revision must not be used"
        );
        assert!(cache.take(run, 3).is_none(), "a stale read drops the entry");

        cache.put(run, 4, state_with("b"));
        let taken = cache.take(run, 4).expect("the current revision is cached");
        assert!(taken.nodes.contains_key("b"));
        assert!(cache.take(run, 4).is_none(), "taking removes the entry");
    }

    #[test]
    fn an_older_revision_never_replaces_a_newer_one() {
        let cache = RunCache::new(10);
        let run = RunId::generate();
        cache.put(run, 5, state_with("new"));
        cache.put(run, 4, state_with("old"));
        let taken = cache.take(run, 5).expect("revision 5 kept");
        assert!(taken.nodes.contains_key("new"));
    }

    #[test]
    fn a_run_marked_too_large_is_never_cached_again() {
        let cache = RunCache::new(10);
        let run = RunId::generate();
        cache.put(run, 1, state_with("a"));
        cache.too_large(run);
        cache.put(run, 2, state_with("a"));
        assert!(cache.take(run, 2).is_none());
        assert!(cache.take(run, 2).is_none(), "the mark survives a take");
        cache.forget(run);
        cache.put(run, 3, state_with("a"));
        assert!(
            cache.take(run, 3).is_some(),
            "forgetting the run clears the mark"
        );
    }

    #[test]
    fn the_capacity_bounds_the_runs_kept() {
        let cache = RunCache::new(2);
        let runs: Vec<RunId> = (0..3).map(|_| RunId::generate()).collect();
        for run in &runs {
            cache.put(*run, 1, state_with("a"));
        }
        let kept = runs.iter().filter(|run| cache.take(**run, 1).is_some());
        assert_eq!(kept.count(), 2);

        let off = RunCache::new(0);
        off.put(runs[0], 1, state_with("a"));
        assert!(off.take(runs[0], 1).is_none(), "capacity 0 keeps nothing");
    }
}
