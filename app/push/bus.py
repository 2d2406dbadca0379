"""Cross-node push over Redis: leader leases, one pub/sub subscriber per process, lag reports.

Exactly one node polls a key at a time (a lease per key, renewed every tick; a dead node's
keys are taken over within the lease time plus a tick, from the stored watermark, so the
series has no gap). The holder publishes each key's deltas, and every process delivers from
its one pub/sub connection, subscribed only to the keys its sockets need. Nodes also share
their writer lag and the seconds each INSERT touched (late rows, app/push/late.py). See
docs/push.md, section "Across nodes"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

log = logging.getLogger("clickpulse.push.bus")

_RENEW_OR_ACQUIRE = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisBus:
    def __init__(
        self,
        redis: Any,
        *,
        node_id: str,
        namespace: str,
        lease_ms: int = 5000,
        on_key_message: Callable[[str, str, str], None],
        on_org_message: Callable[[int, str], None],
        on_late_rows: Callable[[dict[int, tuple[int, int]]], None] | None = None,
    ):
        self.redis = redis
        self.node_id = node_id
        self.prefix = f"clickpulse:{namespace}:push:"
        self.lease_ms = lease_ms
        self.on_key_message = on_key_message
        self.on_org_message = on_org_message
        self.on_late_rows = on_late_rows
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._renew = redis.register_script(_RENEW_OR_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._held: set[str] = set()
        self._to_release: set[str] = set()
        self._org_channel = self.prefix + "org"
        self._late_channel = self.prefix + "late"
        self._lag_hash = self.prefix + "lag"
        self.cluster_lag_ms = 0

    def channel(self, key: str) -> str:
        return f"{self.prefix}k:{key}"

    # -- subscriber -----------------------------------------------------------------------
    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        waiters = [self._expect(self._org_channel), self._expect(self._late_channel)]
        await self._pubsub.subscribe(self._org_channel, self._late_channel)
        self._reader = asyncio.create_task(self._read(), name="push-redis-reader")
        await asyncio.wait_for(asyncio.gather(*waiters), 5)

    async def stop(self) -> None:
        held = list(self._held | self._to_release)
        self._held.clear()
        self._to_release.clear()
        with contextlib.suppress(Exception):
            for key in held:
                await self._release(keys=[self._lease(key)], args=[self.node_id])
            await self.redis.hdel(self._lag_hash, self.node_id)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    def _expect(self, channel: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(fut)
        return fut

    async def subscribe_key(self, key: str) -> None:
        """Subscribe this process to `key`'s channel; returns once Redis confirmed it."""
        channel = self.channel(key)
        waiter = self._expect(channel)
        await self._pubsub.subscribe(channel)
        await asyncio.wait_for(waiter, 5)

    async def unsubscribe_key(self, key: str) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe(self.channel(key))

    async def _read(self) -> None:
        key_prefix = self.prefix + "k:"
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis subscriber: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                continue
            channel = msg["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            kind = msg["type"]
            if kind == "subscribe":
                for fut in self._confirm.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)
                continue
            if kind != "message":
                continue
            data = msg["data"]
            text = data.decode() if isinstance(data, bytes) else data
            try:
                if channel == self._org_channel:
                    org, _, payload = text.partition("\n")
                    self.on_org_message(int(org), payload)
                elif channel == self._late_channel:
                    node, _, payload = text.partition("\n")
                    if node != self.node_id and self.on_late_rows is not None:
                        ranges = msgspec.json.decode(payload, type=dict[int, tuple[int, int]])
                        self.on_late_rows(ranges)
                elif channel.startswith(key_prefix):
                    self.on_key_message(channel[len(key_prefix) :], text[:1], text[1:])
            except Exception:
                log.exception("push delivery failed")

    # -- publishing -----------------------------------------------------------------------
    async def publish_key(self, key: str, kind: str, text: str) -> None:
        await self.redis.publish(self.channel(key), kind + text)

    async def publish_org(self, org_id: int, text: str) -> None:
        await self.redis.publish(self._org_channel, f"{org_id}\n{text}")

    async def publish_late_rows(self, ranges: dict[int, tuple[int, int]]) -> None:
        """Tell the other nodes which seconds of which org this node's writer just inserted."""
        payload = msgspec.json.encode(ranges).decode()
        await self.redis.publish(self._late_channel, f"{self.node_id}\n{payload}")

    # -- leases ---------------------------------------------------------------------------
    def _lease(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    def release_soon(self, key: str) -> None:
        """A key is no longer active here: give its lease up at the next tick."""
        if key in self._held:
            self._held.discard(key)
            self._to_release.add(key)

    async def maintain_leases(self, keys: list[str]) -> tuple[set[str], set[str]]:
        """Renew the leases we hold, try to take free ones; (held now, newly acquired)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self._to_release:
            await self._release(keys=[self._lease(key)], args=[self.node_id], client=pipe)
        for key in keys:
            await self._renew(
                keys=[self._lease(key)], args=[self.node_id, self.lease_ms], client=pipe
            )
        results = await pipe.execute()
        self._to_release.clear()
        answers = results[len(results) - len(keys) :]
        held = {k for k, r in zip(keys, answers, strict=True) if int(r) in (1, 2)}
        acquired = {k for k, r in zip(keys, answers, strict=True) if int(r) == 2}
        lost = self._held - held
        if lost:
            log.info("node %s no longer leads %d keys", self.node_id, len(lost))
        self._held = held
        return held, acquired

    async def get_watermarks(self, keys: set[str]) -> dict[str, int]:
        ordered = list(keys)
        values = await self.redis.mget([f"{self.prefix}wm:{k}" for k in ordered])
        return {k: int(v) for k, v in zip(ordered, values, strict=True) if v is not None}

    async def set_watermarks(self, marks: dict[str, int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, mark in marks.items():
            pipe.set(f"{self.prefix}wm:{key}", mark, px=600_000)
        await pipe.execute()

    # -- lag ------------------------------------------------------------------------------
    async def report_lag(self, lag_ms: int) -> int:
        """Record this node's writer lag; answer the largest lag reported in the last 3 s."""
        now_ms = int(time.time() * 1000)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self._lag_hash, self.node_id, f"{lag_ms}:{now_ms}")
            pipe.hgetall(self._lag_hash)
            _, entries = await pipe.execute()
        except Exception as exc:
            log.warning("redis lag report failed: %s", exc)
            return lag_ms
        worst = lag_ms
        for node, value in entries.items():
            lag, _, at = (value.decode() if isinstance(value, bytes) else value).partition(":")
            if now_ms - int(at) > 3000:
                with contextlib.suppress(Exception):
                    await self.redis.hdel(self._lag_hash, node)
                continue
            worst = max(worst, int(lag))
        self.cluster_lag_ms = worst
        return worst
