"""Live push through a public dashboard link (issue 16 item 5): a link's socket receives the
live keys of its dashboard's saved charts and nothing else, on both transports; every other
subscription is refused with no data; revocation and expiry close it; the link opens no user
endpoint. Real uvicorn, real `websockets` clients, real chDB/PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import websockets
from websockets.exceptions import ConnectionClosed

from app.credentials import hash_secret
from tests.push.conftest import by_t, drain, events, now_ms, recv, recv_type, send, subscribe

COUNT = "SELECT count() AS n"
PAGEVIEWS = "SELECT countIf(event = 'pageview') AS pv"


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def metric(node, org, text: str, name: str = "events") -> int:
    body = {"name": name, "definition": {"text": text}}
    r = await node.http.post("/metrics", json=body, headers=h(org.admin_token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def dashboard(node, org, charts: list[dict[str, Any]], name: str = "Live") -> dict:
    r = await node.http.post(
        "/dashboards", json={"name": name, "charts": charts}, headers=h(org.admin_token)
    )
    assert r.status_code == 201, r.text
    return r.json()


async def share(node, org, dashboard_id: int, **body: Any) -> dict:
    r = await node.http.post(
        f"/dashboards/{dashboard_id}/shares", json=body, headers=h(org.admin_token)
    )
    assert r.status_code == 201, r.text
    return r.json()


async def setup(node, org) -> tuple[dict, dict, int]:
    """A dashboard of two charts (a line on a saved metric, a bar by event on an inline one),
    its link, and the saved metric's id."""
    mid = await metric(node, org, COUNT)
    dash = await dashboard(
        node,
        org,
        [
            {"chart_type": "line", "metric_id": mid, "title": "Events", "default_range": "5m"},
            {
                "chart_type": "bar",
                "metric_inline": {"text": PAGEVIEWS},
                "dimension": "event",
                "title": "By event",
                "default_range": "5m",
            },
        ],  # fmt: skip
    )
    return dash, await share(node, org, dash["id"]), mid


async def close_code(ws: Any, timeout: float = 10.0) -> int | None:
    """Read until the server closes the socket; its close code (None: still open)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None


async def test_a_link_socket_gets_its_charts_keys_on_both_transports(make_node, org):
    async with make_node(push_port=0) as node:
        dash, link, mid = await setup(node, org)
        line, bar = (c["id"] for c in dash["charts"])
        direct = f"ws://127.0.0.1:{node.services.dedicated.port}/ws/subscribe?token="
        async with (
            await node.connect(link["token"]) as asgi,
            await websockets.connect(direct + link["token"]) as dedicated,
            await node.connect(org.admin_token) as user,
        ):
            # The keys the dashboard page subscribes to for these charts, as saved.
            page_line = await subscribe(user, id="l", metric_id=mid, filters=[], range_s=60)
            page_bar = await subscribe(
                user, id="b", metric=PAGEVIEWS, filters=[], group_by=["event"], range_s=60
            )
            for ws in (asgi, dedicated):
                snap = await subscribe(ws, id="line", chart_id=line, range_s=60)
                assert snap["key"] == page_line["key"] and snap["columns"] == ["t", "n"]
                snap = await subscribe(ws, id="bar", chart_id=bar, range_s=60)
                assert snap["key"] == page_bar["key"] and snap["dims"] == ["event"]
            t = now_ms() // 1000 * 1000
            await node.post(org.api_key, events("pageview", 3, t) + events("click", 2, t))
            await node.tick()
            for ws in (asgi, dedicated):
                got: dict[str, list[dict]] = {}
                while len(got) < 2:
                    delta = await recv_type(ws, "delta")
                    got.setdefault(delta["key"], []).extend(delta["rows"])
                assert by_t(got[page_line["key"]], "n")[t // 1000] == 5
                by_event = {r["event"]: r["pv"] for r in got[page_bar["key"]] if r["pv"]}
                assert by_event == {"pageview": 3}


async def test_every_hostile_subscribe_is_refused_and_gets_no_data(make_node, org, make_org):
    other = await make_org()
    async with make_node() as node:
        dash, link, mid = await setup(node, org)
        line = dash["charts"][0]["id"]
        # Another dashboard of the same org (not shared) and another org's dashboard.
        secret_mid = await metric(node, org, "SELECT sum(value) AS revenue", "revenue")
        secret = await dashboard(
            node, org, [{"chart_type": "line", "metric_id": secret_mid, "title": "Revenue"}]
        )
        their_mid = await metric(node, other, COUNT)
        theirs = await dashboard(
            node, other, [{"chart_type": "line", "metric_id": their_mid, "title": "Theirs"}]
        )
        hostile: list[tuple[dict[str, Any], str]] = [
            ({"chart_id": secret["charts"][0]["id"]}, "not_found"),  # another dashboard's chart
            ({"chart_id": theirs["charts"][0]["id"]}, "not_found"),  # another org's chart
            ({"chart_id": 10**9}, "not_found"),
            ({"metric_id": secret_mid}, "forbidden"),  # another dashboard's metric
            ({"metric_id": their_mid}, "forbidden"),  # another org's metric id
            ({"metric_id": mid}, "forbidden"),  # even the chart's own metric, named directly
            ({"metric": COUNT}, "forbidden"),  # an inline metric
            ({"metric": {"text": "SELECT sum(value) AS r"}}, "forbidden"),
            ({"builtin": "page_views"}, "forbidden"),
            ({"chart_id": line, "metric": "SELECT sum(value) AS r"}, "forbidden"),
            (
                {"chart_id": line, "filters": [{"dimension": "event", "op": "=", "value": "x"}]},
                "forbidden",
            ),  # fmt: skip
            ({"chart_id": line, "group_by": ["country"]}, "forbidden"),
            ({"chart_id": line, "window_s": 300}, "forbidden"),
            ({"chart_id": line, "granularity": "1m"}, "invalid_message"),  # no such field
            ({"chart_id": line, "org_id": other.id}, "invalid_message"),
            ({}, "forbidden"),
        ]
        async with await node.connect(link["token"]) as ws:
            ok = await subscribe(ws, id="ok", chart_id=line, range_s=30)
            for i, (fields, code) in enumerate(hostile):
                await send(ws, {"type": "subscribe", "id": f"h{i}", "range_s": 30, **fields})
                answer = await recv(ws)
                assert (answer["type"], answer["id"], answer["code"]) == ("error", f"h{i}", code), (
                    fields,
                    answer,
                )
            # Only the chart's key is live on the node: nothing refused was ever read.
            assert set(node.hub.poller.keys) == {ok["key"]}
            t = now_ms() // 1000 * 1000
            await node.post(org.api_key, events("x", 4, t, value=10))
            await node.post(other.api_key, events("x", 9, t))
            await node.tick()
            received = await drain(ws)
            assert received and {m["type"] for m in received} == {"delta"}
            assert {m["key"] for m in received} == {ok["key"]}
            rows = [r for m in received for r in m["rows"]]
            assert by_t(rows, "n")[t // 1000] == 4  # this org's four, not the other's nine
            assert all(set(r) == {"t", "n"} for r in rows)


async def test_revoking_closes_link_sockets_here_at_once_and_by_the_recheck(make_node, org, pg_url):
    async with make_node(auth_cache_s=0.3) as node:
        dash, link, _ = await setup(node, org)
        line = dash["charts"][0]["id"]
        # Revoked through the API: this node closes the link's sockets at once.
        ws = await node.connect(link["token"])
        await subscribe(ws, id=1, chart_id=line, range_s=10)
        async with await node.connect(org.admin_token) as user:
            await subscribe(user, id=1, builtin="page_views", range_s=10)
            r = await node.http.delete(
                f"/dashboards/{dash['id']}/shares/{link['id']}", headers=h(org.admin_token)
            )
            assert r.status_code == 204
            assert await close_code(ws) == 4401
            # the org's user socket is not the link's
            await send(user, {"type": "ping"})
            assert (await recv_type(user, "pong"))["type"] == "pong"
        # Revoked behind this node's back (another node's DELETE): the periodic re-check.
        second = await share(node, org, dash["id"])
        ws = await node.connect(second["token"])
        await subscribe(ws, id=1, chart_id=line, range_s=10)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE dashboard_shares SET revoked_at = now() WHERE token_hash = %s",
                (hash_secret(second["token"]),),
            )
        assert await close_code(ws, timeout=15) == 4401
        # and a dead link cannot connect again
        async with await node.connect(second["token"]) as again:
            assert await close_code(again) == 4401


async def test_expired_links_are_refused_at_connect_and_closed_when_they_expire(
    make_node, org, pg_url
):
    async def expire(share_id: int) -> None:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE dashboard_shares SET expires_at = now() - interval '1 second' "
                "WHERE id = %s",
                (share_id,),
            )

    async with make_node() as node:
        dash, link, _ = await setup(node, org)
        line = dash["charts"][0]["id"]
        expiring = await share(node, org, dash["id"], expires_in_s=3600)
        async with await node.connect(expiring["token"]) as ws:
            await subscribe(ws, id=1, chart_id=line, range_s=10)
            async with await node.connect(link["token"]) as kept:
                await subscribe(kept, id=1, chart_id=line, range_s=10)
                await expire(expiring["id"])
                assert await node.hub.access.revalidate() == 1
                assert await close_code(ws) == 4401
                await send(kept, {"type": "ping"})
                assert (await recv_type(kept, "pong"))["type"] == "pong"
        # A tampered token: its last character changed (to a different one: "A" would leave a
        # token that ends in "A" valid, one run in 64).
        tampered = link["token"][:-1] + ("B" if link["token"].endswith("A") else "A")
        for token in (expiring["token"], "cps_" + "x" * 43, tampered):
            async with await node.connect(token) as ws:
                assert await close_code(ws) == 4401


async def test_the_link_rate_limit_applies_at_connect(make_node, org):
    async with make_node(share_rate_per_min=3) as node:
        _, link, _ = await setup(node, org)
        opened = [await node.connect(link["token"]) for _ in range(3)]
        for ws in opened:
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
        async with await node.connect(link["token"]) as refused:
            assert await close_code(refused) == 4429
        for ws in opened:
            await ws.close()


async def test_user_endpoints_refuse_the_link_and_users_cannot_use_chart_id(make_node, org):
    async with make_node() as node:
        dash, link, _ = await setup(node, org)
        for method, path in (
            ("GET", f"/dashboards/{dash['id']}"),
            ("GET", "/metrics"),
            ("POST", "/ws/ticket"),
            ("GET", "/push/stats"),
        ):
            r = await node.http.request(method, path, headers=h(link["token"]))
            assert r.status_code == 401, (path, r.text)
        async with await node.connect(org.admin_token) as user:
            await send(user, {"type": "subscribe", "id": 1, "chart_id": dash["charts"][0]["id"]})
            answer = await recv(user)
            assert (answer["type"], answer["code"]) == ("error", "invalid_subscription")
