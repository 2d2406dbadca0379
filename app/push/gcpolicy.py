"""The push tier's collection policy: sockets are long-lived, so keep them out of full scans.

Every open socket keeps a few hundred tracked objects (its transport, queues, tasks, key set)
alive for minutes or hours. CPython's full (generation 2) collection re-scans every tracked
object: at 19,500 sockets that is a 0.6–1.2 s stop of the event loop every few seconds, the
whole tail of "second's start → last viewer" (docs/benchmarks.md, "Push (b)").

`SocketHeap` moves what is alive into the permanent generation (`gc.freeze()`: a list splice,
no scan) whenever enough sockets opened since the last freeze, so full collections only see
objects younger than the last wave of connections. The cost: cyclic garbage among frozen
objects (a closed socket's reference cycles) is not collected while frozen — refcounting still
frees everything acyclic. So once enough frozen sockets have closed, at most every
`thaw_interval_s`, the heap is thawed, collected once (one planned pause, instead of one every
few seconds) and frozen again. docs/push.md, "Collection policy".
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class SocketHeap:
    """Freeze after every `freeze_every` opened sockets (at most every `min_interval_s`); thaw
    and collect once `thaw_after` frozen sockets closed (at most every `thaw_interval_s`)."""

    def __init__(
        self,
        *,
        freeze_every: int = 256,
        min_interval_s: float = 2.0,
        thaw_after: int = 4096,
        thaw_interval_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.freeze_every = max(int(freeze_every), 1)
        self.min_interval_s = min_interval_s
        self.thaw_after = max(int(thaw_after), 1)
        self.thaw_interval_s = thaw_interval_s
        self._clock = clock
        self._opened = 0  # sockets opened since the last freeze
        self._closed = 0  # sockets closed since the last thaw
        self._frozen_at = float("-inf")
        self._thawed_at = clock()
        self.freezes = 0
        self.thaws = 0

    def opened(self) -> None:
        """A socket was registered: freeze the heap when a wave of them has opened."""
        self._opened += 1
        now = self._clock()
        if self._opened >= self.freeze_every and now - self._frozen_at >= self.min_interval_s:
            gc.freeze()
            self._opened = 0
            self._frozen_at = now
            self.freezes += 1

    def closed(self) -> None:
        """A socket was dropped: thaw, collect and freeze again once enough have closed."""
        self._closed += 1
        now = self._clock()
        if self._closed >= self.thaw_after and now - self._thawed_at >= self.thaw_interval_s:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._closed = 0
            self._thawed_at = self._frozen_at = now
            self.thaws += 1
