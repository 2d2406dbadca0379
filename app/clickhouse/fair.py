"""Fair sharing of the facade's ClickHouse worker threads between orgs.

The facade runs every blocking driver call on N worker threads shared by the whole process; a
plain first-come-first-served pool lets one org with many slow queries queued make every other
org wait behind them. `FairPool` is the queue in front of those threads: calls queue per
tenant, a free worker goes to the tenant with the fewest calls running, no tenant holds more
than `max_per_tenant` threads, and a call that waits too long raises `PoolBusy` (a 429). No
preemption. The rules are in docs/api.md, section "Quotas against noisy neighbours" ("Fair
sharing of the ClickHouse pool"); the measured bound in docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Tenant = int | None


class PoolBusy(Exception):
    """A call waited longer than the pool's `max_wait_s` for a worker thread."""

    def __init__(self, tenant: Tenant, waited_s: float):
        super().__init__(f"no ClickHouse worker free for org {tenant} within {waited_s:.2f} s")
        self.tenant = tenant
        self.waited_s = waited_s


@dataclass(eq=False, slots=True)
class _Call:
    tenant: Tenant
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    started: asyncio.Future[None]
    done: asyncio.Future[Any]
    seq: int
    queued_at: float = field(default_factory=time.monotonic)


def _resolve(fut: asyncio.Future[Any], value: Any = None, error: BaseException | None = None):
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class FairPool:
    """`workers` threads handed out per tenant as described in the module docstring."""

    def __init__(
        self,
        workers: int,
        *,
        max_wait_s: float | None = None,
        max_per_tenant: int | None = None,
        name: str = "ch",
        executor: ThreadPoolExecutor | None = None,
    ):
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        # Half the pool stays free of any one tenant (see Headroom above).
        self.cap = max(1, min(max_per_tenant or workers // 2, workers))
        self.max_wait_s = max_wait_s
        self._executor = executor or ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name
        )
        self._lock = threading.Lock()
        self._idle = workers
        self._running: dict[Tenant, int] = {}
        self._waiting: dict[Tenant, deque[_Call]] = {}
        self._seq = itertools.count()
        self._closed = False
        self.rejected = 0  # calls that gave up waiting (PoolBusy)

    # -- the interface ---------------------------------------------------------------------
    async def run(self, tenant: Tenant, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a worker thread once the tenant's turn comes; its result or error."""
        loop = asyncio.get_running_loop()
        call = _Call(
            tenant,
            (lambda: fn(*args)) if args else fn,
            loop,
            loop.create_future(),
            loop.create_future(),
            next(self._seq),
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the ClickHouse pool is closed")
            self._waiting.setdefault(tenant, deque()).append(call)
            ready = self._pick_locked()
        self._launch(ready)
        try:
            if self.max_wait_s is None:
                await asyncio.shield(call.started)
            else:
                # Jittered down (to between half and all of it): calls that queued together
                # would otherwise give up together and their clients' retries arrive together.
                wait_s = self.max_wait_s * (0.5 + random.random() / 2)
                await asyncio.wait_for(asyncio.shield(call.started), wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if self._withdraw(call):
                if isinstance(exc, TimeoutError):
                    self.rejected += 1
                    raise PoolBusy(tenant, time.monotonic() - call.queued_at) from None
                raise
            # Dispatched meanwhile: it runs (and holds its worker) whatever we do now.
            if isinstance(exc, asyncio.CancelledError):
                raise
        return await call.done

    def snapshot(self) -> dict[str, Any]:
        """Running and waiting calls per tenant, and idle workers (for stats and tests)."""
        with self._lock:
            return {
                "idle": self._idle,
                "running": {t: n for t, n in self._running.items() if n},
                "waiting": {t: len(q) for t, q in self._waiting.items() if q},
            }

    def close(self) -> None:
        """Fail the calls still waiting, then wait for the running ones."""
        with self._lock:
            self._closed = True
            waiting = [c for q in self._waiting.values() for c in q]
            self._waiting.clear()
        for call in waiting:
            call.loop.call_soon_threadsafe(
                _resolve, call.started, None, RuntimeError("the ClickHouse pool was closed")
            )
        self._executor.shutdown(wait=True)

    # -- scheduling --------------------------------------------------------------------------
    def _pick_locked(self) -> list[_Call]:
        """Hand idle workers to waiting calls by the rules above (lock held)."""
        ready: list[_Call] = []
        while self._idle > 0:
            best: tuple[tuple[int, int], Tenant] | None = None
            for tenant, queue in self._waiting.items():
                running = self._running.get(tenant, 0)
                if not queue or running >= self.cap:
                    continue
                rank = (running, queue[0].seq)
                if best is None or rank < best[0]:
                    best = (rank, tenant)
            if best is None:
                break
            tenant = best[1]
            queue = self._waiting[tenant]
            call = queue.popleft()
            if not queue:
                del self._waiting[tenant]
            self._running[tenant] = self._running.get(tenant, 0) + 1
            self._idle -= 1
            ready.append(call)
        return ready

    def _withdraw(self, call: _Call) -> bool:
        """Take a call that has not started out of its queue; False if it already started."""
        with self._lock:
            queue = self._waiting.get(call.tenant)
            if queue is None or call not in queue:
                return False
            queue.remove(call)
            if not queue:
                del self._waiting[call.tenant]
            return True

    def _launch(self, calls: list[_Call]) -> None:
        for call in calls:
            # A caller whose event loop is gone: the call still runs and frees its worker.
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(_resolve, call.started)
            self._executor.submit(self._work, call)

    def _work(self, call: _Call) -> None:
        """Run one call on this worker thread, then give the worker to whoever is next."""
        value, error = None, None
        try:
            value = call.fn()
        except BaseException as exc:  # delivered to the awaiting task, never lost here
            error = exc
        # The worker is counted free before the caller sees the answer, so a caller never
        # observes its own finished call still holding a worker.
        with self._lock:
            self._running[call.tenant] -= 1
            if not self._running[call.tenant]:
                del self._running[call.tenant]
            self._idle += 1
            ready = [] if self._closed else self._pick_locked()
        self._deliver(call, value, error)
        self._launch(ready)

    @staticmethod
    def _deliver(call: _Call, value: Any, error: BaseException | None) -> None:
        # A caller whose event loop is gone: nobody is waiting for this answer.
        with contextlib.suppress(RuntimeError):
            call.loop.call_soon_threadsafe(_resolve, call.done, value, error)
