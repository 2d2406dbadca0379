"""The ASGI transport of `/ws/subscribe` (the Litestar route in app/push/routes.py): one
`Connection` per socket, with its own writer task and bounded queue, on the app's own port.

Raw ASGI rather than Litestar's WebSocket class: no per-message framework overhead. The
dedicated `websockets` transport (app/push/dedicated.py) serves the same protocol through the
same `Hub`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from app.credentials import bearer_token
from app.push.connection import Connection
from app.push.hub import Hub
from app.push.intake import Intake


async def serve_socket(hub: Hub, scope: Any, receive: Any, send: Any) -> None:
    """Serve one `/ws/subscribe` socket of the ASGI route until it closes."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    token, ticket = _credentials(scope)
    await send({"type": "websocket.accept"})
    client = (scope.get("client") or ("",))[0]
    principal, token_hash, code, reason = await hub.access.authorise(token, ticket, client)
    if principal is None:
        await send({"type": "websocket.close", "code": code, "reason": reason})
        return
    conn = hub.open(Connection, send, principal, token_hash)
    intake = Intake(hub.settings)
    closed_wait = asyncio.ensure_future(conn.closed.wait())
    try:
        while conn.close_code is None:
            recv = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({recv, closed_wait}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                break
            message = recv.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if not intake.admit(conn, data):
                break
            await hub.on_message(conn, data)
    finally:
        closed_wait.cancel()
        await hub.drop(conn)
        if conn.close_code is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 6)
        else:
            conn.close_code = 1000
            conn._writer.cancel()
            await conn.wait_writer()


def _credentials(scope: Any) -> tuple[str | None, str | None]:
    """(token, ticket) of a socket: `?ticket=` (preferred), `?token=` or `Authorization`."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    ticket = query["ticket"][0].strip() if query.get("ticket") else None
    if query.get("token"):
        return query["token"][0].strip(), ticket
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bearer_token(value.decode("latin-1")), ticket
    return None, ticket
