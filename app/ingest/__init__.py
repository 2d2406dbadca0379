"""Ingest: `POST /v1/events` → validate, enrich, micro-batch into `events_queue`.

Public API:

* `route_handlers` — mounted by `app.server.create_app`: `/v1/events`, and the routes taking
  PostHog, Segment/RudderStack and Plausible bodies (app.ingest.compat, app.ingest.formats);
* `EventWriter` (app.ingest.writer) — the WAL-backed micro-batching writer held by
  `Services.writer`; `make_writer(ch, settings)` picks it or the Kafka sink (app.ingest.kafka);
* `invalidate_api_key(services, key_hash=None)` — make a revocation apply at once in this
  process (otherwise cached key lookups expire after `ingest_key_cache_ttl_s`).

docs/ingest.md describes the wire format, limits and decisions.
"""

from typing import Any

from app.ingest.compat import cors_headers
from app.ingest.compat import route_handlers as compat_handlers
from app.ingest.routes import invalidate_api_key, post_events
from app.ingest.writer import EventWriter

route_handlers = [post_events, *compat_handlers]


def make_writer(ch: Any, settings: Any) -> Any:
    """The process's writer: Kafka when `kafka_brokers` is set, else the WAL-backed EventWriter.

    Kafka with embedded chDB (no `clickhouse_url`) also runs the bridge that consumes the
    topic into `events_queue`; a ClickHouse server consumes it with its Kafka engine.
    """
    if settings.kafka_brokers:
        from app.ingest.kafka import KafkaBridge, KafkaEventSink

        bridge = None if settings.clickhouse_url else KafkaBridge(ch, settings)
        return KafkaEventSink(settings, bridge=bridge)
    return EventWriter(ch, settings)


__all__ = ["EventWriter", "cors_headers", "invalidate_api_key", "make_writer", "route_handlers"]
