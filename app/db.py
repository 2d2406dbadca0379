"""PostgreSQL: the configuration store's connection, and the embedded server for the demo.

`DATABASE_URL` names a server; without it, `pgserver` runs a private PostgreSQL on the data
directory (the one-machine default).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from app.config import Settings
from app.migrate import MigrationReport, migrate_postgres, read_postgres


def resolve_database_url(settings: Settings) -> str:
    """`DATABASE_URL` if set, else the URL of an embedded server on the data dir (started here)."""
    if settings.database_url:
        return settings.database_url
    import pgserver

    os.makedirs(settings.pg_path, exist_ok=True)
    server = pgserver.get_server(settings.pg_path, cleanup_mode="stop")
    return server.get_uri()


def migrate(url: str) -> MigrationReport:
    """Apply the PostgreSQL migrations on `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        return migrate_postgres(conn, read_postgres())


def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> AsyncConnectionPool:
    """An async pool whose connections return rows as dicts. Open it with `await pool.open()`.

    With `timeout_s` (CLICKPULSE_PG_TIMEOUT_S): the server ends any statement after that long
    (`statement_timeout`, added to the URL's own `options`), connecting gives up after it, and
    waiting for a free connection defaults to it instead of psycopg_pool's 30 s."""
    extra: dict[str, Any] = {}
    if timeout_s is not None:
        params = conninfo_to_dict(url)
        options = f"{params.get('options') or ''} -c statement_timeout={int(timeout_s * 1000)}"
        extra = {"options": options.strip(), "connect_timeout": max(int(timeout_s + 0.999), 1)}
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True, **extra, **kwargs},
        timeout=timeout_s if timeout_s is not None else 30.0,
        open=False,
    )
