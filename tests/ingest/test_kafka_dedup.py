"""Exactly-once building blocks of the Kafka bridge, in real chDB (no broker needed).

What the bridge relies on (sql/migrations/clickhouse/0005_insert_deduplication.sql,
docs/ingest.md "Exactly once from Kafka"): an INSERT into the Null `events_queue` with the
bridge's settings and a token already seen is dropped in `events` and in every rollup, the
cascaded ones included; the same rows under another token are stored again; an INSERT that
failed half-way is completed by its replay; inserts without a token (the WAL writer) are not
deduplicated at all. Merges are stopped on the test's tables so that part counts show exactly
which tables took a block.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.ingest.kafka import InflightFile, OffsetRange, bridge_insert_settings
from app.ingest.writer import DEFAULT_INSERT_SETTINGS
from app.migrate import render_clickhouse
from tests.ingest.helpers import make_columns, now_ms, rows

TABLES = [
    "events",
    "rollup_1s",
    "rollup_1m",
    "rollup_1h",
    "rollup_1d",
    "rollup_detail_1m",
    "rollup_detail_1h",
    "rollup_detail_1d",
]
COUNTED = ["rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"]  # tables with an events column


def _stop_merges(ch) -> None:
    for table in TABLES:
        ch.command_sync(f"SYSTEM STOP MERGES {ch.database}.{table}")


def _snapshot(ch) -> dict[str, tuple[int, int]]:
    """Per table: (events counted, active parts)."""
    out = {}
    for table in TABLES:
        if table == "events":
            counted = rows(ch, "SELECT count() FROM {db}.events")[0][0]
        elif table in COUNTED:
            counted = rows(ch, f"SELECT sum(events) FROM {{db}}.{table}")[0][0]
        else:  # quantile/topK states: duplicates do not show in values, parts do
            counted = rows(ch, f"SELECT count() FROM {{db}}.{table}")[0][0]
        parts = rows(
            ch,
            "SELECT count() FROM system.parts WHERE database = {d:String} AND table = {t:String} "
            "AND active",
            {"d": ch.database, "t": table},
        )[0][0]
        out[table] = (int(counted), int(parts))
    return out


def _batch(n: int = 50):
    cols = make_columns(n, org_id=3)
    # Two days apart: the INSERT writes two parts into the day-partitioned tables, so block
    # numbering inside one token is exercised too.
    for i in range(0, n, 2):
        cols.ts[i] = now_ms() - 26 * 3600 * 1000
    return cols.to_arrow()


def test_a_replayed_range_is_dropped_in_events_and_every_rollup(ch):
    _stop_merges(ch)
    batch = _batch()
    ch.insert_sync("events_queue", batch, settings=bridge_insert_settings("kafka_a"))
    first = _snapshot(ch)
    assert first["events"][0] == 50 and first["rollup_1m"] == (50, 2)  # one part per day
    assert all(parts >= 1 for _, parts in first.values()), first

    ch.insert_sync("events_queue", batch, settings=bridge_insert_settings("kafka_a"))
    assert _snapshot(ch) == first  # nothing new anywhere, the cascaded rollups included

    # The same rows from another offset range (another token) are new events: stored again.
    ch.insert_sync("events_queue", batch, settings=bridge_insert_settings("kafka_b"))
    second = _snapshot(ch)
    for table in TABLES:
        assert second[table][1] == 2 * first[table][1], table
        if table == "events" or table in COUNTED:
            assert second[table][0] == 2 * first[table][0], table


def test_a_table_without_the_window_counts_a_replay_twice(ch):
    # Why 0005 must list every table the views write: the window is per table.
    ch.command_sync(
        f"ALTER TABLE {ch.database}.rollup_1h MODIFY SETTING non_replicated_deduplication_window = 0"
    )
    batch = make_columns(20, org_id=6).to_arrow()
    for _ in range(2):
        ch.insert_sync("events_queue", batch, settings=bridge_insert_settings("kafka_w"))
    assert rows(ch, "SELECT count() FROM {db}.events") == [[20]]
    assert rows(ch, "SELECT sum(events) FROM {db}.rollup_1m") == [[20]]
    assert rows(ch, "SELECT sum(events) FROM {db}.rollup_1h") == [[40]]
    # Each table decides alone: rollup_1d, fed by rollup_1h's (kept) block, still knows the
    # token-derived id of its own block and drops it.
    assert rows(ch, "SELECT sum(events) FROM {db}.rollup_1d") == [[20]]


def test_an_insert_that_failed_half_way_is_completed_by_its_replay(ch):
    _stop_merges(ch)
    batch = make_columns(40, org_id=4).to_arrow()
    # rollup_1h refuses the first attempt: the views before it in the chain have written.
    ch.command_sync(f"ALTER TABLE {ch.database}.rollup_1h ADD CONSTRAINT no CHECK events > 1e12")
    # The views run one after the other for this attempt: with parallel_view_processing, which
    # views commit before rollup_1h's refusal depends on thread timing (under load `events` had
    # not), and the half-way state is what this test is about. The replay runs as production.
    sequential = {**bridge_insert_settings("kafka_p"), "parallel_view_processing": 0}
    with pytest.raises(Exception, match="no"):
        ch.insert_sync("events_queue", batch, settings=sequential)
    partial = _snapshot(ch)
    assert partial["events"][0] == 40 and partial["rollup_1h"][0] == 0
    ch.command_sync(f"ALTER TABLE {ch.database}.rollup_1h DROP CONSTRAINT no")

    ch.insert_sync("events_queue", batch, settings=bridge_insert_settings("kafka_p"))
    done = _snapshot(ch)
    assert done["events"] == partial["events"]  # not twice
    for table in ["events", *COUNTED]:
        assert done[table][0] == 40, table
    assert all(done[t][1] >= 1 for t in TABLES), done


def test_inserts_without_a_token_are_never_deduplicated(ch):
    # The WAL writer's INSERT ... SELECT FROM Python(): identical batches are distinct events.
    batch = make_columns(30, org_id=5).to_arrow()
    for _ in range(2):
        ch.insert_sync("events_queue", batch, settings=DEFAULT_INSERT_SETTINGS)
    assert rows(ch, "SELECT count() FROM {db}.events") == [[60]]
    assert rows(ch, "SELECT sum(events) FROM {db}.rollup_1d") == [[60]]


def test_every_table_fed_from_events_queue_keeps_a_deduplication_window(ch):
    tables = rows(
        ch,
        "SELECT name, create_table_query FROM system.tables WHERE database = {d:String} "
        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name",
        {"d": ch.database},
    )
    assert {name for name, _ in tables} >= set(TABLES)
    for name, ddl in tables:
        assert "non_replicated_deduplication_window = 10000" in ddl, name


def test_the_window_renders_only_for_non_replicated_engines():
    def rendered(**kw) -> str:
        found = [m.text for m in render_clickhouse(database="d", **kw) if "0005_insert" in m.name]
        return "".join(found)

    embedded = rendered()
    assert embedded.count("MODIFY SETTING non_replicated_deduplication_window") == len(TABLES)
    assert "ALTER" not in rendered(cluster="main")  # Replicated: deduplicates by default


def test_inflight_file_round_trip(tmp_path):
    f = InflightFile(str(tmp_path / "kb"), "grp/1", "topic.a")
    assert f.load() == {}
    ranges = {2: OffsetRange(2, 10, 19, "kafka_x", 500), 0: OffsetRange(0, 0, 4, "kafka_y", 9)}
    f.write(ranges)
    assert f.load() == ranges
    assert InflightFile(str(tmp_path / "kb"), "grp/1", "other").load() == {}  # other topic
    f.write({}, durable=False)  # clearing committed ranges
    assert f.load() == {}
    assert [p.name for p in (tmp_path / "kb").iterdir()] == ["grp_1.topic.a.inflight.json"]
    Path(f.path).write_bytes(b'{"group": "grp/1", "ran')  # a torn clearing write
    assert f.load() == {}
