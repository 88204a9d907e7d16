-- The names of a connection's credential fields, kept beside the sealed credentials so
-- the API can say which fields are set (`credentials_set`) without opening them: outside
-- a worker, credentials are decrypted only to change them.
ALTER TABLE connections ADD COLUMN credential_fields text[] NOT NULL DEFAULT '{}';

-- Expired OAuth states are swept when new flows start.
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);
