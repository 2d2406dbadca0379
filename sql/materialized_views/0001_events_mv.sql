-- events_queue -> events: the raw copy, unchanged.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.events_mv {{ on_cluster }}
TO {{ db }}.events{{ queue_local }}
AS SELECT * FROM {{ db }}.events_queue{{ queue_local }}
{%- if kafka_brokers %}
WHERE length(_error) = 0
{%- endif %};
