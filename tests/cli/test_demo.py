"""`clickpulse demo` end to end: embedded everything, Ctrl-C stops cleanly, a restart keeps data.

Runs the real command in a subprocess (its own chDB and an embedded PostgreSQL from pgserver
on a temporary data dir), talks to it over HTTP like a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.demo.traffic import EVENTS_SENT

STARTUP_GUARD_S = 180  # hang guard only; nothing asserts on time


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CLICKPULSE_DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        # A short history (~30 minutes) keeps the test quick; tests/demo checks the backfill.
        [
            sys.executable,
            "-m",
            "app.cli",
            "demo",
            "--port",
            str(port),
            "--events-per-s",
            "5",
            "--history-days",
            "0.02",
        ],  # fmt: skip
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _wait_running(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + STARTUP_GUARD_S
    while time.monotonic() < deadline:
        text = log.read_text()
        if "Press Ctrl-C to stop." in text:
            return text
        assert proc.poll() is None, f"demo exited early:\n{text[-3000:]}"
        time.sleep(0.3)
    raise AssertionError(f"demo did not start:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    text = log.read_text()
    assert "ClickPulse stopped." in text
    assert "Traceback" not in text
    return text


def _count_marked(base: str, token: str) -> int:
    response = httpx.post(
        f"{base}/query",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "definition": {"text": "SELECT countIf(event = 'cli_marker') AS n"},
            "from": str(int(time.time()) - 3600),
            "granularity": "1h",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return sum(row[body["columns"].index("n")] for row in body["rows"])


def test_demo_serves_traffic_stops_cleanly_and_keeps_data(tmp_path):
    data_dir, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo-1.log"
    proc = _start(data_dir, port, log)
    try:
        text = _wait_running(proc, log)
        api_key = re.search(r"Ingest key: +(cpk_\S+)", text).group(1)
        # The terminal is for a person: the history written, what is sent, no access log, no
        # library INFO lines, and the login URL last, alone on its line.
        assert re.search(r"^  [\d,]+ events in [\d.]+ s \(every rollup filled\)$", text, re.M)
        assert EVENTS_SENT in text
        lines = [line for line in text.splitlines() if line.strip()]
        assert re.fullmatch(rf"    http://127\.0\.0\.1:{port}/login\?token=cpt_\S+", lines[-1])
        assert " INFO " not in text and "POST /v1/events" not in text
        token = re.search(r"login\?token=(cpt_\S+)", text).group(1)
        saved = json.loads((data_dir / "demo-credentials.json").read_text())
        assert saved["api_key"] == api_key and saved["user_token"] == token

        posted = httpx.post(
            f"{base}/v1/events",
            headers={"Authorization": f"Bearer {api_key}"},
            json=[{"event": "cli_marker", "user_id": f"u{i}"} for i in range(7)],
            timeout=30,
        )
        assert posted.status_code == 200 and posted.json()["accepted"] == 7
        deadline = time.monotonic() + 30
        while _count_marked(base, token) != 7:
            assert time.monotonic() < deadline, "events never became visible"
            time.sleep(0.3)
        # The generator's own traffic arrives too (pages, purchases, errors from many users).
        readyz = httpx.get(f"{base}/readyz", timeout=10).json()
        assert readyz["ready"] is True
    finally:
        if proc.poll() is None:
            _stop(proc, log)

    log2 = tmp_path / "demo-2.log"
    proc = _start(data_dir, port, log2)
    try:
        text = _wait_running(proc, log2)
        assert f"login?token={token}" in text  # same org and credentials after a restart
        assert "kept from the first run" in text  # the history is written once
        assert _count_marked(base, token) == 7  # the data survived the restart
    finally:
        if proc.poll() is None:
            _stop(proc, log2)
