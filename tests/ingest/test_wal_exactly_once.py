"""Exactly once from the WAL into `events` and every rollup, in real chDB (issue #13, 1–2).

A crash inside or right after an INSERT leaves its segment for the replay; the replay cuts the
same segment and carries the same deduplication token, so whatever ClickHouse stored of it is
dropped per table (the cascaded rollups included) and the rest is stored. A segment that was
inserted but could not be deleted is not replayed at all (the checkpoint). The crash is
simulated in process here (the writer "dies" between the INSERT and the bookkeeping: those
calls do nothing); tests/ingest/test_crash.py does it with real SIGKILLs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from app.config import Settings
from app.ingest.wal import CHECKPOINT_NAME, LOCK_NAME, SUFFIX, Wal
from app.ingest.writer import EventWriter
from tests.ingest.helpers import make_columns, rows

GUARD_S = 60
NEVER_MS = 3_600_000
ROLLUPS = ["rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"]
DETAILS = ["rollup_detail_1m", "rollup_detail_1h", "rollup_detail_1d"]


def _settings(wal_dir: Path, **overrides) -> Settings:
    return Settings(wal_dir=str(wal_dir), **overrides)


def _segments(wal_dir: Path) -> list[Path]:
    return sorted(p for p in wal_dir.iterdir() if p.name not in (LOCK_NAME, CHECKPOINT_NAME))


def _counts(ch) -> dict[str, int]:
    """Events counted by each table (the detail rollups: the sum of their uniq states' rows is
    not a count, so their part-independent `count()` of groups x2 would show a double)."""
    out = {"events": rows(ch, "SELECT count() FROM {db}.events")[0][0]}
    for table in ROLLUPS:
        out[table] = rows(ch, f"SELECT sum(events) FROM {{db}}.{table}")[0][0]
    for table in ("metrics_1s", "metrics_1m", "metrics_1h", "metrics_1d"):
        out[table] = rows(ch, f"SELECT sum(events) FROM {{db}}.{table}")[0][0]
    return {k: int(v) for k, v in out.items()}


def _stop_merges(ch) -> None:
    for table in ["events", *ROLLUPS, *DETAILS]:
        ch.command_sync(f"SYSTEM STOP MERGES {ch.database}.{table}")


def _detail_rows(ch) -> dict[str, int]:
    # With merges stopped a doubled block shows as twice the rows in an AggregatingMergeTree.
    return {t: int(rows(ch, f"SELECT count() FROM {{db}}.{t}")[0][0]) for t in DETAILS}


def _die_after_insert(writer: EventWriter, monkeypatch) -> None:
    """The process 'dies' right after its INSERT returned: nothing of the bookkeeping after
    it (checkpoint, deletion) happens."""
    assert writer.wal is not None
    monkeypatch.setattr(writer.wal, "retire", lambda seqs: None)
    monkeypatch.setattr(writer.wal, "mark_inserted", lambda seq: None, raising=False)


async def test_a_crash_right_after_the_insert_does_not_count_the_batch_twice(
    ch, tmp_path, monkeypatch
):
    _stop_merges(ch)
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    _die_after_insert(writer, monkeypatch)
    for i in range(4):
        await writer.submit(make_columns(250, start=i * 250))
    await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    first = _counts(ch)
    details = _detail_rows(ch)
    assert set(first.values()) == {1_000}
    await writer.stop()
    assert len(_segments(tmp_path)) == 1  # inserted, never deleted: the crash window
    monkeypatch.undo()

    writer = EventWriter(ch, _settings(tmp_path))
    await asyncio.wait_for(writer.start(), GUARD_S)
    await writer.stop()
    assert writer.replayed_rows == 1_000  # replayed ...
    assert _counts(ch) == first  # ... and dropped in every table
    assert _detail_rows(ch) == details
    assert _segments(tmp_path) == []


async def test_an_insert_cut_short_half_way_is_completed_by_the_replay(ch, tmp_path):
    _stop_merges(ch)
    # rollup_1h refuses the block: events, rollup_1s and rollup_1m may have written theirs (a
    # crash inside the INSERT leaves the same picture).
    ch.command_sync(f"ALTER TABLE {ch.database}.rollup_1h ADD CONSTRAINT no CHECK events > 1e12")
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    await writer.submit(make_columns(300))
    await writer.submit(make_columns(200, start=300))
    await asyncio.wait_for(writer.stop(), GUARD_S)  # retried (same token), then given up
    assert writer.failed_flushes >= 2
    partial = _counts(ch)
    assert partial["rollup_1h"] == 0 and partial["events"] == 500  # once, not once per attempt
    ch.command_sync(f"ALTER TABLE {ch.database}.rollup_1h DROP CONSTRAINT no")

    writer = EventWriter(ch, _settings(tmp_path))
    await asyncio.wait_for(writer.start(), GUARD_S)
    await writer.stop()
    assert writer.replayed_rows == 500
    assert set(_counts(ch).values()) == {500}


async def test_a_retried_insert_keeps_its_rows_and_token_apart_from_newer_rows(
    ch, tmp_path, monkeypatch
):
    # A failing INSERT is retried alone; rows accepted meanwhile go to the next segment and
    # the next INSERT, so a replay after a crash re-cuts exactly the batches that were tried.
    writer = EventWriter(ch, _settings(tmp_path, writer_max_rows=2))
    writer.table = "no_such_table"
    await writer.start()
    try:
        await writer.submit(make_columns(2))
        await asyncio.wait_for(_until(lambda: writer.failed_flushes >= 2), GUARD_S)
        await writer.submit(make_columns(3, start=2))
        assert writer.wal is not None and len(_segments(tmp_path)) == 2
        tried = []
        real_insert = writer._insert
        monkeypatch.setattr(
            writer, "_insert", lambda b, token=None: (tried.append(token), real_insert(b, token))
        )
        writer.table = "events_queue"
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    finally:
        await writer.stop()
    assert len(tried) == 2 and len(set(tried)) == 2 and all(t.startswith("wal_") for t in tried)
    assert rows(ch, "SELECT count(), uniqExact(user_id) FROM {db}.events") == [[5, 5]]


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_segment_that_could_not_be_deleted_is_not_replayed(ch, tmp_path, monkeypatch):
    # As with a WAL directory that is read-only for a while (root ignores the mode bits, so
    # the refusal is injected): the first segment's deletion fails, later ones succeed.
    real_unlink = os.unlink
    refused: list[str] = []

    def unlink(path, *args, **kwargs):
        if str(path).endswith(SUFFIX) and not refused:
            refused.append(str(path))
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    await writer.submit(make_columns(400))
    await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    assert [str(p) for p in _segments(tmp_path)] == refused  # inserted, still on disk
    await writer.submit(make_columns(200, start=400))
    await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    # Retried after the next INSERT: the directory is writable again, it is gone now.
    assert _segments(tmp_path) == []
    await writer.stop()

    # The same with the process stopping before the retry: the next start skips it.
    refused.clear()
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    await writer.submit(make_columns(100, start=600))
    await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    assert len(_segments(tmp_path)) == 1
    await writer.stop()
    monkeypatch.undo()

    writer = EventWriter(ch, _settings(tmp_path))
    await asyncio.wait_for(writer.start(), GUARD_S)
    await writer.stop()
    assert writer.replayed_rows == 0
    assert writer.wal is not None and writer.wal.skipped_leftovers == 1
    assert _segments(tmp_path) == []
    assert set(_counts(ch).values()) == {700}


async def test_without_the_checkpoint_the_token_still_drops_the_replay(ch, tmp_path, monkeypatch):
    # Power loss can leave the (not fsynced) checkpoint stale or torn: the replay then relies
    # on the deduplication window, which must hold for a replay.
    writer = EventWriter(ch, _settings(tmp_path, writer_max_delay_ms=NEVER_MS))
    await writer.start()
    assert writer.wal is not None
    monkeypatch.setattr(writer.wal, "retire", lambda seqs: None)
    await writer.submit(make_columns(50))
    await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
    await writer.stop()
    monkeypatch.undo()
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"CPC1garbage-----")  # damaged

    writer = EventWriter(ch, _settings(tmp_path))
    await asyncio.wait_for(writer.start(), GUARD_S)
    await writer.stop()
    assert writer.replayed_rows == 50
    assert set(_counts(ch).values()) == {50}


def test_segment_numbers_keep_increasing_past_deleted_segments(tmp_path):
    # Tokens include the segment number: a number must never come back after the WAL was
    # emptied (equal rows in a reused number would otherwise look like a replay).
    wal = Wal(str(tmp_path))
    assert wal.open() == []
    first = wal.append(b"x")
    wal.seal()
    wal.retire([first])
    wal.close()
    assert _segments(tmp_path) == []
    wal = Wal(str(tmp_path))
    assert wal.open() == []
    assert wal.checkpoint == first
    second = wal.append(b"x")
    assert second == first + 1
    wal.seal()
    wal.close()


def test_the_token_is_recomputed_from_the_file(tmp_path):
    wal = Wal(str(tmp_path))
    wal.open()
    seq = wal.append(b"one")
    wal.append(b"two")
    wal.seal()
    token = wal.token(seq)
    wal.close()
    (leftover,) = Wal(str(tmp_path)).open()
    assert leftover.token == token and token.startswith("wal_")
    assert all(c.isalnum() or c == "_" for c in token)


@pytest.mark.parametrize("payloads", [[b"a"], [b"a", b"b"]])
def test_tokens_differ_by_contents_and_number(tmp_path, payloads):
    from app.ingest.wal import SegmentContents

    def contents(seq, ps):
        return SegmentContents(seq, "", list(ps), 0, 0)

    assert contents(1, payloads).token != contents(2, payloads).token
    assert contents(1, payloads).token != contents(1, [*payloads, b"c"]).token
    assert contents(1, payloads).token == contents(1, list(payloads)).token
