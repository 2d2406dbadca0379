"""Per-org quotas against noisy neighbours: request rate, concurrent ClickHouse queries and rows
read per minute. Over a limit → `ApiError(429, "rate_limited", …)` with `Retry-After`.

A token bucket per org (in Redis when configured, shared by every node), a semaphore per org
in this process (per node on purpose: it protects this node's worker threads), and a fixed
one-minute rows window (Redis or in process). Defaults come from Settings, `orgs.limits`
overrides them per org, and the effective limits are always clamped to the operator's
ceilings. Beneath these limits the ClickHouse pool is shared fairly (app/clickhouse/fair.py).
See docs/api.md, section "Quotas against noisy neighbours"."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from app.clickhouse.fair import PoolBusy
from app.errors import ApiError
from app.observability import Telemetry

LIMIT_FIELDS = ("rate_per_s", "burst", "concurrent_queries", "rows_per_minute")

_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local data = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class OrgLimits:
    rate_per_s: float
    burst: int
    concurrent_queries: int
    rows_per_minute: int


def validate_overrides(raw: Any, ceilings: OrgLimits | None = None) -> dict[str, float | int]:
    """Check an `orgs.limits` document; raises ApiError 422 naming the bad field (and the
    ceiling, for a value above the operator's ceiling)."""
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_limits", "limits must be an object", {"field": "limits"})
    clean: dict[str, float | int] = {}
    for name, value in raw.items():
        if name not in LIMIT_FIELDS:
            raise ApiError(
                422,
                "invalid_limits",
                f"unknown limit {name!r}; known: {', '.join(LIMIT_FIELDS)}",
                {"field": f"limits.{name}"},
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ApiError(
                422,
                "invalid_limits",
                f"limit {name} must be a positive number",
                {"field": f"limits.{name}"},
            )
        if ceilings is not None and value > getattr(ceilings, name):
            ceiling = getattr(ceilings, name)
            raise ApiError(
                422,
                "invalid_limits",
                f"limit {name} may be at most {ceiling:g} (the operator's ceiling, "
                f"CLICKPULSE_LIMIT_MAX_{name.upper()})",
                {"field": f"limits.{name}", "ceiling": ceiling},
            )
        clean[name] = float(value) if name == "rate_per_s" else int(value)
    return clean


def clamp(limits: OrgLimits, ceilings: OrgLimits) -> OrgLimits:
    """`limits` with every field lowered to its ceiling where it is above it."""
    return OrgLimits(
        rate_per_s=min(limits.rate_per_s, ceilings.rate_per_s),
        burst=min(limits.burst, ceilings.burst),
        concurrent_queries=min(limits.concurrent_queries, ceilings.concurrent_queries),
        rows_per_minute=min(limits.rows_per_minute, ceilings.rows_per_minute),
    )


def _too_many(message: str, retry_after: float, limit: str, org_limits: OrgLimits) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        "rate_limited",
        message,
        {"limit": limit, "value": getattr(org_limits, limit), "retry_after_s": seconds},
        headers={"Retry-After": str(seconds)},
    )


class Limiter:
    """Quotas for every org; one per process (state in Redis when given)."""

    def __init__(
        self,
        defaults: OrgLimits,
        *,
        ceilings: OrgLimits | None = None,
        redis: Any = None,
        load_overrides: Callable[[int], Awaitable[dict[str, Any] | None]] | None = None,
        overrides_ttl_s: float = 30.0,
        queue_wait_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry | None = None,
    ):
        self.defaults = defaults
        # No ceilings given: the defaults are the ceilings (an override can only lower).
        self.ceilings = ceilings or defaults
        self.redis = redis
        self.load_overrides = load_overrides
        self.overrides_ttl_s = overrides_ttl_s
        self.queue_wait_s = queue_wait_s
        self.clock = clock
        self._limits: dict[int, tuple[OrgLimits, float]] = {}
        self._buckets: dict[int, tuple[float, float]] = {}  # org -> (tokens, ts)
        self._rows: dict[int, tuple[int, int]] = {}  # org -> (minute, rows)
        self._slots: dict[int, tuple[int, asyncio.Semaphore]] = {}
        self._in_use: dict[int, int] = {}  # org -> queries holding a slot now (for metrics)
        self.telemetry = telemetry or Telemetry()
        self._script: Any = None
        self.rejected = {
            "rate_per_s": 0,
            "concurrent_queries": 0,
            "rows_per_minute": 0,
            "query_pool": 0,
        }

    # -- limits of one org ---------------------------------------------------------------
    async def limits_for(self, org_id: int) -> OrgLimits:
        now = time.monotonic()
        cached = self._limits.get(org_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        limits = self.defaults
        if self.load_overrides is not None:
            try:
                overrides = await self.load_overrides(org_id)
            except Exception:
                # PostgreSQL unavailable: keep the last known limits (or the defaults).
                overrides = None
                if cached is not None:
                    return cached[0]
            if overrides:
                known = {k: v for k, v in overrides.items() if k in LIMIT_FIELDS}
                limits = replace(self.defaults, **known)
        # Whoever wrote orgs.limits (an admin before ceilings existed, an operator in the
        # database), nothing above the operator's ceilings takes effect.
        limits = clamp(limits, self.ceilings)
        self._limits[org_id] = (limits, now + self.overrides_ttl_s)
        return limits

    def forget(self, org_id: int) -> None:
        """Drop the cached limits of an org (after an admin changed them)."""
        self._limits.pop(org_id, None)

    # -- request rate ----------------------------------------------------------------------
    async def check_rate(self, org_id: int) -> None:
        """Take one token from the org's bucket or raise 429."""
        limits = await self.limits_for(org_id)
        now = self.clock()
        if self.redis is not None:
            try:
                allowed, wait = await self._redis_bucket(org_id, limits, now)
            except Exception:
                allowed, wait = self._local_bucket(org_id, limits, now)  # Redis down: per node
        else:
            allowed, wait = self._local_bucket(org_id, limits, now)
        if not allowed:
            self.throttled(org_id, "rate_per_s")
            raise _too_many(
                f"request rate over {limits.rate_per_s:g}/s for this org",
                wait,
                "rate_per_s",
                limits,
            )

    def _local_bucket(self, org_id: int, limits: OrgLimits, now: float) -> tuple[bool, float]:
        tokens, ts = self._buckets.get(org_id, (float(limits.burst), now))
        tokens = min(float(limits.burst), tokens + max(0.0, now - ts) * limits.rate_per_s)
        if tokens >= 1:
            self._buckets[org_id] = (tokens - 1, now)
            return True, 0.0
        self._buckets[org_id] = (tokens, now)
        return False, (1 - tokens) / limits.rate_per_s

    async def _redis_bucket(self, org_id: int, limits: OrgLimits, now: float) -> tuple[bool, float]:
        if self._script is None:
            self._script = self.redis.register_script(_TOKEN_BUCKET)
        allowed, wait = await self._script(
            keys=[f"cp:rate:{org_id}"], args=[limits.rate_per_s, limits.burst, now]
        )
        return bool(int(allowed)), float(wait)

    # -- ClickHouse work ----------------------------------------------------------------------
    def _semaphore(self, org_id: int, size: int) -> asyncio.Semaphore:
        current = self._slots.get(org_id)
        if current is None or current[0] != size:
            current = (size, asyncio.Semaphore(size))
            self._slots[org_id] = current
        return current[1]

    async def rows_used(self, org_id: int) -> int:
        minute = int(self.clock() // 60)
        if self.redis is not None:
            try:
                raw = await self.redis.get(f"cp:rows:{org_id}:{minute}")
                return int(raw or 0)
            except Exception:
                pass
        window, rows = self._rows.get(org_id, (minute, 0))
        return rows if window == minute else 0

    async def record_rows(self, org_id: int, rows: int) -> None:
        """Charge `rows` read to the org's current minute."""
        if rows <= 0:
            return
        minute = int(self.clock() // 60)
        if self.redis is not None:
            try:
                key = f"cp:rows:{org_id}:{minute}"
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.incrby(key, rows)
                    pipe.expire(key, 120)
                    await pipe.execute()
                return
            except Exception:
                pass
        window, used = self._rows.get(org_id, (minute, 0))
        self._rows[org_id] = (minute, (used if window == minute else 0) + rows)

    @asynccontextmanager
    async def query_slot(self, org_id: int) -> AsyncIterator[OrgLimits]:
        """Admission for one ClickHouse query: rows budget left, then a concurrency slot."""
        limits = await self.limits_for(org_id)
        if await self.rows_used(org_id) >= limits.rows_per_minute:
            self.throttled(org_id, "rows_per_minute")
            raise _too_many(
                f"rows read per minute over {limits.rows_per_minute} for this org",
                60 - self.clock() % 60,
                "rows_per_minute",
                limits,
            )
        semaphore = self._semaphore(org_id, limits.concurrent_queries)
        try:
            await asyncio.wait_for(semaphore.acquire(), self.queue_wait_s)
        except TimeoutError:
            self.throttled(org_id, "concurrent_queries")
            raise _too_many(
                f"more than {limits.concurrent_queries} concurrent queries for this org",
                1,
                "concurrent_queries",
                limits,
            ) from None
        self._in_use[org_id] = self._in_use.get(org_id, 0) + 1
        try:
            yield limits
        except PoolBusy as exc:
            # The shared ClickHouse pool had no worker for this org within its bound: the org
            # already holds its share (app/clickhouse/fair.py). Its own queries wait, not
            # other orgs'.
            # Retry-After is as long as it waited: a worker is no likelier to be free for it
            # sooner, and each retry costs this process a compile (fewer, later retries).
            self.throttled(org_id, "query_pool")
            seconds = max(1, math.ceil(exc.waited_s))
            raise ApiError(
                429,
                "rate_limited",
                f"the ClickHouse pool had no worker free for this org within "
                f"{exc.waited_s:.1f} s; this org's other queries hold its share",
                {"limit": "query_pool", "retry_after_s": seconds},
                headers={"Retry-After": str(seconds)},
            ) from None
        finally:
            semaphore.release()
            left = self._in_use[org_id] - 1
            if left:
                self._in_use[org_id] = left
            else:
                del self._in_use[org_id]

    def throttled(self, org_id: int, limit: str) -> None:
        """Count a 429 of `org_id` for `limit` (here and in the metrics)."""
        self.rejected[limit] = self.rejected.get(limit, 0) + 1
        self.telemetry.org_throttled(org_id, limit)

    def slots_in_use(self) -> dict[int, int]:
        """{org_id: queries holding one of its concurrency slots now} (orgs with none left out)."""
        return dict(self._in_use)


def default_limits(settings: Any) -> OrgLimits:
    """The limits of an org without overrides (CLICKPULSE_LIMIT_*)."""
    return OrgLimits(
        rate_per_s=float(settings.limit_rate_per_s),
        burst=int(settings.limit_burst),
        concurrent_queries=int(settings.limit_concurrent_queries),
        rows_per_minute=int(settings.limit_rows_per_minute),
    )


def limit_ceilings(settings: Any) -> OrgLimits:
    """The operator's ceilings (CLICKPULSE_LIMIT_MAX_*); an unset one is its default."""
    defaults = default_limits(settings)
    return OrgLimits(
        rate_per_s=float(settings.limit_max_rate_per_s or defaults.rate_per_s),
        burst=int(settings.limit_max_burst or defaults.burst),
        concurrent_queries=int(
            settings.limit_max_concurrent_queries or defaults.concurrent_queries
        ),
        rows_per_minute=int(settings.limit_max_rows_per_minute or defaults.rows_per_minute),
    )
