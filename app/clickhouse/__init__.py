"""The ClickHouse facade: the only place in the app that talks to ClickHouse.

One interface (`ClickHouse`) with two implementations:

* `EmbeddedClickHouse` runs chDB in-process on a data directory (the default);
* `ServerClickHouse` talks to a ClickHouse server or cluster through clickhouse-connect.

Both run a query with bound parameters and answer the same `QueryResult` (parsed from the
same JSONCompact output, so values have the same Python types whichever engine ran them),
run a query for its raw output in a ClickHouse format (`query_raw`: JSON, CSV, Parquet … as
bytes, for analysts' SQL), insert an Arrow batch, and run DDL. The async methods run the
blocking driver call on `max_workers` threads: chDB releases the GIL, so queries proceed in
parallel with the event loop.

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

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from app.clickhouse.dedup_log import repair_deduplication_logs
from app.clickhouse.fair import FairPool, PoolBusy
from app.clickhouse.params import ParameterError, bind_params

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
    {"JSON", "JSONCompact", "JSONEachRow", "CSV", "CSVWithNames", "TSVWithNames", "Parquet"}
)


@dataclass(slots=True)
class RawResult:
    """One query's output as ClickHouse wrote it in `fmt`."""

    data: bytes
    fmt: str
    # Rows ClickHouse read; None when the engine does not report it for this format
    # (a server answering anything but JSON: clickhouse-connect's raw query has no summary).
    rows_read: int | None = None
    elapsed_s: float = 0.0


class _JSONStatistics(msgspec.Struct):
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


def _settings_clause(settings: dict[str, Any]) -> str:
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


def _check_identifier(name: str) -> str:
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
        _check_identifier(self.database)
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
        _check_identifier(table)
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
        return f"{self.database}.{_check_identifier(name)}"

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


# chDB allows one data path per process: every EmbeddedClickHouse shares its engine. The first
# connection anchors the engine; statements run on pooled connections to the same path
# (~0.2 ms to open one, and they run in parallel).
#
# Why a pool and not one shared connection: chDB 4.4 keeps the output a failing statement had
# already written (a query stopped by max_result_rows, max_rows_to_read, a timeout …) on its
# connection and hands it to the *next* statement on that connection, from any thread
# (measured: 368 of ~1,800 concurrent `SELECT <n>` came back with another query's rows in
# front). On a shared connection that is one org's rows in another org's answer. So a
# connection is used by one statement at a time and is closed, never reused, after a failure.
_chdb_lock = threading.Lock()
_chdb_conn: Any = None  # the anchor: keeps the engine open, runs nothing
_chdb_path: str | None = None
_chdb_idle: list[Any] = []


def _chdb_connection(path: str) -> Any:
    global _chdb_conn, _chdb_path
    with _chdb_lock:
        if _chdb_conn is None:
            import chdb

            # Before the engine reads the deduplication logs: a crash may have left a block id
            # there whose part never reached the disk (app/clickhouse/dedup_log.py).
            repair_deduplication_logs(path)
            _chdb_conn = chdb.connect(path)
            _chdb_path = path
        elif path != _chdb_path:
            raise ClickHouseError(
                f"chDB is already open on {_chdb_path!r} in this process; "
                f"it cannot also open {path!r}"
            )
        return _chdb_conn


@contextlib.contextmanager
def _chdb_borrow(path: str) -> Iterator[Any]:
    """A connection of its own for one statement; dropped (closed) if the statement fails."""
    _chdb_connection(path)
    with _chdb_lock:
        conn = _chdb_idle.pop() if _chdb_idle else None
        if conn is None:
            import chdb

            conn = chdb.connect(path)
    try:
        yield conn
    except BaseException:
        # It may still hold the failed statement's partial output: never hand it on.
        with contextlib.suppress(Exception):
            conn.close()
        raise
    with _chdb_lock:
        if _chdb_path == path:
            _chdb_idle.append(conn)
            return
    with contextlib.suppress(Exception):
        conn.close()  # the engine was closed meanwhile


def close_embedded() -> None:
    """Close this process's chDB connections, once nothing uses them any more.

    chDB's own teardown at interpreter exit can crash (SIGSEGV) when the connection is still
    open while other threads wind down; the CLI closes it explicitly after the server stops.
    """
    global _chdb_conn, _chdb_path
    with _chdb_lock:
        while _chdb_idle:
            with contextlib.suppress(Exception):
                _chdb_idle.pop().close()
        if _chdb_conn is not None:
            _chdb_conn.close()
            _chdb_conn = _chdb_path = None


def _chdb_error(exc: Exception) -> ClickHouseError:
    message = str(exc)
    match = re.search(r"Code: (\d+)", message)
    return ClickHouseError(message, code=int(match.group(1)) if match else None)


@dataclass
class EmbeddedClickHouse(ClickHouse):
    """chDB in this process, on `data_dir`."""

    data_dir: str = "data/clickhouse"

    def __post_init__(self) -> None:
        super().__post_init__()
        _chdb_connection(self.data_dir)  # opens the engine, or checks it is on this path

    def _default_org_workers(self) -> int | None:
        # chDB runs in this process and each query already uses every core (max_threads): more
        # of one org's queries at once than cores only slows everyone else, the event loop
        # included. bench/fairness.py on 2 cores: with 2 instead of 4, the saturating org
        # finished as many queries and the other org's p99 fell ~5x (docs/benchmarks.md).
        return max(1, min(self.max_workers // 2, os.cpu_count() or 1))

    def with_database(self, database: str) -> EmbeddedClickHouse:
        return EmbeddedClickHouse(
            database=database,
            max_workers=self.max_workers,
            queue_wait_s=self.queue_wait_s,
            org_workers=self.org_workers,
            data_dir=self.data_dir,
        )

    def _query_json(self, sql: str, params: dict[str, Any], settings: dict[str, Any]) -> bytes:
        # Parameters are bound here, never through chDB's process-wide parameter state
        # (see app/clickhouse/params.py: concurrent queries would see each other's values).
        bound = bind_params(sql, params)
        try:
            with _chdb_borrow(self.data_dir) as conn:
                result = conn.query(bound + _settings_clause(settings), "JSONCompact")
        except Exception as exc:  # chDB raises RuntimeError with the server message
            raise _chdb_error(exc) from exc
        return result.bytes() if hasattr(result, "bytes") else bytes(result)

    def _query_raw(
        self, sql: str, params: dict[str, Any], settings: dict[str, Any], fmt: str
    ) -> tuple[bytes, int | None]:
        # Client-side binding, as in _query_json: chDB's own parameters are process-wide.
        bound = bind_params(sql, params)
        try:
            with _chdb_borrow(self.data_dir) as conn:
                result = conn.query(bound + _settings_clause(settings), fmt)
        except Exception as exc:  # chDB raises RuntimeError with the server message
            raise _chdb_error(exc) from exc
        # rows_read() counts the result's rows; storage_rows_read() is what ClickHouse read.
        return (result.bytes() or b""), int(result.storage_rows_read())

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        bound = bind_params(sql, params)
        try:
            with _chdb_borrow(self.data_dir) as conn:
                conn.query(bound)
        except Exception as exc:
            raise _chdb_error(exc) from exc

    def _insert_arrow(self, table: str, batch: pa.Table, settings: dict[str, Any]) -> None:
        columns = ", ".join(_check_identifier(c) for c in batch.column_names)
        # The Python() table function reads the local variable named in the SQL.
        arrow_batch = batch  # noqa: F841 - referenced by name inside the SQL text
        try:
            with _chdb_borrow(self.data_dir) as conn:
                conn.query(
                    f"INSERT INTO {self.database}.{table} ({columns})"
                    f"{_settings_clause(settings)} "
                    f"SELECT {columns} FROM Python(arrow_batch)"
                )
        except Exception as exc:
            raise _chdb_error(exc) from exc


@dataclass
class ServerClickHouse(ClickHouse):
    """A ClickHouse server (or cluster entry point) through clickhouse-connect."""

    url: str = "http://localhost:8123"

    def __post_init__(self) -> None:
        super().__post_init__()
        import clickhouse_connect

        self._client_local = threading.local()
        self._connect = lambda: clickhouse_connect.get_client(dsn=self.url)
        self._driver_error: type[Exception] = clickhouse_connect.driver.exceptions.Error

    def with_database(self, database: str) -> ServerClickHouse:
        return ServerClickHouse(
            database=database,
            max_workers=self.max_workers,
            queue_wait_s=self.queue_wait_s,
            org_workers=self.org_workers,
            url=self.url,
        )

    @property
    def _client(self) -> Any:
        # clickhouse-connect clients are not safe to share between threads.
        client = getattr(self._client_local, "client", None)
        if client is None:
            client = self._client_local.client = self._connect()
        return client

    def _query_json(self, sql: str, params: dict[str, Any], settings: dict[str, Any]) -> bytes:
        try:
            return self._client.raw_query(
                sql, parameters=params, settings=settings, fmt="JSONCompact"
            )
        except self._driver_error as exc:
            raise ClickHouseError(str(exc), code=getattr(exc, "code", None)) from exc

    def _query_raw(
        self, sql: str, params: dict[str, Any], settings: dict[str, Any], fmt: str
    ) -> tuple[bytes, int | None]:
        try:
            data = self._client.raw_query(sql, parameters=params, settings=settings, fmt=fmt)
        except self._driver_error as exc:
            raise ClickHouseError(str(exc), code=getattr(exc, "code", None)) from exc
        rows_read = None
        if fmt == "JSON":  # the only raw format that carries ClickHouse's statistics
            try:
                stats = msgspec.json.decode(data, type=_JSONStatistics).statistics
                rows_read = int(stats.get("rows_read", 0))
            except msgspec.DecodeError:
                rows_read = None
        return data, rows_read

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except self._driver_error as exc:
            raise ClickHouseError(str(exc)) from exc

    def _insert_arrow(self, table: str, batch: pa.Table, settings: dict[str, Any]) -> None:
        try:
            self._client.insert_arrow(
                table, batch, database=self.database, settings=settings or None
            )
        except self._driver_error as exc:
            raise ClickHouseError(str(exc)) from exc


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
