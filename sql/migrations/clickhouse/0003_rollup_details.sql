-- Distribution rollups: value quantiles and top paths. These states cost far more than
-- count/sum/uniq per group (measured: topK(50) ~40x), so they are keyed narrowly by
-- (org_id, event, bucket) and start at 1 minute; a metric that needs them at 1 s or together
-- with a dimension filter is answered from raw events.
-- topK keeps 50 candidates: a metric may ask for topK(n) with n <= 50 from these tables.

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1m{{ local }} {{ on_cluster }}
(
    org_id          UInt32,
    event           LowCardinality(String),
    bucket          DateTime('UTC'),
    value_quantiles AggregateFunction(quantileTDigest, Float64),
    top_paths       AggregateFunction(topK(50), String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_detail_1m') }}
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (org_id, event, bucket)
TTL bucket + INTERVAL 7 DAY;
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1m {{ on_cluster }}
AS {{ db }}.rollup_detail_1m_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_detail_1m_local', {{ sharding_key }});
{%- endif %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1h{{ local }} {{ on_cluster }}
(
    org_id          UInt32,
    event           LowCardinality(String),
    bucket          DateTime('UTC'),
    value_quantiles AggregateFunction(quantileTDigest, Float64),
    top_paths       AggregateFunction(topK(50), String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_detail_1h') }}
PARTITION BY toYYYYMM(bucket)
ORDER BY (org_id, event, bucket)
TTL bucket + INTERVAL 1 YEAR;
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1h {{ on_cluster }}
AS {{ db }}.rollup_detail_1h_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_detail_1h_local', {{ sharding_key }});
{%- endif %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1d{{ local }} {{ on_cluster }}
(
    org_id          UInt32,
    event           LowCardinality(String),
    bucket          DateTime('UTC'),
    value_quantiles AggregateFunction(quantileTDigest, Float64),
    top_paths       AggregateFunction(topK(50), String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_detail_1d') }}
PARTITION BY toYear(bucket)
ORDER BY (org_id, event, bucket);
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_detail_1d {{ on_cluster }}
AS {{ db }}.rollup_detail_1d_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_detail_1d_local', {{ sharding_key }});
{%- endif %}
