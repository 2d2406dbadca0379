"""Fixtures for the HTTP API tests: real PostgreSQL (schema per test), chDB (database per test),
Redis (db 9, flushed) when a test asks for it, and the Litestar app over them."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg.rows import dict_row

from app.config import Settings
from app.credentials import create_user_token
from app.db import open_pool
from app.runtime import build_services as build_app_services
from app.services import Services


class FakeClock:
    """A clock tests move by hand (cache freshness, rate buckets); never wall time."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Org:
    id: int
    tokens: dict[str, str] = field(default_factory=dict)
    api_key: str = ""

    def h(self, role: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}


def build_services(
    ch: Any,
    pg_url: str,
    redis_url: str | None = None,
    *,
    base: Settings | None = None,
    **settings: Any,
) -> Services:
    """Services over the test's chDB database (behind a FlakyClickHouse) and PG schema."""
    from app.ingest.writer import EventWriter

    values: dict[str, Any] = {"limit_rate_per_s": 1000.0, "limit_burst": 1000, **settings}
    if base is None:
        # A data dir of its own: the writer's WAL must never land in the checkout's ./data.
        base = Settings(
            data_dir=tempfile.mkdtemp(prefix="clickpulse-api-"),
            clickhouse_database=ch.database,
            database_url=pg_url,
        )
    s = msgspec.structs.replace(base, redis_url=redis_url, **values)
    redis_client = None
    if redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(redis_url)
    return build_app_services(
        s,
        migrate=False,
        ch=FlakyClickHouse(ch),
        pg=open_pool(pg_url, max_size=4),
        writer=EventWriter(ch, s),
        redis=redis_client,
    )


def make_app(services: Services) -> Any:
    from app.server import create_app

    return create_app(services)


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Settings overrides for `api_services` (a test may change them before use)."""
    return {}


@pytest.fixture
def api_services(ch, pg_url, app_settings, api_settings) -> Services:
    return build_services(ch, pg_url, base=app_settings, **api_settings)


@pytest.fixture
async def api(api_services) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=make_app(api_services)) as client:
        yield client


@pytest.fixture
def make_org(make_org, pg_url) -> Callable[..., Any]:
    """The shared `make_org` (org + ingest key + admin token), plus a token per role:
    `await make_org()` → an Org with `tokens["viewer" | "editor" | "admin"]`."""
    shared = make_org

    async def factory(name: str | None = None) -> Org:
        base = await shared(name)
        org = Org(base.id, {"admin": base.admin_token}, base.api_key)
        async with await psycopg.AsyncConnection.connect(
            pg_url, autocommit=True, row_factory=dict_row
        ) as conn:
            for role in ("viewer", "editor"):
                org.tokens[role] = await create_user_token(
                    conn, base.id, f"{role}-{base.id}@example.com", role
                )
        return org

    return factory


@pytest.fixture
async def org(make_org) -> Org:
    return await make_org("acme")


@pytest.fixture
async def other_org(make_org) -> Org:
    return await make_org("globex")


async def pg_exec(pg_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def insert_metric(pg_url: str, org_id: int, name: str, text: str) -> int:
    """A saved metric written straight to the store (tests that don't exercise POST /metrics)."""
    from psycopg.types.json import Jsonb

    rows = await pg_exec(
        pg_url,
        "INSERT INTO metrics (org_id, name, definition) VALUES (%s, %s, %s) RETURNING id",
        (org_id, name, Jsonb({"text": text})),
    )
    return rows[0]["id"]


def seed_events(ch: Any, rows: list[dict[str, Any]]) -> None:
    """Insert events through events_queue, so the MVs fill `events` and every rollup."""
    from datetime import UTC, datetime

    import pyarrow as pa

    names = [
        "org_id", "ts", "event", "user_id", "session_id", "value", "path", "referrer",
        "country", "device", "browser", "os", "received_at",
    ]  # fmt: skip
    defaults = {
        "event": "pageview", "user_id": "u", "session_id": "s", "value": 0.0, "path": "/",
        "referrer": "", "country": "DE", "device": "desktop", "browser": "firefox", "os": "linux",
    }  # fmt: skip
    now = datetime.now(UTC)
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for row in rows:
        full = {**defaults, "received_at": now, **row}
        if isinstance(full["ts"], int | float):
            full["ts"] = datetime.fromtimestamp(full["ts"], UTC)
        for n in names:
            cols[n].append(full[n])
    types = {"org_id": pa.uint32(), "value": pa.float64()}
    ts_type = pa.timestamp("ms", tz="UTC")
    arrays = {
        n: pa.array(v, type=types.get(n, ts_type if n in ("ts", "received_at") else pa.string()))
        for n, v in cols.items()
    }
    ch.insert_sync("events_queue", pa.table(arrays))


#: How the statements counting an answer's rows read begin (not the answers' own queries).
ROW_COUNT_PREFIXES = (
    "SELECT COUNT(*) AS n FROM (SELECT * ",
    "SELECT SUM(n) AS n FROM (SELECT COUNT(*)",
)


class FlakyClickHouse:
    """The real facade, which a test can make fail like an unreachable server."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.down = False
        self.queries = 0
        self.row_counts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def query_count(self) -> int:
        """Answers' own queries sent (not the rows-read counts beside them)."""
        return self.queries

    async def query(self, sql: str, params: Any = None, settings: Any = None, **kwargs: Any) -> Any:
        from app.clickhouse import ClickHouseError

        if self.down:
            raise ClickHouseError("Code: 210. Connection refused (simulated outage)", code=210)
        if sql.startswith(ROW_COUNT_PREFIXES):
            self.row_counts += 1  # the rows-read count of an answer (guard.visible_rows_query)
        else:
            self.queries += 1
        return await self.inner.query(sql, params, settings, **kwargs)


class DownPool:
    """Stands in for the PostgreSQL pool while a test simulates an outage: every checkout fails
    the way an unreachable server does (the real pool lives on the app's event loop)."""

    def connection(self, timeout: float | None = None) -> Any:
        raise psycopg.OperationalError("connection refused (simulated outage)")


def set_pg_down(services: Services, down: bool) -> None:
    real = vars(services).setdefault("_real_pg", services.pg)  # the pool to swap back in
    pool = DownPool() if down else real
    services.pg = pool
    for repo in vars(services.store).values():
        if hasattr(repo, "pool"):
            repo.pool = pool
