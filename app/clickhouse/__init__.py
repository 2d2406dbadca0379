"""The ClickHouse facade: the only place in the app that talks to ClickHouse.

One interface (`ClickHouse`) with two implementations:

* `EmbeddedClickHouse` runs chDB in-process on a data directory (the default);
* `ServerClickHouse` talks to a ClickHouse server or cluster through clickhouse-connect.

The interface, results and errors are base.py; `EmbeddedClickHouse` is embedded.py,
`ServerClickHouse` server.py. The async methods run the blocking driver call on `max_workers`
threads: chDB releases the GIL, so queries proceed in parallel with the event loop.

Those threads are shared by every org, fairly (app/clickhouse/fair.py): `query` and
`query_raw` take the org the query reads for (`org_id=`), and the pool serves the org with the
fewest running queries first and never gives one org more than its share of the threads. The org is an explicit
parameter rather than a context variable on purpose: the callers that run org data —
`run_compiled_async`, `count_visible_rows_async` and `run_analyst`, through which every API,
push, alert and /sql read goes — pass the org whose tenant guard they have just re-verified, so the lane a
query waits in is the org it provably reads, not whatever a surrounding task last set.
Calls without an org (health pings, DDL, inserts) share one lane of their own.

No other module imports chdb or clickhouse_connect.
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
