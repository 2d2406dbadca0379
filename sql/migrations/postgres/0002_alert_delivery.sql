-- Alerts evaluator (issue 6): the webhook delivery of each alert event, and history paging.
-- An event row is written in the same transaction as the alert's state change; its webhook
-- is delivered afterwards in the background and the outcome recorded here.
ALTER TABLE alert_events
    ADD COLUMN delivery          text NOT NULL DEFAULT 'none'
        CHECK (delivery IN ('none', 'pending', 'delivered', 'failed')),
    ADD COLUMN delivery_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN delivery_error    text,
    ADD COLUMN delivered_at      timestamptz;

CREATE INDEX alert_events_alert_id ON alert_events (alert_id, id DESC);
CREATE INDEX alert_events_undelivered ON alert_events (id) WHERE delivery = 'pending';
