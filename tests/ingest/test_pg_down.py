"""PostgreSQL stopped or frozen (issue 13 item 4), against a private PostgreSQL started for the
test (pgserver, unix socket on a temp dir) — never the machine's shared server.

Asserted: known ingest keys keep working from cache, unknown ones answer 503 at once, user
tokens seen before keep working, the circuit breaker answers at once while PostgreSQL is known
down, a revocation applies once PostgreSQL is back, and every request finishes within a loose
bound derived from CLICKPULSE_PG_TIMEOUT_S (it proves "no hang", not speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import psutil
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg.rows import dict_row

from app.config import Settings
from app.credentials import create_api_key, create_org, create_user_token
from app.db import migrate, open_pool
from app.runtime import build_services
from app.services import Services

PG_TIMEOUT_S = 1.0
# The longest any request may take while PostgreSQL is away: connection + statement deadline
# (2 × timeout), plus generous slack for a loaded test machine. A hang would blow past it.
BOUND_S = 2 * PG_TIMEOUT_S + 3.0


class PrivatePostgres:
    def __init__(self, path: str):
        import pgserver

        self.server = pgserver.get_server(path, cleanup_mode="delete")
        self.url = self.server.get_uri()
        self.stopped: list[psutil.Process] = []

    def processes(self) -> list[psutil.Process]:
        main = psutil.Process(self.server.get_pid())
        return [main, *main.children(recursive=True)]

    def freeze(self) -> None:
        self.stopped = self.processes()
        for proc in self.stopped:
            os.kill(proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        self.stopped = []


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    # Not tmp_path: under root, pgserver runs the server as its own user, who must be able to
    # reach the directory (pytest's tmp dirs are private to root).
    path = tempfile.mkdtemp(prefix="clickpulse-pg-")
    os.chmod(path, 0o755)
    pg = PrivatePostgres(os.path.join(path, "pg"))
    try:
        migrate(pg.url)
        yield pg
    finally:
        pg.thaw()
        pg.server.cleanup()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def app(ch, private_pg, tmp_path) -> AsyncIterator[tuple[AsyncTestClient, Services]]:
    from app.ingest.writer import EventWriter
    from app.server import create_app

    settings = Settings(
        data_dir=str(tmp_path / "data"),
        clickhouse_database=ch.database,
        database_url=private_pg.url,
        writer_max_delay_ms=20,
        pg_timeout_s=PG_TIMEOUT_S,
        pg_breaker_s=1.0,
        ingest_key_cache_ttl_s=0.2,  # entries go stale quickly: lookups are really attempted
        auth_cache_s=0.2,
    )
    services = build_services(
        settings,
        migrate=False,
        ch=ch,
        pg=open_pool(private_pg.url, min_size=1, max_size=4, timeout_s=PG_TIMEOUT_S),
        writer=EventWriter(ch, settings),
    )
    async with AsyncTestClient(app=create_app(services)) as client:
        yield client, services


async def _org(url: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        org_id = await create_org(conn, "acme")
        return {
            "id": org_id,
            "key": await create_api_key(conn, org_id, "k"),
            "unseen_key": await create_api_key(conn, org_id, "never used before the outage"),
            "token": await create_user_token(conn, org_id, "a@acme.test", "admin"),
        }


async def _timed(call: Any) -> tuple[Any, float]:
    """(response, seconds); a request still running after 3 × BOUND_S fails the test."""
    started = time.monotonic()
    response = await asyncio.wait_for(call, 3 * BOUND_S)
    return response, time.monotonic() - started


def _events(client: AsyncTestClient, key: str, n: int = 1) -> Any:
    body = msgspec.json.encode([{"event": "pageview", "user_id": f"u{i}"} for i in range(n)])
    return client.post(
        "/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


async def _outage(app: Any, org: dict[str, Any]) -> None:
    """What must hold while PostgreSQL does not answer (stopped or frozen)."""
    client, services = app
    auth = {"Authorization": f"Bearer {org['token']}"}
    latencies = []
    for _ in range(5):  # known key: answered from its last lookup, every time
        response, elapsed = await _timed(_events(client, org["key"], 3))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 3
        latencies.append(elapsed)
    assert max(latencies) < BOUND_S, latencies
    from app.ingest.routes import ingest_state

    assert ingest_state(services).keys.stale_served >= 5
    # Known down by now: the breaker answers at once, nobody waits for the timeout again.
    assert services.store.breaker.is_open
    refused = services.store.breaker.refused
    response, elapsed = await _timed(_events(client, org["unseen_key"]))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "auth_unavailable"
    assert response.headers["retry-after"] == "1"
    assert elapsed < BOUND_S
    # A user token seen before the outage still reads /me; something never read answers 503.
    me, elapsed = await _timed(client.get("/me", headers=auth))
    assert me.status_code == 200 and me.json()["org_id"] == org["id"] and elapsed < BOUND_S
    listing, elapsed = await _timed(client.get("/dashboards", headers=auth))
    assert listing.status_code == 503 and elapsed < BOUND_S
    assert listing.json()["error"]["code"] == "store_unavailable"
    assert services.store.breaker.refused > refused
    ready = await client.get("/readyz")
    assert "postgres" in ready.json()["degraded"]
    await services.writer.wait_inserted()


async def _before(app: Any, org: dict[str, Any]) -> None:
    client, _ = app
    assert (await _events(client, org["key"])).status_code == 200
    auth = {"Authorization": f"Bearer {org['token']}"}
    assert (await client.get("/me", headers=auth)).status_code == 200
    await asyncio.sleep(0.3)  # past both caches' freshness: the next use really asks


async def test_frozen_postgres_sigstop(app, private_pg):
    org = await _org(private_pg.url)
    await _before(app, org)
    private_pg.freeze()
    try:
        await _outage(app, org)
    finally:
        private_pg.thaw()
    # Back: revoke the key; once the breaker's probe succeeds the revocation applies.
    async with await psycopg.AsyncConnection.connect(private_pg.url, autocommit=True) as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE org_id = %s", (org["id"],))
    client, _ = app
    deadline = time.monotonic() + 30
    while True:
        response, elapsed = await _timed(_events(client, org["key"]))
        assert elapsed < BOUND_S
        if response.status_code == 401:
            assert response.json()["error"]["code"] == "revoked_api_key"
            break
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the revocation never applied after the outage"
        await asyncio.sleep(0.2)


async def test_stopped_postgres(app, private_pg):
    import subprocess

    org = await _org(private_pg.url)
    await _before(app, org)
    server = private_pg.server
    pg_ctl = os.path.join(os.path.dirname(__import__("pgserver").__file__), "pginstall/bin/pg_ctl")
    command = [pg_ctl, "-D", str(server.pgdata), "-m", "immediate", "-w", "stop"]
    if server.system_user is not None:  # pgserver runs the server as its own user under root
        command = ["su", server.system_user, "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    await _outage(app, org)
