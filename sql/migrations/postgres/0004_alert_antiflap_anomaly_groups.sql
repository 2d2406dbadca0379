-- Alerts: anti-flapping (a recovery threshold and keep-firing), anomaly alerts (an expected
-- band from a rolling baseline instead of a fixed threshold) and grouped alerts (one state
-- machine per group-by value, at most max_groups of them). docs/alerts.md.
ALTER TABLE alerts
    ADD COLUMN kind                text NOT NULL DEFAULT 'threshold'
        CHECK (kind IN ('threshold', 'anomaly')),
    ADD COLUMN recovery_threshold  double precision,
    ADD COLUMN keep_firing_seconds integer NOT NULL DEFAULT 0
        CHECK (keep_firing_seconds BETWEEN 0 AND 86400),
    ADD COLUMN anomaly             jsonb,
    ADD COLUMN group_by            jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN max_groups          integer NOT NULL DEFAULT 20
        CHECK (max_groups BETWEEN 1 AND 100),
    ALTER COLUMN comparator DROP NOT NULL,
    ALTER COLUMN threshold DROP NOT NULL,
    ADD CONSTRAINT alerts_kind_fields CHECK (
        (kind = 'threshold' AND comparator IS NOT NULL AND threshold IS NOT NULL
            AND anomaly IS NULL)
        OR (kind = 'anomaly' AND anomaly IS NOT NULL)
    );

-- The state of each group of a grouped alert (alerts.state then summarises: firing when any
-- group fires). group_key is the canonical JSON of the group-by values.
CREATE TABLE alert_groups (
    alert_id    integer NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    group_key   text NOT NULL,
    state       text NOT NULL
        CHECK (state IN ('ok', 'pending', 'firing', 'resolved', 'no_data')),
    state_since timestamptz,
    last_value  double precision,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, group_key)
);

ALTER TABLE alert_events ADD COLUMN group_key text;
