"""The push tier's collection policy (app/push/gcpolicy.py): waves of opened sockets move the
live heap into the permanent generation; enough closed sockets thaw, collect and freeze once."""

from __future__ import annotations

import gc
import weakref

import pytest

from app.push.gcpolicy import SocketHeap


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
    heap = SocketHeap(freeze_every=3, min_interval_s=2.0, clock=clock)
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
    heap = SocketHeap(
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
