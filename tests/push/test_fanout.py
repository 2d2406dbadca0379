"""One query per key per tick whatever the number of viewers; the same bytes to all of them;
the alerts hook; stale/live; slow consumers."""

from __future__ import annotations

import asyncio
import threading

import msgspec

from app.push import protocol
from app.push.connection import Connection
from tests.push.conftest import by_t, drain, events, now_ms, recv, subscribe


async def test_twenty_clients_one_key_one_query_per_tick(node, org, ch):
    sockets = [await node.connect(org.admin_token) for _ in range(20)]
    try:
        keys = set()
        for i, ws in enumerate(sockets):
            snap = await subscribe(ws, id=i, metric="SELECT count() AS n", range_s=30)
            keys.add(snap["key"])
        other = await subscribe(
            sockets[0], id="g", metric="SELECT count() AS n", group_by=["event"]
        )
        assert len(keys) == 1 and other["key"] not in keys
        t = now_ms()
        await node.post(org.api_key, events("x", 6, t))
        raw = []
        for n in range(3):
            before = ch.query_count
            await node.tick()
            assert ch.query_count - before == 1  # two keys of one org, 21 subscriptions: one read
            if n == 0:
                (key,) = keys
                for ws in sockets:
                    while True:
                        text = await asyncio.wait_for(ws.recv(), 5)
                        if msgspec.json.decode(text)["key"] == key:
                            raw.append(text)
                            break
        first = msgspec.json.decode(raw[0])
        assert first["type"] == "delta" and by_t(first["rows"], "n")[t // 1000] == 6
        assert all(r == raw[0] for r in raw[1:])  # one encoding, the same text to everyone
    finally:
        for ws in sockets:
            await ws.close()


async def test_alert_hook_shares_the_viewers_query(node, org, ch):
    hub = node.hub
    spec = hub.key_for(org.id, "SELECT count() AS n")
    seen = []

    async def listener(tick):
        seen.append(tick)

    watch = hub.poller.watch(spec, listener)
    async with await node.connect(org.admin_token) as ws:
        snap = await subscribe(ws, id="v", metric="SELECT count() AS n", range_s=10)
        assert snap["key"] == spec.key
        t = now_ms()
        await node.post(org.api_key, events("x", 2, t))
        before = ch.query_count
        await node.tick()
        assert ch.query_count - before == 1
        assert len(seen) == 1 and seen[0].key == spec.key
        assert by_t(seen[0].rows, "n")[t // 1000] == 2
        assert by_t(seen[0].changed, "n")[t // 1000] == 2
        await node.tick()
        assert len(seen) == 2 and seen[1].changed == [] and seen[1].rows
    # The socket is gone; the watch keeps the key polled.
    await asyncio.sleep(0.05)
    await node.tick()
    assert len(seen) == 3
    watch.close()
    assert hub.poller.keys == {}


async def test_stale_then_live_when_the_writer_is_blocked(make_node, org):
    async with make_node(push_stale_ms=200) as node:
        writer = node.services.writer
        gate = threading.Event()
        original = writer._insert

        def blocked(batch):
            gate.wait(30)
            return original(batch)

        writer._insert = blocked
        async with await node.connect(org.admin_token) as ws:
            await subscribe(ws, id="s", metric="SELECT count() AS n", range_s=10)
            t = now_ms()
            response = await node.http.post(
                "/v1/events", json=events("x", 5, t), headers=org.ingest_headers
            )
            assert response.status_code in (200, 202)
            while writer.oldest_pending_age_s() < 0.3:
                await asyncio.sleep(0.05)
            await node.tick()
            stale = await recv(ws)
            assert stale["type"] == "stale" and stale["lag_ms"] >= 200
            gate.set()
            writer._insert = original
            await writer.wait_inserted()
            await node.tick()
            msgs = await drain(ws)
            assert {"type": "live"} in msgs
            delta = [m for m in msgs if m["type"] == "delta"][-1]
            assert by_t(delta["rows"], "n")[t // 1000] == 5


async def test_slow_consumer_is_coalesced_then_closed():
    sent: list[dict] = []
    gate = asyncio.Event()

    async def stuck_send(message):
        await gate.wait()
        sent.append(message)

    async def fast_send(message):
        sent_fast.append(message)

    sent_fast: list[dict] = []
    kw = dict(org_id=1, user_id=1, max_queue=100, slow_s=0.3, id_columns=lambda k: ("t",))
    slow = Connection(stuck_send, **kw)
    fast = Connection(fast_send, **kw)

    def delta(t, n):
        return protocol.encode({"type": "delta", "key": "k", "rows": [{"t": t, "n": n}]})

    slow.send_delta("k", "d", delta(1, 1))  # taken by the writer, stuck in send
    await asyncio.sleep(0.01)
    for n in range(2, 6):  # queued behind it: merged into one message, latest value wins
        for conn in (slow, fast):
            conn.send_delta("k", "d", delta(1 if n < 5 else 2, n))
        await asyncio.sleep(0)
    assert slow.coalesced == 3 and len(sent_fast) == 4  # the slow socket never delayed fast
    gate.set()
    await asyncio.sleep(0.05)
    merged = msgspec.json.decode(sent[1]["text"])
    assert merged["rows"] == [{"t": 1, "n": 4}, {"t": 2, "n": 5}]

    # Stuck again for longer than slow_s: closed with 4408.
    gate.clear()
    slow.send_delta("k", "d", delta(3, 1))
    await asyncio.sleep(0.01)
    slow.send_delta("k", "d", delta(3, 2))
    await asyncio.sleep(0.4)
    slow.send_delta("k", "d", delta(3, 3))
    assert slow.close_code == protocol.CLOSE_SLOW_CONSUMER
    gate.set()
    await asyncio.wait_for(slow.closed.wait(), 2)
    assert sent[-1] == {"type": "websocket.close", "code": 4408, "reason": "slow consumer"}
    fast.close(1000, "")
