"""/readyz reflects ingest failures that a probe cannot see: a full WAL disk, the WAL over its
bound, ClickHouse refusing INSERTs. Each failure is logged once per change of state.

Real app, real chDB and PostgreSQL; the full disk is a real one (a 256 KiB tmpfs), the failing
INSERT a real ClickHouse error (the writer's target table does not exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from pathlib import Path

import pytest

from tests.ingest.helpers import rows

GUARD_S = 60  # hang guard only


async def _post(client, org, body):
    return await client.post("/v1/events", json=body, headers=org.ingest_headers)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def caplog():
    """Records of the `clickpulse` loggers (the app's logging setup may stop propagation to
    the root logger, where pytest's own caplog listens)."""
    handler = _Records()
    logger = logging.getLogger("clickpulse")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _log_lines(caplog, text: str) -> int:
    """Lines at INFO or above containing `text` (what an operator's log shows)."""
    return sum(1 for r in caplog.records if r.levelno >= logging.INFO and text in r.getMessage())


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "256k"):
    """A real filesystem of `size` at `path` (needs mount rights: root in this sandbox)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Fill `disk` with one file until it is full; answer that file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


async def test_full_wal_disk_makes_readyz_unready_and_is_logged_once(
    make_client, ch, org, tmp_path, caplog
):
    with _small_disk(tmp_path / "waldisk") as disk:
        async with make_client(wal_dir=str(disk / "wal")) as (client, services):
            assert (await client.get("/readyz")).status_code == 200
            filler = _fill(disk)
            for _ in range(3):
                r = await _post(client, org, [{"event": "lost"}] * 50)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "storage_unavailable"
            ready = await client.get("/readyz")
            body = ready.json()
            assert ready.status_code == 503 and body["ready"] is False
            assert body["components"]["clickhouse"]["ok"] is True  # the probe sees nothing
            wal = body["components"]["wal"]
            assert wal["ok"] is False and wal["blocks_ingest"] is True
            assert "No space left on device" in wal["detail"]
            assert wal["failures"] == 3
            assert "wal" in body["degraded"]
            # three refused requests, one line
            assert _log_lines(caplog, "wal is failing") == 1

            filler.unlink()  # space again
            assert (await _post(client, org, [{"event": "kept"}])).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["components"]["wal"] == {
                "ok": True,
                "detail": "",
                "blocks_ingest": True,
            }
            assert "wal" not in ready.json()["degraded"]
            assert _log_lines(caplog, "wal recovered") == 1
            await asyncio.wait_for(services.writer.wait_inserted(), GUARD_S)
    assert rows(ch, "SELECT event, count() FROM {db}.events GROUP BY event") == [["kept", 1]]


async def test_failing_inserts_with_the_wal_off_make_readyz_unready(make_client, ch, org, caplog):
    async with make_client(wal_enabled=False) as (client, services):
        services.writer.table = "no_such_table"  # every INSERT fails in ClickHouse
        for _ in range(3):
            r = await _post(client, org, [{"event": "a"}])
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
        ready = await client.get("/readyz")
        body = ready.json()
        assert ready.status_code == 503 and body["ready"] is False
        assert body["components"]["clickhouse"]["ok"] is True  # SELECT 1 still answers
        insert = body["components"]["clickhouse_insert"]
        assert insert["ok"] is False and insert["blocks_ingest"] is True
        assert "no_such_table" in insert["detail"] and insert["failures"] == 3
        assert "clickhouse_insert" in body["degraded"] and "wal" not in body["components"]
        assert _log_lines(caplog, "clickhouse_insert is failing") == 1
        assert _log_lines(caplog, "insert of 1 events into no_such_table failed") == 1

        services.writer.table = "events_queue"
        assert (await _post(client, org, [{"event": "b"}])).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["components"]["clickhouse_insert"]["ok"]
        assert _log_lines(caplog, "clickhouse_insert recovered") == 1


async def test_failing_inserts_with_the_wal_degrade_then_a_full_wal_makes_unready(
    make_client, ch, org, caplog
):
    async with make_client(wal_max_bytes=1) as (client, services):
        services.writer.table = "no_such_table"
        # accepted into the WAL although ClickHouse refuses the INSERT: degraded, still ready
        assert (await _post(client, org, [{"event": "a"}])).status_code == 200

        async def failed_twice():
            while services.writer.insert_health.failures < 2:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(failed_twice(), GUARD_S)
        ready = await client.get("/readyz")
        body = ready.json()
        assert ready.status_code == 200 and body["ready"] is True
        assert body["components"]["clickhouse_insert"]["ok"] is False
        assert body["components"]["clickhouse_insert"]["blocks_ingest"] is False
        assert "clickhouse_insert" in body["degraded"]

        # the WAL now holds more than its bound: every request is refused until inserts resume
        r = await _post(client, org, [{"event": "b"}])
        assert r.status_code == 503 and r.json()["error"]["code"] == "ingest_overloaded"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["components"]["wal"]["detail"].startswith("full: the ingest WAL holds")
        # only the first insert failure is logged, not every retry
        assert _log_lines(caplog, "no_such_table failed") == 1

        services.writer.table = "events_queue"
        await asyncio.wait_for(services.writer.wait_inserted(), GUARD_S)
        ready = await client.get("/readyz")  # recovered without another request
        assert ready.status_code == 200, ready.text
        assert ready.json()["degraded"] == []
        assert _log_lines(caplog, "wal recovered") == 1
    assert rows(ch, "SELECT event FROM {db}.events") == [["a"]]
