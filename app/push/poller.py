"""The Poller: one query per active key per tick, diffed against what was last emitted.

Each tick (every `push_tick_ms`, or when a test calls `tick()`):

1. measure the pipeline lag (`lag_source()`: the ingest writer's oldest pending row; with Redis,
   the largest lag any node reported) and tell the hub (stale/live);
2. with Redis, renew/acquire the leader lease of every active key: only the lease holder polls;
3. for each key this node polls: read rollup_1s (through `run_compiled`, guard re-verified) over
   [watermark − reread − lag, now + 1), compare each (t, dims) row with the last emitted
   values, and emit only the rows that changed — encoded once — to the hub (or to Redis);
4. call the listeners (`watch()`ed keys and `add_tick_listener`) with every key's rows.

Listeners are the alerts hook: `poller.watch(spec, listener)` keeps a key active without any
socket and calls `listener(KeyTick)` every tick on the node that polls the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.clickhouse import ClickHouse
from app.push import protocol
from app.push.keys import KeySpec

log = logging.getLogger("clickpulse.push.poller")


@dataclass(slots=True)
class KeyTick:
    """What one tick read for one key (handed to listeners)."""

    key: str
    spec: KeySpec
    rows: list[dict[str, Any]]  # every row of the re-read window [time_from, time_to)
    changed: list[dict[str, Any]]  # the rows whose values differ from the last emitted ones
    time_from: int
    time_to: int
    tick_time: float  # epoch seconds of the tick
    lag_ms: int  # pipeline lag at this tick


TickListener = Callable[[KeyTick], Awaitable[None]]
AllTicksListener = Callable[[list[KeyTick]], Awaitable[None]]


@dataclass(slots=True)
class _KeyState:
    spec: KeySpec
    refs: int = 0
    watermark: int | None = None  # the last second a successful tick read up to
    last: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    failing_since: float | None = None
    stale_sent: bool = False
    listeners: list[TickListener] = field(default_factory=list)
    pruned_at: int = 0
    queries: int = 0  # queries this node ran for the key


class Watch:
    """A registration made by `Poller.watch`; `close()` ends it."""

    def __init__(self, poller: Poller, key: str, listener: TickListener):
        self._poller, self.key, self._listener = poller, key, listener
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._poller._unwatch(self.key, self._listener)


async def run_guarded(ch: ClickHouse, compiled: Any) -> Any:
    """Run a compiled query the way the API does: guard re-verified, and on chDB one
    parameterised query at a time (its parameter binding is not safe concurrently)."""
    try:
        from app.api.compiler import run
    except ImportError:  # pragma: no cover - the API module is optional for the push tier
        from app.querybuilder import run_compiled_async as run
    return await run(ch, compiled)


class Poller:
    def __init__(
        self,
        ch: ClickHouse,
        *,
        tick_ms: int = 250,
        reread_s: int = 5,
        retention_s: int = 600,
        stale_ms: int = 5000,
        lag_source: Callable[[], float] | None = None,
        emit: Callable[[str, str, str], Awaitable[None]] | None = None,
        bus: Any = None,
        on_lag: Callable[[int], None] | None = None,
        concurrency: int = 8,
    ):
        self.ch = ch
        self.tick_ms = tick_ms
        self.reread_s = reread_s
        self.retention_s = retention_s
        self.stale_ms = stale_ms
        self.lag_source = lag_source or (lambda: 0.0)
        self.emit = emit  # async emit(key, kind, text): kind "d" delta / "c" control
        self.bus = bus
        self.on_lag = on_lag
        self.keys: dict[str, _KeyState] = {}
        self.owned: set[str] = set()
        self._tick_listeners: list[AllTicksListener] = []
        self._sem = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._tick_lock = asyncio.Lock()
        self.lag_ms = 0
        self._prev_lag_ms = 0
        # Counters for tests and benchmarks.
        self.ticks = 0
        self.queries = 0
        self.last_tick_s = 0.0

    # -- keys -----------------------------------------------------------------------------
    def acquire(self, spec: KeySpec) -> bool:
        """Add a reference to `spec.key`; True when the key just became active here."""
        state = self.keys.get(spec.key)
        if state is None:
            state = self.keys[spec.key] = _KeyState(spec)
        state.refs += 1
        return state.refs == 1

    def release(self, key: str) -> bool:
        """Drop a reference; True when the key is no longer active here."""
        state = self.keys.get(key)
        if state is None:
            return False
        state.refs -= 1
        if state.refs > 0:
            return False
        del self.keys[key]
        self.owned.discard(key)
        if self.bus is not None:
            self.bus.release_soon(key)
        return True

    def watch(self, spec: KeySpec, listener: TickListener) -> Watch:
        """The alerts hook: keep `spec` polled (sharing the query with any viewers of the
        same key) and call `listener(KeyTick)` after every tick that read it on this node."""
        self.acquire(spec)
        self.keys[spec.key].listeners.append(listener)
        return Watch(self, spec.key, listener)

    def _unwatch(self, key: str, listener: TickListener) -> None:
        state = self.keys.get(key)
        if state is not None:
            with contextlib.suppress(ValueError):
                state.listeners.remove(listener)
            self.release(key)

    def add_tick_listener(self, listener: AllTicksListener) -> Callable[[], None]:
        """Call `listener(list[KeyTick])` after every tick (all keys polled here); returns
        a function that removes it."""
        self._tick_listeners.append(listener)
        return lambda: self._tick_listeners.remove(listener)

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and self.tick_ms > 0:
            self._task = asyncio.create_task(self._run(), name="push-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        period = self.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a tick must never kill the loop
                log.exception("push tick failed")
            next_at += period
            delay = next_at - loop.time()
            if delay < 0:  # behind: skip missed ticks instead of bunching them
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def tick(self, now: float | None = None) -> list[KeyTick]:
        """One poll round; returns what each key polled here read. Safe to call from tests
        (`CLICKPULSE_PUSH_TICK_MS=0` leaves ticking to them)."""
        async with self._tick_lock:
            started = time.perf_counter()
            now = time.time() if now is None else now
            lag_ms = int(self.lag_source() * 1000)
            if self.bus is not None:
                lag_ms = await self.bus.report_lag(lag_ms)
            self._prev_lag_ms, self.lag_ms = self.lag_ms, lag_ms
            if self.on_lag is not None:
                self.on_lag(lag_ms)
            if self.bus is not None:
                owned, acquired = await self.bus.maintain_leases(list(self.keys))
                self.owned = owned & set(self.keys)
                if acquired:
                    marks = await self.bus.get_watermarks(acquired)
                    for key in acquired:
                        state = self.keys.get(key)
                        if state is not None:
                            state.last.clear()
                            state.watermark = marks.get(key)
            else:
                self.owned = set(self.keys)
            states = [self.keys[k] for k in self.owned if k in self.keys]
            results = await asyncio.gather(*(self._poll(s, now, lag_ms) for s in states))
            ticks = [r for r in results if r is not None]
            if self.bus is not None and ticks:
                await self.bus.set_watermarks({t.key: t.time_to - 1 for t in ticks})
            for tick in ticks:
                state = self.keys.get(tick.key)
                for listener in list(state.listeners) if state else ():
                    try:
                        await listener(tick)
                    except Exception:
                        log.exception("tick listener failed for key %s", tick.key)
            for listener in list(self._tick_listeners):
                try:
                    await listener(ticks)
                except Exception:
                    log.exception("tick listener failed")
            self.ticks += 1
            self.last_tick_s = time.perf_counter() - started
            return ticks

    async def _poll(self, state: _KeyState, now: float, lag_ms: int) -> KeyTick | None:
        spec = state.spec
        now_s = int(now)
        catch_up = math.ceil(max(lag_ms, self._prev_lag_ms) / 1000)
        mark = now_s if state.watermark is None else min(state.watermark, now_s)
        lo = max(mark - self.reread_s - catch_up, now_s - self.retention_s + 1)
        hi = now_s + 1
        try:
            async with self._sem:
                self.queries += 1
                state.queries += 1
                result = await run_guarded(self.ch, spec.bind(lo, hi))
        except Exception as exc:
            if state.failing_since is None:
                state.failing_since = now
                log.warning("push poll failed for key %s: %s", spec.key, exc)
            down_ms = int((now - state.failing_since) * 1000)
            if down_ms >= self.stale_ms and self.emit is not None:
                state.stale_sent = True
                text = protocol.encode({"type": "stale", "key": spec.key, "lag_ms": down_ms})
                await self.emit(spec.key, "c", text)
            return None
        if state.failing_since is not None:
            state.failing_since = None
            if state.stale_sent and self.emit is not None:
                state.stale_sent = False
                await self.emit(spec.key, "c", protocol.encode({"type": "live", "key": spec.key}))
        rows = result.dicts()
        changed = []
        last = state.last
        for row in rows:
            rk = spec.row_key(row)
            values = spec.values(row)
            if last.get(rk) != values:
                last[rk] = values
                changed.append(row)
        state.watermark = now_s
        if now_s - state.pruned_at >= 10:
            state.pruned_at = now_s
            horizon = now_s - self.retention_s
            for rk in [rk for rk in last if rk[0] < horizon]:
                del last[rk]
        if changed and self.emit is not None:
            text = protocol.encode({"type": "delta", "key": spec.key, "rows": changed})
            await self.emit(spec.key, "d", text)
        return KeyTick(spec.key, spec, rows, changed, lo, hi, now, lag_ms)
