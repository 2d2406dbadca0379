"""The dedicated push transport (`CLICKPULSE_PUSH_PORT`): `/ws/subscribe` served by the
`websockets` library directly, with the hub's auth, protocol and registry; deltas fanned out
as one serialised frame written to every caught-up socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.push.dedicated import DirectConnection
from tests.push.conftest import by_t, drain, events, now_ms, recv, recv_type, send, subscribe


def push_url(node: Any, token: str | None = None) -> str:
    base = f"ws://127.0.0.1:{node.services.dedicated.port}/ws/subscribe"
    return f"{base}?token={token}" if token is not None else base


async def connect(node: Any, token: str | None = None, **kwargs: Any) -> ClientConnection:
    return await websockets.connect(push_url(node, token), compression=None, **kwargs)


@pytest.fixture
async def pnode(make_node) -> AsyncIterator[Any]:
    """A served app with the dedicated transport on a free port."""
    async with make_node(push_port=0) as n:
        assert n.services.dedicated is not None and n.services.dedicated.port
        yield n


async def closed_code(ws: ClientConnection) -> int:
    try:
        while True:
            await recv(ws)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code


async def test_off_by_default(node):
    assert node.services.dedicated is None


@pytest.mark.parametrize("token", [None, "nope", "cpu_" + "0" * 40])
async def test_auth_rejected_4401(pnode, token):
    async with await connect(pnode, token) as ws:
        assert await closed_code(ws) == 4401
    assert not pnode.hub.conns


async def test_deeply_nested_frame_closes_4422(pnode, org):
    async with await connect(pnode, org.admin_token) as ws:
        await subscribe(ws, id="a", metric="SELECT count() AS n", range_s=10)
        await ws.send("[" * 30_000 + "]" * 30_000)
        assert await closed_code(ws) == 4422


async def test_wrong_path_404(pnode, org):
    url = f"ws://127.0.0.1:{pnode.services.dedicated.port}/other?token={org.admin_token}"
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url)
    assert info.value.response.status_code == 404


async def test_subscribe_snapshot_then_deltas_of_posted_events(pnode, org):
    t = now_ms()
    await pnode.post(org.api_key, events("page_view", 5, t))
    headers = {"Authorization": f"Bearer {org.admin_token}"}  # the header works too
    async with await connect(pnode, additional_headers=headers) as ws:
        snap = await subscribe(ws, id="s1", metric="SELECT count() AS n", range_s=30)
        assert snap["id"] == "s1" and snap["columns"] == ["t", "n"]
        assert by_t(snap["rows"], "n").get(t // 1000) == 5
        (conn,) = pnode.hub.conns
        assert isinstance(conn, DirectConnection)
        t2 = now_ms()
        await pnode.post(org.api_key, events("page_view", 3, t2))
        await pnode.tick()
        delta = await recv_type(ws, "delta")
        assert delta["key"] == snap["key"]
        expected = 3 + (5 if t2 // 1000 == t // 1000 else 0)
        assert by_t(delta["rows"], "n")[t2 // 1000] == expected
        # The protocol is the hub's: ping/pong, errors, unsubscribe.
        await send(ws, {"type": "unsubscribe", "id": "nope"})
        assert (await recv(ws))["code"] == "unknown_id"
        await send(ws, {"type": "unsubscribe", "id": "s1"})
        assert await drain(ws) == []
        assert snap["key"] not in pnode.hub.by_key
    await asyncio.sleep(0.05)
    for _ in range(100):
        if not pnode.hub.conns:
            break
        await asyncio.sleep(0.02)
    assert not pnode.hub.conns and not pnode.hub.by_org


async def test_asgi_and_dedicated_clients_share_keys(pnode, org, ch):
    async with (
        await pnode.connect(org.admin_token) as asgi_ws,
        await connect(pnode, org.admin_token) as direct_ws,
    ):
        a = await subscribe(asgi_ws, id=1, metric="SELECT count() AS n", range_s=10)
        b = await subscribe(direct_ws, id=1, metric="SELECT count() AS n", range_s=10)
        assert a["key"] == b["key"]
        t = now_ms()
        await pnode.post(org.api_key, events("x", 2, t))
        before = ch.query_count
        await pnode.tick()
        assert ch.query_count - before == 1
        da, db = await recv_type(asgi_ws, "delta"), await recv_type(direct_ws, "delta")
        assert da == db and by_t(db["rows"], "n")[t // 1000] == 2


async def test_cross_org_isolation(pnode, org, make_org):
    other = await make_org("globex")
    saved = await pnode.services.store.metrics.create(
        other.id, "secret", "", {"text": "SELECT count() AS n"}
    )
    async with (
        await connect(pnode, org.admin_token) as a,
        await connect(pnode, other.admin_token) as b,
    ):
        await send(a, {"type": "subscribe", "id": "steal", "metric_id": saved["id"]})
        err = await recv(a)
        assert (err["type"], err["code"]) == ("error", "not_found")
        snap_a = await subscribe(a, id="m", metric="SELECT count() AS n", range_s=10)
        snap_b = await subscribe(b, id="m", metric_id=saved["id"], range_s=10)
        assert snap_a["key"] != snap_b["key"]
        t = now_ms()
        await pnode.post(other.api_key, events("x", 4, t))
        await pnode.tick()
        assert by_t((await recv_type(b, "delta"))["rows"], "n")[t // 1000] == 4
        assert [m for m in await drain(a) if any(r["n"] for r in m.get("rows", []))] == []
        await pnode.hub.send_to_org(other.id, {"type": "alert", "name": "boom"})
        assert (await recv(b))["name"] == "boom"
        assert await drain(a) == []


async def test_many_clients_one_key_one_query_per_tick_one_encoding(pnode, org, ch):
    sockets = [await connect(pnode, org.admin_token) for _ in range(30)]
    try:
        keys = set()
        for i, ws in enumerate(sockets):
            keys.add((await subscribe(ws, id=i, metric="SELECT count() AS n", range_s=30))["key"])
        assert len(keys) == 1
        t = now_ms()
        await pnode.post(org.api_key, events("x", 6, t))
        raw: list[str] = []
        for n in range(3):
            before = ch.query_count
            await pnode.tick()
            assert ch.query_count - before == 1  # one key, 30 viewers
            if n == 0:
                for ws in sockets:
                    raw.append(await asyncio.wait_for(ws.recv(), 5))
        first = msgspec.json.decode(raw[0])
        assert first["type"] == "delta" and by_t(first["rows"], "n")[t // 1000] == 6
        assert all(r == raw[0] for r in raw[1:])
    finally:
        for ws in sockets:
            await ws.close()


async def test_behind_socket_coalesces_then_slow_consumer_4408(make_node, org):
    async with (
        make_node(push_port=0, push_slow_consumer_s=0.3) as node,
        await connect(node, org.admin_token) as fast,
        await connect(node, org.admin_token) as slow,
    ):
        await subscribe(fast, id=1, metric="SELECT count() AS n", range_s=5)
        await subscribe(slow, id=1, metric="SELECT count() AS n", range_s=5)
        port = slow.local_address[1]
        target = next(c for c in node.hub.conns if c.ws.remote_address[1] == port)
        # Make that socket look behind: its transport buffer stays over the write limit.
        target._transport.get_write_buffer_size = lambda: 10**9
        key = next(iter(node.hub.by_key))
        text = f'{{"type":"delta","key":"{key}","rows":[{{"t":1,"n":1}}]}}'
        node.hub.deliver(key, "d", text)
        node.hub.deliver(key, "d", text.replace('"n":1', '"n":2'))
        assert target._writer is not None or target.sent  # queued: an on-demand writer
        assert (await recv_type(fast, "delta"))["rows"][0]["n"] == 1
        assert (await recv_type(fast, "delta"))["rows"][0]["n"] == 2
        # The behind socket still gets its (coalesced) deltas, in order, through ws.send().
        got = [(await recv_type(slow, "delta"))["rows"][0]["n"]]
        if got == [1]:
            got.append((await recv_type(slow, "delta"))["rows"][0]["n"])
        assert got[-1] == 2
        # Still "behind" after slow_s with something queued: 4408, the others unaffected.
        target._writer = asyncio.get_running_loop().create_future()  # a writer stuck in send
        node.hub.deliver(key, "d", text)
        await asyncio.sleep(0.4)
        node.hub.deliver(key, "d", text)
        assert target.close_code == 4408
        assert await closed_code(slow) == 4408
        await send(fast, {"type": "ping"})
        assert (await recv_type(fast, "pong"))["type"] == "pong"


async def test_send_all_writes_one_frame_to_caught_up_sockets_and_the_rest_through_the_library(
    pnode, org
):
    """The frame is serialised once for every caught-up socket; a socket with protocol bytes of
    its own not yet flushed takes `broadcast()` (its bytes first, then the message), and a
    closed one is skipped."""
    sockets = [await connect(pnode, org.admin_token) for _ in range(3)]
    try:
        for ws in sockets:
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
        direct = [c for c in pnode.hub.conns if isinstance(c, DirectConnection)]
        assert len(direct) == 3
        plain, pending, closing = direct
        pending.ws.protocol.send_ping(b"mine")  # queued in the protocol, not yet written
        assert pending.ws.protocol.writes
        closing_client = next(ws for ws in sockets if ws.local_address == closing.ws.remote_address)
        await closing_client.close()
        sent = [c.sent for c in direct]
        text = '{"type":"delta","key":"k","rows":[{"t":1,"n":2}]}'
        DirectConnection.send_all(direct, text)
        assert [c.sent - s for c, s in zip(direct, sent, strict=True)] == [1, 1, 1]
        assert not pending.ws.protocol.writes  # flushed, before the message
        for conn in (plain, pending):
            client = next(ws for ws in sockets if ws.local_address == conn.ws.remote_address)
            assert await asyncio.wait_for(client.recv(), 5) == text
    finally:
        for ws in sockets:
            await ws.close()
