"""The optional dedicated push transport: `/ws/subscribe` served by the `websockets` library
directly on `CLICKPULSE_PUSH_PORT`, next to the ASGI route, with the same auth, protocol and
`Hub` (`DirectConnection` adapts a `websockets` connection to the hub's `Connection`).

Why: a socket on the ASGI route costs a uvicorn protocol object, an ASGI scope, a writer task
and a queue; here a caught-up socket has no task of its own, and the hub writes each delta's
frame, serialised once, to all of them (`DirectConnection.send_all`). Sockets that fall behind take the
coalescing `Connection` path instead. See docs/push.md, section "Dedicated transport"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN

from app.credentials import bearer_token
from app.push import protocol
from app.push.connection import Connection, _DeltaSlot
from app.push.hub import Hub
from app.push.intake import Intake

log = logging.getLogger("clickpulse.push.dedicated")

PATH = "/ws/subscribe"
WRITE_LIMIT = 64 * 1024  # transport buffer above which a socket leaves the broadcast path
MAX_QUEUE = 4  # inbound frames buffered per socket before reading pauses (clients send little)


class _NoWake:
    """Stands in for `Connection._wake`: the writer task is started on demand instead."""

    __slots__ = ()

    def set(self) -> None:
        pass


_EMPTY_QUEUE: Any = ()  # falsy, shared: "nothing queued"


class DirectConnection(Connection):
    """`Connection`'s interface and queueing policy over a `websockets` server connection.

    Writes go straight to the socket while it is caught up; the inherited coalescing queue (and
    a writer task) only exist while it is behind."""

    direct = True
    _wake = _NoWake()  # type: ignore[assignment]

    def __init__(
        self,
        ws: ServerConnection,
        *,
        org_id: int,
        user_id: int,
        max_queue: int,
        slow_s: float,
        id_columns: Callable[[str], tuple[str, ...]],
        write_limit: int = WRITE_LIMIT,
        token_hash: str = "",
    ):
        # Not Connection.__init__: that starts a writer task per socket.
        self.ws = ws
        self.token_hash = token_hash
        self._transport = ws.transport
        self._write_limit = write_limit
        self.org_id = org_id
        self.user_id = user_id
        self.max_queue = max_queue
        self.slow_s = slow_s
        self._id_columns = id_columns
        self.subs: dict[Any, str] = {}
        self.key_ids: dict[str, set[Any]] = {}
        self.pending: dict[str, list[tuple[str, str]]] = {}
        # The queue (two deques, a dict) and the `closed` event are only allocated when needed:
        # a caught-up socket never has them (~1.5 KiB a socket saved).
        self._queue: deque[str | _DeltaSlot] = _EMPTY_QUEUE  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.stale = False
        self.sent = 0
        self.coalesced = 0

    def writable(self, key: str | None = None) -> bool:
        """Caught up: a message may be written now, in order, without queueing."""
        return (
            self.close_code is None
            and not self._queue
            and self._writer is None
            and (key is None or key not in self.pending)
            and self._transport.get_write_buffer_size() <= self._write_limit
        )

    @staticmethod
    def send_all(conns: list[DirectConnection], text: str) -> None:
        """Write `text` to caught-up sockets (`writable`), synchronously (the hub's fanout).

        The frame is serialised once for all of them: a server's frames are not masked and
        this server negotiates no extension (`compression=None`), so every socket's frame is
        the same bytes — `websockets.broadcast()` would build it once per socket (~40 % of a
        fanout's CPU). A socket the library would not write it to as-is (not open, a message
        of its own half-sent, bytes of its own still to flush) goes through `broadcast()`."""
        data = text.encode()
        frame = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
        others = []
        for conn in conns:
            protocol = conn.ws.protocol
            if (
                protocol.state is OPEN
                and not protocol.writes
                and not protocol.extensions
                and not protocol.expect_continuation_frame
                and conn.ws.send_in_progress is None
            ):
                conn._transport.write(frame)
                conn.sent += 1
            else:
                others.append(conn)
        if others:
            broadcast([conn.ws for conn in others], data, text=True)
            for conn in others:
                conn.sent += 1

    def send_text(self, text: str) -> None:
        if self.close_code is not None:
            return
        if self.writable():
            broadcast((self.ws,), text)
            self.sent += 1
            return
        self._materialise()
        super().send_text(text)
        self._ensure_writer()

    def send_delta(self, key: str, kind: str, text: str) -> None:
        if self.close_code is not None:
            return
        if kind == "d" and self.writable(key):
            broadcast((self.ws,), text)
            self.sent += 1
            return
        self._materialise()
        super().send_delta(key, kind, text)
        self._ensure_writer()

    def _materialise(self) -> None:
        if self._queue is _EMPTY_QUEUE:
            self._queue = deque()
            self._slots = {}
            self._times = deque()

    def _ensure_writer(self) -> None:
        if self._writer is None and self._queue and self.close_code is None:
            self._writer = self._loop.create_task(self._write(), name="push-direct-writer")

    async def _write(self) -> None:
        try:
            while self._queue:
                await self.ws.send(self._next_text())  # waits while the buffer is over write_limit
                self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away under us
            self._writer = None
            self.close(protocol.CLOSE_GOING_AWAY, "")
            return
        self._writer = None

    def close(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        self._queue = _EMPTY_QUEUE  # type: ignore[assignment]
        self._slots = {}
        self._times = deque()
        self.closed = asyncio.Event()
        self._loop.create_task(self._send_close(code, reason, writer))

    async def _send_close(  # type: ignore[override]
        self, code: int, reason: str, writer: asyncio.Task[None] | None = None
    ) -> None:
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), 5)
        self.closed.set()

    async def wait_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """(token, ticket) of a socket: `?ticket=` (preferred), `?token=` or `Authorization`."""
    query = parse_qs(urlsplit(request.path).query)
    ticket = query["ticket"][0].strip() if query.get("ticket") else None
    if query.get("token"):
        return query["token"][0].strip(), ticket
    return bearer_token(request.headers.get("Authorization")), ticket


class DedicatedServer:
    """`websockets.serve` on (settings.host, settings.push_port) for the hub's sockets."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.settings = hub.settings
        self._server: Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        s = self.settings
        self._server = await serve(
            self._handle,
            s.host,
            s.push_port,
            process_request=self._check_path,
            compression=None,
            max_size=s.push_max_message_bytes,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            close_timeout=5,
            backlog=4096,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("dedicated push transport on %s:%s%s", s.host, self.port, PATH)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 10)

    @staticmethod
    def _check_path(ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return ws.respond(404, "not found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        hub, s = self.hub, self.settings
        token, ticket = _credentials(ws.request)
        for message in (ws.request, ws.response):  # handshake done: free the headers (~2 KiB)
            if message is not None:
                message.headers.clear()
        peer = ws.remote_address
        client = str(peer[0]) if isinstance(peer, tuple) and peer else None
        principal, token_hash, code, reason = await hub.access.authorise(token, ticket, client)
        if principal is None:
            await ws.close(code, reason)
            return
        conn = hub.open(DirectConnection, ws, principal, token_hash)
        intake = Intake(s)
        try:
            async for data in ws:
                if conn.close_code is not None or not intake.admit(conn, data):
                    break
                await hub.on_message(conn, data)
        except ConnectionClosed:
            pass
        finally:
            await hub.drop(conn)
            if conn.close_code is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(conn.closed.wait(), 6)
            else:
                conn.close_code = 1000
                writer, conn._writer = conn._writer, None
                if writer is not None:
                    writer.cancel()
