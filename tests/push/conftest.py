"""Push tests: the real app served by uvicorn on 127.0.0.1 (in the test's event loop), real
`websockets` clients, events posted through /v1/events, real chDB/PostgreSQL/Redis.

Poller ticks are driven by the tests (`push_tick_ms=0`): `await node.tick()` runs one round,
so assertions never depend on wall time.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from app.config import Settings
from app.services import Services
from tests.conftest import build_test_services


@dataclass
class Node:
    """One running app process (a push node)."""

    services: Services
    server: uvicorn.Server
    port: int
    http: httpx.AsyncClient

    @property
    def hub(self) -> Any:
        return self.services.push

    def ws_url(self, token: str | None = None) -> str:
        base = f"ws://127.0.0.1:{self.port}/ws/subscribe"
        return f"{base}?token={token}" if token is not None else base

    async def connect(self, token: str | None = None, **kwargs: Any) -> ClientConnection:
        return await websockets.connect(self.ws_url(token), **kwargs)

    async def post(self, api_key: str, events: list[dict[str, Any]]) -> None:
        response = await self.http.post(
            "/v1/events", json=events, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status_code in (200, 202), response.text
        await self.services.writer.wait_inserted()

    async def tick(self) -> list[Any]:
        return await self.hub.poller.tick()


@asynccontextmanager
async def serve(services: Services) -> AsyncIterator[Node]:
    from app.server import create_app

    config = uvicorn.Config(
        create_app(services), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start within 20 s")
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            yield Node(services, server, port, http)
        finally:
            server.should_exit = True
            await task


@pytest.fixture
def push_settings(app_settings: Settings) -> Settings:
    # Every driven tick polls every key (push_poll_all_s=0): these tests count one read per
    # key per tick and insert behind the writer's back. Skipping orgs without reported inserts
    # is tested with it on (test_batched_polling.py). The whole-range re-read comes round
    # within the 10-minute range here (its default where inserts are reported is the range).
    return msgspec.structs.replace(
        app_settings, push_tick_ms=0, push_poll_all_s=0, push_full_reread_reported_s=30
    )


@pytest.fixture
def make_node(ch, pg_url: str, push_settings: Settings):
    """`async with make_node(redis=..., **settings) as node:` — a served app process."""

    @asynccontextmanager
    async def factory(redis_url: str | None = None, **overrides: Any) -> AsyncIterator[Node]:
        # Each node has a data dir of its own (its ingest WAL is locked per process).
        data_dir = os.path.join(push_settings.data_dir, f"node-{uuid.uuid4().hex[:8]}")
        overrides.setdefault("data_dir", data_dir)
        settings = msgspec.structs.replace(push_settings, **overrides)
        redis = None
        if redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.Redis.from_url(redis_url)
        services = build_test_services(ch, pg_url, settings, redis=redis)
        async with serve(services) as node:
            yield node

    return factory


@pytest.fixture
async def node(make_node) -> AsyncIterator[Node]:
    async with make_node() as n:
        yield n


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return msgspec.json.decode(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of type `kind` (others before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(deadline - time.monotonic(), 0.01))
        if msg["type"] == kind:
            return msg


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(msgspec.json.encode(message).decode())


async def drain(ws: ClientConnection) -> list[dict[str, Any]]:
    """Everything queued for `ws` up to now: send a ping, collect until the pong."""
    await send(ws, {"type": "ping"})
    out = []
    while True:
        msg = await recv(ws)
        if msg["type"] == "pong":
            return out
        out.append(msg)


async def subscribe(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await send(ws, {"type": "subscribe", **fields})
    msg = await recv(ws)
    assert msg["type"] in ("snapshot", "resume"), msg
    return msg


def now_ms() -> int:
    return int(time.time() * 1000)


def by_t(rows: list[dict[str, Any]], column: str) -> dict[int, Any]:
    return {r["t"]: r[column] for r in rows}


Events = Callable[..., list[dict[str, Any]]]


def events(name: str, count: int, ts_ms: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"event": name, "ts": ts_ms, "user_id": f"u{i}", **extra} for i in range(count)]


@pytest.fixture
def redis_url() -> str:
    """A Redis database of the push tests' own (the shared test db 9 is flushed by every
    test that asks for it, possibly from another run), emptied first."""
    import redis

    from tests.conftest import TEST_REDIS_URL

    url = TEST_REDIS_URL.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url
