"""Building Arrow batches of events_queue rows for tests that bypass HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from app.ingest.columns import ARROW_SCHEMA

QUEUE_SCHEMA = ARROW_SCHEMA  # the one Arrow shape of events_queue, as ingest builds it

DEFAULTS: dict[str, Any] = {
    "event": "pageview",
    "user_id": "",
    "session_id": "",
    "value": 0.0,
    "path": "/",
    "referrer": "",
    "country": "US",
    "device": "desktop",
    "browser": "Chrome",
    "os": "Windows",
    "props": {},
}


def queue_batch(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """An events_queue batch; each row needs org_id and ts (datetime or epoch ms)."""
    now = datetime.now(UTC)
    columns: dict[str, list[Any]] = {name: [] for name in QUEUE_SCHEMA.names}
    for row in rows:
        full = {**DEFAULTS, "received_at": now, **row}
        full["props"] = list(full["props"].items())
        for name in QUEUE_SCHEMA.names:
            columns[name].append(full[name])
    return pa.table(columns, schema=QUEUE_SCHEMA)
