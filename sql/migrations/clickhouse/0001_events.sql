-- Raw event stream. Embedded: a Null table whose only job is to feed the materialized views
-- (chDB has no Kafka engine). Server: the Kafka engine consumes the events topic directly.
{#- Kafka settings: each consumer parses and inserts on its own thread (one thread parses
    ~185k JSONEachRow rows/s, DESIGN.md), and a block is flushed after at most
    kafka_flush_interval_ms (ClickHouse's default, 7.5 s, would hold dashboards back): the
    latency-vs-block-size lever, like writer_max_delay_ms for the embedded writer. #}
CREATE TABLE IF NOT EXISTS {{ db }}.events_queue{{ queue_local }} {{ on_cluster }}
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
         kafka_num_consumers = {{ kafka_num_consumers }},
         kafka_thread_per_consumer = 1,
         kafka_flush_interval_ms = {{ kafka_flush_interval_ms }},
         kafka_handle_error_mode = 'stream'
{%- else -%}
ENGINE = Null
{%- endif %};
{%- if queue_local %}

-- Cluster without Kafka: the app inserts here and each row goes to its org's shard, where the
-- Null table above feeds that shard's materialized views.
CREATE TABLE IF NOT EXISTS {{ db }}.events_queue {{ on_cluster }}
AS {{ db }}.events_queue_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'events_queue_local', {{ sharding_key }});
{%- endif %}
{%- if kafka_brokers %}

-- Dead letters: with kafka_handle_error_mode = 'stream' a message that does not parse becomes a
-- row with _error and _raw_message set (instead of being skipped); events_queue_errors_mv keeps
-- it here, and the other views of events_queue take only rows with an empty _error.
CREATE TABLE IF NOT EXISTS {{ db }}.events_queue_errors{{ local }} {{ on_cluster }}
(
    topic           LowCardinality(String),
    kafka_partition UInt64,
    kafka_offset    UInt64,
    raw_message     String,
    error           String,
    received_at     DateTime64(3, 'UTC')
)
ENGINE = {{ engine('MergeTree', 'events_queue_errors') }}
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, kafka_partition, kafka_offset)
TTL toDateTime(received_at) + INTERVAL 30 DAY;
{%- if cluster %}

-- Errors stay on the node that consumed them (they have no trustworthy org_id); this table
-- reads them from every shard.
CREATE TABLE IF NOT EXISTS {{ db }}.events_queue_errors {{ on_cluster }}
AS {{ db }}.events_queue_errors_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'events_queue_errors_local', rand());
{%- endif %}
{%- endif %}

-- Raw events, for custom metrics that need raw columns (props, path filters, sessions, funnels).
CREATE TABLE IF NOT EXISTS {{ db }}.events{{ local }} {{ on_cluster }}
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
{%- if cluster %}

-- Cluster: the app reads (and, with Kafka, the views write) `events`; rows live in events_local
-- on their org's shard.
CREATE TABLE IF NOT EXISTS {{ db }}.events {{ on_cluster }}
AS {{ db }}.events_local
ENGINE = Distributed('{{ cluster }}', '{{ db }}', 'events_local', {{ sharding_key }});
{%- endif %}
