"""Known test data for the query builder tests, inserted through `events_queue` so the MVs
fill `events` and every rollup exactly as in production."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from app.ingest.columns import ARROW_SCHEMA

# The one Arrow shape of events_queue, as ingest builds it.
SCHEMA = ARROW_SCHEMA

DEFAULTS: dict[str, Any] = {
    "org_id": 1,
    "event": "pageview",
    "user_id": "u0",
    "session_id": "s0",
    "value": 0.0,
    "path": "/",
    "referrer": "",
    "country": "DE",
    "device": "desktop",
    "browser": "firefox",
    "os": "linux",
    "props": {},
}


def minute_start(offset_minutes: int = 5) -> int:
    """A minute boundary a few minutes ago: rollup_1s (TTL 10 min) still holds its rows."""
    return (int(time.time()) // 60 - offset_minutes) * 60


def event_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with `ts` in epoch seconds, other fields defaulted) → an Arrow batch."""
    out = []
    for row in rows:
        full = {**DEFAULTS, **row}
        ts = dt.datetime.fromtimestamp(full["ts"], dt.UTC)
        full["ts"] = ts
        full["received_at"] = ts
        full["props"] = list(full["props"].items())
        full["value"] = float(full["value"])
        out.append(full)
    return pa.Table.from_pylist(out, schema=SCHEMA)


def insert(ch: Any, rows: Iterable[dict[str, Any]]) -> int:
    return ch.insert_sync("events_queue", event_table(rows))
