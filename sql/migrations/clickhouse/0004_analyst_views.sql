-- Analyst views (issue 9): the rollups with their aggregate states finalized into plain numbers,
-- for people writing SQL (POST /sql, `clickpulse sql`; docs/schema.md). Each view groups by the
-- rollup's full key, so rows that the AggregatingMergeTree has not merged yet come out as one row.
-- A view reads its rollup at query time: retention is the rollup's (TTL) and nothing is stored.
-- `users` is distinct users within one row (one bucket and key): it cannot be summed across
-- buckets or dimension values; merge the rollup's `users` state instead (docs/schema.md).

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_1s {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    country,
    device,
    browser,
    os,
    sum(events)                 AS events,
    sum(value_sum)              AS value_sum,
    uniqCombinedMerge(users)    AS users
FROM {{ db }}.rollup_1s
GROUP BY org_id, event, bucket, country, device, browser, os;

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_1m {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    country,
    device,
    browser,
    os,
    sum(events)                 AS events,
    sum(value_sum)              AS value_sum,
    uniqCombinedMerge(users)    AS users
FROM {{ db }}.rollup_1m
GROUP BY org_id, event, bucket, country, device, browser, os;

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_1h {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    country,
    device,
    browser,
    os,
    sum(events)                 AS events,
    sum(value_sum)              AS value_sum,
    uniqCombinedMerge(users)    AS users
FROM {{ db }}.rollup_1h
GROUP BY org_id, event, bucket, country, device, browser, os;

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_1d {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    country,
    device,
    browser,
    os,
    sum(events)                 AS events,
    sum(value_sum)              AS value_sum,
    uniqCombinedMerge(users)    AS users
FROM {{ db }}.rollup_1d
GROUP BY org_id, event, bucket, country, device, browser, os;

-- Distribution views: t-digest quantiles of `value` and the most frequent paths (up to 50,
-- most frequent first) per (org, event, bucket). Both are approximate sketches.
CREATE VIEW IF NOT EXISTS {{ db }}.metrics_detail_1m {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    quantileTDigestMerge(0.5)(value_quantiles)  AS p50,
    quantileTDigestMerge(0.9)(value_quantiles)  AS p90,
    quantileTDigestMerge(0.99)(value_quantiles) AS p99,
    topKMerge(50)(top_paths)                    AS top_paths
FROM {{ db }}.rollup_detail_1m
GROUP BY org_id, event, bucket;

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_detail_1h {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    quantileTDigestMerge(0.5)(value_quantiles)  AS p50,
    quantileTDigestMerge(0.9)(value_quantiles)  AS p90,
    quantileTDigestMerge(0.99)(value_quantiles) AS p99,
    topKMerge(50)(top_paths)                    AS top_paths
FROM {{ db }}.rollup_detail_1h
GROUP BY org_id, event, bucket;

CREATE VIEW IF NOT EXISTS {{ db }}.metrics_detail_1d {{ on_cluster }} AS
SELECT
    org_id,
    event,
    bucket,
    quantileTDigestMerge(0.5)(value_quantiles)  AS p50,
    quantileTDigestMerge(0.9)(value_quantiles)  AS p90,
    quantileTDigestMerge(0.99)(value_quantiles) AS p99,
    topKMerge(50)(top_paths)                    AS top_paths
FROM {{ db }}.rollup_detail_1d
GROUP BY org_id, event, bucket;
