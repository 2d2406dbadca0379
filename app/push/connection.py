"""One WebSocket's outbound side: a bounded, coalescing queue drained by its own writer task.

* Control messages (snapshot, error, pong, stale/live, alert) queue in order.
* Deltas of a key share one slot while unsent: a delta arriving while the previous one of the
  same key still waits is merged into it (rows by (t, dims), latest wins), so a client that
  falls behind gets fewer, fresher messages instead of an ever-growing backlog.
* A socket whose oldest queued message has waited more than `slow_s`, or with more than
  `max_queue` queued messages, is closed with 4408 "slow consumer". Its writer task is its own,
  so a slow socket never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from app.push import protocol

log = logging.getLogger("clickpulse.push.connection")

_delta_decoder = msgspec.json.Decoder()


class _DeltaSlot:
    __slots__ = ("at", "key", "parts")

    def __init__(self, key: str, text: str, at: float):
        self.key = key
        self.parts = [text]
        self.at = at


def merge_deltas(key: str, parts: list[str], id_columns: tuple[str, ...]) -> str:
    """One delta equivalent to applying `parts` in order (rows keyed by t + dims)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for text in parts:
        for row in _delta_decoder.decode(text)["rows"]:
            merged[tuple(row.get(c) for c in id_columns)] = row
    rows = sorted(merged.values(), key=lambda r: r.get("t", 0))
    return protocol.encode({"type": "delta", "key": key, "rows": rows})


class Connection:
    """A subscriber socket. `send` is the ASGI send callable."""

    # True for app.push.dedicated.DirectConnection: the hub hands caught-up ones (`writable`)
    # a delta in one `send_all` call instead of queueing it per socket.
    direct = False
    # A public dashboard link's socket: its `SharePrincipal` (None: a user's token or ticket).
    share: Any = None

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        org_id: int,
        user_id: int,
        max_queue: int,
        slow_s: float,
        id_columns: Callable[[str], tuple[str, ...]],
        token_hash: str = "",
    ):
        self._send = send
        self.org_id = org_id
        self.user_id = user_id
        self.token_hash = token_hash  # the credential, re-checked against revocation
        self.max_queue = max_queue
        self.slow_s = slow_s
        self._id_columns = id_columns
        self.subs: dict[Any, str] = {}  # subscription id -> key
        self.key_ids: dict[str, set[Any]] = {}  # key -> subscription ids
        self.pending: dict[str, list[tuple[str, str]]] = {}  # key -> deltas held until snapshot
        self._queue: deque[str | _DeltaSlot] = deque()
        self._slots: dict[str, _DeltaSlot] = {}
        self._times: deque[float] = deque()  # enqueue time of each control message
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write(), name="push-writer")
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.stale = False
        self.sent = 0
        self.coalesced = 0

    # -- queueing -------------------------------------------------------------------------
    def _head_age(self) -> float:
        if not self._queue:
            return 0.0
        head = self._queue[0]
        at = head.at if isinstance(head, _DeltaSlot) else self._times[0]
        return self._loop.time() - at

    def _check_behind(self) -> bool:
        if len(self._queue) > self.max_queue or self._head_age() > self.slow_s:
            self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer")
            return True
        return False

    def send_text(self, text: str) -> None:
        if self.close_code is not None or self._check_behind():
            return
        self._queue.append(text)
        self._times.append(self._loop.time())
        self._wake.set()

    def send_delta(self, key: str, kind: str, text: str) -> None:
        """A key-addressed message from the poller: held while the key's snapshot is being
        built, coalesced with an unsent delta of the same key."""
        if self.close_code is not None:
            return
        held = self.pending.get(key)
        if held is not None:
            held.append((kind, text))
            return
        if kind != "d":
            self.send_text(text)
            return
        slot = self._slots.get(key)
        if slot is not None:
            slot.parts.append(text)
            self.coalesced += 1
            self._check_behind()
            return
        if self._check_behind():
            return
        slot = self._slots[key] = _DeltaSlot(key, text, self._loop.time())
        self._queue.append(slot)
        self._wake.set()

    def hold(self, key: str) -> None:
        self.pending.setdefault(key, [])

    def release_held(self, key: str) -> None:
        for kind, text in self.pending.pop(key, []):
            self.send_delta(key, kind, text)

    # -- writing --------------------------------------------------------------------------
    def _next_text(self) -> str:
        """Take the oldest queued item: a coalesced delta slot (merged if several deltas
        landed in it) or a message queued as is."""
        item = self._queue.popleft()
        if isinstance(item, _DeltaSlot):
            del self._slots[item.key]
            if len(item.parts) == 1:
                return item.parts[0]
            return merge_deltas(item.key, item.parts, self._id_columns(item.key))
        self._times.popleft()
        return item

    async def _write(self) -> None:
        try:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                await self._send({"type": "websocket.send", "text": self._next_text()})
                self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away under us
            self.close(protocol.CLOSE_GOING_AWAY, "")

    def close(self, code: int, reason: str) -> None:
        """Stop writing and close the socket (at most once); never blocks the caller."""
        if self.close_code is not None:
            return
        self.close_code = code
        self._writer.cancel()
        self._queue.clear()
        self._slots.clear()
        self._times.clear()
        self._loop.create_task(self._send_close(code, reason))

    async def _send_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}), 5
            )
        self.closed.set()

    async def wait_writer(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer
