"""The hot cache: recent query results and config reads, in Redis or in process.

An entry is `(value, stored_at, fresh_until)`. While fresh it answers requests directly; after
that it is kept (up to `keep_s`) as the *last known answer*, served with `stale: true` when
ClickHouse or PostgreSQL cannot answer (see docs/api.md, "Degradation").

* `RedisCache` (when `REDIS_URL` is set): shared by every node; `SET … EX keep_s`.
* `MemoryCache` otherwise: a bounded LRU with the same two horizons.

Values are anything msgspec can encode to JSON. Query keys are built by `query_key`: the org and
a hash of the compiled SQL and its parameters, so two requests that compile to the same query
share an entry, and no two orgs ever do (the org is in the key *and* in the compiled SQL).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

Clock = Callable[[], float]
log = logging.getLogger("clickpulse.degradation")

# Granularity names the API and the compiler use, in seconds.
GRANULARITY_S = {"1s": 1, "1m": 60, "1h": 3600, "1d": 86400}
RECENT_WINDOW_S = 600  # "the last 10 minutes": what rollup_1s holds
# A stored answer is fresh for a random 80-100 % of its policy TTL (`ttl_for`), never longer:
# entries written in the same instant (a dashboard's charts, every org after a restart) would
# otherwise all expire in the same instant and send their queries to ClickHouse together.
TTL_JITTER = 0.2
# In the last 20 % of its freshness (at most 2 s), a request still answered from an entry
# starts one background refresh of it, so a key that keeps being asked for is replaced before
# it expires and nobody waits for ClickHouse; answers stay within their freshness.
REFRESH_AHEAD = 0.2
REFRESH_AHEAD_MAX_S = 2.0


@dataclass(slots=True)
class Entry:
    value: Any
    stored_at: float
    fresh_until: float

    def fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    def refresh_due(self, now: float) -> bool:
        """Fresh, but in the refresh-ahead window before `fresh_until`."""
        window = min(REFRESH_AHEAD_MAX_S, REFRESH_AHEAD * (self.fresh_until - self.stored_at))
        return self.fresh_until - window <= now < self.fresh_until


class _Stored(msgspec.Struct, array_like=True):
    value: Any
    stored_at: float
    fresh_until: float


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Stored)


def query_key(org_id: int, sql: str, params: dict[str, Any] | None) -> str:
    """The cache key of one compiled query of one org."""
    digest = hashlib.sha256()
    digest.update(sql.encode())
    digest.update(b"\0")
    digest.update(_encoder.encode(sorted((params or {}).items(), key=lambda kv: kv[0])))
    return f"cp:q:{int(org_id)}:{digest.hexdigest()[:40]}"


# Bound parameters the compiler derives from the time window (app/querybuilder: the range,
# the comparison's previous period, a sliding window's first read bucket).
WINDOW_PARAMS = frozenset(
    {"time_from", "time_to", "prev_from", "prev_to", "time_from_read", "prev_from_read"}
)


def last_known_key(
    org_id: int, sql: str, params: dict[str, Any] | None, window: tuple[Any, ...] | None
) -> str:
    """The key of the last known answer to a compiled query, shared by every reader of it.

    Every request that compiles to the same SQL and parameters — a chart, the metric's
    history page, an ad-hoc query — reads and writes the same last answer, so whichever of
    them ran the query, all can fall back to it. A window anchored to now (`window`, e.g.
    `("now", 0, 3600)` for the last hour) compiles to new time parameters every bucket; its
    key therefore holds the window's description instead of those parameters, and the last
    answer of "the last hour" stays findable as time moves on. An absolute window (`None`)
    keys on the exact parameters.
    """
    if window is None:
        kept = params
    else:
        kept = {k: v for k, v in (params or {}).items() if k not in WINDOW_PARAMS}
        kept["\0window"] = list(window)
    return "cp:last:" + query_key(org_id, sql, kept)[5:]


def config_key(org_id: int, kind: str, entity_id: int) -> str:
    """The cache key of one config entity (a dashboard read) of one org."""
    return f"cp:c:{int(org_id)}:{kind}:{int(entity_id)}"


def ttl_for(granularity: str, to_ts: float, now: float) -> float:
    """How long a query result stays fresh.

    Ranges touching the last 10 minutes change every second: 1 s at 1 s granularity, 2 s at
    1 m, 10 s coarser. Closed ranges only change through late events (ingest accepts events up
    to a week old), so they stay fresh for 5 minutes.
    """
    if to_ts >= now - RECENT_WINDOW_S:
        step = GRANULARITY_S.get(granularity, 60)
        if step <= 1:
            return 1.0
        if step <= 60:
            return 2.0
        return 10.0
    return 300.0


def jittered(ttl_s: float, rand: Callable[[], float] = random.random) -> float:
    """`ttl_s` shortened by a random 0-20 % (`TTL_JITTER`): never fresh longer than the policy."""
    return ttl_s * (1.0 - TTL_JITTER * rand())


class SingleFlight:
    """At most one running computation per key in this process; callers share it.

    `run(key, start)` answers the running task for `key`, or starts `start()` as a task, and
    says which. Awaiting callers should `asyncio.shield` the task: one caller going away
    (a client disconnecting) must not cancel the work others are waiting for. A task nobody
    awaits (a background refresh) has its exception retrieved so it is not logged as lost.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}
        self.started = 0
        self.joined = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: str) -> asyncio.Task | None:
        return self._tasks.get(key)

    def run(self, key: str, start: Callable[[], Awaitable[Any]]) -> tuple[asyncio.Task, bool]:
        task = self._tasks.get(key)
        if task is not None:
            self.joined += 1
            return task, False
        task = asyncio.ensure_future(start())
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        self.started += 1
        return task, True

    def forget(self, key: str) -> None:
        """Later callers start a new run: the running one began before a change it cannot see
        (it still completes for those already waiting; `is_current` tells it)."""
        self._tasks.pop(key, None)

    def is_current(self, key: str) -> bool:
        """Inside a run: it is still the one new callers of `key` would join."""
        task = self._tasks.get(key)
        return task is not None and task is asyncio.current_task()

    def _done(self, key: str, task: asyncio.Task) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()


class Cache:
    """The interface; `stats` counts hits (fresh), stale reads, misses and writes."""

    def __init__(self, *, keep_s: float = 3600, clock: Clock = time.time):
        self.keep_s = keep_s
        self.clock = clock
        self.stats = {"hit": 0, "stale": 0, "miss": 0, "set": 0, "error": 0}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.flights = SingleFlight()  # queries being computed for this cache, per key

    def _failed(self, exc: Exception) -> None:
        # A cache that cannot answer is a miss, never a failed request (readyz reports it).
        self.stats["error"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.last_error_at = self.clock()

    async def get(self, key: str) -> Entry | None:
        """The entry (fresh or not) if still kept; counts hit/stale/miss."""
        try:
            entry = await self._get(key)
        except Exception as exc:
            self._failed(exc)
            entry = None
        if entry is None:
            self.stats["miss"] += 1
        elif entry.fresh(self.clock()):
            self.stats["hit"] += 1
        else:
            self.stats["stale"] += 1
        return entry

    async def set(self, key: str, value: Any, ttl_s: float) -> Entry:
        now = self.clock()
        entry = Entry(value, now, now + ttl_s)
        try:
            await self._set(key, entry, max(self.keep_s, ttl_s))
        except Exception as exc:
            self._failed(exc)
            return entry
        self.stats["set"] += 1
        return entry

    async def delete(self, key: str) -> None:
        try:
            await self._delete(key)
        except Exception as exc:
            self._failed(exc)

    async def ping(self) -> None:
        return None

    async def _get(self, key: str) -> Entry | None:
        raise NotImplementedError

    async def _set(self, key: str, entry: Entry, keep_s: float) -> None:
        raise NotImplementedError

    async def _delete(self, key: str) -> None:
        raise NotImplementedError


class MemoryCache(Cache):
    """A bounded LRU in this process (one per app)."""

    kind = "memory"

    def __init__(
        self, *, max_entries: int = 10_000, keep_s: float = 3600, clock: Clock = time.time
    ):
        super().__init__(keep_s=keep_s, clock=clock)
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[Entry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def _get(self, key: str) -> Entry | None:
        item = self._data.get(key)
        if item is None:
            return None
        entry, expires_at = item
        if self.clock() >= expires_at:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    async def _set(self, key: str, entry: Entry, keep_s: float) -> None:
        self._data[key] = (entry, entry.stored_at + keep_s)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def _delete(self, key: str) -> None:
        self._data.pop(key, None)


class RedisCache(Cache):
    """Entries in Redis (shared by all nodes); Redis expires them after `keep_s`."""

    kind = "redis"

    def __init__(self, redis: Any, *, keep_s: float = 3600, clock: Clock = time.time):
        super().__init__(keep_s=keep_s, clock=clock)
        self.redis = redis

    async def _get(self, key: str) -> Entry | None:
        raw = await self.redis.get(key)
        if raw is None:
            return None
        stored = _decoder.decode(raw)
        return Entry(stored.value, stored.stored_at, stored.fresh_until)

    async def _set(self, key: str, entry: Entry, keep_s: float) -> None:
        raw = _encoder.encode(_Stored(entry.value, entry.stored_at, entry.fresh_until))
        await self.redis.set(key, raw, ex=max(1, int(keep_s)))

    async def _delete(self, key: str) -> None:
        await self.redis.delete(key)

    async def ping(self) -> None:
        await self.redis.ping()


def make_cache(redis: Any, *, max_entries: int, keep_s: float, clock: Clock = time.time) -> Cache:
    """Redis when a client is given, in process otherwise."""
    if redis is not None:
        return RedisCache(redis, keep_s=keep_s, clock=clock)
    return MemoryCache(max_entries=max_entries, keep_s=keep_s, clock=clock)


class Degradation:
    """What has been failing lately, for readyz and for the `stale` answers.

    A component is degraded from its last failure until its next success (and at least
    `window_s` after a failure, so a flapping dependency stays visible).
    """

    def __init__(self, *, window_s: float = 30.0, clock: Clock = time.time):
        self.window_s = window_s
        self.clock = clock
        self._failed: dict[str, tuple[float, str]] = {}
        self._ok: dict[str, float] = {}
        self.stale_served: dict[str, int] = {}

    def failing(self, component: str) -> bool:
        """Failed since its last success."""
        failed = self._failed.get(component)
        return failed is not None and self._ok.get(component, 0.0) < failed[0]

    def failed(self, component: str, error: str) -> None:
        """Record a failure a request saw; logged only when it starts a failing period."""
        if not self.failing(component):
            log.error("%s is failing (seen by requests): %s", component, error[:300])
        self._failed[component] = (self.clock(), error[:300])

    def ok(self, component: str) -> None:
        """Record a success; logged only when it ends a failing period."""
        if self.failing(component):
            log.warning("%s answers requests again", component)
        self._ok[component] = self.clock()

    def served_stale(self, component: str) -> None:
        self.stale_served[component] = self.stale_served.get(component, 0) + 1

    def degraded(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        out = {}
        for component, (at, error) in self._failed.items():
            last_ok = self._ok.get(component, 0.0)
            if last_ok < at or now - at < self.window_s:
                out[component] = {
                    "since_s": round(now - at, 3),
                    "error": error,
                    "stale_served": self.stale_served.get(component, 0),
                }
        return out
