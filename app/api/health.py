"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Response, get

from app.services import Services


class ComponentStatus(msgspec.Struct):
    ok: bool
    detail: str = ""


class Readiness(msgspec.Struct):
    ready: bool
    degraded: list[str]
    components: dict[str, ComponentStatus]


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(coro, timeout: float = 2.0) -> ComponentStatus:
    try:
        await asyncio.wait_for(coro, timeout)
        return ComponentStatus(ok=True)
    except Exception as exc:  # any failure is reported, never raised
        return ComponentStatus(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


async def _pg_ping(services: Services) -> None:
    async with services.pg.connection() as conn:
        await conn.execute("SELECT 1")


@get("/readyz")
async def readyz(services: Services) -> Response[Readiness]:
    """Each dependency reported; 503 when ClickHouse or PostgreSQL is unreachable."""
    components = {
        "clickhouse": await _check(services.ch.query("SELECT 1")),
        "postgres": await _check(_pg_ping(services)),
    }
    if services.redis is not None:
        components["redis"] = await _check(services.redis.ping())
    degraded = sorted(name for name, status in components.items() if not status.ok)
    ready = components["clickhouse"].ok and components["postgres"].ok
    return Response(
        Readiness(ready=ready, degraded=degraded, components=components),
        status_code=200 if ready else 503,
    )
