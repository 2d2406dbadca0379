-- rollup_1h -> rollup_1d: cascades from the finer rollup's insert blocks (already grouped),
-- merging partial states instead of re-reading raw rows.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_1d_mv {{ on_cluster }}
TO {{ db }}.rollup_1d{{ local }}
AS SELECT
    org_id,
    event,
    toStartOfDay(bucket)                AS bucket,
    country,
    device,
    browser,
    os,
    sum(events)                        AS events,
    sum(value_sum)                     AS value_sum,
    uniqCombinedMergeState(users)      AS users
FROM {{ db }}.rollup_1h{{ local }}
GROUP BY org_id, event, bucket, country, device, browser, os;
