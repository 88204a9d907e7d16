-- People, their sessions and roles, many API keys per workspace, and the audit log
-- (architecture §11).

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    -- Trimmed and lower-cased by the gateway before it is stored or looked up.
    email          text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    -- A PHC string (Argon2id); NULL for a person who signs in only by single sign-on.
    password_hash  text,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz
);

CREATE TABLE memberships (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'operator', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Server-side sessions: the cookie carries a random 256-bit token, only its SHA-256 is
-- stored. A session ends at `expires_at`, or after `idle` without a request.
CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256    bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    client_address  text,
    user_agent      text
);
CREATE INDEX sessions_user ON sessions (user_id, id DESC);

-- Failed logins by account and by client address, for the back-off of repeated failures.
CREATE TABLE login_failures (
    subject        text PRIMARY KEY,  -- 'email:<address>' or 'address:<ip>'
    failures       integer NOT NULL,
    blocked_until  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Single-use, expiring invitations to a workspace; the link carries a random token.
CREATE TABLE invitations (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    email         text NOT NULL CHECK (email = lower(email)),
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'operator', 'viewer')),
    token_sha256  bytea NOT NULL UNIQUE,
    invited_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz
);
CREATE INDEX invitations_workspace ON invitations (workspace_id, id DESC);

-- Single-use, expiring password reset links issued by an owner or the operator.
CREATE TABLE password_resets (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX password_resets_user ON password_resets (user_id);

-- Keys issued before this migration came from the admin token: they keep working as
-- owner keys.
ALTER TABLE api_keys
    ADD COLUMN name          text NOT NULL DEFAULT 'Admin-issued key' CHECK (length(name) BETWEEN 1 AND 200),
    ADD COLUMN role          text NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'editor', 'operator', 'viewer')),
    -- The key's first characters, to recognise it in a list; not enough to use it.
    ADD COLUMN prefix        text NOT NULL DEFAULT 'weft_',
    ADD COLUMN created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN revoked_at    timestamptz;
ALTER TABLE api_keys ALTER COLUMN name DROP DEFAULT;

-- Append-only: written in the transaction of the change it records, never updated.
-- Workspace-less events are about a person (a login, a failed login).
CREATE TABLE audit_events (
    id              uuid PRIMARY KEY,  -- UUIDv7: time-ordered, so it is also the paging key
    workspace_id    uuid,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    actor_kind      text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'admin_token', 'system')),
    actor_id        uuid,
    client_address  text,
    user_agent      text,
    action          text NOT NULL,
    target_kind     text NOT NULL,
    target_id       text,
    summary         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_workspace ON audit_events (workspace_id, id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- Who started an OAuth flow, for the audit event of its callback (which comes from the
-- provider's redirect, without the person's credentials).
ALTER TABLE oauth_states
    ADD COLUMN actor_kind  text,
    ADD COLUMN actor_id    uuid;

-- Single sign-on: a flow between its start and the provider's callback, and the provider
-- identities (issuer and subject, which never change, unlike an email) linked to people.
CREATE TABLE sso_states (
    state       text PRIMARY KEY,
    nonce       text NOT NULL,
    verifier    text NOT NULL,  -- the PKCE verifier, encrypted under the master key
    return_to   text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sso_states_expiry ON sso_states (expires_at);

CREATE TABLE sso_identities (
    issuer      text NOT NULL,
    subject     text NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_user ON sso_identities (user_id);

-- Who made each object and who changed it last: a user, an API key or the admin token
-- (kind and id, as in audit_events); NULL for objects older than this migration.
ALTER TABLE scenarios
    ADD COLUMN created_by_kind text, ADD COLUMN created_by_id uuid,
    ADD COLUMN updated_by_kind text, ADD COLUMN updated_by_id uuid;
ALTER TABLE scenario_versions
    ADD COLUMN created_by_kind text, ADD COLUMN created_by_id uuid;
ALTER TABLE connectors
    ADD COLUMN created_by_kind text, ADD COLUMN created_by_id uuid,
    ADD COLUMN updated_by_kind text, ADD COLUMN updated_by_id uuid;
ALTER TABLE connector_versions
    ADD COLUMN created_by_kind text, ADD COLUMN created_by_id uuid;
ALTER TABLE connections
    ADD COLUMN created_by_kind text, ADD COLUMN created_by_id uuid,
    ADD COLUMN updated_by_kind text, ADD COLUMN updated_by_id uuid;
