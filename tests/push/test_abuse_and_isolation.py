"""Malformed messages, protocol abuse, cross-org isolation."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.push.conftest import by_t, drain, events, now_ms, recv, recv_type, send, subscribe


async def closed_code(ws) -> int:
    try:
        while True:
            await recv(ws)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code


async def test_malformed_messages_get_errors_and_other_subscriptions_continue(node, org):
    async with await node.connect(org.admin_token) as ws:
        await subscribe(ws, id="ok", metric="SELECT count() AS n", range_s=10)
        await ws.send("not json")
        assert (await recv(ws))["code"] == "invalid_message"
        await send(ws, {"type": "subscribe", "id": "x", "metric": "SELECT count() FROM events"})
        err = await recv(ws)
        assert (err["type"], err["id"], err["code"]) == ("error", "x", "forbidden_keyword")
        await send(ws, {"type": "subscribe", "id": "y", "metric": "SELECT sleep(3)"})
        assert (await recv(ws))["id"] == "y"
        await send(ws, {"type": "subscribe", "id": "z", "metric": "SELECT count()", "org_id": 2})
        err = await recv(ws)
        assert err["code"] == "invalid_message" and err["id"] == "z"
        await send(ws, {"type": "subscribe", "id": "ok", "metric": "SELECT count()"})
        assert (await recv(ws))["code"] == "duplicate_id"
        await send(
            ws, {"type": "subscribe", "id": "r", "metric": "SELECT count()", "range_s": 9999}
        )
        assert (await recv(ws))["code"] == "invalid_range"
        await send(ws, {"type": "subscribe", "id": "b", "builtin": "nope"})
        assert (await recv(ws))["code"] == "not_found"
        await send(ws, {"type": "subscribe", "id": "m"})
        assert (await recv(ws))["code"] == "invalid_subscription"
        await send(ws, {"type": "hello"})
        assert (await recv(ws))["type"] == "error"
        t = now_ms()
        await node.post(org.api_key, events("x", 3, t))
        await node.tick()
        assert by_t((await recv_type(ws, "delta"))["rows"], "n")[t // 1000] == 3


async def test_oversize_frame_closes_only_that_socket(make_node, org):
    async with (
        make_node(push_max_message_bytes=1000) as node,
        await node.connect(org.admin_token) as good,
        await node.connect(org.admin_token) as bad,
    ):
        await subscribe(good, id="g", metric="SELECT count() AS n", range_s=10)
        await bad.send("x" * 5000)
        assert await closed_code(bad) == 1009
        t = now_ms()
        await node.post(org.api_key, events("x", 1, t))
        await node.tick()
        assert by_t((await recv_type(good, "delta"))["rows"], "n")[t // 1000] == 1


async def test_flooding_closes_the_socket(make_node, org):
    async with (
        make_node(push_max_msgs_per_s=5.0) as node,
        await node.connect(org.admin_token) as ws,
    ):
        for _ in range(40):
            try:
                await send(ws, {"type": "ping"})
            except websockets.ConnectionClosed:
                break
        assert await closed_code(ws) == 4429


async def test_too_many_subscriptions_closes_the_socket(make_node, org):
    async with make_node(push_max_subscriptions=2) as node:
        async with await node.connect(org.admin_token) as ws:
            await subscribe(ws, id=1, metric="SELECT count()", range_s=5)
            await subscribe(ws, id=2, metric="SELECT count()", range_s=5)
            await send(ws, {"type": "subscribe", "id": 3, "metric": "SELECT count()"})
            assert await closed_code(ws) == 4400
        await asyncio.sleep(0.05)
        assert node.hub.poller.keys == {} and node.hub.conns == set()


async def test_cross_org_metric_id_and_data(node, org, make_org):
    other = await make_org("globex")
    saved = await node.services.store.metrics.create(
        other.id, "secret", "", {"text": "SELECT count() AS n"}
    )
    mine = await node.services.store.metrics.create(
        org.id, "mine", "", {"text": "SELECT count() AS n"}
    )
    async with await node.connect(org.admin_token) as a, await node.connect(other.admin_token) as b:
        await send(a, {"type": "subscribe", "id": "steal", "metric_id": saved["id"]})
        err = await recv(a)
        assert (err["type"], err["code"], err["message"]) == (
            "error",
            "not_found",
            "metric not found",
        )
        snap_a = await subscribe(a, id="m", metric_id=mine["id"], range_s=10)
        snap_b = await subscribe(b, id="m", metric_id=saved["id"], range_s=10)
        assert snap_a["key"] != snap_b["key"]  # same text, different org: never one key
        t = now_ms()
        await node.post(other.api_key, events("x", 4, t))
        await node.tick()
        assert by_t((await recv_type(b, "delta"))["rows"], "n")[t // 1000] == 4
        assert [m for m in await drain(a) if any(r["n"] for r in m.get("rows", []))] == []
        # Alerts reach the org's sockets only.
        await node.hub.send_to_org(other.id, {"type": "alert", "name": "boom"})
        assert (await recv(b))["name"] == "boom"
        assert await drain(a) == []


@pytest.mark.parametrize("definition", [{"text": "SELECT count() AS n WHERE device = 'mobile'"}])
async def test_saved_metric_definition(node, org, definition):
    saved = await node.services.store.metrics.create(org.id, "mobile", "", definition)
    async with await node.connect(org.admin_token) as ws:
        snap = await subscribe(ws, id="s", metric_id=saved["id"], range_s=5)
        assert snap["columns"] == ["t", "n"]


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 30_000 + "]" * 30_000,  # fits in the 64 KiB frame limit, 30,000 levels
        '{"type": "subscribe", "id": "d", "metric": ' + '{"a":' * 10_000 + "1" + "}" * 10_001,
        "[" * 65 + "]" * 65,  # one level past the limit
    ],
)
async def test_deeply_nested_frame_closes_only_that_socket_4422(node, org, frame):
    async with (
        await node.connect(org.admin_token) as good,
        await node.connect(org.admin_token) as bad,
    ):
        await subscribe(good, id="g", metric="SELECT count() AS n", range_s=10)
        await bad.send(frame)
        assert await closed_code(bad) == 4422
        t = now_ms()
        await node.post(org.api_key, events("x", 1, t))
        await node.tick()
        assert by_t((await recv_type(good, "delta"))["rows"], "n")[t // 1000] == 1
        await send(good, {"type": "ping"})
        assert (await recv(good))["type"] == "pong"


async def test_frame_at_the_depth_limit_is_an_ordinary_error(node, org):
    async with await node.connect(org.admin_token) as ws:
        await ws.send("[" * 64 + "]" * 64)
        assert (await recv(ws))["code"] == "invalid_message"
