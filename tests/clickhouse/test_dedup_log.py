"""The deduplication-log repair on chDB data dirs laid out as chDB lays them out.

(End to end, with chDB and the WAL replay: tests/ingest/test_crash_inside_commit.py.)
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from app.clickhouse.dedup_log import ForgottenBlocks, repair_deduplication_logs


def _table(root: Path, name: str, parts: list[str], logs: dict[int, str]) -> Path:
    """A table of database `db` as chDB's Atomic engine keeps it: store/<uuid>, linked from
    data/<db>/<name>."""
    table_dir = root / "store" / "abc" / f"abc-{name}"
    (table_dir / "deduplication_logs").mkdir(parents=True)
    (table_dir / "detached").mkdir()
    (table_dir / "format_version.txt").write_text("1")
    for part in parts:
        (table_dir / part).mkdir()
    for number, text in logs.items():
        (table_dir / "deduplication_logs" / f"deduplication_log_{number}.txt").write_text(text)
    (root / "data" / "db").mkdir(parents=True, exist_ok=True)
    (root / "data" / "db" / name).symlink_to(table_dir)
    (root / "status").write_text("PID: 1\n")
    return table_dir


def _log(table_dir: Path, number: int = 1) -> str:
    return (table_dir / "deduplication_logs" / f"deduplication_log_{number}.txt").read_text()


LOG = "1\t202612_1_1_0\t202612_a_b\n1\t202612_2_2_0\t202612_c_d\n"


def test_a_block_whose_part_was_lost_is_forgotten(tmp_path, caplog):
    table_dir = _table(tmp_path, "rollup_1h", ["202612_1_1_0", "tmp_insert_202612_2_2_0"], {1: LOG})
    with caplog.at_level(logging.WARNING, "clickpulse.clickhouse"):
        forgotten = repair_deduplication_logs(tmp_path)
    assert forgotten == [ForgottenBlocks("db.rollup_1h", "202612_2_2_0", ("202612_c_d",))]
    assert _log(table_dir) == LOG + "2\t202612_2_2_0\t202612_c_d\n"
    assert "db.rollup_1h" in caplog.text and "202612_c_d" in caplog.text
    # Idempotent: the last record is now a DROP.
    assert repair_deduplication_logs(tmp_path) == []
    assert _log(table_dir) == LOG + "2\t202612_2_2_0\t202612_c_d\n"


def test_every_block_of_the_lost_part_is_forgotten_in_the_newest_log(tmp_path):
    old = "1\t2026_1_1_0\t2026_x\n"
    new = "1\t2026_2_2_0\t2026_y\n1\t2026_2_2_0\t2026_z\n"
    table_dir = _table(tmp_path, "events", ["2026_1_1_0"], {3: old, 10: new, 4: ""})
    (forgotten,) = repair_deduplication_logs(tmp_path)
    assert forgotten.block_ids == ("2026_y", "2026_z")
    assert _log(table_dir, 10) == new + "2\t2026_2_2_0\t2026_y\n2\t2026_2_2_0\t2026_z\n"
    assert _log(table_dir, 3) == old and _log(table_dir, 4) == ""


def test_parts_on_disk_or_merged_leave_the_log_alone(tmp_path):
    present = _table(tmp_path, "present", ["202612_1_1_0", "202612_2_2_0"], {1: LOG})
    merged = _table(tmp_path, "merged", ["202612_1_2_1"], {1: LOG})
    mutated = _table(tmp_path, "mutated", ["202612_1_2_1_7"], {1: LOG})
    assert repair_deduplication_logs(tmp_path) == []
    assert _log(present) == _log(merged) == _log(mutated) == LOG


def test_only_the_last_record_can_be_a_crash_and_only_an_add(tmp_path):
    # Older blocks whose parts are gone (TTL, DROP PARTITION) are ClickHouse's business.
    older_gone = _table(tmp_path, "older_gone", ["202612_2_2_0"], {1: LOG})
    dropped = LOG + "2\t202612_2_2_0\t202612_c_d\n"
    last_dropped = _table(tmp_path, "last_dropped", [], {1: dropped})
    assert repair_deduplication_logs(tmp_path) == []
    assert _log(older_gone) == LOG and _log(last_dropped) == dropped


def test_a_torn_or_foreign_log_is_left_alone(tmp_path):
    torn = _table(tmp_path, "torn", ["202612_1_1_0"], {1: LOG[:-5]})
    foreign = _table(tmp_path, "foreign", [], {1: "1\tnot a part name\tid\n"})
    short = _table(tmp_path, "short", [], {1: "1\t202612_2_2_0\n"})
    assert repair_deduplication_logs(tmp_path) == []
    assert _log(torn) == LOG[:-5]
    assert _log(foreign) == "1\tnot a part name\tid\n" and _log(short) == "1\t202612_2_2_0\n"


def test_nothing_is_touched_while_the_data_dir_is_open(tmp_path):
    table_dir = _table(tmp_path, "rollup_1h", ["202612_1_1_0"], {1: LOG})
    # chDB holds an flock on <data dir>/status while it runs (any open file description).
    held = os.open(tmp_path / "status", os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert repair_deduplication_logs(tmp_path) == []
        assert _log(table_dir) == LOG
    finally:
        os.close(held)
    assert len(repair_deduplication_logs(tmp_path)) == 1


def test_a_new_or_missing_data_dir_is_fine(tmp_path):
    assert repair_deduplication_logs(tmp_path / "nothing") == []
    assert repair_deduplication_logs(tmp_path) == []
