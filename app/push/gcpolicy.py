"""The push tier's collection policy: sockets and live keys are long-lived, so keep them out of
full scans.

An open socket keeps a few hundred tracked objects alive for minutes or hours, a live key ~20 (its
compiled query, batch member, last-emitted rows). CPython's full collection re-scans all of them:
at 19,500 sockets a 0.6–1.2 s stop of the event loop every few seconds; at 10,000 keys one every
round or two, 115 ms each (docs/benchmarks.md, "Push (b)", "Push (d)"). The hub counts sockets,
the poller keys.

`LongLivedHeap` moves what is alive into the permanent generation (`gc.freeze()`: a list splice,
no scan) whenever enough arrived since the last freeze, so full collections only see younger
objects. Cyclic garbage among frozen objects (a closed socket's reference cycles) is not collected
while frozen, so once enough have gone, at most every `thaw_interval_s`, the heap is thawed,
collected once and frozen again. docs/push.md, "Collection policy".
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class LongLivedHeap:
    """Freeze after every `freeze_every` opened sockets or keys (at most every
    `min_interval_s`), and at the next `settle` for fewer; thaw and collect once `thaw_after`
    frozen ones closed (at most every `thaw_interval_s`)."""

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
        self._opened = 0  # sockets/keys opened since the last freeze
        self._closed = 0  # sockets/keys closed since the last thaw
        self._frozen_at = float("-inf")
        self._thawed_at = clock()
        self.freezes = 0
        self.thaws = 0

    def opened(self) -> None:
        """A socket was registered or a key became live: freeze the heap when a wave of them
        has opened."""
        self._opened += 1
        if self._opened >= self.freeze_every:
            self._freeze_if_due()

    def settle(self) -> None:
        """Freeze what opened since the last freeze, however few, once `min_interval_s` has
        passed (the poller calls this at each round's start): a burst of keys acquired
        within the interval of a freeze would otherwise stay young until the next wave."""
        if self._opened:
            self._freeze_if_due()

    def _freeze_if_due(self) -> None:
        now = self._clock()
        if now - self._frozen_at >= self.min_interval_s:
            gc.freeze()
            self._opened = 0
            self._frozen_at = now
            self.freezes += 1

    def closed(self) -> None:
        """A socket was dropped or a key released: thaw, collect and freeze again once enough
        have closed."""
        self._closed += 1
        now = self._clock()
        if self._closed >= self.thaw_after and now - self._thawed_at >= self.thaw_interval_s:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._closed = 0
            self._thawed_at = self._frozen_at = now
            self.thaws += 1
