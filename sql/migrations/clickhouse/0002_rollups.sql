-- Rollups keyed by tenant, event, time bucket and the low-cardinality dimensions.
-- Counts and sums are SimpleAggregateFunction(sum) (ClickHouse 26 refuses plain columns outside
-- the sorting key of an AggregatingMergeTree); distinct users are uniqCombined (HyperLogLog) states.
-- Retention is a TTL per table: 10 minutes, 7 days, 1 year, kept forever.

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1s{{ local }} {{ on_cluster }}
(
    org_id    UInt32,
    event     LowCardinality(String),
    bucket    DateTime('UTC'),
    country   LowCardinality(String),
    device    LowCardinality(String),
    browser   LowCardinality(String),
    os        LowCardinality(String),
    events    SimpleAggregateFunction(sum, UInt64),
    value_sum SimpleAggregateFunction(sum, Float64),
    users     AggregateFunction(uniqCombined, String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_1s') }}
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (org_id, event, bucket, country, device, browser, os)
TTL bucket + INTERVAL 10 MINUTE;
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1s {{ on_cluster }}
AS {{ db }}.rollup_1s_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_1s_local', {{ sharding_key }});
{%- endif %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1m{{ local }} {{ on_cluster }}
(
    org_id    UInt32,
    event     LowCardinality(String),
    bucket    DateTime('UTC'),
    country   LowCardinality(String),
    device    LowCardinality(String),
    browser   LowCardinality(String),
    os        LowCardinality(String),
    events    SimpleAggregateFunction(sum, UInt64),
    value_sum SimpleAggregateFunction(sum, Float64),
    users     AggregateFunction(uniqCombined, String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_1m') }}
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (org_id, event, bucket, country, device, browser, os)
TTL bucket + INTERVAL 7 DAY;
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1m {{ on_cluster }}
AS {{ db }}.rollup_1m_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_1m_local', {{ sharding_key }});
{%- endif %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1h{{ local }} {{ on_cluster }}
(
    org_id    UInt32,
    event     LowCardinality(String),
    bucket    DateTime('UTC'),
    country   LowCardinality(String),
    device    LowCardinality(String),
    browser   LowCardinality(String),
    os        LowCardinality(String),
    events    SimpleAggregateFunction(sum, UInt64),
    value_sum SimpleAggregateFunction(sum, Float64),
    users     AggregateFunction(uniqCombined, String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_1h') }}
PARTITION BY toYYYYMM(bucket)
ORDER BY (org_id, event, bucket, country, device, browser, os)
TTL bucket + INTERVAL 1 YEAR;
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1h {{ on_cluster }}
AS {{ db }}.rollup_1h_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_1h_local', {{ sharding_key }});
{%- endif %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1d{{ local }} {{ on_cluster }}
(
    org_id    UInt32,
    event     LowCardinality(String),
    bucket    DateTime('UTC'),
    country   LowCardinality(String),
    device    LowCardinality(String),
    browser   LowCardinality(String),
    os        LowCardinality(String),
    events    SimpleAggregateFunction(sum, UInt64),
    value_sum SimpleAggregateFunction(sum, Float64),
    users     AggregateFunction(uniqCombined, String)
)
ENGINE = {{ engine('AggregatingMergeTree', 'rollup_1d') }}
PARTITION BY toYear(bucket)
ORDER BY (org_id, event, bucket, country, device, browser, os);
{%- if cluster %}

CREATE TABLE IF NOT EXISTS {{ db }}.rollup_1d {{ on_cluster }}
AS {{ db }}.rollup_1d_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'rollup_1d_local', {{ sharding_key }});
{%- endif %}
