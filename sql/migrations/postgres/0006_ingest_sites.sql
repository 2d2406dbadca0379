-- Sites that send Plausible-format events (POST /api/event): the event names its site's
-- domain and carries no key, so each domain is mapped to one of an org's ingest keys. The key
-- decides the org, its limits and revocation (a revoked key stops its sites too); deleting the
-- key deletes the mapping. A domain belongs to at most one key (docs/ingest.md, Plausible).
CREATE TABLE ingest_sites (
    domain      text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    api_key_id  integer NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_sites_key ON ingest_sites (api_key_id);
