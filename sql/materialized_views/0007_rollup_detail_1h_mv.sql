-- rollup_detail_1m -> rollup_detail_1h: cascades from the finer table's insert blocks.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_detail_1h_mv {{ on_cluster }}
TO {{ db }}.rollup_detail_1h{{ local }}
AS SELECT
    org_id,
    event,
    toStartOfHour(bucket)                              AS bucket,
    quantileTDigestMergeState(value_quantiles)   AS value_quantiles,
    topKMergeState(50)(top_paths)                AS top_paths
FROM {{ db }}.rollup_detail_1m{{ local }}
GROUP BY org_id, event, bucket;
