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
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

from app.clickhouse import ClickHouse, EmbeddedClickHouse
from app.migrate import migrate_clickhouse, migrate_postgres, read_postgres, render_clickhouse

TEST_PG_URL = os.environ.get(
    "CLICKPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("CLICKPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture(scope="session")
def chdb_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="clickpulse-chdb-") as path:
        yield path


@pytest.fixture(scope="session")
def ch_root(chdb_dir: str) -> EmbeddedClickHouse:
    """The process-wide chDB engine (database `default`); tests use `ch`."""
    return EmbeddedClickHouse(database="default", data_dir=chdb_dir)


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
