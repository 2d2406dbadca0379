"""No secret reaches a log line (app/logredact.py): the redaction rules, every logger through
the record factory, and the real `clickpulse serve` (uvicorn's own logging configuration)
driven over HTTP and WebSocket with credentials in URLs and headers."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from app import logredact
from app.credentials import new_secret
from app.logredact import redact

STARTUP_GUARD_S = 180  # hang guard only; nothing asserts on time

TOKEN = "cpt_" + "A1b2C3" + "x" * 37
KEY = "cpk_" + "Zz9_-8" + "y" * 37


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'127.0.0.1:5 - "GET /ws/subscribe?token={TOKEN} HTTP/1.1" 101',
            '127.0.0.1:5 - "GET /ws/subscribe?token=[redacted] HTTP/1.1" 101',
        ),
        ("/login?token=not-even-ours&next=/", "/login?token=[redacted]&next=/"),
        (
            "/x?ticket=t1&api_key=k2&apikey=k3&access_token=k4&key=k5&Password=p",
            "/x?ticket=[redacted]&api_key=[redacted]&apikey=[redacted]"
            "&access_token=[redacted]&key=[redacted]&Password=[redacted]",
        ),
        ("cache_key=abc token_count=3 monkey=x", "cache_key=abc token_count=3 monkey=x"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer [redacted]"),
        ("authorization: basic dXNlcjpwYXNz", "authorization: basic [redacted]"),
        (f"X-Api-Key: {KEY}", "X-Api-Key: [redacted]"),
        (
            f"[(b'host', b'x'), (b'authorization', b'Bearer {TOKEN}'), (b'x-api-key', b'{KEY}')]",
            "[(b'host', b'x'), (b'authorization', b'Bearer [redacted]'), "
            "(b'x-api-key', b'[redacted]')]",
        ),
        (
            f"{{'Authorization': 'Bearer {TOKEN}', 'cookie': 'a=1; b=2'}}",
            "{'Authorization': 'Bearer [redacted]', 'cookie': '[redacted]'}",
        ),
        ("Cookie: session=abc; other=def", "Cookie: [redacted]"),
        # Our credentials anywhere else keep their display prefix (credentials.display_prefix).
        (
            f"revoked {TOKEN}, key {KEY}.",
            "revoked cpt_A1b2C3[redacted], key cpk_Zz9_-8[redacted].",
        ),
        (
            "missing authorization header; see cpt_ docs",
            "missing authorization header; see cpt_ docs",
        ),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


@pytest.fixture
def installed():
    logredact.install()
    logredact.install()  # idempotent: one wrapper, not two


@pytest.mark.parametrize(
    "logger_name", ["uvicorn.access", "uvicorn.error", "litestar", "clickpulse.push", "httpx"]
)
def test_every_logger_every_part_of_a_record(installed, logger_name):
    secret = new_secret("cpt_")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger(logger_name)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # like uvicorn.access: the factory still covers it
    try:
        logger.info("in the message %s", secret)
        logger.info(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/ws?token={secret}", "1.1", 101
        )
        logger.info("mapping %(h)s", {"h": f"Authorization: Bearer {secret}"})
        logger.warning("bytes %r and an object %s", secret.encode(), ValueError(secret))
        try:
            raise RuntimeError(f"failed calling /login?token={secret}")
        except RuntimeError:
            logger.exception("with a traceback")
        logger.info("stack", stack_info=True, extra={"unused": secret})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    output = stream.getvalue()
    assert secret not in output
    assert secret[10:20] not in output
    assert output.count("[redacted]") >= 6, output
    assert "101" in output and "RuntimeError" in output  # formatting itself still works


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_served_app_logs_no_secret(tmp_path: Path, pg_url, org):
    port = _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP")}
    env |= {
        "DATABASE_URL": pg_url,
        "CLICKPULSE_DATA_DIR": str(tmp_path / "data"),
        "CLICKPULSE_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    unknown = new_secret("cpt_")
    try:
        deadline = time.monotonic() + STARTUP_GUARD_S
        while "Uvicorn running on" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get(f"/login?token={org.admin_token}")).status_code == 200
            r = await http.get("/dashboards", headers=org.admin_headers)
            assert r.status_code == 200, r.text
            r = await http.get(f"/dashboards?token={unknown}&api_key={org.api_key}")
            assert r.status_code == 401
            r = await http.post("/v1/events", json=[{"event": "x"}], headers=org.ingest_headers)
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/events?key={org.api_key}", json=[{"event": "x"}])
            assert r.status_code == 401
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/subscribe?token={org.admin_token}"
        ) as ws:
            await ws.send('{"type": "ping"}')
            assert "pong" in await ws.recv()
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/subscribe?token={unknown}") as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    text = log.read_text()
    # The requests were logged (so the check below looks at real access-log lines) ...
    assert '"GET /login?token=[redacted] HTTP/1.1" 200' in text, text[-3000:]
    assert "/ws/subscribe?token=[redacted]" in text
    assert "/dashboards?token=[redacted]&api_key=[redacted]" in text
    # ... and no secret, nor a long piece of one, is in any line.
    for secret in (org.admin_token, org.api_key, unknown):
        assert secret not in text
        assert secret[10:] not in text
