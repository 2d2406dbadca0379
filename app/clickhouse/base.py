"""The facade's interface: `ClickHouse`, `QueryResult`/`RawResult` and `ClickHouseError`.

Both engines run a query with bound parameters and answer the same `QueryResult` (parsed from
the same JSONCompact output, so values have the same Python types whichever engine ran them),
run a query for its raw output in a ClickHouse format (`query_raw`: JSON, CSV, Parquet … as
bytes, for analysts' SQL), insert an Arrow batch, and run DDL. The async methods run the
blocking driver call on `max_workers` threads shared fairly by every org (fair.py); an engine
implements only the `_query_json`, `_query_raw`, `_command` and `_insert_arrow` hooks.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from app.clickhouse.fair import FairPool

# Settings the app attaches to a query are our own names with numeric or simple values,
# never user text; this check keeps it that way.
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Output settings that make the JSON of both engines alike and losslessly parseable.
_JSON_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_quote_denormals": 0,
}


class ClickHouseError(Exception):
    """A query or command failed in ClickHouse (syntax, limits, timeouts, unavailable)."""

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class QueryResult:
    """Rows of one query, with what ClickHouse reports about the work it did."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    rows_read: int = 0
    elapsed_s: float = 0.0

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        cols = self.columns
        return [dict(zip(cols, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        """The first column of the first row, or None for an empty result."""
        return self.rows[0][0] if self.rows else None


#: Output formats `query_raw` may ask for (names are ClickHouse's).
RAW_FORMATS = frozenset(
    {
        "JSON", "JSONCompact", "JSONEachRow", "JSONCompactEachRow",
        "CSV", "CSVWithNames", "CSVWithNamesAndTypes",
        "TabSeparated", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes", "TSVWithNames",
        "Native", "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes",
        "Arrow", "ArrowStream", "Parquet",
    }
)  # fmt: skip


@dataclass(slots=True)
class RawResult:
    """One query's output as ClickHouse wrote it in `fmt`."""

    data: bytes
    fmt: str
    # Rows ClickHouse read; None when the engine does not report it for this format
    # (a server answering anything but JSON: clickhouse-connect's raw query has no summary).
    rows_read: int | None = None
    elapsed_s: float = 0.0


class JSONStatistics(msgspec.Struct):
    """The `statistics` object of ClickHouse's JSON output (rows_read, elapsed, …)."""

    statistics: dict[str, float] = msgspec.field(default_factory=dict)


class _JSONCompact(msgspec.Struct):
    meta: list[dict[str, str]] = msgspec.field(default_factory=list)
    data: list[list[Any]] = msgspec.field(default_factory=list)
    statistics: dict[str, float] = msgspec.field(default_factory=dict)


_json_decoder = msgspec.json.Decoder(_JSONCompact)


def _parse_json_compact(payload: bytes, elapsed_s: float) -> QueryResult:
    if not payload.strip():
        return QueryResult([], [], [], 0, elapsed_s)
    doc = _json_decoder.decode(payload)
    return QueryResult(
        columns=[m["name"] for m in doc.meta],
        types=[m["type"] for m in doc.meta],
        rows=doc.data,
        rows_read=int(doc.statistics.get("rows_read", 0)),
        elapsed_s=elapsed_s,
    )


def settings_clause(settings: dict[str, Any]) -> str:
    """` SETTINGS a = 1, …` for our own setting names and simple values (else ValueError)."""
    parts = []
    for name, value in settings.items():
        if not _SETTING_NAME.match(name):
            raise ValueError(f"invalid setting name {name!r}")
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            parts.append(f"{name} = {value}")
        elif isinstance(value, str) and _IDENTIFIER.match(value):
            parts.append(f"{name} = '{value}'")
        else:
            raise ValueError(f"invalid value for setting {name}")
    return " SETTINGS " + ", ".join(parts) if parts else ""


def check_identifier(name: str) -> str:
    """`name` if it is a plain identifier (a table or column we interpolate), else ValueError."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid identifier {name!r}")
    return name


@dataclass
class ClickHouse:
    """The interface the app uses. Subclasses implement the three `_..._sync` primitives."""

    database: str
    max_workers: int = 8
    # The longest a call waits for a worker before PoolBusy (None: no bound).
    queue_wait_s: float | None = None
    # The most workers one org may hold (None: half of max_workers, see fair.py).
    org_workers: int | None = None
    _pool: FairPool = field(init=False, repr=False)
    query_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        check_identifier(self.database)
        self._pool = FairPool(
            self.max_workers,
            max_wait_s=self.queue_wait_s,
            max_per_tenant=self.org_workers or self._default_org_workers(),
            executor=ThreadPoolExecutor(
                max_workers=self.max_workers, thread_name_prefix=f"ch-{self.database}"
            ),
        )

    def _default_org_workers(self) -> int | None:
        """The most workers one org holds unless configured; None: half the pool (fair.py)."""
        return None

    @property
    def pool(self) -> FairPool:
        """The worker threads, shared fairly between orgs (app/clickhouse/fair.py)."""
        return self._pool

    # -- the interface -------------------------------------------------------------------
    def query_sync(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        """Run one SELECT with bound `{name:Type}` parameters; block until it answers."""
        self.query_count += 1
        merged = {**_JSON_SETTINGS, **(settings or {})}
        start = time.perf_counter()
        payload = self._query_json(sql, params or {}, merged)
        return _parse_json_compact(payload, time.perf_counter() - start)

    async def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        *,
        org_id: int | None = None,
    ) -> QueryResult:
        """`query_sync` on a worker thread, queued in `org_id`'s lane of the fair pool (raises
        PoolBusy after `queue_wait_s` without a worker)."""
        return await self._pool.run(org_id, self.query_sync, sql, params, settings)

    def query_raw_sync(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        *,
        fmt: str,
    ) -> RawResult:
        """Run one SELECT with bound parameters; its output in format `fmt` (see RAW_FORMATS).

        The whole output is returned at once: callers bound it with `max_result_rows` /
        `max_result_bytes`, and so an error can never arrive after part of a result was sent.
        """
        if fmt not in RAW_FORMATS:
            raise ValueError(f"unsupported output format {fmt!r}")
        self.query_count += 1
        start = time.perf_counter()
        data, rows_read = self._query_raw(sql, params or {}, dict(settings or {}), fmt)
        return RawResult(data, fmt, rows_read, time.perf_counter() - start)

    async def query_raw(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        *,
        fmt: str,
        org_id: int | None = None,
    ) -> RawResult:
        """`query_raw_sync` on a worker thread, queued in `org_id`'s lane (as `query`)."""
        return await self._pool.run(
            org_id, lambda: self.query_raw_sync(sql, params, settings, fmt=fmt)
        )

    def command_sync(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run one statement that returns no rows (DDL, INSERT … VALUES, OPTIMIZE …)."""
        self._command(sql, params or {})

    async def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """`command_sync` on a worker thread (the process's own lane of the pool)."""
        await self._pool.run(None, self.command_sync, sql, params)

    def insert_sync(
        self, table: str, batch: pa.Table, settings: dict[str, Any] | None = None
    ) -> int:
        """Insert an Arrow batch into `database.table`; columns are matched by name.

        `settings` are ClickHouse settings for this INSERT only (e.g. `parallel_view_processing`).
        """
        check_identifier(table)
        if batch.num_rows == 0:
            return 0
        self._insert_arrow(table, batch, settings or {})
        return batch.num_rows

    async def insert(
        self, table: str, batch: pa.Table, settings: dict[str, Any] | None = None
    ) -> int:
        """`insert_sync` on a worker thread (the process's own lane of the pool)."""
        return await self._pool.run(None, self.insert_sync, table, batch, settings)

    def table(self, name: str) -> str:
        """The qualified name of one of our tables."""
        return f"{self.database}.{check_identifier(name)}"

    def with_database(self, database: str) -> ClickHouse:
        """The same engine, addressed to another database (tests isolate by database)."""
        raise NotImplementedError

    def close(self) -> None:
        self._pool.close()

    # -- driver primitives ------------------------------------------------------------------
    def _query_json(self, sql: str, params: dict[str, Any], settings: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _query_raw(
        self, sql: str, params: dict[str, Any], settings: dict[str, Any], fmt: str
    ) -> tuple[bytes, int | None]:
        raise NotImplementedError

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _insert_arrow(self, table: str, batch: pa.Table, settings: dict[str, Any]) -> None:
        raise NotImplementedError
