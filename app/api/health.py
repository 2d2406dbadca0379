"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from app.deps import ServicesDep
from app.services import Services


class ComponentStatus(msgspec.Struct, omit_defaults=True):
    ok: bool
    detail: str  # why it is failing; "" when ok
    # components reported by the work itself (ingest), not by a probe:
    since_s: float | None = None  # failing for this long
    failures: int | None = None  # failures in the current failing period
    blocks_ingest: bool | None = None  # while failing, every POST /v1/events answers 503


class Readiness(msgspec.Struct):
    ready: bool
    degraded: list[str]
    components: dict[str, ComponentStatus]
    # recent failures seen by requests (ClickHouse/PostgreSQL/cache), with stale answers served
    recent_failures: dict[str, Any] = msgspec.field(default_factory=dict)
    cache: dict[str, Any] = msgspec.field(default_factory=dict)


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(coro, timeout: float = 2.0) -> ComponentStatus:
    try:
        await asyncio.wait_for(coro, timeout)
        return ComponentStatus(ok=True, detail="")
    except Exception as exc:  # any failure is reported, never raised
        return ComponentStatus(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


async def _pg_ping(services: Services) -> None:
    async with services.pg.connection() as conn:
        await conn.execute("SELECT 1")


def _ingest_components(services: Services) -> dict[str, ComponentStatus]:
    """The writer's own view of ingest (WAL, INSERTs, backlog) on a node with the ingest role."""
    if "ingest" not in services.settings.roles:
        return {}
    health = getattr(services.writer, "health", None)
    if health is None:  # the Kafka sink reports delivery failures per request
        return {}
    return {name: msgspec.convert(status, ComponentStatus) for name, status in health().items()}


@get(
    "/readyz",
    responses={
        503: ResponseSpec(
            Readiness,
            description="ClickHouse or PostgreSQL is unreachable, or ingest refuses every event",
            generate_examples=False,
        )
    },
)
async def readyz(services: ServicesDep) -> Response[Readiness]:
    """Each dependency reported; 503 when ClickHouse or PostgreSQL is unreachable, or when
    ingest on this node refuses every event (WAL unwritable or full, backlog over its bound,
    INSERTs failing with the WAL off)."""
    components = {
        "clickhouse": await _check(services.ch.query("SELECT 1")),
        "postgres": await _check(_pg_ping(services)),
    }
    ingest = _ingest_components(services)
    components.update(ingest)
    if services.redis is not None:
        components["redis"] = await _check(services.redis.ping())
    degraded = {name for name, status in components.items() if not status.ok}
    recent: dict[str, Any] = {}
    cache_info: dict[str, Any] = {}
    if getattr(services, "degradation", None) is not None:
        recent = services.degradation.degraded()
        degraded |= set(recent)
    cache = getattr(services, "cache", None)
    if cache is not None:
        cache_info = {"kind": cache.kind, **cache.stats}
        if cache.last_error_at is not None and cache.clock() - cache.last_error_at < 30:
            degraded.add("cache")
            cache_info["last_error"] = cache.last_error
    ready = (
        components["clickhouse"].ok
        and components["postgres"].ok
        and not any(status.blocks_ingest and not status.ok for status in ingest.values())
    )
    return Response(
        Readiness(
            ready=ready,
            degraded=sorted(degraded),
            components=components,
            recent_failures=recent,
            cache=cache_info,
        ),
        status_code=200 if ready else 503,
    )
