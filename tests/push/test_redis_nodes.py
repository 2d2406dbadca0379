"""Two push nodes (two app instances, each served by its own uvicorn) sharing a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.push.conftest import by_t, events, now_ms, recv_type, subscribe

METRIC = "SELECT count() AS n"


async def test_one_leader_deltas_on_both_nodes_and_takeover(make_node, org, redis_url):
    async with (
        make_node(redis_url, push_lease_ms=1000) as a,
        make_node(redis_url, push_lease_ms=1000) as b,
    ):
        ws_a = await a.connect(org.admin_token)
        ws_b = await b.connect(org.admin_token)
        snap_a = await subscribe(ws_a, id="x", metric=METRIC, range_s=60)
        snap_b = await subscribe(ws_b, id="x", metric=METRIC, range_s=60)
        key = snap_a["key"]
        assert snap_b["key"] == key

        base = now_ms() // 1000 * 1000
        t = base - 4000
        await a.post(org.api_key, events("x", 3, t))
        for _ in range(3):
            await a.tick()
            await b.tick()
        # Exactly one node leads (and polls) the key.
        assert a.hub.poller.owned | b.hub.poller.owned == {key}
        assert not (a.hub.poller.owned & b.hub.poller.owned)
        leader, follower = (a, b) if key in a.hub.poller.owned else (b, a)
        assert follower.hub.poller.queries == 0 and leader.hub.poller.queries == 3
        for ws in (ws_a, ws_b):
            assert by_t((await recv_type(ws, "delta"))["rows"], "n")[t // 1000] == 3

        # The leader dies without releasing its lease (its poller just stops); events keep
        # arriving; the follower takes over within the lease and re-reads from the leader's
        # watermark, so its clients see no gap.
        await leader.hub.poller.stop()
        leader.hub.poller.tick = _dead  # type: ignore[method-assign]
        dead_at = time.monotonic()
        t2 = base
        await follower.post(org.api_key, events("x", 2, t2 - 1000) + events("x", 5, t2))
        follower_ws = ws_b if follower is b else ws_a
        while key not in follower.hub.poller.owned:
            assert time.monotonic() - dead_at < 5, "no takeover within the lease"
            await asyncio.sleep(0.1)
            await follower.tick()
        # The new leader's deltas (its first round may come before the rows of t2 were
        # inserted: it then sends them in the next), merged as a client applies them.
        got: dict[int, Any] = {}
        while t2 // 1000 not in got:
            assert time.monotonic() - dead_at < 10, f"no delta for {t2 // 1000}: {got}"
            got.update(by_t((await recv_type(follower_ws, "delta"))["rows"], "n"))
        assert got[t2 // 1000] == 5
        assert got[t2 // 1000 - 1] == 2  # the second before the takeover is there too
        await ws_a.close()
        await ws_b.close()


async def _dead(*_args, **_kwargs):
    return []


async def test_send_to_org_reaches_every_node(make_node, org, make_org, redis_url):
    other = await make_org("other")
    async with make_node(redis_url) as a, make_node(redis_url) as b:
        ws_a = await a.connect(org.admin_token)
        ws_b = await b.connect(org.admin_token)
        ws_other = await b.connect(other.admin_token)
        await a.hub.send_to_org(org.id, {"type": "alert", "rule": 7})
        for ws in (ws_a, ws_b):
            assert (await recv_type(ws, "alert"))["rule"] == 7
        await b.hub.send_to_org(other.id, {"type": "alert", "rule": 8})
        assert (await recv_type(ws_other, "alert"))["rule"] == 8
        for ws in (ws_a, ws_b, ws_other):
            await ws.close()


async def test_node_subscribes_only_to_needed_channels(make_node, org, redis_url):
    async with make_node(redis_url) as a:
        ws = await a.connect(org.admin_token)
        snap = await subscribe(ws, id=1, metric=METRIC, range_s=10)
        channels = {c.decode() if isinstance(c, bytes) else c for c in a.hub.bus._pubsub.channels}
        always = {a.hub.bus._org_channel, a.hub.bus._late_channel}
        assert channels == {a.hub.bus.channel(snap["key"]), *always}
        await ws.close()
        await asyncio.sleep(0.1)
        channels = {c.decode() if isinstance(c, bytes) else c for c in a.hub.bus._pubsub.channels}
        assert channels == always
