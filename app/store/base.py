"""Connection handling and the errors every repository raises.

PostgreSQL outages (docs/ingest.md, "PostgreSQL down"): every repository of a `Store` shares one
`Breaker`. After `FAILURES_TO_OPEN` consecutive failures (refused, timed out) it opens: calls
raise `StoreUnavailable` at once instead of each waiting for the timeout; after `open_s` one call
is let through as a probe (half-open), and its success closes the breaker. Reads through
`fetchone`/`fetchall` run in a task of their own and are abandoned after the deadline (the
connection-acquisition timeout plus the statement timeout, ~2 × CLICKPULSE_PG_TIMEOUT_S), so
even a frozen server (SIGSTOP), on which psycopg's own cancellation waits up to 10 s more, cannot
hold a request; the server-side `statement_timeout` (set on the pool) ends slow statements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
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
    """The row's version is not the one the caller read; for rows that record their last
    editor (dashboards, metrics), who that was and when (`editor`: id, email, name)."""

    def __init__(
        self,
        current: int,
        editor: dict[str, Any] | None = None,
        updated_at: datetime | None = None,
    ):
        super().__init__(f"version conflict (current version is {current})")
        self.current = current
        self.editor = editor
        self.updated_at = updated_at


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


FAILURES_TO_OPEN = 2  # consecutive failures that open the breaker (one may be a blip)
_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)


class Breaker:
    """A circuit breaker for one PostgreSQL: closed → open (after consecutive failures) →
    half-open (one probe after `open_s`) → closed on success / open again on failure.
    `listener(ok, error)` hears every outcome (degradation tracking)."""

    def __init__(self, open_s: float = 2.0, *, clock: Callable[[], float] = time.monotonic):
        self.open_s = open_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.refused = 0  # calls answered at once while open (for tests and metrics)
        self.listener: Callable[[bool, str], None] | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def check(self) -> None:
        """Raise StoreUnavailable at once while open; let one probe through after open_s."""
        if self.opened_at is None:
            return
        if not self.probing and self.clock() - self.opened_at >= self.open_s:
            self.probing = True
            return
        self.refused += 1
        raise StoreUnavailable("PostgreSQL is unavailable (circuit open; probing shortly)")

    def release(self) -> None:
        """A call ended without telling whether PostgreSQL works (cancelled, or an error of
        ours): if it was the probe, the next call may probe again."""
        self.probing = False

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False
        if self.listener is not None:
            self.listener(True, "")

    def failure(self, error: str) -> None:
        self.failures += 1
        if self.probing or self.failures >= FAILURES_TO_OPEN:
            self.opened_at = self.clock()
        self.probing = False
        if self.listener is not None:
            self.listener(False, error)


class Repo:
    def __init__(
        self, pool: AsyncConnectionPool, timeout_s: float = 2.0, breaker: Breaker | None = None
    ):
        self.pool = pool
        self.timeout_s = timeout_s
        self.breaker = breaker or Breaker()

    @property
    def deadline_s(self) -> float:
        """The longest one read may take: acquiring a connection, then the statement."""
        return 2 * self.timeout_s

    @asynccontextmanager
    async def conn(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; connection-level failures and a missed deadline become
        StoreUnavailable (and count against the breaker, which may refuse at once)."""
        self.breaker.check()
        outcome: bool | None = None  # True: PostgreSQL answered; False: it did not
        try:
            async with asyncio.timeout(self.deadline_s):
                async with self.pool.connection(timeout=self.timeout_s) as conn:
                    yield conn
            outcome = True
        except (
            pg_errors.IntegrityError,
            pg_errors.DataError,
            pg_errors.ProgrammingError,
            StoreError,
        ):
            outcome = True  # PostgreSQL answered (the caller's rule refused the write)
            raise
        except _UNREACHABLE as exc:
            outcome = False
            error = f"{type(exc).__name__}: {exc}"[:300]
            self.breaker.failure(error)
            raise StoreUnavailable(error) from exc
        finally:
            if outcome is True:
                self.breaker.success()
            elif outcome is None:  # cancelled or failed for another reason: no verdict
                self.breaker.release()

    async def bounded(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        """`await work(conn)` on a pooled connection, in a task of its own: the caller waits at
        most `deadline_s` (+ a little), whatever the server does; a late task is cancelled
        and finishes in the background."""

        async def run() -> Any:
            async with self.conn() as conn:
                return await work(conn)

        task = asyncio.ensure_future(run())
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.deadline_s + 0.5)
        except TimeoutError:
            task.cancel()
            task.add_done_callback(_consume)
            error = f"PostgreSQL did not answer within {self.deadline_s:g} s"
            self.breaker.failure(error)
            raise StoreUnavailable(error) from None
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(_consume)
            raise

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        async def work(conn: Any) -> dict[str, Any] | None:
            return await (await conn.execute(sql, params)).fetchone()

        return await self.bounded(work)

    async def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async def work(conn: Any) -> list[dict[str, Any]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self.bounded(work)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # abandoned: its outcome was already reported as a timeout


# The last editor of a row with an `updated_by` column, as the API shows it (a JSON object).
EDITOR_SQL = (
    "(SELECT json_build_object('id', u.id, 'email', u.email, 'name', u.name) "
    "FROM users u WHERE u.id = {alias}.updated_by) AS updated_by"
)
_EDITED = {"dashboards", "metrics"}  # the tables with `updated_by` (migration 0010)


async def check_version(conn: Any, table: str, org_id: int, entity_id: int) -> None:
    """After an UPDATE/DELETE … AND version = %s matched nothing: 404 or 409? The 409 names
    who changed the row last, and when, for the tables that record it."""
    editor = f", updated_at, {EDITOR_SQL.format(alias='t')}" if table in _EDITED else ""
    row = await (
        await conn.execute(
            f"SELECT version{editor} FROM {table} t WHERE id = %s AND org_id = %s",
            (entity_id, org_id),
        )
    ).fetchone()
    if row is None:
        raise NotFound(table)
    raise VersionConflict(row["version"], row.get("updated_by"), row.get("updated_at"))


async def owned_metric_ids(conn: Any, org_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = await (
        await conn.execute(
            "SELECT id FROM metrics WHERE org_id = %s AND id = ANY(%s)", (org_id, sorted(ids))
        )
    ).fetchall()
    return {r["id"] for r in rows}
