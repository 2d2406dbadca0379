"""EventWriter against real chDB, WAL off: flush by size, by time, on stop; failures reach the
waiters. (The WAL mode is tested in test_wal.py.)"""

from __future__ import annotations

import asyncio

import pytest

from app.config import Settings
from app.ingest.writer import EventWriter, InsertFailed, WriterClosed, WriterOverloaded
from tests.ingest.helpers import make_columns, rows, scalar

# Hang guard only (a broken writer would never answer); no test asserts on elapsed time.
GUARD_S = 60


def _settings(**overrides) -> Settings:
    # WAL off: submit() waits for the INSERT, which these tests are about.
    return Settings(wal_enabled=False, **overrides)


async def test_flush_on_size(ch):
    # The delay is far beyond the guard: only the size trigger can complete this submit.
    writer = EventWriter(ch, _settings(writer_max_rows=10, writer_max_delay_ms=3_600_000))
    await writer.start()
    try:
        await asyncio.wait_for(writer.submit(make_columns(10)), GUARD_S)
        assert writer.flushes == 1
        assert scalar(ch, "SELECT count() FROM {db}.events") == 10
    finally:
        await writer.stop()


async def test_flush_on_time(ch):
    # Far below the size trigger: only the max-delay timer can complete this submit.
    writer = EventWriter(ch, _settings(writer_max_rows=1_000_000, writer_max_delay_ms=20))
    await writer.start()
    try:
        await asyncio.wait_for(writer.submit(make_columns(3)), GUARD_S)
        assert (writer.flushes, writer.rows_written) == (1, 3)
        assert rows(ch, "SELECT user_id, value, props FROM {db}.events ORDER BY user_id") == [
            ["u0", 0, {"i": "0"}],
            ["u1", 1, {"i": "1"}],
            ["u2", 2, {"i": "2"}],
        ]
    finally:
        await writer.stop()


async def test_submissions_accumulate_into_one_batch(ch):
    writer = EventWriter(ch, _settings(writer_max_rows=5, writer_max_delay_ms=3_600_000))
    await writer.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(writer.submit(make_columns(5, start=i * 5)) for i in range(6))),
            GUARD_S,
        )
        assert writer.rows_written == 30
        assert writer.flushes < 6  # rows buffered while a flush runs join the next batch
        assert scalar(ch, "SELECT uniqExact(user_id) FROM {db}.events") == 30
        assert scalar(ch, "SELECT sum(events) FROM {db}.rollup_1d") == 30
    finally:
        await writer.stop()


async def test_stop_flushes_everything_pending(ch):
    writer = EventWriter(ch, _settings(writer_max_rows=1_000_000, writer_max_delay_ms=3_600_000))
    await writer.start()
    pending = [asyncio.create_task(writer.submit(make_columns(4, start=i * 4))) for i in range(3)]
    await asyncio.sleep(0)  # let the submissions reach the buffer
    assert writer.pending_rows == 12
    await asyncio.wait_for(writer.stop(), GUARD_S)
    await asyncio.gather(*pending)  # every waiter was told "stored"
    assert scalar(ch, "SELECT count() FROM {db}.events") == 12
    assert writer.pending_rows == 0
    with pytest.raises(WriterClosed):
        await writer.submit(make_columns(1))


async def test_failed_insert_fails_its_waiters(ch):
    # A database that does not exist: the INSERT fails in ClickHouse.
    writer = EventWriter(ch.with_database("t_dropped_database"), _settings(writer_max_rows=2))
    await writer.start()
    try:
        with pytest.raises(InsertFailed):
            await asyncio.wait_for(writer.submit(make_columns(2)), GUARD_S)
        assert (writer.failed_flushes, writer.rows_written, writer.pending_rows) == (1, 0, 0)
    finally:
        await writer.stop()


async def test_failed_insert_after_drop_database(ch, ch_root):
    from tests.conftest import fresh_clickhouse

    doomed = fresh_clickhouse(ch_root)
    writer = EventWriter(doomed, _settings(writer_max_rows=2))
    await writer.start()
    try:
        await asyncio.wait_for(writer.submit(make_columns(2)), GUARD_S)
        doomed.command_sync(f"DROP DATABASE {doomed.database} SYNC")
        with pytest.raises(InsertFailed):
            await asyncio.wait_for(writer.submit(make_columns(2)), GUARD_S)
        assert writer.rows_written == 2
    finally:
        await writer.stop()
        doomed.close()


async def test_backpressure_refuses_instead_of_buffering(ch):
    writer = EventWriter(
        ch,
        _settings(
            writer_max_rows=1_000_000, writer_max_delay_ms=3_600_000, writer_max_pending_rows=5
        ),
    )
    await writer.start()
    first = asyncio.create_task(writer.submit(make_columns(4)))
    await asyncio.sleep(0)
    with pytest.raises(WriterOverloaded):
        await writer.submit(make_columns(2))
    assert writer.pending_rows == 4  # the refused rows were not buffered
    await asyncio.wait_for(writer.stop(), GUARD_S)
    await first
    assert scalar(ch, "SELECT count() FROM {db}.events") == 4
