"""The ClickHouse facade: the only place in the app that talks to ClickHouse.

One interface (`ClickHouse`) with two implementations:

* `EmbeddedClickHouse` runs chDB in-process on a data directory (the default);
* `ServerClickHouse` talks to a ClickHouse server or cluster through clickhouse-connect.

Both run a query with bound parameters and answer the same `QueryResult` (parsed from the
same JSONCompact output, so values have the same Python types whichever engine ran them),
insert an Arrow batch, and run DDL. The async methods run the blocking driver call in a
thread pool: chDB releases the GIL, so queries proceed in parallel with the event loop.

No other module imports chdb or clickhouse_connect.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from app.clickhouse.params import ParameterError, bind_params

__all__ = [
    "ClickHouse",
    "ClickHouseError",
    "ParameterError",
    "EmbeddedClickHouse",
    "QueryResult",
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
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    query_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        _check_identifier(self.database)
        self._pool = ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix=f"ch-{self.database}"
        )

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
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        """`query_sync` off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.query_sync, sql, params, settings)

    def command_sync(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run one statement that returns no rows (DDL, INSERT … VALUES, OPTIMIZE …)."""
        self._command(sql, params or {})

    async def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.command_sync, sql, params)

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
        """`insert_sync` off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.insert_sync, table, batch, settings)

    def table(self, name: str) -> str:
        """The qualified name of one of our tables."""
        return f"{self.database}.{_check_identifier(name)}"

    def with_database(self, database: str) -> ClickHouse:
        """The same engine, addressed to another database (tests isolate by database)."""
        raise NotImplementedError

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- driver primitives ------------------------------------------------------------------
    def _query_json(self, sql: str, params: dict[str, Any], settings: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _insert_arrow(self, table: str, batch: pa.Table, settings: dict[str, Any]) -> None:
        raise NotImplementedError


# chDB allows one data path per process: every EmbeddedClickHouse shares one connection.
_chdb_lock = threading.Lock()
_chdb_conn: Any = None
_chdb_path: str | None = None


def _chdb_connection(path: str) -> Any:
    global _chdb_conn, _chdb_path
    with _chdb_lock:
        if _chdb_conn is None:
            import chdb

            _chdb_conn = chdb.connect(path)
            _chdb_path = path
        elif path != _chdb_path:
            raise ClickHouseError(
                f"chDB is already open on {_chdb_path!r} in this process; "
                f"it cannot also open {path!r}"
            )
        return _chdb_conn


def close_embedded() -> None:
    """Close this process's chDB connection, once nothing uses it any more.

    chDB's own teardown at interpreter exit can crash (SIGSEGV) when the connection is still
    open while other threads wind down; the CLI closes it explicitly after the server stops.
    """
    global _chdb_conn, _chdb_path
    with _chdb_lock:
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
        self._conn = _chdb_connection(self.data_dir)

    def with_database(self, database: str) -> EmbeddedClickHouse:
        return EmbeddedClickHouse(
            database=database, max_workers=self.max_workers, data_dir=self.data_dir
        )

    def _query_json(self, sql: str, params: dict[str, Any], settings: dict[str, Any]) -> bytes:
        # Parameters are bound here, never through chDB's process-wide parameter state
        # (see app/clickhouse/params.py: concurrent queries would see each other's values).
        bound = bind_params(sql, params)
        try:
            result = self._conn.query(bound + _settings_clause(settings), "JSONCompact")
        except Exception as exc:  # chDB raises RuntimeError with the server message
            raise _chdb_error(exc) from exc
        return result.bytes() if hasattr(result, "bytes") else bytes(result)

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        bound = bind_params(sql, params)
        try:
            self._conn.query(bound)
        except Exception as exc:
            raise _chdb_error(exc) from exc

    def _insert_arrow(self, table: str, batch: pa.Table, settings: dict[str, Any]) -> None:
        columns = ", ".join(_check_identifier(c) for c in batch.column_names)
        # The Python() table function reads the local variable named in the SQL.
        arrow_batch = batch  # noqa: F841 - referenced by name inside the SQL text
        try:
            self._conn.query(
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
        return ServerClickHouse(database=database, max_workers=self.max_workers, url=self.url)

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
    *, database: str, data_dir: str | None = None, url: str | None = None, max_workers: int = 8
) -> ClickHouse:
    """The facade for the configured engine: a server when `url` is given, chDB otherwise."""
    if url:
        return ServerClickHouse(database=database, url=url, max_workers=max_workers)
    return EmbeddedClickHouse(
        database=database, data_dir=data_dir or "data/clickhouse", max_workers=max_workers
    )
