"""Shared fixtures: real chDB, real PostgreSQL, real Redis — isolated per test.

* chDB allows one data path per process, so the whole run shares one path and each test that
  needs ClickHouse gets its own freshly migrated database (`ch`).
* PostgreSQL: each test gets its own schema on the server at `CLICKPULSE_TEST_DATABASE_URL`
  (default: the machine's server at 127.0.0.1:5432, database `test`), migrated (`pg_url`).
* Redis: `redis_url` gives a database number flushed before the test.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from app.clickhouse import ClickHouse, EmbeddedClickHouse, close_embedded
from app.config import Settings
from app.db import open_pool
from app.migrate import migrate_clickhouse, migrate_postgres, read_postgres, render_clickhouse
from app.services import Services

TEST_PG_URL = os.environ.get(
    "CLICKPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("CLICKPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture(scope="session")
def chdb_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="clickpulse-chdb-") as path:
        yield path


@pytest.fixture(scope="session")
def ch_root(chdb_dir: str) -> Iterator[EmbeddedClickHouse]:
    """The process-wide chDB engine (database `default`); tests use `ch`."""
    engine = EmbeddedClickHouse(database="default", data_dir=chdb_dir)
    yield engine
    engine.close()
    close_embedded()  # chDB's teardown at interpreter exit is not safe with it still open


def fresh_clickhouse(root: ClickHouse, **render_args) -> ClickHouse:
    """A new, migrated database on the shared engine."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    ch = root.with_database(db)
    migrate_clickhouse(ch, render_clickhouse(database=db, **render_args))
    return ch


@pytest.fixture
def ch(ch_root: EmbeddedClickHouse) -> Iterator[ClickHouse]:
    """A freshly migrated ClickHouse database of its own for this test."""
    engine = fresh_clickhouse(ch_root)
    try:
        yield engine
    finally:
        engine.command_sync(f"DROP DATABASE IF EXISTS {engine.database} SYNC")
        engine.close()


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections live in a fresh, migrated schema of their own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(TEST_PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = _schema_url(TEST_PG_URL, schema)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate_postgres(conn, read_postgres())
    try:
        yield url
    finally:
        with psycopg.connect(TEST_PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    """A Redis database number reserved for tests, emptied first."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


# -- the app over real chDB + PostgreSQL --------------------------------------------------------
# `services` / `client` serve the app on this test's `ch` database and `pg_url` schema;
# `make_client(**settings)` does the same with Settings overridden; `org` / `make_org` create
# an org with an ingest API key and an admin user token.


def build_test_services(
    ch: ClickHouse, pg_url: str, settings: Settings, *, redis: Any = None
) -> Services:
    """Services over `ch` and `pg_url` (not started: the app's lifespan starts them); `redis`
    an asyncio client when the test runs with Redis."""
    from app.ingest.writer import EventWriter
    from app.runtime import build_services

    return build_services(
        settings,  # names `pg_url` as its database_url
        migrate=False,
        ch=ch,
        pg=open_pool(pg_url, min_size=1, max_size=4),
        writer=EventWriter(ch, settings),
        redis=redis,
    )


@pytest.fixture
def app_settings(ch: ClickHouse, pg_url: str, tmp_path) -> Settings:
    """Settings of the app under test; override fields with `make_client(**overrides)`."""
    return Settings(
        data_dir=str(tmp_path),
        clickhouse_database=ch.database,
        database_url=pg_url,
        # Short flush delay keeps tests quick; correctness never depends on it.
        writer_max_delay_ms=20,
    )


@pytest.fixture
def services(ch: ClickHouse, pg_url: str, app_settings: Settings) -> Services:
    """The Services the `client` fixture's app runs on (shared, so tests can inspect them)."""
    return build_test_services(ch, pg_url, app_settings)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[AsyncTestClient]:
    """An HTTP client of the app on `services`; its lifespan (start/stop) wraps the test."""
    from app.server import create_app

    async with AsyncTestClient(app=create_app(services)) as test_client:
        yield test_client


@pytest.fixture
def make_client(ch: ClickHouse, pg_url: str, app_settings: Settings):
    """`async with make_client(**settings_overrides) as (client, services): ...`"""
    from app.server import create_app

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[tuple[AsyncTestClient, Services]]:
        settings = msgspec.structs.replace(app_settings, **overrides)
        services = build_test_services(ch, pg_url, settings)
        async with AsyncTestClient(app=create_app(services)) as test_client:
            yield test_client, services

    return factory


@dataclass
class TestOrg:
    """An org created for a test, with its credentials (shown once, so kept here)."""

    __test__ = False  # not a test class, despite the name

    id: int
    name: str
    api_key: str  # ingest key: Authorization: Bearer <api_key> on POST /v1/events
    admin_token: str  # a user token with role admin in this org

    @property
    def ingest_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture
def make_org(pg_url: str) -> Callable[..., Awaitable[TestOrg]]:
    """`await make_org("name")` → a TestOrg in this test's PostgreSQL schema."""
    from psycopg.rows import dict_row

    from app.credentials import create_api_key, create_org, create_user_token

    async def factory(name: str | None = None) -> TestOrg:
        name = name or f"org-{uuid.uuid4().hex[:8]}"
        async with await psycopg.AsyncConnection.connect(
            pg_url, autocommit=True, row_factory=dict_row
        ) as conn:
            org_id = await create_org(conn, name)
            api_key = await create_api_key(conn, org_id, "test")
            token = await create_user_token(conn, org_id, f"admin-{org_id}@{name}.test", "admin")
        return TestOrg(id=org_id, name=name, api_key=api_key, admin_token=token)

    return factory


@pytest.fixture
async def org(make_org) -> TestOrg:
    """One org with an ingest key and an admin token."""
    return await make_org("acme")
