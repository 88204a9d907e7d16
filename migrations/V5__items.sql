-- for_each nodes: the state of each item, in item order, as a JSON array of
-- {status, attempts, input, output, raw_output, error, queued_at, started_at, finished_at,
-- deadline_at}. NULL for every other node. An item's attempt is identified by
-- (run_id, node_id, item index, attempts); the row's deadline_at is the earliest deadline
-- of the items in flight, so the sweeper finds it through the existing index.
ALTER TABLE node_runs ADD COLUMN items jsonb;
