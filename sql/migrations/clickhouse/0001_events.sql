-- Raw event stream. Embedded: a Null table whose only job is to feed the materialized views
-- (chDB has no Kafka engine). Server: the Kafka engine consumes the events topic directly.
CREATE TABLE IF NOT EXISTS {{ db }}.events_queue {{ on_cluster }}
(
    org_id      UInt32,
    ts          DateTime64(3, 'UTC'),
    event       LowCardinality(String),
    user_id     String,
    session_id  String,
    value       Float64,
    path        String,
    referrer    String,
    country     LowCardinality(String),
    device      LowCardinality(String),
    browser     LowCardinality(String),
    os          LowCardinality(String),
    props       Map(String, String),
    received_at DateTime64(3, 'UTC')
)
{% if kafka_brokers -%}
ENGINE = Kafka
SETTINGS kafka_broker_list = '{{ kafka_brokers }}',
         kafka_topic_list = '{{ kafka_topic }}',
         kafka_group_name = '{{ kafka_group }}',
         kafka_format = 'JSONEachRow',
         kafka_skip_broken_messages = 1000
{%- else -%}
ENGINE = Null
{%- endif %};

-- Raw events, for custom metrics that need raw columns (props, path filters, sessions, funnels).
CREATE TABLE IF NOT EXISTS {{ db }}.events {{ on_cluster }}
(
    org_id      UInt32,
    ts          DateTime64(3, 'UTC'),
    event       LowCardinality(String),
    user_id     String,
    session_id  String,
    value       Float64,
    path        String,
    referrer    String,
    country     LowCardinality(String),
    device      LowCardinality(String),
    browser     LowCardinality(String),
    os          LowCardinality(String),
    props       Map(String, String),
    received_at DateTime64(3, 'UTC')
)
ENGINE = {{ engine('MergeTree', 'events') }}
PARTITION BY toYYYYMM(ts)
ORDER BY (org_id, ts)
TTL toDateTime(ts) + INTERVAL {{ events_ttl_days }} DAY;
