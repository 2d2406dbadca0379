-- Annotations: an org's deploy markers and incidents, drawn on every time chart of the org
-- (docs/api.md, "Annotations"). `ends_at` NULL = a point in time; otherwise a span.
-- `source` says which credential created it: a user token ('user') or an ingest key ('key').
CREATE TABLE annotations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz,
    title       text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    tags        text[] NOT NULL DEFAULT '{}',
    source      text NOT NULL CHECK (source IN ('user', 'key')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at >= starts_at)
);
CREATE INDEX annotations_org_time ON annotations (org_id, starts_at);

-- Stat panels: a big number with its unit, a sparkline and the change against the previous
-- period (docs/ui.md, "Stat panels").
ALTER TABLE charts DROP CONSTRAINT IF EXISTS charts_chart_type_check;
ALTER TABLE charts
    ADD CONSTRAINT charts_chart_type_check
    CHECK (chart_type IN ('line', 'bar', 'heatmap', 'funnel', 'stat'));
