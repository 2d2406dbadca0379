-- Alert notification channels, silences and per-attempt delivery records (docs/alerts.md,
-- "Channels", "Silences", "Delivery attempts").
--
-- Tenancy by construction: every reference between an org's rows is a composite foreign key
-- that includes org_id, so a link between an alert and another org's channel (or a silence
-- of another org's alert or metric) cannot be stored, whatever the application does.
ALTER TABLE alerts ADD CONSTRAINT alerts_id_org UNIQUE (id, org_id);
ALTER TABLE metrics ADD CONSTRAINT metrics_id_org UNIQUE (id, org_id);

CREATE TABLE alert_channels (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('webhook', 'slack', 'email')),
    -- webhook/slack: {"url"}; email: {"host", "port", "security", "username", "password",
    -- "from", "to"}. Never returned whole by the API (URLs hold tokens, passwords are secret).
    config      jsonb NOT NULL,
    -- the HMAC-SHA256 key of the signature header; shown once, when created or rotated
    secret      text NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    UNIQUE (id, org_id)
);

-- Which channels an alert notifies. A channel in use cannot be deleted (RESTRICT: the API
-- answers 409 naming the alerts) so no alert silently loses its notifications.
CREATE TABLE alert_channel_links (
    alert_id    integer NOT NULL,
    channel_id  integer NOT NULL,
    org_id      integer NOT NULL,
    PRIMARY KEY (alert_id, channel_id),
    FOREIGN KEY (alert_id, org_id) REFERENCES alerts (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (channel_id, org_id) REFERENCES alert_channels (id, org_id) ON DELETE RESTRICT
);
CREATE INDEX alert_channel_links_channel ON alert_channel_links (channel_id);

-- A silence mutes the notifications of one alert, or of every alert of one saved metric,
-- for the events whose second falls in [starts_at, ends_at). Evaluation goes on.
CREATE TABLE alert_silences (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    alert_id    integer,
    metric_id   integer,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((alert_id IS NULL) <> (metric_id IS NULL)),
    CHECK (ends_at > starts_at),
    FOREIGN KEY (alert_id, org_id) REFERENCES alerts (id, org_id) ON DELETE CASCADE,
    FOREIGN KEY (metric_id, org_id) REFERENCES metrics (id, org_id) ON DELETE CASCADE
);
CREATE INDEX alert_silences_org ON alert_silences (org_id, ends_at);

-- A silenced event is recorded like any other; its delivery says why nothing was sent.
ALTER TABLE alert_events DROP CONSTRAINT alert_events_delivery_check;
ALTER TABLE alert_events
    ADD CONSTRAINT alert_events_delivery_check
        CHECK (delivery IN ('none', 'pending', 'delivered', 'failed', 'silenced')),
    ADD COLUMN silenced_by bigint REFERENCES alert_silences(id) ON DELETE SET NULL;

-- One row per delivery attempt of one event to one target (a channel, or the alert's own
-- webhook_url when channel_id is NULL and channel_name is 'webhook_url').
CREATE TABLE alert_deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      bigint NOT NULL REFERENCES alert_events(id) ON DELETE CASCADE,
    org_id        integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    channel_id    integer REFERENCES alert_channels(id) ON DELETE SET NULL,
    channel_kind  text NOT NULL CHECK (channel_kind IN ('webhook', 'slack', 'email')),
    channel_name  text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt >= 0),
    status        text NOT NULL CHECK (status IN ('delivered', 'failed', 'refused')),
    response_code integer,
    error         text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_event ON alert_deliveries (event_id, id);
