-- Schedule triggers: each tick fires exactly once however many schedulers run.

-- When the scenario last became active: a schedule fires no tick from before it, so an
-- activation (or a reactivation after a pause) starts the schedule from that moment.
ALTER TABLE scenarios ADD COLUMN activated_at timestamptz;
UPDATE scenarios SET activated_at = updated_at WHERE status = 'active';
-- Every scheduler pass reads the active scenarios.
CREATE INDEX scenarios_active ON scenarios (id) WHERE status = 'active' AND deleted_at IS NULL;

-- Per scheduled scenario, the latest tick dealt with (fired, or skipped as missed while no
-- scheduler ran): ticks after it are due. A scheduler locks the row while it fires, so
-- the others pass the scenario by.
CREATE TABLE schedule_state (
    scenario_id   uuid PRIMARY KEY REFERENCES scenarios (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- NULL until a first tick is dealt with.
    last_tick_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per fired tick: the primary key is the claim, so a tick can start one run only.
-- It goes with its run when run retention deletes it.
CREATE TABLE schedule_ticks (
    scenario_id  uuid NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    tick_at      timestamptz NOT NULL,
    -- Deferred: the tick is claimed before its run is inserted, in one transaction.
    run_id       uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (scenario_id, tick_at)
);
CREATE INDEX schedule_ticks_run ON schedule_ticks (run_id);
