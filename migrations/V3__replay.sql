-- A replay is a new run of the same scenario that reuses the outputs of the nodes before
-- its starting point; it points at the run it replays. Purging the original (retention)
-- keeps the replay and forgets the link.
ALTER TABLE runs ADD COLUMN replay_of uuid REFERENCES runs (id) ON DELETE SET NULL;
-- Deleting a run looks for its replays through this index; few runs are replays.
CREATE INDEX runs_replay_of ON runs (replay_of) WHERE replay_of IS NOT NULL;
