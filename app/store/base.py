"""Connection handling and the errors every repository raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """PostgreSQL could not be reached (or answered too slowly)."""


class NotFound(StoreError):
    """No such row in this org (whether it exists in another org is never said)."""


class VersionConflict(StoreError):
    """The row's version is not the one the caller read."""

    def __init__(self, current: int):
        super().__init__(f"version conflict (current version is {current})")
        self.current = current


class Conflict(StoreError):
    """A uniqueness or reference rule refused the write."""

    def __init__(self, code: str, message: str, where: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.where = where


class Invalid(StoreError):
    """The write names something the org does not own (e.g. another org's metric id)."""

    def __init__(self, code: str, message: str, where: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.where = where


class Repo:
    def __init__(self, pool: AsyncConnectionPool, timeout_s: float = 2.0):
        self.pool = pool
        self.timeout_s = timeout_s

    @asynccontextmanager
    async def conn(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; connection-level failures become StoreUnavailable."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                yield conn
        except (pg_errors.IntegrityError, pg_errors.DataError, pg_errors.ProgrammingError):
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        async with self.conn() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.conn() as conn:
            return await (await conn.execute(sql, params)).fetchall()


async def check_version(conn: Any, table: str, org_id: int, entity_id: int) -> None:
    """After an UPDATE/DELETE … AND version = %s matched nothing: 404 or 409?"""
    row = await (
        await conn.execute(
            f"SELECT version FROM {table} WHERE id = %s AND org_id = %s", (entity_id, org_id)
        )
    ).fetchone()
    if row is None:
        raise NotFound(table)
    raise VersionConflict(row["version"])


async def owned_metric_ids(conn: Any, org_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = await (
        await conn.execute(
            "SELECT id FROM metrics WHERE org_id = %s AND id = ANY(%s)", (org_id, sorted(ids))
        )
    ).fetchall()
    return {r["id"] for r in rows}


class Store:
    """Every repository, over one pool."""

    def __init__(self, pool: AsyncConnectionPool, timeout_s: float = 2.0):
        from app.store.alerts import AlertRepo
        from app.store.dashboards import DashboardRepo
        from app.store.metrics import MetricRepo
        from app.store.orgs import ApiKeyRepo, OrgRepo, TokenRepo

        self.pool = pool
        self.dashboards = DashboardRepo(pool, timeout_s)
        self.metrics = MetricRepo(pool, timeout_s)
        self.alerts = AlertRepo(pool, timeout_s)
        self.api_keys = ApiKeyRepo(pool, timeout_s)
        self.orgs = OrgRepo(pool, timeout_s)
        self.tokens = TokenRepo(pool, timeout_s)
