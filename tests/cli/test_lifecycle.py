"""Process lifecycle of `clickpulse serve`/`demo`: a failed startup exits non-zero, SIGTERM and
Ctrl-C stop cleanly (rows held by the writer inserted, the embedded PostgreSQL stopped, exit 0).

Real subprocesses on a temporary data dir and a free port, like tests/cli/test_demo.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import clickhouse_connect
import httpx
import pytest

from tests.cli.test_demo import STARTUP_GUARD_S, _count_marked, _free_port, _wait_running


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CLICKPULSE_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def _postmaster_pid(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's pid while its pid file exists (it is removed on a clean stop)."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as stopped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_failed_startup_exits_non_zero_and_stops_the_embedded_postgres(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "wal").write_text("not a directory")  # the writer cannot open its WAL
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(_free_port())],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(data_dir),
    )
    try:
        code = proc.wait(STARTUP_GUARD_S)  # before the fix: still running with no port open
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code != 0, text[-3000:]
    assert "Application startup failed" in text
    pid = _postmaster_pid(data_dir)
    assert pid is None or not _alive(pid), "the embedded PostgreSQL was left running"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_inserts_held_rows_stops_children_and_exits_0(tmp_path, stop_signal):
    data_dir, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    # The writer holds rows for up to 10 minutes: only the stop can insert them in time.
    ch_port = _free_port()  # the ClickHouse HTTP interface opens and closes with the process
    env = _env(
        data_dir,
        CLICKPULSE_WRITER_MAX_DELAY_MS="600000",
        CLICKPULSE_WRITER_MAX_ROWS="1000000",
        CLICKPULSE_CLICKHOUSE_HTTP_PORT=str(ch_port),
    )
    argv = [sys.executable, "-m", "app.cli", "demo", "--port", str(port), "--events-per-s", "5"]
    argv += ["--history-days", "0.02"]  # half an hour of history: the test is about the stop
    proc = subprocess.Popen(
        argv, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    try:
        text = _wait_running(proc, log)
        api_key = re.search(r"Ingest key: +(cpk_\S+)", text).group(1)
        token = re.search(r"login\?token=(cpt_\S+)", text).group(1)
        posted = httpx.post(
            f"{base}/v1/events",
            headers={"Authorization": f"Bearer {api_key}"},
            json=[{"event": "cli_marker", "user_id": f"u{i}"} for i in range(5)],
            timeout=30,
        )
        assert posted.status_code == 200 and posted.json()["accepted"] == 5
        assert _count_marked(base, token) == 0  # held by the writer, not inserted yet
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=ch_port, username="demo", password=token
        )
        assert client.command("SELECT count() FROM events WHERE event = 'cli_marker'") == 0
        client.close()
        pg_pid = _postmaster_pid(data_dir)
        assert pg_pid is not None and _alive(pg_pid)

        proc.send_signal(stop_signal)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text[-3000:]  # before the fix, SIGTERM: -15
    # The demo's terminal is quiet (no uvicorn INFO lines): its own last line says it stopped.
    assert text.rstrip().endswith("ClickPulse stopped."), text[-3000:]
    assert "Traceback" not in text
    assert "stay in the WAL" not in text
    with pytest.raises(OSError):  # the interface's listener stopped with the process
        socket.create_connection(("127.0.0.1", ch_port), timeout=2).close()
    # Everything the writer held was inserted at the stop: no WAL segment holds a row.
    assert [p.name for p in (data_dir / "wal").glob("*.wal") if p.stat().st_size] == []
    deadline = time.monotonic() + 30  # pg_ctl stop waits for the postmaster; bound generously
    while _alive(pg_pid):
        assert time.monotonic() < deadline, "the embedded PostgreSQL was left running"
        time.sleep(0.2)
