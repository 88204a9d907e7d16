-- Webhooks that respond on completion: the private reply queue of the gateway holding
-- the request. The scheduler sends the run's answer there when the run ends; if that
-- gateway is gone, the answer is dropped (the sender already got a 202 on its time-out).
ALTER TABLE runs ADD COLUMN reply_to text;
