-- rollup_1m -> rollup_1h: cascades from the finer rollup's insert blocks (already grouped),
-- merging partial states instead of re-reading raw rows.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_1h_mv {{ on_cluster }}
TO {{ db }}.rollup_1h{{ local }}
AS SELECT
    org_id,
    event,
    toStartOfHour(bucket)                AS bucket,
    country,
    device,
    browser,
    os,
    sum(events)                        AS events,
    sum(value_sum)                     AS value_sum,
    uniqCombinedMergeState(users)      AS users
FROM {{ db }}.rollup_1m{{ local }}
GROUP BY org_id, event, bucket, country, device, browser, os;
