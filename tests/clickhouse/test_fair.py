"""The fair pool in front of the facade's worker threads (app/clickhouse/fair.py).

Deterministic: calls block on threading events the test releases; what ran when is read from
the order calls started in and from the pool's own accounting, never from wall time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.clickhouse.fair import FairPool, PoolBusy

A, B, C = 1, 2, 3


class Blocking:
    """Calls that record when they start and hold their worker until released."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.started: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def call(self, name: str):
        self.started[name] = threading.Event()
        self.release[name] = threading.Event()

        def work() -> str:
            with self._lock:
                self.order.append(name)
            self.started[name].set()
            if not self.release[name].wait(30):
                raise RuntimeError(f"{name} was never released")
            return name

        return work

    async def wait_started(self, name: str) -> None:
        assert await asyncio.to_thread(self.started[name].wait, 10), f"{name} never started"

    def release_all(self) -> None:
        for event in self.release.values():
            event.set()


async def submit(pool: FairPool, calls: Blocking, tenant, name: str) -> asyncio.Task:
    task = asyncio.create_task(pool.run(tenant, calls.call(name)))
    await asyncio.sleep(0)  # let it enqueue (dispatch is synchronous inside run)
    return task


@pytest.fixture
def pool():
    pools: list[FairPool] = []

    def make(workers: int, **kwargs) -> FairPool:
        pools.append(FairPool(workers, **kwargs))
        return pools[-1]

    yield make
    for p in pools:
        p.close()


async def test_another_org_starts_before_a_flooding_orgs_queued_calls(pool):
    """Pool of 2, org A submits 20 blocking queries: A holds one worker (never both), and org
    B's query starts on the other at once, ahead of A's 19 queued ones."""
    p, calls = pool(2), Blocking()
    tasks = [await submit(p, calls, A, f"a{i}") for i in range(20)]
    await calls.wait_started("a0")
    assert p.snapshot() == {"idle": 1, "running": {A: 1}, "waiting": {A: 19}}
    tasks.append(await submit(p, calls, B, "b0"))
    await calls.wait_started("b0")
    assert calls.order == ["a0", "b0"]
    assert p.snapshot() == {"idle": 0, "running": {A: 1, B: 1}, "waiting": {A: 19}}
    calls.release_all()
    assert sorted(await asyncio.gather(*tasks)) == sorted([f"a{i}" for i in range(20)] + ["b0"])
    assert p.snapshot() == {"idle": 2, "running": {}, "waiting": {}}
    assert calls.order[:2] == ["a0", "b0"] and len(calls.order) == 21


async def test_the_next_free_worker_goes_to_the_org_with_fewest_running(pool):
    """Pool of 4 busy (A 3, C 1), A has 17 queued before B asks: the first worker that frees
    goes to B (0 running), not to A's older queued calls; then shares converge."""
    p, calls = pool(4, max_per_tenant=3), Blocking()
    tasks = [await submit(p, calls, A, f"a{i}") for i in range(20)]
    for i in range(3):
        await calls.wait_started(f"a{i}")
    tasks.append(await submit(p, calls, C, "c0"))
    await calls.wait_started("c0")
    tasks += [await submit(p, calls, B, f"b{i}") for i in range(3)]
    assert p.snapshot() == {"idle": 0, "running": {A: 3, C: 1}, "waiting": {A: 17, B: 3}}

    calls.release["a0"].set()  # one of A's finishes
    await calls.wait_started("b0")
    assert calls.order == ["a0", "a1", "a2", "c0", "b0"]
    calls.release["a1"].set()  # A 1 running, B 1, C 1: the tie goes to the oldest waiter (A)
    await calls.wait_started("a3")
    calls.release["c0"].set()  # C leaves: B (1 running) before A (2 running)
    await calls.wait_started("b1")
    assert calls.order[5:] == ["a3", "b1"]
    assert p.snapshot()["running"] == {A: 2, B: 2}
    calls.release_all()
    await asyncio.gather(*tasks)


async def test_one_org_alone_holds_at_most_half_the_pool(pool):
    p, calls = pool(4), Blocking()
    assert p.cap == 2  # the default: half the workers
    tasks = [await submit(p, calls, A, f"a{i}") for i in range(6)]
    for i in range(2):
        await calls.wait_started(f"a{i}")
    assert p.snapshot() == {"idle": 2, "running": {A: 2}, "waiting": {A: 4}}
    # The process's own work (no org) is a lane like any other: it gets a free worker, and
    # so does another org, at once, ahead of A's queued calls.
    tasks.append(await submit(p, calls, None, "health"))
    tasks.append(await submit(p, calls, B, "b0"))
    await calls.wait_started("health")
    await calls.wait_started("b0")
    assert calls.order == ["a0", "a1", "health", "b0"]
    calls.release_all()
    await asyncio.gather(*tasks)
    assert len(calls.order) == 8
    # A pool of one cannot keep a worker back: its single tenant gets it.
    single, more = pool(1), Blocking()
    assert single.cap == 1
    task = await submit(single, more, A, "only")
    await more.wait_started("only")
    more.release_all()
    assert await task == "only"
    assert pool(8).cap == 4 and pool(8, max_per_tenant=7).cap == 7 and pool(3).cap == 1


async def test_a_call_waits_at_most_max_wait_then_pool_busy(pool):
    p, calls = pool(2, max_wait_s=0.05), Blocking()
    held = await submit(p, calls, A, "a0")
    await calls.wait_started("a0")
    with pytest.raises(PoolBusy) as exc:
        await p.run(A, calls.call("a1"))  # A's share (1 of 2) is held: no worker for it
    # the wait is jittered down to between half and all of max_wait_s
    assert exc.value.tenant == A and exc.value.waited_s >= 0.025
    assert p.rejected == 1
    assert p.snapshot() == {"idle": 1, "running": {A: 1}, "waiting": {}}  # dropped from queue
    assert "a1" not in calls.order
    # Another org is not affected by A's backlog.
    other = await submit(p, calls, B, "b0")
    await calls.wait_started("b0")
    calls.release_all()
    assert await held == "a0" and await other == "b0"


async def test_cancelled_calls_leave_the_queue_and_running_ones_keep_their_worker(pool):
    p, calls = pool(2), Blocking()
    running = await submit(p, calls, A, "a0")
    await calls.wait_started("a0")
    waiting = await submit(p, calls, A, "a1")
    assert p.snapshot()["waiting"] == {A: 1}
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert p.snapshot() == {"idle": 1, "running": {A: 1}, "waiting": {}}
    # A caller that gives up on a running call (a timeout) does not free the thread.
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert p.snapshot()["running"] == {A: 1}
    calls.release["a0"].set()
    for _ in range(200):
        if p.snapshot()["running"] == {}:
            break
        await asyncio.sleep(0.01)
    assert p.snapshot() == {"idle": 2, "running": {}, "waiting": {}}
    assert calls.order == ["a0"]


async def test_errors_reach_the_caller_and_free_the_worker(pool):
    p = pool(2)

    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await p.run(A, fails)
    assert await p.run(A, lambda x: x + 1, 41) == 42
    assert p.snapshot() == {"idle": 2, "running": {}, "waiting": {}}


def test_the_facade_shares_its_workers_by_org(ch_root):
    import os

    from app.clickhouse import EmbeddedClickHouse

    def cap(**kw) -> int:
        engine = EmbeddedClickHouse(database="default", data_dir=ch_root.data_dir, **kw)
        try:
            return engine.pool.cap
        finally:
            engine.close()

    # embedded: half the workers, and no more than the cores (each chDB query uses them all)
    assert cap(max_workers=8) == min(4, os.cpu_count())
    assert cap(max_workers=2) == 1
    assert cap(max_workers=8, org_workers=6) == 6  # configured: as configured
    assert ch_root.with_database("other").pool.workers == ch_root.max_workers
