"""The ClickHouse facade: the only place in the app that talks to ClickHouse (no other module
imports chdb or clickhouse_connect).

One interface (`ClickHouse`, base.py) with two engines: `EmbeddedClickHouse` (chDB in process,
embedded.py) and `ServerClickHouse` (a server or cluster through clickhouse-connect, server.py).
The async methods run the driver on threads shared fairly between orgs (fair.py): callers that
read org data pass the org whose tenant guard they just re-verified (`org_id=`), an explicit
parameter rather than a context variable so the lane is the org the query provably reads
(docs/api.md, "Fair sharing of the ClickHouse pool").
"""

from __future__ import annotations

from app.clickhouse.base import (
    RAW_FORMATS,
    ClickHouse,
    ClickHouseError,
    QueryResult,
    RawResult,
)
from app.clickhouse.embedded import EmbeddedClickHouse, close_embedded
from app.clickhouse.fair import PoolBusy
from app.clickhouse.params import ParameterError
from app.clickhouse.server import ServerClickHouse

__all__ = [
    "ClickHouse",
    "ClickHouseError",
    "ParameterError",
    "PoolBusy",
    "EmbeddedClickHouse",
    "QueryResult",
    "RAW_FORMATS",
    "RawResult",
    "ServerClickHouse",
    "close_embedded",
    "connect",
]


def connect(
    *,
    database: str,
    data_dir: str | None = None,
    url: str | None = None,
    max_workers: int = 8,
    queue_wait_s: float | None = None,
    org_workers: int | None = None,
) -> ClickHouse:
    """The facade for the configured engine: a server when `url` is given, chDB otherwise."""
    pool = {"max_workers": max_workers, "queue_wait_s": queue_wait_s, "org_workers": org_workers}
    if url:
        return ServerClickHouse(database=database, url=url, **pool)
    return EmbeddedClickHouse(database=database, data_dir=data_dir or "data/clickhouse", **pool)
