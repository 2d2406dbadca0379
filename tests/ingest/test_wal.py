"""EventWriter with its write-ahead log, against real chDB and a real directory.

Acknowledged = written to the WAL; inserted later in big batches; retried on failure;
replayed after a crash (a real one: a child process killed with SIGKILL); bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.config import Settings
from app.ingest.wal import CHECKPOINT_NAME, LOCK_NAME, read_segment
from app.ingest.writer import EventWriter, WalWriteFailed, WriterOverloaded
from tests.ingest.helpers import make_columns, rows, scalar

GUARD_S = 60  # hang guard only; no test asserts on elapsed time
NEVER_MS = 3_600_000  # a max delay no test waits for


def _settings(wal_dir: Path, **overrides) -> Settings:
    return Settings(wal_dir=str(wal_dir), **overrides)


def _segments(wal_dir: Path) -> list[Path]:
    return sorted(p for p in wal_dir.iterdir() if p.name not in (LOCK_NAME, CHECKPOINT_NAME))


async def _until(predicate) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), GUARD_S)


async def test_submit_returns_once_in_the_wal_and_the_segment_is_retired_after_insert(ch, tmp_path):
    writer = EventWriter(
        ch, _settings(tmp_path, writer_max_rows=1_000, writer_max_delay_ms=NEVER_MS)
    )
    await writer.start()
    try:
        await asyncio.wait_for(writer.submit(make_columns(3)), GUARD_S)
        # Acknowledged, not inserted: the rows are in the WAL and in memory only.
        assert writer.pending_rows == 3
        assert writer.oldest_pending_age_s() > 0
        assert scalar(ch, "SELECT count() FROM {db}.events") == 0
        (segment,) = _segments(tmp_path)
        assert len(read_segment(str(segment)).payloads) == 1

        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
        assert rows(ch, "SELECT user_id, value, props FROM {db}.events ORDER BY user_id") == [
            ["u0", 0, {"i": "0"}],
            ["u1", 1, {"i": "1"}],
            ["u2", 2, {"i": "2"}],
        ]
        assert _segments(tmp_path) == []  # retired
        assert (writer.pending_rows, writer.oldest_pending_age_s()) == (0, 0)
    finally:
        await writer.stop()


async def test_flush_on_size_takes_everything_buffered_in_one_insert(ch, tmp_path):
    writer = EventWriter(ch, _settings(tmp_path, writer_max_rows=10, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    try:
        # Six acknowledged submissions before the flusher runs: one INSERT takes all 30 rows.
        for i in range(6):
            await writer.submit(make_columns(5, start=i * 5))
        await _until(lambda: writer.rows_written == 30)
        assert writer.flushes == 1
        assert scalar(ch, "SELECT uniqExact(user_id) FROM {db}.events") == 30
        assert scalar(ch, "SELECT sum(events) FROM {db}.rollup_1d") == 30
    finally:
        await writer.stop()


async def test_failed_insert_is_retried_and_the_rows_stay_in_the_wal(ch, tmp_path):
    writer = EventWriter(ch, _settings(tmp_path, writer_max_rows=2))
    writer.table = "no_such_table"
    await writer.start()
    try:
        await writer.submit(make_columns(2))
        await _until(lambda: writer.failed_flushes >= 2)
        assert writer.pending_rows == 2
        assert len(_segments(tmp_path)) >= 1  # nothing retired
        await writer.submit(make_columns(2, start=2))  # still accepted meanwhile
        writer.table = "events_queue"
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
        assert rows(ch, "SELECT uniqExact(user_id), count() FROM {db}.events") == [[4, 4]]
        assert _segments(tmp_path) == []
    finally:
        await writer.stop()


async def test_stop_inserts_everything_and_leaves_no_segments(ch, tmp_path):
    writer = EventWriter(
        ch, _settings(tmp_path, writer_max_rows=1_000_000, writer_max_delay_ms=NEVER_MS)
    )
    await writer.start()
    for i in range(3):
        await writer.submit(make_columns(4, start=i * 4))
    await asyncio.wait_for(writer.stop(), GUARD_S)
    assert scalar(ch, "SELECT count() FROM {db}.events") == 12
    assert _segments(tmp_path) == []
    # A clean stop needs no replay: the next writer finds nothing to do.
    writer = EventWriter(ch, _settings(tmp_path))
    await writer.start()
    await writer.stop()
    assert writer.replayed_rows == 0
    assert scalar(ch, "SELECT count() FROM {db}.events") == 12


async def test_stop_while_clickhouse_fails_keeps_the_rows_for_the_next_start(ch, tmp_path):
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    writer.table = "no_such_table"
    await writer.start()
    await writer.submit(make_columns(5))
    await asyncio.wait_for(writer.stop(), GUARD_S)  # gives up after a few attempts
    assert writer.failed_flushes >= 1
    assert len(_segments(tmp_path)) == 1

    # The same instance started again replays from the WAL (once: nothing kept in memory).
    writer.table = "events_queue"
    await asyncio.wait_for(writer.start(), GUARD_S)  # replays before accepting anything
    try:
        assert writer.replayed_rows == 5
        assert scalar(ch, "SELECT count() FROM {db}.events") == 5
        assert _segments(tmp_path) == []
        await writer.submit(make_columns(1, start=10))
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
        assert scalar(ch, "SELECT count() FROM {db}.events") == 6
    finally:
        await writer.stop()


CRASHING_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, {root!r})
    from app.clickhouse import EmbeddedClickHouse
    from app.config import Settings
    from app.ingest.writer import EventWriter
    from tests.ingest.helpers import make_columns

    async def main():
        # Its own chDB (one path per process); the writer never reaches it: no flush is due.
        ch = EmbeddedClickHouse(database="default", data_dir={chdb!r})
        writer = EventWriter(
            ch, Settings(wal_dir={wal!r}, writer_max_rows=10**9, writer_max_delay_ms=10**9)
        )
        await writer.start()
        for i in range(4):
            await writer.submit(make_columns(250, start=i * 250))  # each one acknowledged
        print("acked", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_acknowledged_rows_survive_a_crash_and_are_replayed_once(ch, tmp_path):
    wal_dir = tmp_path / "wal"
    script = CRASHING_CHILD.format(
        root=str(Path(__file__).resolve().parents[2]),
        chdb=str(tmp_path / "child-chdb"),
        wal=str(wal_dir),
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), GUARD_S)
        assert line.strip() == "acked"
        # A second writer cannot take a WAL that a live process owns.
        with pytest.raises(WalWriteFailed, match="in use"):
            await EventWriter(ch, _settings(wal_dir)).start()
    finally:
        child.send_signal(signal.SIGKILL)  # a crash: no stop(), no flush
        child.wait(GUARD_S)
        child.stdout.close()

    writer = EventWriter(ch, _settings(wal_dir))
    await asyncio.wait_for(writer.start(), GUARD_S)
    try:
        assert writer.replayed_rows == 1_000
        assert rows(ch, "SELECT count(), uniqExact(user_id) FROM {db}.events") == [[1_000, 1_000]]
        assert scalar(ch, "SELECT sum(events) FROM {db}.rollup_1m") == 1_000
        assert _segments(wal_dir) == []
        # New rows after the replay go to a new segment and are inserted as usual.
        await writer.submit(make_columns(1, start=5_000))
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
        assert scalar(ch, "SELECT count() FROM {db}.events") == 1_001
    finally:
        await writer.stop()


async def test_torn_tail_replays_the_valid_records_and_keeps_the_file(ch, tmp_path):
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    writer.table = "no_such_table"  # so the rows stay in the WAL at stop
    await writer.start()
    await writer.submit(make_columns(3))
    await writer.submit(make_columns(2, start=3))
    await asyncio.wait_for(writer.stop(), GUARD_S)
    (segment,) = _segments(tmp_path)
    with open(segment, "ab") as f:  # a record cut short by a crash mid-write
        f.write(b"CPW1\x00\x10\x00\x00garbage")

    writer = EventWriter(ch, _settings(tmp_path))
    await asyncio.wait_for(writer.start(), GUARD_S)
    await writer.stop()
    assert writer.replayed_rows == 5
    assert scalar(ch, "SELECT count() FROM {db}.events") == 5
    assert [p.name for p in _segments(tmp_path)] == [segment.name + ".damaged"]


async def test_backpressure_on_pending_rows_and_wal_bytes(ch, tmp_path):
    writer = EventWriter(
        ch,
        _settings(tmp_path / "a", writer_max_delay_ms=NEVER_MS, writer_max_pending_rows=5),
    )
    await writer.start()
    try:
        await writer.submit(make_columns(4))
        with pytest.raises(WriterOverloaded):
            await writer.submit(make_columns(2))
        assert writer.pending_rows == 4  # the refused rows were not accepted
        (segment,) = _segments(tmp_path / "a")
        assert len(read_segment(str(segment)).payloads) == 1  # nor written to the WAL
    finally:
        await writer.stop()

    writer = EventWriter(
        ch, _settings(tmp_path / "b", writer_max_delay_ms=NEVER_MS, wal_max_bytes=1)
    )
    await writer.start()
    try:
        await writer.submit(make_columns(1))  # the WAL was empty: accepted
        with pytest.raises(WriterOverloaded, match="WAL"):
            await writer.submit(make_columns(1))
    finally:
        await writer.stop()
    assert scalar(ch, "SELECT count() FROM {db}.events") == 5


async def test_fsync_group_commit_one_fsync_for_concurrent_submissions(ch, tmp_path):
    writer = EventWriter(ch, _settings(tmp_path, wal_fsync=True, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    try:
        await asyncio.gather(*(writer.submit(make_columns(2, start=i * 2)) for i in range(10)))
        assert writer.wal is not None
        assert writer.wal.fsyncs == 1  # all ten arrived before the fsync started
        await writer.submit(make_columns(1, start=100))
        assert writer.wal.fsyncs == 2
        (segment,) = _segments(tmp_path)
        assert len(read_segment(str(segment)).payloads) == 11
        assert os.path.getsize(segment) == read_segment(str(segment)).valid_bytes
    finally:
        await writer.stop()
    assert scalar(ch, "SELECT count() FROM {db}.events") == 21


async def test_fsync_while_flushes_seal_segments_loses_nothing(ch, tmp_path):
    # Small blocks: segments are sealed (and retired) while group fsyncs are running.
    writer = EventWriter(
        ch, _settings(tmp_path, wal_fsync=True, writer_max_rows=3, writer_max_delay_ms=1)
    )
    await writer.start()
    try:
        for round_ in range(5):
            await asyncio.gather(
                *(writer.submit(make_columns(2, start=round_ * 100 + i * 2)) for i in range(8))
            )
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    finally:
        await writer.stop()
    assert rows(ch, "SELECT count(), uniqExact(user_id) FROM {db}.events") == [[80, 80]]
    assert _segments(tmp_path) == []
