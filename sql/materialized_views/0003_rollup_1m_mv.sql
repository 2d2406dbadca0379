-- rollup_1s -> rollup_1m: cascades from the finer rollup's insert blocks (already grouped),
-- merging partial states instead of re-reading raw rows.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_1m_mv {{ on_cluster }}
TO {{ db }}.rollup_1m{{ local }}
AS SELECT
    org_id,
    event,
    toStartOfMinute(bucket)                AS bucket,
    country,
    device,
    browser,
    os,
    sum(events)                        AS events,
    sum(value_sum)                     AS value_sum,
    uniqCombinedMergeState(users)      AS users
FROM {{ db }}.rollup_1s{{ local }}
GROUP BY org_id, event, bucket, country, device, browser, os;
