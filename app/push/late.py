"""Late rows: which seconds of which org changed after the poller's re-read window passed them,
so a live series converges to history (the WAL draining after an outage, old client events).
Seconds come in two ways: reported by the ingest writer after each INSERT (and, with Redis, by
the other nodes), and, as the fallback, a periodic re-read of every key's whole range,
staggered by org. Kept apart from the poller, which only asks `reread_from` for each key it
polls, so another poller can use the same thing. See docs/push.md, section "Late rows"."""

from __future__ import annotations

import zlib


class LateRows:
    """The seconds each org's keys must re-read beyond the regular window, round by round."""

    def __init__(self, *, full_reread_s: int = 30) -> None:
        self.full_reread_s = max(int(full_reread_s), 0)
        self._pending: dict[int, tuple[int, int]] = {}  # org -> (first, last) second reported
        self._round: dict[int, tuple[int, int]] = {}  # what this round re-reads
        self._full_at: dict[str, int] = {}  # key -> the period slot it was last read in
        # (org, period) -> the org's point in the period (asked for every key every round)
        self._offset: dict[tuple[int, int], int] = {}
        self.reported = 0  # reports received (tests, introspection)
        self.full_rereads = 0
        self.late_rereads = 0

    def note(self, ranges: dict[int, tuple[int, int]]) -> None:
        """Rows were inserted for these orgs between these seconds (inclusive, epoch s)."""
        for org_id, (first, last) in ranges.items():
            org_id, first, last = int(org_id), int(first), int(last)
            seen = self._pending.get(org_id)
            self._pending[org_id] = (
                (first, last) if seen is None else (min(seen[0], first), max(seen[1], last))
            )
            self.reported += 1

    def begin_round(self) -> None:
        """Take what was reported since the last round: this round's keys re-read it."""
        self._round, self._pending = self._pending, {}

    def inserted(self, org_id: int) -> bool:
        """Rows were reported for `org_id` since the last round (the poller's cue that the
        org's keys may have changed; without one, only the periodic poll-all round reads them)."""
        return org_id in self._round

    def reread_from(self, key: str, org_id: int, now_s: int, lowest: int) -> int | None:
        """The first second `key` must re-read this round beyond its regular window (never
        before `lowest`, the oldest second it serves), or None."""
        start = None
        reported = self._round.get(org_id)
        if reported is not None:
            start = max(reported[0], lowest)
            self.late_rereads += 1
        period = self.full_reread_s
        if period:
            # Staggered by org, not by key: an org's keys re-read their whole range in the same
            # round (so the poller still reads them in one statement), orgs spread over the
            # period at points fixed by the org's hash. A key's first slot only starts its clock.
            offset = self._offset.get((org_id, period))
            if offset is None:
                offset = zlib.crc32(str(org_id).encode()) % period
                self._offset[(org_id, period)] = offset
            slot = (now_s + offset) // period
            last = self._full_at.get(key)
            self._full_at[key] = slot
            if last is not None and slot != last:
                start = lowest
                self.full_rereads += 1
        return start

    def forget(self, key: str) -> None:
        """The key is no longer polled here."""
        self._full_at.pop(key, None)
