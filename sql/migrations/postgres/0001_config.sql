-- Configuration store: tenants, credentials, dashboards, metrics, alerts.
-- Every row that belongs to a tenant carries org_id; every query filters on it.

CREATE TABLE orgs (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    -- per-org quotas (request rate, concurrent queries, rows read per minute); NULL = defaults
    limits      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Ingest keys. Only the SHA-256 of the key is stored (keys are 256-bit random, so a fast hash
-- is enough); the prefix lets an operator recognise a key without revealing it.
CREATE TABLE api_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    prefix      text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE users (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE org_members (
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    PRIMARY KEY (org_id, user_id)
);

-- API tokens of a user within one org (the org and role come from the token, never the request).
CREATE TABLE user_tokens (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE TABLE metrics (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- the metric as the user wrote it ({"text": ...}) or as the form builder sent it
    definition  jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE dashboards (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboards_org ON dashboards (org_id);

CREATE TABLE charts (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dashboard_id  integer NOT NULL REFERENCES dashboards(id) ON DELETE CASCADE,
    org_id        integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    position      integer NOT NULL DEFAULT 0,
    title         text NOT NULL DEFAULT '',
    chart_type    text NOT NULL CHECK (chart_type IN ('line', 'bar', 'heatmap', 'funnel')),
    metric_id     integer REFERENCES metrics(id) ON DELETE RESTRICT,
    metric_inline jsonb,
    granularity   text NOT NULL DEFAULT 'auto',
    default_range text NOT NULL DEFAULT '1h',
    dimension     text,
    comparison    jsonb,
    options       jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((metric_id IS NULL) <> (metric_inline IS NULL))
);
CREATE INDEX charts_dashboard ON charts (dashboard_id, position);

CREATE TABLE alerts (
    id                    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id                integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name                  text NOT NULL,
    metric_id             integer REFERENCES metrics(id) ON DELETE RESTRICT,
    metric_inline         jsonb,
    filters               jsonb NOT NULL DEFAULT '[]'::jsonb,
    comparator            text NOT NULL CHECK (comparator IN ('>', '>=', '<', '<=')),
    threshold             double precision NOT NULL,
    for_seconds           integer NOT NULL CHECK (for_seconds BETWEEN 1 AND 86400),
    resolve_after_seconds integer CHECK (resolve_after_seconds BETWEEN 1 AND 86400),
    severity              text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    enabled               boolean NOT NULL DEFAULT true,
    webhook_url           text,
    -- evaluator state, so a restart resumes instead of firing twice
    state                 text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'pending', 'firing', 'resolved', 'no_data')),
    state_since           timestamptz,
    last_value            double precision,
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((metric_id IS NULL) <> (metric_inline IS NULL))
);
CREATE INDEX alerts_org ON alerts (org_id);

CREATE TABLE alert_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    integer NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('firing', 'resolved', 'no_data')),
    value       double precision,
    threshold   double precision NOT NULL,
    at          timestamptz NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at DESC);
