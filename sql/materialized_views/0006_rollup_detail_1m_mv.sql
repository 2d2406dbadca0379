-- events_queue -> rollup_detail_1m: quantile and top-path states on the narrow key.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.rollup_detail_1m_mv {{ on_cluster }}
TO {{ db }}.rollup_detail_1m{{ queue_local }}
AS SELECT
    org_id,
    event,
    toStartOfMinute(ts)              AS bucket,
    quantileTDigestState(value)      AS value_quantiles,
    topKState(50)(path)              AS top_paths
FROM {{ db }}.events_queue{{ queue_local }}
{%- if kafka_brokers %}
WHERE length(_error) = 0
{%- endif %}
GROUP BY org_id, event, bucket;
