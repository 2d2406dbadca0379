{#- Kafka renderings only: the embedded Null table has no _error/_raw_message columns, and a file
    that renders to no statement is not applied (app/migrate.py). -#}
{%- if kafka_brokers -%}
-- events_queue -> events_queue_errors: messages the Kafka engine could not parse, kept with
-- where they came from and why (kafka_handle_error_mode = 'stream'), instead of being skipped.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.events_queue_errors_mv {{ on_cluster }}
TO {{ db }}.events_queue_errors{{ local }}
AS SELECT
    _topic                  AS topic,
    _partition              AS kafka_partition,
    _offset                 AS kafka_offset,
    _raw_message            AS raw_message,
    _error                  AS error,
    now64(3, 'UTC')         AS received_at
FROM {{ db }}.events_queue
WHERE length(_error) > 0;
{%- endif %}
