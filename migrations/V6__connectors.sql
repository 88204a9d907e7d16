-- Connectors, connections and their credentials (DESIGN §5).

-- A workspace's own connectors. Built-in manifests are not stored: they ship in the
-- binaries. Each registration or update writes a new immutable version, and a run pins
-- the versions it started with (`runs.connector_pins`), so an update changes the next
-- run and never a running one.
CREATE TABLE connectors (
    workspace_id     uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key              text NOT NULL,
    current_version  integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    PRIMARY KEY (workspace_id, key)
);

CREATE TABLE connector_versions (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key           text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    manifest      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, key, version)
);

-- `credentials` is the key ring's sealed JSON object of credential fields, with the
-- associated data `weft:connection:<workspace>:<connection>`: copied to another row it
-- does not decrypt. `config` is not secret and is returned by the API.
CREATE TABLE connections (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    connector     text NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    config        jsonb NOT NULL DEFAULT '{}',
    credentials   text,
    rate_limit    jsonb,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'pending', 'error')),
    last_error    text,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connections_workspace ON connections (workspace_id, id DESC);

-- One authorization-code flow in progress: `state` is single-use (deleted when the
-- callback takes it) and expires; the PKCE verifier is sealed like credentials.
CREATE TABLE oauth_states (
    state          text PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    connection_id  uuid NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    verifier       text NOT NULL,
    redirect_uri   text NOT NULL,
    expires_at     timestamptz NOT NULL
);

-- Fleet-wide rate limits: the next free call slot of each limited key (a connection, or
-- a connector in a workspace). Every scheduler reserves slots here, so the limit holds
-- across all of them and all workers together.
CREATE TABLE rate_limit_slots (
    key      text PRIMARY KEY,
    next_at  timestamptz NOT NULL
);

-- Connector key → connector_versions.id, for the workspace connectors a run uses.
ALTER TABLE runs ADD COLUMN connector_pins jsonb NOT NULL DEFAULT '{}';

-- Attempts answered 429: they wait per Retry-After and do not count against
-- max_attempts.
ALTER TABLE node_runs ADD COLUMN rate_limited integer NOT NULL DEFAULT 0;
