"""`ServerClickHouse`: a ClickHouse server or cluster through clickhouse-connect."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from app.clickhouse.base import ClickHouse, ClickHouseError, JSONStatistics


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
                stats = msgspec.json.decode(data, type=JSONStatistics).statistics
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
