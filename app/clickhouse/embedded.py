"""`EmbeddedClickHouse`: chDB in this process, on one data directory (the default engine)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from app.clickhouse.base import ClickHouse, ClickHouseError, check_identifier, settings_clause
from app.clickhouse.dedup_log import repair_deduplication_logs
from app.clickhouse.params import bind_params

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
                result = conn.query(bound + settings_clause(settings), "JSONCompact")
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
                result = conn.query(bound + settings_clause(settings), fmt)
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
        columns = ", ".join(check_identifier(c) for c in batch.column_names)
        # The Python() table function reads the local variable named in the SQL.
        arrow_batch = batch  # noqa: F841 - referenced by name inside the SQL text
        try:
            with _chdb_borrow(self.data_dir) as conn:
                conn.query(
                    f"INSERT INTO {self.database}.{table} ({columns})"
                    f"{settings_clause(settings)} "
                    f"SELECT {columns} FROM Python(arrow_batch)"
                )
        except Exception as exc:
            raise _chdb_error(exc) from exc
