"""The client's watchdog against a frozen server: the app runs as its own process
(`python -m app.cli serve` over this test's PostgreSQL schema and a chDB data dir of its own),
which the test SIGSTOPs — a thread of the test process could not be frozen alone. The open
socket stays open (the kernel keeps the connection), so only the missing frames can tell."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STARTUP_GUARD_S = 120  # hang guards only; nothing asserts on time
TIMEOUT_MS = 30_000
STATE = "() => document.getElementById('freshness').dataset.state"
READ = """() => ({
  state: document.getElementById('freshness').dataset.state,
  badge: document.getElementById('freshness').textContent,
  stamp: document.getElementById('updated-at').textContent,
  stampAge: Number(document.getElementById('updated-at').dataset.ageS),
  body: document.body.dataset.freshness,
  opacity: Number(getComputedStyle(document.querySelector('.chart-box')).opacity),
  xMax: echarts.getInstanceByDom(document.querySelector('.chart-box')).getOption().xAxis[0].max,
})"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(pg_url: str, tmp: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CLICKHOUSE_URL")}
    env.pop("CLICKPULSE_CLICKHOUSE_URL", None)
    env.update(
        DATABASE_URL=pg_url,
        CLICKPULSE_DATA_DIR=str(tmp / "data"),
        CLICKPULSE_HOST="127.0.0.1",
        CLICKPULSE_PORT=str(port),
        CLICKPULSE_WRITER_MAX_DELAY_MS="20",
        CLICKPULSE_LIMIT_RATE_PER_S="1000",
        CLICKPULSE_LIMIT_BURST="1000",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=(tmp / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_up(proc: subprocess.Popen, base: str, tmp: Path) -> None:
    deadline = time.monotonic() + STARTUP_GUARD_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not start:\n" + (tmp / "serve.log").read_text()[-3000:])


async def test_badge_says_stalled_while_the_server_is_frozen_and_live_after(
    pg_url, org, page, tmp_path
):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(pg_url, tmp_path, port)
    stopped = False
    try:
        _wait_up(proc, base, tmp_path)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            now_ms = int(time.time() * 1000)
            r = await http.post(
                "/v1/events",
                json=[{"event": "pageview", "ts": now_ms - 1000 * i} for i in range(5)],
                headers=org.ingest_headers,
            )
            assert r.status_code == 200, r.text
            chart = {"chart_type": "line", "title": "Views", "default_range": "5m",
                     "metric_inline": {"text": "SELECT countIf(event = 'pageview') AS n"}}  # fmt: skip
            r = await http.post(
                "/dashboards", json={"name": "Ops", "charts": [chart]}, headers=org.admin_headers
            )
            assert r.status_code == 201, r.text
            dash = r.json()["id"]
        await page.goto(f"{base}/login?token={org.admin_token}")
        await page.wait_for_url(f"{base}/")
        await page.goto(f"{base}/d/{dash}")
        await page.wait_for_function(f"() => ({STATE})() === 'live'", timeout=TIMEOUT_MS)
        await page.locator("#updated-at:not([hidden])").wait_for()
        await page.wait_for_function(
            "() => { const o = echarts.getInstanceByDom(document.querySelector('.chart-box'))?.getOption();"
            " return !!(o && o.series && o.series.length && o.series[0].data.length); }",
            timeout=TIMEOUT_MS,
        )
        before = await page.evaluate(READ)
        assert before["opacity"] == 1 and before["body"] == "live"

        proc.send_signal(signal.SIGSTOP)
        stopped = True
        await page.wait_for_function(f"() => ({STATE})() === 'stalled'", timeout=TIMEOUT_MS)
        # Let a few more seconds pass frozen: the age grows, badge and stamp keep agreeing.
        await page.wait_for_function(
            "() => Number(document.getElementById('updated-at').dataset.ageS) >= 8",
            timeout=TIMEOUT_MS,
        )
        frozen = await page.evaluate(READ)
        match = re.fullmatch(r"stalled · last update (\d+) s ago", frozen["badge"])
        assert match, frozen
        assert frozen["stamp"] == f"updated {match.group(1)} s ago"
        assert int(match.group(1)) == frozen["stampAge"] >= 8
        assert frozen["body"] == "stalled" and frozen["opacity"] < 1  # the charts say so too
        # The 1 s chart stopped sliding: its window ends where the last update left it.
        await page.wait_for_timeout(2000)
        assert (await page.evaluate(READ))["xMax"] == frozen["xMax"]

        proc.send_signal(signal.SIGCONT)
        stopped = False
        await page.wait_for_function(f"() => ({STATE})() === 'live'", timeout=TIMEOUT_MS)
        back = await page.evaluate(READ)
        assert back["badge"] == "live" and back["body"] == "live" and back["opacity"] == 1
        assert back["stampAge"] < frozen["stampAge"]  # fresh again
    finally:
        if stopped:
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
