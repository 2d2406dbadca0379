-- Public read-only links to one dashboard. The link's secret (`cps_` + 43 url-safe characters)
-- is never stored: only its SHA-256. `frame_ancestors` is the CSP source list of the pages
-- that may embed the shared page in an iframe ('none' when empty). Every request through a
-- link reads its row here, so a revocation (revoked_at) applies on every node at once.
CREATE TABLE dashboard_shares (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id          integer NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    dashboard_id    integer NOT NULL REFERENCES dashboards(id) ON DELETE CASCADE,
    prefix          text NOT NULL,
    token_hash      text NOT NULL UNIQUE,
    frame_ancestors text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX dashboard_shares_org_dashboard ON dashboard_shares (org_id, dashboard_id);
