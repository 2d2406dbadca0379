-- events_queue -> events: the raw copy, unchanged.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.events_mv {{ on_cluster }}
TO {{ db }}.events
AS SELECT * FROM {{ db }}.events_queue;
