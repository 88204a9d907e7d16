-- Schedulers keep a running run's node states in memory between its results instead of
-- reading every node row again for each one. `revision` tells them whether what they
-- hold is still current: every write of a run's node rows by a scheduler bumps it in the
-- same statement, so a state cached at revision r is valid exactly while the locked run
-- row still says r (another replica's write, or a failed commit, makes it stale).
ALTER TABLE runs ADD COLUMN revision bigint NOT NULL DEFAULT 0;
