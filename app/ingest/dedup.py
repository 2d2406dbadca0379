"""Event ids already stored, per org, remembered for a window: a repeated id is dropped.

Why here and not in ClickHouse: a ReplacingMergeTree would collapse duplicate raw rows only at
some later merge, and the rollups would still count them, so a duplicate must be dropped
before the INSERT, for every table at once. `EventIdWindow` keeps 64-bit hashes in two
generations; `claim`/`settle` serialise concurrent requests holding the same id, so two copies
never both pass. See docs/ingest.md, section "Idempotency: event ids and `Idempotency-Key`"."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("clickpulse.ingest.dedup")


@dataclass
class Claim:
    """The outcome of `EventIdWindow.claim`: which events of the batch to store."""

    keep: list[int]  # indexes of events to store (new ids and events without an id)
    duplicates: int  # events dropped: their id was stored already (or repeats in the batch)
    keys: list[int] = field(default_factory=list)  # the reserved id hashes
    done: asyncio.Future[None] | None = None


class EventIdWindow:
    """Recently stored event ids (see the module docstring)."""

    def __init__(self, window_s: float, max_ids: int) -> None:
        self.window_s = window_s
        self.max_ids = max(2, max_ids)
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._rotated_at = time.monotonic()
        self._inflight: dict[int, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    @staticmethod
    def key(org_id: int, event_id: str) -> int:
        # hash() of a tuple of int and str: SipHash, salted per process, which is all this
        # needs (the window lives in one process and is rebuilt at start).
        return hash((org_id, event_id))

    def _rotate_if_due(self) -> None:
        now = time.monotonic()
        by_age = now - self._rotated_at >= self.window_s
        if by_age or len(self._current) >= self.max_ids // 2:
            if not by_age:
                log.warning(
                    "event id window: %d ids in %.0f s, over CLICKPULSE_INGEST_EVENT_ID_MAX/2; "
                    "ids are now remembered for less than %d s",
                    len(self._current),
                    now - self._rotated_at,
                    self.window_s,
                )
            self._previous, self._current = self._current, set()
            self._rotated_at = now

    def seen(self, key: int) -> bool:
        return key in self._current or key in self._previous

    def add(self, keys: list[int] | set[int]) -> None:
        """Remember ids stored (or about to be: replayed from the WAL) outside `claim`."""
        for key in keys:
            self._rotate_if_due()
            self._current.add(key)

    async def claim(self, org_id: int, event_ids: list[str]) -> Claim:
        """Split a batch into events to store and duplicates; reserve the new ids.

        `event_ids[i]` is event i's id ('' = none: always stored). Call `settle` afterwards,
        whatever happened.
        """
        keys = [self.key(org_id, e) if e else 0 for e in event_ids]
        while True:
            waits = {self._inflight[k] for k in keys if k and k in self._inflight}
            if not waits:
                break
            await asyncio.wait([asyncio.shield(w) for w in waits])
        self._rotate_if_due()
        keep: list[int] = []
        fresh: list[int] = []
        batch: set[int] = set()
        for i, (event_id, key) in enumerate(zip(event_ids, keys, strict=True)):
            if not event_id:
                keep.append(i)
            elif key in batch or self.seen(key):
                continue
            else:
                batch.add(key)
                fresh.append(key)
                keep.append(i)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in fresh:
            self._inflight[key] = done
        return Claim(keep, len(event_ids) - len(keep), fresh, done)

    def settle(self, claim: Claim, *, stored: bool) -> None:
        """The claimed events were stored (their ids are remembered) or not (released)."""
        for key in claim.keys:
            self._inflight.pop(key, None)
        if stored:
            self.add(claim.keys)
        if claim.done is not None and not claim.done.done():
            claim.done.set_result(None)
