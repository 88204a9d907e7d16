-- Poll triggers (DESIGN §4): each active scenario triggered by polling has a state row,
-- created by the schedulers when they first see it and deleted when the scenario is no
-- longer active, or polls something else: the next activation records a new baseline.
CREATE TABLE poll_state (
    scenario_id    uuid PRIMARY KEY REFERENCES scenarios (id) ON DELETE CASCADE,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- What is polled, as the scenario's current version spells it. Another connector,
    -- trigger or connection is another list, so its state starts over.
    connector      text NOT NULL,
    trigger_key    text NOT NULL,
    connection     text,
    next_poll_at   timestamptz NOT NULL DEFAULT now(),
    -- The first complete poll records the ids it sees and starts no run.
    baseline_done  boolean NOT NULL DEFAULT false,
    -- The poll in flight: the run id its tasks carry, the page whose answer is awaited,
    -- whether it records the baseline, the connector version it was sent with (NULL for
    -- a built-in), and when it counts as lost (a worker died, a publish failed).
    poll_id        uuid,
    poll_page      integer NOT NULL DEFAULT 0,
    poll_baseline  boolean NOT NULL DEFAULT false,
    poll_version   uuid,
    poll_deadline  timestamptz,
    -- Polls failed in a row: the next one waits exponentially longer.
    failures       integer NOT NULL DEFAULT 0,
    last_error     text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX poll_state_due ON poll_state (next_poll_at);
CREATE UNIQUE INDEX poll_state_poll ON poll_state (poll_id) WHERE poll_id IS NOT NULL;

-- The item ids a scenario's polls have seen: the primary key is the claim, so an item
-- starts one run only, however often it is listed or its poll's answer is delivered.
-- Only the newest ones are kept (by `seq`).
CREATE TABLE poll_seen (
    scenario_id  uuid NOT NULL REFERENCES poll_state (scenario_id) ON DELETE CASCADE,
    item_id      text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scenario_id, item_id)
);
CREATE INDEX poll_seen_order ON poll_seen (scenario_id, seq);
