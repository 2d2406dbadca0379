"""Revoked tokens lose their sockets (issue 12 item 5) and WebSocket tickets (item 6): the
real app under uvicorn, both transports, real `websockets` clients, real PostgreSQL/Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import websockets
from websockets.exceptions import ConnectionClosed

from app.credentials import hash_secret
from tests.push.conftest import recv_type, send


async def _revoke(pg_url: str, token: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE user_tokens SET revoked_at = now() WHERE token_hash = %s", (hash_secret(token),)
        )


async def _subscribed(url: str, sub_id: int = 1) -> Any:
    ws = await websockets.connect(url)
    await send(ws, {"type": "subscribe", "id": sub_id, "builtin": "page_views", "range_s": 5})
    await recv_type(ws, "snapshot", timeout=15)
    return ws


async def _close_code(ws: Any, timeout: float = 10.0) -> int | None:
    """Read until the server closes the socket; its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None


async def test_revalidate_closes_revoked_sockets_on_both_transports_with_one_query(
    make_node, make_org, pg_url
):
    org, other = await make_org(), await make_org()
    async with make_node(push_port=0) as node:
        asgi = f"ws://127.0.0.1:{node.port}/ws/subscribe?token="
        direct = f"ws://127.0.0.1:{node.services.dedicated.port}/ws/subscribe?token="
        revoked = [
            await _subscribed(asgi + org.admin_token),
            await _subscribed(direct + org.admin_token),
            await _subscribed(asgi + org.admin_token, 2),
        ]
        kept = await _subscribed(direct + other.admin_token)
        lookups: list[list[str]] = []
        real = node.services.store.tokens.live_hashes

        async def counting(hashes: list[str]) -> set[str]:
            lookups.append(hashes)
            return await real(hashes)

        node.services.store.tokens.live_hashes = counting
        assert await node.hub.access.revalidate() == 0  # nothing revoked yet: nothing closed
        await _revoke(pg_url, org.admin_token)
        assert await node.hub.access.revalidate() == 3
        # One query per round for every distinct token, not one per socket.
        assert [sorted(x) for x in lookups] == [
            sorted({hash_secret(org.admin_token), hash_secret(other.admin_token)})
        ] * 2
        assert [await _close_code(ws) for ws in revoked] == [4401, 4401, 4401]
        await send(kept, {"type": "ping"})
        assert (await recv_type(kept, "pong"))["type"] == "pong"
        await kept.close()


async def test_the_periodic_recheck_closes_a_revoked_socket_by_itself(make_node, make_org, pg_url):
    org = await make_org()
    async with make_node(auth_cache_s=0.3) as node:
        ws = await _subscribed(node.ws_url(org.admin_token))
        await _revoke(pg_url, org.admin_token)
        assert await _close_code(ws, timeout=15) == 4401


async def test_a_subscribe_after_revocation_is_refused_and_closes(make_node, make_org, pg_url):
    org = await make_org()
    async with make_node() as node:
        ws = await _subscribed(node.ws_url(org.admin_token))
        await _revoke(pg_url, org.admin_token)
        node.services.auth.fresh_s = 0  # as on a node whose cached lookup has expired
        await send(ws, {"type": "subscribe", "id": 9, "builtin": "revenue", "range_s": 5})
        assert await _close_code(ws) == 4401
        assert node.hub.conns == set()


async def test_store_outage_during_recheck_closes_nothing(make_node, make_org):
    from app.store import StoreUnavailable

    org = await make_org()
    async with make_node() as node:
        ws = await _subscribed(node.ws_url(org.admin_token))

        async def down(hashes: list[str]) -> set[str]:
            raise StoreUnavailable("down")

        node.services.store.tokens.live_hashes = down
        assert await node.hub.access.revalidate() == 0
        await send(ws, {"type": "ping"})
        assert (await recv_type(ws, "pong"))["type"] == "pong"
        await ws.close()


# -- tickets -------------------------------------------------------------------------------


async def _ticket(node: Any, token: str) -> dict[str, Any]:
    response = await node.http.post("/ws/ticket", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return response.json()


async def test_ticket_opens_a_socket_once_on_either_transport(make_node, make_org):
    org = await make_org()
    async with make_node(push_port=0) as node:
        refused = await node.http.post("/ws/ticket")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        body = await _ticket(node, org.admin_token)
        assert body["ticket"].startswith("cpw_") and body["expires_in"] == 30
        assert org.admin_token not in body["ticket"]
        asgi = f"ws://127.0.0.1:{node.port}/ws/subscribe?ticket="
        direct = f"ws://127.0.0.1:{node.services.dedicated.port}/ws/subscribe?ticket="
        ws = await _subscribed(asgi + body["ticket"])
        (conn,) = node.hub.conns
        assert (conn.org_id, conn.token_hash) == (org.id, hash_secret(org.admin_token))
        # Single use: the same ticket again (either transport) is refused.
        for url in (asgi, direct):
            again = await websockets.connect(url + body["ticket"])
            assert await _close_code(again) == 4401
        ws2 = await _subscribed(direct + (await _ticket(node, org.admin_token))["ticket"])
        for hostile in ("cpw_nope", org.admin_token, "", "x" * 300):
            bad = await websockets.connect(asgi + hostile)
            assert await _close_code(bad) == 4401, hostile
        await ws.close()
        await ws2.close()


async def test_an_expired_ticket_is_refused(make_node, make_org):
    org = await make_org()
    async with make_node(ws_ticket_ttl_s=0.2) as node:
        ticket = (await _ticket(node, org.admin_token))["ticket"]
        await asyncio.sleep(0.5)
        ws = await websockets.connect(f"ws://127.0.0.1:{node.port}/ws/subscribe?ticket={ticket}")
        assert await _close_code(ws) == 4401


async def test_a_ticket_socket_closes_when_its_token_is_revoked(make_node, make_org, pg_url):
    org = await make_org()
    async with make_node() as node:
        ticket = (await _ticket(node, org.admin_token))["ticket"]
        ws = await _subscribed(f"ws://127.0.0.1:{node.port}/ws/subscribe?ticket={ticket}")
        await _revoke(pg_url, org.admin_token)
        assert await node.hub.access.revalidate() == 1
        assert await _close_code(ws) == 4401


async def test_with_redis_any_node_redeems_a_ticket_exactly_once(make_node, make_org, redis_url):
    org = await make_org()
    async with make_node(redis_url=redis_url) as a, make_node(redis_url=redis_url) as b:
        ticket = (await _ticket(a, org.admin_token))["ticket"]
        ws = await _subscribed(f"ws://127.0.0.1:{b.port}/ws/subscribe?ticket={ticket}")
        again = await websockets.connect(f"ws://127.0.0.1:{a.port}/ws/subscribe?ticket={ticket}")
        assert await _close_code(again) == 4401
        await ws.close()


async def test_failed_socket_logins_are_throttled_per_address(make_node, make_org):
    from app.credentials import USER_TOKEN_PREFIX, new_secret

    org = await make_org()
    async with make_node(push_port=0, auth_fail_max=3) as node:
        known = await _subscribed(node.ws_url(org.admin_token))  # cached as good from now on
        asgi = f"ws://127.0.0.1:{node.port}/ws/subscribe?token="
        direct = f"ws://127.0.0.1:{node.services.dedicated.port}/ws/subscribe?token="
        lookups = node.services.auth.lookups
        for url in (asgi, direct, asgi):
            ws = await websockets.connect(url + new_secret(USER_TOKEN_PREFIX))
            assert await _close_code(ws) == 4401
        assert node.services.auth.lookups == lookups + 3
        for url in (asgi, direct):
            ws = await websockets.connect(url + new_secret(USER_TOKEN_PREFIX))
            assert await _close_code(ws) == 4429  # past the budget: refused without a lookup
        assert node.services.auth.lookups == lookups + 3
        again = await _subscribed(direct + org.admin_token, 2)  # known good: not locked out
        for ws in (known, again):
            await ws.close()
