"""JSON logs (CLICKPULSE_LOG_FORMAT=json): one JSON object per line, redacted like text lines —
the formatter over the real record factory, and the real `clickpulse serve` driven over HTTP
and WebSocket with credentials in URLs and headers, its metrics port scraped on the way."""

from __future__ import annotations

import io
import json
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
from app.observability.logformat import JsonFormatter, uvicorn_log_config
from tests.observability.conftest import SCRAPE_TOKEN, parse

STARTUP_GUARD_S = 180  # hang guard only; nothing asserts on time


def _lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_parse_and_are_redacted():
    logredact.install()
    secret = new_secret("cpt_")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("clickpulse.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info('token %s\nsecond line "quoted" ünïcode', secret)
        logger.warning("header %(h)s", {"h": f"Authorization: Bearer {secret}"})
        try:
            raise RuntimeError(f"failed calling /login?token={secret}")
        except RuntimeError:
            logger.exception("with a traceback")
        access = logging.getLogRecordFactory()(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", f"/ws/subscribe?token={secret}", "1.1", 101),
            None,
        )
        logger.handle(access)  # as uvicorn's access logger would: its args become `http`
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert secret not in text and secret[10:20] not in text
    first, second, third, access = _lines(stream)  # one object per record, newlines escaped
    assert first["level"] == "INFO" and first["logger"] == "clickpulse.test.json"
    assert first["message"] == (f'token {secret[:10]}[redacted]\nsecond line "quoted" ünïcode')
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert second["message"] == "header Authorization: Bearer [redacted]"
    assert "token=[redacted]" in third["exc"] and "RuntimeError" in third["exc"]
    assert access["http"] == {
        "client": "1.2.3.4:5",
        "method": "GET",
        "path": "/ws/subscribe?token=[redacted]",
        "http_version": "1.1",
        "status": 101,
    }


def test_text_keeps_uvicorns_own_configuration():
    from uvicorn.config import LOGGING_CONFIG

    assert uvicorn_log_config("text") is LOGGING_CONFIG
    json_config = uvicorn_log_config("json")
    assert all(v["handlers"] == [] and v["propagate"] for v in json_config["loggers"].values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_served_app_logs_json_lines_without_secrets(tmp_path: Path, pg_url, org):
    port, metrics_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP")}
    env |= {
        "DATABASE_URL": pg_url,
        "CLICKPULSE_DATA_DIR": str(tmp_path / "data"),
        "CLICKPULSE_PORT": str(port),
        "CLICKPULSE_LOG_FORMAT": "json",
        "CLICKPULSE_METRICS_PORT": str(metrics_port),
        "CLICKPULSE_METRICS_TOKEN": SCRAPE_TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        stdout=(tmp_path / "stdout.txt").open("w"),  # what the CLI prints; logs go to stderr
        stderr=log.open("w"),
        stdin=subprocess.DEVNULL,
        env=env,
    )
    unknown = new_secret("cpt_")
    try:
        deadline = time.monotonic() + STARTUP_GUARD_S
        while f"Uvicorn running on http://127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get(f"/login?token={org.admin_token}")).status_code == 200
            r = await http.get(f"/dashboards?token={unknown}&api_key={org.api_key}")
            assert r.status_code == 401
            r = await http.post("/v1/events", json=[{"event": "x"}], headers=org.ingest_headers)
            assert r.status_code == 200, r.text
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            assert (await http.get(metrics, headers=org.admin_headers)).status_code == 401
            r = await http.get(metrics, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
            assert r.status_code == 200
            samples = parse(r.text)
            assert samples.get_value("clickpulse_ingest_events_accepted_total") == 1
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/subscribe?token={org.admin_token}"
        ) as ws:
            await ws.send('{"type": "ping"}')
            assert "pong" in await ws.recv()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    paths = [line["http"]["path"] for line in lines if "http" in line]
    assert "/login?token=[redacted]" in paths
    assert "/dashboards?token=[redacted]&api_key=[redacted]" in paths
    assert any('"WebSocket /ws/subscribe?token=[redacted]"' in line["message"] for line in lines)
    assert "/metrics" in paths  # the metrics port's requests are logged like the app's
    assert any(line["logger"] == "clickpulse.metrics" for line in lines)
    for secret in (org.admin_token, org.api_key, unknown, SCRAPE_TOKEN):
        assert secret not in text
        assert secret[10:] not in text


@pytest.mark.parametrize("value", ["xml", "JSONL"])
def test_an_unknown_log_format_stops_the_cli(value, tmp_path):
    env = {**os.environ, "CLICKPULSE_LOG_FORMAT": value, "CLICKPULSE_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_GUARD_S,
    )
    assert proc.returncode == 2
    assert "CLICKPULSE_LOG_FORMAT must be one of text, json" in proc.stderr
