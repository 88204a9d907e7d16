-- Webhook security: signature secrets, kept encrypted apart from the definitions, and
-- deduplication of repeated deliveries.

-- The signature scheme of a scenario whose current version requires signed webhooks, and
-- its secret. The secret never appears in a definition: `ciphertext` is the key ring's
-- `v1.<key id>.<base64>`, with the associated data `<workspace>/<scenario>/webhook-signature`,
-- so it does not decrypt anywhere else. `scheme` is the scheme and its options, as the
-- definition spells them (`{"scheme": "github"}`).
CREATE TABLE webhook_signatures (
    scenario_id   uuid PRIMARY KEY REFERENCES scenarios (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scheme        jsonb NOT NULL,
    ciphertext    text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Deliveries of the last 24 hours, by the sender's `Idempotency-Key` or the scheme's
-- delivery id: a repeat is answered with the first run and starts nothing. The primary
-- key makes concurrent repeats wait for the first and then see it. A row older than 24
-- hours is expired: a delivery with its key takes it over, and new deliveries to its
-- scenario delete expired rows as they go.
CREATE TABLE webhook_deliveries (
    scenario_id   uuid NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    delivery_key  text NOT NULL,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- Deferred: the delivery is claimed before its run is inserted, in one transaction.
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scenario_id, delivery_key)
);
CREATE INDEX webhook_deliveries_expiry ON webhook_deliveries (scenario_id, created_at);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries (run_id);
