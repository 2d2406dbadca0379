"""Fixtures: two migrated databases with known events, shared by a whole test module.

`loaded` holds org 1's and org 2's events; `org1_only` holds only org 1's. A query compiled for
org 1 must answer the same on both — any difference is another org's rows leaking in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.clickhouse import ClickHouse
from app.migrate import migrate_clickhouse, render_clickhouse

from .data import insert, minute_start

EVENTS = ["pageview", "pageview", "purchase", "error", "signup"]
COUNTRIES = ["DE", "FR", "US"]
DEVICES = ["desktop", "mobile"]
BROWSERS = ["firefox", "chrome", "safari", "edge"]
OSES = ["linux", "mac", "windows"]


def org1_rows(base: int) -> list[dict[str, Any]]:
    """180 events, one a second over three minutes, with dimensions on co-prime cycles."""
    rows = []
    for i in range(180):
        rows.append(
            {
                "org_id": 1,
                "ts": base + i,
                "event": EVENTS[i % 5],
                "user_id": f"u{i % 13}",
                "session_id": f"s{i % 29}",
                "value": (i % 10) * 1.5,
                "path": f"/p{i % 7}",
                "referrer": ["", "google.com"][(i // 5) % 2],
                "country": COUNTRIES[i % 3],
                "device": DEVICES[i % 2],
                "browser": BROWSERS[(i // 2) % 4],
                "os": OSES[(i // 3) % 3],
                "props": {"plan": "pro" if i % 6 == 0 else "free", "ab": "x" if i % 4 else "y"},
            }
        )
    return rows


def org2_rows(base: int) -> list[dict[str, Any]]:
    """Another tenant's events on the same seconds, with values org 1 never has."""
    return [
        {
            "org_id": 2,
            "ts": base + i,
            "event": ["pageview", "purchase", "error"][i % 3],
            "user_id": f"other{i}",
            "session_id": f"o{i}",
            "value": 1_000_000.0,
            "path": "/org2-secret",
            "referrer": "org2.example",
            "country": COUNTRIES[i % 3],
            "device": "mobile",
            "browser": "chrome",
            "os": "mac",
            "props": {"plan": "pro", "secret": "org2"},
        }
        for i in range(0, 180, 2)
    ]


@dataclass
class Dataset:
    ch: ClickHouse
    base: int
    rows: list[dict[str, Any]]  # org 1's rows

    @property
    def database(self) -> str:
        return self.ch.database


def _database(root: ClickHouse) -> ClickHouse:
    db = f"qb_{uuid.uuid4().hex[:10]}"
    ch = root.with_database(db)
    migrate_clickhouse(ch, render_clickhouse(database=db))
    return ch


@pytest.fixture(scope="module")
def base_ts() -> int:
    return minute_start(5)


@pytest.fixture(scope="module")
def loaded(ch_root: ClickHouse, base_ts: int) -> Iterator[Dataset]:
    ch = _database(ch_root)
    rows = org1_rows(base_ts)
    insert(ch, rows + org2_rows(base_ts))
    yield Dataset(ch, base_ts, rows)
    ch.command_sync(f"DROP DATABASE IF EXISTS {ch.database} SYNC")
    ch.close()


@pytest.fixture(scope="module")
def org1_only(ch_root: ClickHouse, base_ts: int) -> Iterator[Dataset]:
    ch = _database(ch_root)
    rows = org1_rows(base_ts)
    insert(ch, rows)
    yield Dataset(ch, base_ts, rows)
    ch.command_sync(f"DROP DATABASE IF EXISTS {ch.database} SYNC")
    ch.close()
