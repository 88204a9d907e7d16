-- Weft's core schema. Every row of user data carries its workspace id, and every query
-- filters by it.

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are random 256-bit tokens; only their SHA-256 is stored.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_sha256  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);

CREATE TABLE scenarios (
    id               uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name             text NOT NULL,
    status           text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused')),
    current_version  integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE INDEX scenarios_workspace ON scenarios (workspace_id, id DESC) WHERE deleted_at IS NULL;

-- A version is immutable once written: runs are pinned to one.
CREATE TABLE scenario_versions (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scenario_id   uuid NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version >= 1),
    definition    jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scenario_id, version)
);

CREATE TABLE webhook_tokens (
    token         text PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scenario_id   uuid NOT NULL UNIQUE REFERENCES scenarios (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id            uuid PRIMARY KEY,  -- UUIDv7: time-ordered, so it is also the paging key
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scenario_id   uuid NOT NULL,
    version       integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    trigger_kind  text NOT NULL,
    trigger       jsonb NOT NULL,
    error         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    deadline_at   timestamptz,
    -- When the sweeper last re-published a run still queued (a gateway died between
    -- its commit and its publish).
    requeued_at   timestamptz,
    FOREIGN KEY (scenario_id, version) REFERENCES scenario_versions (scenario_id, version)
);
CREATE INDEX runs_workspace_page ON runs (workspace_id, id DESC);
CREATE INDEX runs_scenario_page ON runs (workspace_id, scenario_id, id DESC);
-- The sweeper's work lists stay small: only unfinished runs are indexed.
CREATE INDEX runs_unfinished ON runs (status, created_at) WHERE status IN ('queued', 'running');

-- One row per node of a run. (run_id, node_id, attempts) identifies the attempt a
-- result belongs to; a result for any other attempt changes nothing.
CREATE TABLE node_runs (
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    workspace_id  uuid NOT NULL,
    position      integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'skipped', 'cancelled')),
    attempts      integer NOT NULL DEFAULT 0,
    input         jsonb,
    output        jsonb,
    raw_output    jsonb,
    error         jsonb,
    port          text,
    queued_at     timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    deadline_at   timestamptz,
    PRIMARY KEY (run_id, node_id)
);
CREATE INDEX node_runs_deadline ON node_runs (deadline_at) WHERE status IN ('queued', 'running');
