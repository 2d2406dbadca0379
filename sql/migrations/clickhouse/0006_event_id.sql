-- Client event ids (issue 13; docs/ingest.md, "Idempotency"): `event_id` as sent (`event_id`,
-- PostHog's `uuid`, Segment's `messageId`) or derived from the request's `Idempotency-Key` and
-- the event's position; '' when neither was given. The writer drops an event whose id its org
-- already stored within the deduplication window, before the INSERT, so `events` and every
-- rollup count it once; this column is what that window is rebuilt from at start.
-- A Kafka engine `events_queue` cannot be altered: with Kafka the ids do not travel on the topic
-- (the column stays '' and only the receiving node's in-memory window applies).
{%- if not kafka_brokers %}
ALTER TABLE {{ db }}.events_queue{{ queue_local }} {{ on_cluster }} ADD COLUMN IF NOT EXISTS event_id String DEFAULT '';
{%- if queue_local %}
ALTER TABLE {{ db }}.events_queue {{ on_cluster }} ADD COLUMN IF NOT EXISTS event_id String DEFAULT '';
{%- endif %}
{%- endif %}
ALTER TABLE {{ db }}.events{{ local }} {{ on_cluster }} ADD COLUMN IF NOT EXISTS event_id String DEFAULT '';
{%- if local %}
ALTER TABLE {{ db }}.events {{ on_cluster }} ADD COLUMN IF NOT EXISTS event_id String DEFAULT '';
{%- endif %}
