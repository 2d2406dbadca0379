-- rollup_detail_1h -> rollup_detail_1d: cascades from the finer table's insert blocks.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_detail_1d_mv {{ on_cluster }}
TO {{ db }}.rollup_detail_1d{{ local }}
AS SELECT
    org_id,
    event,
    toStartOfDay(bucket)                              AS bucket,
    quantileTDigestMergeState(value_quantiles)   AS value_quantiles,
    topKMergeState(50)(top_paths)                AS top_paths
FROM {{ db }}.rollup_detail_1h{{ local }}
GROUP BY org_id, event, bucket;
