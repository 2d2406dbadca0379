-- events_queue -> rollup_1s: the only rollup MV that reads raw rows. The coarser rollups cascade
-- from it, so each insert block is grouped by the full dimension key once, not four times.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_1s_mv {{ on_cluster }}
TO {{ db }}.rollup_1s{{ queue_local }}
AS SELECT
    org_id,
    event,
    toStartOfSecond(ts)            AS bucket,
    country,
    device,
    browser,
    os,
    count()                        AS events,
    sum(value)                     AS value_sum,
    uniqCombinedState(user_id)     AS users
FROM {{ db }}.events_queue{{ queue_local }}
{%- if kafka_brokers %}
WHERE length(_error) = 0
{%- endif %}
GROUP BY org_id, event, bucket, country, device, browser, os;
