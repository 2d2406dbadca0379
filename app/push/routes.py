"""The push tier's HTTP surface: `/ws/subscribe` (the ASGI WebSocket route), `GET /push/stats`,
`POST /ws/ticket`; mounted by `app.server.create_app` through `app.push.route_handlers`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, asgi, get, post
from litestar.types import Receive, Scope, Send

from app.credentials import bearer_token, hash_secret
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.push.asgi import serve_socket
from app.push.hub import Hub

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
    await serve_socket(hub, scope, receive, send)


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
    token = bearer_token(request.headers.get("authorization")) or ""
    push: Hub = services.push
    ticket = await push.access.tickets.issue(hash_secret(token))
    return WsTicket(ticket=ticket, expires_in=push.access.tickets.ttl_s)


route_handlers = [ws_subscribe, push_stats, ws_ticket]
