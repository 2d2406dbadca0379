"""`GET /metrics` for Prometheus, on its own port (`CLICKPULSE_METRICS_PORT`), never on the
app's: the app's `/metrics` is the org's metric definitions, and a scrape shows every org's
figures, so no org's credential may ever open it. Only the operator's scrape token
(`CLICKPULSE_METRICS_TOKEN`, as a bearer token or a basic-auth password) does; without one the
listener must be on a loopback address (checked in app/config.py). docs/deployment.md,
"Operators: metrics and logs"."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import socket
from typing import Any

import uvicorn

from app.observability.metrics import Telemetry

log = logging.getLogger("clickpulse.metrics")

PATH = "/metrics"
# The classic text format, which every Prometheus version reads (our names need nothing newer).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_CHALLENGE = b'Bearer realm="clickpulse-metrics", Basic realm="clickpulse-metrics"'


def _digest(secret: str) -> bytes:
    # Compared as digests: equal lengths, so the comparison's time says nothing about the token.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def presented_secret(authorization: str | None) -> str | None:
    """The secret of an `Authorization` header: a bearer token, or a basic-auth password (any
    user name: Prometheus' `basic_auth` needs one). None when there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class MetricsApp:
    """The ASGI app of the metrics port: `GET|HEAD /metrics` with the scrape token, nothing else.
    Rendering runs on the event loop, where the parts it reads are changed (no thread races)."""

    def __init__(self, telemetry: Telemetry, token: str | None) -> None:
        self.telemetry = telemetry
        self._token = _digest(token) if token else None

    def authorised(self, authorization: str | None) -> bool:
        """Whether the header carries the scrape token (always, when none is configured)."""
        if self._token is None:
            return True
        secret = presented_secret(authorization)
        return secret is not None and hmac.compare_digest(_digest(secret), self._token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
        if scope["path"] != PATH:
            await _answer(send, 404, b"not found\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        elif not self.authorised(authorization):
            await _answer(send, 401, b"unauthorized\n", [(b"www-authenticate", _CHALLENGE)])
        else:
            body = self.telemetry.exposition()
            await _answer(
                send,
                200,
                b"" if scope["method"] == "HEAD" else body,
                [(b"content-type", CONTENT_TYPE)],
                length=len(body),
            )


async def _answer(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    length: int | None = None,
) -> None:
    headers = [
        *(headers or [(b"content-type", b"text/plain; charset=utf-8")]),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Config(uvicorn.Config):
    """uvicorn's config without its logging setup: that is the process's (and `access_log=False`
    would empty the `uvicorn.access` logger the app's own server shares)."""

    def configure_logging(self) -> None:
        pass


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: the app's own server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class MetricsServer:
    """The metrics port: `MetricsApp` served by uvicorn inside the app's event loop."""

    def __init__(self, telemetry: Telemetry, host: str, port: int, token: str | None) -> None:
        self.app = MetricsApp(telemetry, token)
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the bound port (port 0: any free one)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        if self._task is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = _Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            ws="none",
            timeout_keep_alive=30,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the metrics server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("Prometheus metrics on http://%s:%s%s", self.host, self.port, PATH)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        task, self._task = self._task, None
        if task is None or self._server is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
