"""Retention by TTL: rows older than each table's retention disappear at the next merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.pipeline.events import queue_batch

ROLLUPS = ["rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"]
DETAILS = ["rollup_detail_1m", "rollup_detail_1h", "rollup_detail_1d"]
AGES = {
    "recent": timedelta(minutes=1),
    "15min": timedelta(minutes=15),
    "8days": timedelta(days=8),
    "100days": timedelta(days=100),
    "400days": timedelta(days=400),
}


def _events_in(ch, table: str) -> int:
    """How many inserted events a table still accounts for."""
    measure = "count()" if table == "events" else "sum(events)"
    return ch.query_sync(f"SELECT {measure} FROM {ch.table(table)}").scalar()


def _oldest_age_days(ch, table: str) -> float:
    return ch.query_sync(
        f"SELECT dateDiff('second', min(bucket), now()) / 86400 FROM {ch.table(table)}"
    ).scalar()


def test_each_table_keeps_exactly_its_retention(ch):
    now = datetime.now(UTC)
    ch.insert_sync(
        "events_queue",
        queue_batch(
            {"org_id": 1, "ts": now - age, "user_id": name, "value": 1.0}
            for name, age in AGES.items()
        ),
    )
    # The cascaded MVs see each block before the finer table's TTL drops anything, so the
    # coarse tables get every event even when it is already too old for the 1 s table.
    assert _events_in(ch, "rollup_1d") == 5

    for table in ["events", *ROLLUPS, *DETAILS]:
        ch.command_sync(f"OPTIMIZE TABLE {ch.table(table)} FINAL")

    # events: 90 days; 1s: 10 minutes; 1m: 7 days; 1h: 1 year; 1d: forever.
    assert _events_in(ch, "events") == 3  # recent, 15min, 8days
    assert _events_in(ch, "rollup_1s") == 1  # recent
    assert _events_in(ch, "rollup_1m") == 2  # recent, 15min
    assert _events_in(ch, "rollup_1h") == 4  # all but 400 days
    assert _events_in(ch, "rollup_1d") == 5
    assert _oldest_age_days(ch, "rollup_detail_1m") < 7
    assert 90 < _oldest_age_days(ch, "rollup_detail_1h") < 365
    assert _oldest_age_days(ch, "rollup_detail_1d") > 399


def test_events_ttl_is_configurable(ch_root):
    from tests.conftest import fresh_clickhouse

    ch = fresh_clickhouse(ch_root, events_ttl_days=5)
    try:
        now = datetime.now(UTC)
        ch.insert_sync(
            "events_queue",
            queue_batch([{"org_id": 1, "ts": now - timedelta(days=6)}, {"org_id": 1, "ts": now}]),
        )
        ch.command_sync(f"OPTIMIZE TABLE {ch.table('events')} FINAL")
        assert _events_in(ch, "events") == 1
    finally:
        ch.command_sync(f"DROP DATABASE {ch.database}")
