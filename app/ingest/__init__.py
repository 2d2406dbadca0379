"""Ingest: `POST /v1/events` → validate, enrich, micro-batch into `events_queue`.

Public API:

* `route_handlers` — mounted by `app.server.create_app`;
* `EventWriter` (app.ingest.writer) — the micro-batching writer held by `Services.writer`;
* `invalidate_api_key(services, key_hash=None)` — make a revocation apply at once in this
  process (otherwise cached key lookups expire after `ingest_key_cache_ttl_s`).

docs/ingest.md describes the wire format, limits and decisions.
"""

from app.ingest.routes import invalidate_api_key, post_events
from app.ingest.writer import EventWriter

route_handlers = [post_events]

__all__ = ["EventWriter", "invalidate_api_key", "route_handlers"]
