"""Alerts tests: the real app on uvicorn (127.0.0.1, the test's event loop), events posted
through /v1/events with explicit past timestamps, real chDB + PostgreSQL, the real push hub.

Poller ticks are driven by the tests with an explicit `now` (`push_tick_ms=0`,
`alert_sync_s=0`), so which seconds are complete — and when an alert fires — never depends on
wall time: `await env.tick(T)` evaluates exactly the seconds that are complete at `T`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import uvicorn
import websockets
from psycopg.rows import dict_row

from app.config import Settings
from app.services import Services
from tests.conftest import build_test_services

ERRORS = {"text": "SELECT countIf(event = 'err') AS errors"}
SETTLE_S = 3  # with alert_settle_ms=1500, second s is evaluated by the tick at s + 3


@dataclass
class Env:
    """One running app process."""

    services: Services
    http: httpx.AsyncClient
    port: int

    @property
    def evaluator(self) -> Any:
        return self.services.alerts

    @property
    def poller(self) -> Any:
        return self.services.push.poller

    async def post(self, api_key: str, events: list[dict[str, Any]]) -> None:
        r = await self.http.post(
            "/v1/events", json=events, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert r.status_code in (200, 202), r.text
        await self.services.writer.wait_inserted()

    async def tick(self, now: int) -> None:
        await self.poller.tick(now=float(now))

    async def tick_through(self, first: int, last: int) -> None:
        for now in range(first, last + 1):
            await self.tick(now)

    async def evaluate_through(self, second: int) -> None:
        """Tick until `second` is evaluated (one tick per second from the evaluator's cursor)."""
        cursors = [self.evaluator.evaluated_through(aid) for aid in self.evaluator.alerts]
        start = min(c for c in cursors if c is not None) + 1 + SETTLE_S
        await self.tick_through(start, second + SETTLE_S)

    def ws_url(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/subscribe?token={token}"


@asynccontextmanager
async def serve(services: Services) -> AsyncIterator[Env]:
    from app.server import create_app

    config = uvicorn.Config(
        create_app(services), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            yield Env(services, http, port)
        finally:
            server.should_exit = True
            await task


@pytest.fixture
def alert_settings(app_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        app_settings,
        push_tick_ms=0,
        alert_sync_s=0,
        alert_settle_ms=1500,
        alert_webhook_timeout_s=0.3,
        alert_webhook_retries=2,
        alert_webhook_backoff_s=0.05,
        # The webhook receivers of these tests listen on 127.0.0.1: a self-hosted-style
        # setting. The SSRF guard itself is tested with it off (test_webhook_ssrf.py).
        alert_webhook_allow_private=True,
        limit_rate_per_s=1000.0,
        limit_burst=1000,
    )


@pytest.fixture
def make_env(ch, pg_url: str, alert_settings: Settings):
    """`async with make_env(**settings) as env:` — a served app; call it again over the same
    databases to simulate a restart."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Env]:
        settings = msgspec.structs.replace(alert_settings, **overrides)
        async with serve(build_test_services(ch, pg_url, settings)) as env:
            yield env

    return factory


@pytest.fixture
async def env(make_env) -> AsyncIterator[Env]:
    async with make_env() as e:
        yield e


def h(org: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.admin_token}"}


def alert_body(**over: Any) -> dict[str, Any]:
    return {
        "name": "errors high",
        "metric_inline": ERRORS,
        "comparator": ">",
        "threshold": 5,
        "for_seconds": 3,
        **over,
    }


async def create_alert(env: Env, org: Any, **over: Any) -> dict[str, Any]:
    r = await env.http.post("/alerts", json=alert_body(**over), headers=h(org))
    assert r.status_code == 201, r.text
    return r.json()


def base_second(ago: int = 120) -> int:
    """A whole second `ago` seconds in the past (well inside rollup_1s retention)."""
    return int(time.time()) - ago


def series_events(
    base: int, counts: list[int], event: str = "err", **extra: Any
) -> list[dict[str, Any]]:
    """`counts[i]` events named `event` at second base + i (explicit ts, epoch ms)."""
    out = []
    for i, n in enumerate(counts):
        for j in range(n):
            out.append({"event": event, "ts": (base + i) * 1000 + j, "user_id": f"u{j}", **extra})
    return out


async def pg_rows(pg_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def events_of(pg_url: str, alert_id: int) -> list[dict[str, Any]]:
    return await pg_rows(
        pg_url,
        "SELECT id, kind, value, threshold, at, details, delivery, delivery_attempts, "
        "delivery_error FROM alert_events WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )


async def state_of(pg_url: str, alert_id: int) -> tuple[str, int | None]:
    rows = await pg_rows(pg_url, "SELECT state, state_since FROM alerts WHERE id = %s", (alert_id,))
    since = rows[0]["state_since"]
    return rows[0]["state"], None if since is None else int(since.timestamp())


# -- a local webhook receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    """A tiny HTTP server on 127.0.0.1 recording every request (the raw `body` too); the
    first answers are `statuses` in turn, then `status`; `delay_s` stalls each answer (to time
    a client out)."""

    status: int = 200
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    server: Any = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.calls.append(
                {
                    "request": lines[0],
                    "headers": headers,
                    "json": msgspec.json.decode(body),
                    "body": body,
                }
            )
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status = self.statuses.pop(0) if self.statuses else self.status
            reason = {200: "OK", 500: "Internal Server Error"}.get(status, "X")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()
        self.server.close_clients() if hasattr(self.server, "close_clients") else None


# -- websockets ----------------------------------------------------------------------------


async def ws_drain(ws: Any) -> list[dict[str, Any]]:
    """Everything queued for `ws` up to now: a ping, then collect until the pong."""
    await ws.send('{"type": "ping"}')
    out = []
    while True:
        msg = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 5))
        if msg["type"] == "pong":
            return out
        out.append(msg)


async def ws_connect(env: Env, token: str) -> Any:
    return await websockets.connect(env.ws_url(token))
