"""The push tier's collection policy (app/push/gcpolicy.py): waves of opened sockets move the
live heap into the permanent generation; enough closed sockets thaw, collect and freeze once."""

from __future__ import annotations

import gc
import weakref

import pytest

from app.push.gcpolicy import LongLivedHeap


@pytest.fixture
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_wave_of_sockets_freezes_the_heap_at_most_every_interval(thawed):
    clock = Clock()
    heap = LongLivedHeap(freeze_every=3, min_interval_s=2.0, clock=clock)
    sockets = [object() for _ in range(3)]  # stand-ins that stay alive, like open sockets
    heap.opened()
    heap.opened()
    assert heap.freezes == 0 and gc.get_freeze_count() == 0
    heap.opened()
    assert heap.freezes == 1 and gc.get_freeze_count() > 0
    for _ in range(5):  # another wave within the interval: no freeze yet
        heap.opened()
    assert heap.freezes == 1
    clock.now += 2.0
    heap.opened()
    assert heap.freezes == 2
    assert sockets


def test_closed_sockets_thaw_collect_and_refreeze_so_their_cycles_are_freed(thawed):
    class Socket:
        def __init__(self) -> None:
            self.me = self  # a reference cycle, as a closed socket's tasks and callbacks form

    clock = Clock()
    heap = LongLivedHeap(
        freeze_every=1, min_interval_s=0, thaw_after=2, thaw_interval_s=60, clock=clock
    )
    alive = [Socket(), Socket()]
    probes = [weakref.ref(s) for s in alive]
    heap.opened()
    heap.opened()
    assert gc.get_freeze_count() > 0
    alive.clear()  # both closed: their cycles are garbage, but frozen, so not collected
    gc.collect()
    assert all(p() is not None for p in probes)
    heap.closed()
    heap.closed()  # enough closed, but the interval since start has not passed
    assert heap.thaws == 0
    clock.now += 60
    heap.closed()
    assert heap.thaws == 1
    assert all(p() is None for p in probes)  # collected
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


def test_settle_freezes_what_arrived_since_the_last_freeze_once_the_interval_passed(thawed):
    clock = Clock()
    heap = LongLivedHeap(freeze_every=3, min_interval_s=2.0, clock=clock)
    heap.settle()
    assert heap.freezes == 0  # nothing arrived
    for _ in range(3):
        heap.opened()
    assert heap.freezes == 1
    heap.opened()  # a straggler of the burst, inside the interval: no wave follows it
    heap.settle()
    assert heap.freezes == 1
    clock.now += 2.0
    heap.settle()
    assert heap.freezes == 2
    clock.now += 5.0
    heap.settle()
    assert heap.freezes == 2  # nothing new since


def test_the_poller_counts_a_key_once_in_the_heap_when_it_becomes_live_and_when_released():
    from app.push.keys import make_key
    from app.push.poller import Poller

    class Counting(LongLivedHeap):
        def __init__(self) -> None:
            super().__init__(freeze_every=10**9)
            self.opened_n = self.closed_n = 0

        def opened(self) -> None:
            self.opened_n += 1

        def closed(self) -> None:
            self.closed_n += 1

    heap = Counting()
    poller = Poller(None, tick_ms=0, heap=heap)
    spec = make_key("SELECT count() AS n", org_id=1, database="db")
    assert poller.acquire(spec) and not poller.acquire(spec)
    assert (heap.opened_n, heap.closed_n) == (1, 0)
    assert not poller.release(spec.key)
    assert heap.closed_n == 0
    assert poller.release(spec.key)
    assert (heap.opened_n, heap.closed_n) == (1, 1)
