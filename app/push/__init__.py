"""Live push (issue 5): `/ws/subscribe`, the poller, fanout, Redis cross-node. See docs/push.md.

Public API:

* `Hub` (one per process, `services.push`): `handle` (the ASGI socket), `deliver`,
  `send_to_org(org_id, message)` (alerts), `key_for(org_id, metric, filters=, group_by=,
  window_s=)` → `KeySpec`, `poller`;
* `Poller`: `tick()`, `watch(spec, listener)` → `Watch` (the alerts hook: a key without
  sockets, its rows every tick), `add_tick_listener(fn)`;
* `route_handlers`: mounted by `app.server.create_app` (`/ws/subscribe`, `GET /push/stats`);
* `app.push.dedicated`: the optional `websockets`-served `/ws/subscribe` on
  `CLICKPULSE_PUSH_PORT` (started/stopped by `Hub.start`/`stop`; `hub.dedicated.port`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, asgi, get, post
from litestar.types import Receive, Scope, Send

from app.credentials import hash_secret
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.push.hub import Hub
from app.push.keys import KeySpec, make_key
from app.push.poller import KeyTick, Poller, Watch

_NOT_WS = b'{"error":{"code":"websocket_only","message":"connect with WebSocket","where":null}}'


@asgi("/ws/subscribe", is_mount=False, copy_scope=False)
async def ws_subscribe(scope: Scope, receive: Receive, send: Send) -> None:
    """`/ws/subscribe`: raw ASGI, so each socket costs a writer task and a small queue only."""
    if scope["type"] != "websocket":
        await send(
            {
                "type": "http.response.start",
                "status": 426,
                "headers": [(b"content-type", b"application/json"), (b"upgrade", b"websocket")],
            }
        )
        await send({"type": "http.response.body", "body": _NOT_WS})
        return
    hub: Hub = scope["litestar_app"].state.services.push
    await hub.handle(scope, receive, send)


@get("/push/stats", tags=["push"], dependencies=AUTH, sync_to_thread=False)
def push_stats(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """This node's push state for the caller's org (admins; read-only): `node_id`, the org's
    sockets here, and per live key its local viewers, whether this node polls it (holds the
    lease) and how many queries this node ran for it."""
    principal.require("admin")
    return services.push.stats(principal.org_id)


class WsTicket(msgspec.Struct):
    ticket: str
    expires_in: float  # seconds


@post("/ws/ticket", tags=["push"], dependencies=AUTH, status_code=201)
async def ws_ticket(request: Request, services: ServicesDep, principal: PrincipalDep) -> WsTicket:
    """A single-use ticket for `/ws/subscribe?ticket=…`, valid `expires_in` seconds: the
    preferred way to open a socket (the long-lived token stays out of URLs and logs). The
    socket it opens is bound to the calling token and closed if that token is revoked."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    push: Hub = services.push
    ticket = await push.tickets.issue(hash_secret(token))
    return WsTicket(ticket=ticket, expires_in=push.tickets.ttl_s)


route_handlers = [ws_subscribe, push_stats, ws_ticket]

__all__ = ["Hub", "KeySpec", "KeyTick", "Poller", "Watch", "make_key", "route_handlers"]
