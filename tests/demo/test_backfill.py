"""The demo's history: written through the real ingest writer into chDB, so every rollup holds
exactly what was generated; the generated columns are what the ingest handler builds from the
same events sent as JSON; and the traffic has the promised shape (daily and weekly cycles, the
launch spike, the incident)."""

from __future__ import annotations

import collections

import msgspec
import numpy as np
import pytest

from app.config import Settings
from app.demo.backfill import (
    DAY_S,
    INCIDENT_S,
    Moments,
    Shoppers,
    backfill,
    simulated_rows,
    to_columns,
)
from app.ingest.enrich import Enricher
from app.ingest.parse import RequestContext, build_columns
from app.ingest.writer import EventWriter

# The shape tests generate events only (no database), for a fixed end: Wednesday 2025-11-26
# 17:00 UTC, so their weekdays and hours are the same in every run.
SHAPE_END = 1_764_176_400


async def _scalar(ch, sql: str) -> float:
    return (await ch.query(sql)).rows[0][0]


async def test_backfill_fills_every_rollup_with_exactly_the_generated_events(ch, tmp_path):
    settings = Settings(
        data_dir=str(tmp_path), clickhouse_database=ch.database, writer_max_delay_ms=20
    )
    writer = EventWriter(ch, settings)
    await writer.start()
    try:
        # Six hours at 1 event/s, ending now: small enough for a test, inside every TTL but
        # rollup_1s' 10 minutes (checked over its last 5 minutes only).
        done = await backfill(writer, 41, days=0.25, base_per_s=1.0, seed=3)
        # Another org's history next to it: nothing of it may show up in org 41's counts.
        other = await backfill(writer, 42, days=0.05, base_per_s=0.5, seed=4)
    finally:
        await writer.stop()
    total = done["events"]
    assert total > 5_000 and other["events"] > 0
    db = ch.database
    events = await _scalar(ch, f"SELECT count() FROM {db}.events WHERE org_id = 41")
    assert events == total
    for table in ("rollup_1m", "rollup_1h", "rollup_1d"):
        summed = await _scalar(ch, f"SELECT sum(events) FROM {db}.{table} WHERE org_id = 41")
        assert summed == total, table
    # Per event type and revenue too, rollup against raw.
    raw = (
        await ch.query(
            f"SELECT event, count(), round(sum(value), 2) FROM {db}.events WHERE org_id = 41 "
            "GROUP BY event ORDER BY event"
        )
    ).rows
    for table in ("rollup_1m", "rollup_1h", "rollup_1d"):
        rolled = (
            await ch.query(
                f"SELECT event, sum(events), round(sum(value_sum), 2) FROM {db}.{table} "
                "WHERE org_id = 41 GROUP BY event ORDER BY event"
            )
        ).rows
        assert [tuple(r) for r in rolled] == [tuple(r) for r in raw], table
    assert {r[0] for r in raw} >= {"pageview", "click", "add_to_cart", "purchase"}
    # The newest five minutes are in rollup_1s, second by second.
    since = done["to"] - 300
    raw_recent = await _scalar(
        ch, f"SELECT count() FROM {db}.events WHERE org_id = 41 AND ts >= toDateTime({since})"
    )
    rolled_recent = await _scalar(
        ch,
        f"SELECT sum(events) FROM {db}.rollup_1s WHERE org_id = 41 "
        f"AND bucket >= toDateTime({since})",
    )
    assert rolled_recent == raw_recent > 0
    # Everything lies inside the promised window.
    lo, hi = (
        await ch.query(
            f"SELECT min(toUnixTimestamp(ts)), max(toUnixTimestamp(ts)) FROM {db}.events "
            "WHERE org_id = 41"
        )
    ).rows[0]
    assert done["from"] <= lo and hi < done["to"]
    assert (
        await _scalar(ch, f"SELECT count() FROM {db}.events WHERE org_id = 42") == other["events"]
    )


def _generated(days: float, base: float) -> list[dict]:
    rng = np.random.default_rng(11)
    shoppers = Shoppers.draw(rng, 2000, Enricher())
    start = SHAPE_END - int(days * DAY_S)
    moments = Moments.before(SHAPE_END)
    events = []
    for rows in simulated_rows(rng, shoppers, start, SHAPE_END, base, moments):
        events.extend(
            {"ts": ts, "event": event} for ts, event in zip(rows["ts"], rows["event"], strict=True)
        )
    return events


def test_generated_columns_are_what_the_ingest_handler_builds_from_the_same_events():
    rng = np.random.default_rng(5)
    enricher = Enricher()
    shoppers = Shoppers.draw(rng, 300, enricher)
    end = SHAPE_END
    moments = Moments.before(end)
    # Two hours around the incident, and the launch's hour: every kind of event and profile.
    chunks = [
        next(simulated_rows(rng, shoppers, lo, lo + 7200, 2.0, moments))
        for lo in (moments.incident_s - 3600, moments.launch_s)
    ]
    for rows in chunks:
        generated = to_columns(rows, shoppers, 41)
        # The same events as a client would send them: the shopper's user agent and IP.
        sent = []
        start = 0
        for i in range(len(generated)):
            count = generated.prop_counts[i]
            props = dict(
                zip(
                    generated.prop_keys[start : start + count],
                    generated.prop_values[start : start + count],
                    strict=True,
                )
            )
            start += count
            who = int(rows["shopper"][i])
            event = {
                "event": generated.event[i],
                "ts": generated.ts[i],
                "user_id": generated.user_id[i],
                "session_id": generated.session_id[i],
                "path": generated.path[i],
                "referrer": generated.referrer[i],
                "user_agent": shoppers.user_agent[who],
                "ip": shoppers.ip[who],
            }
            if generated.event[i] == "purchase":
                event["value"] = generated.value[i]
            if props:
                event["props"] = props
            sent.append((i, msgspec.json.encode(event)))
        now_ms = generated.received_at[0]
        ctx = RequestContext(
            org_id=41,
            now_ms=now_ms,
            min_ts_ms=0,
            max_ts_ms=now_ms,
            max_event_bytes=32768,
            user_agent="",
            client_ip="127.0.0.1",
        )
        handled, errors = build_columns(sent, ctx, Enricher())
        assert errors == []
        assert generated.to_arrow().equals(handled.to_arrow())
        assert generated.event_id == handled.event_id == []
        assert {"pageview", "click", "error", "add_to_cart", "purchase"} <= set(generated.event)
        assert len({c for c in generated.country if c}) > 5
    assert "signup" in set(chunks[1]["event"].tolist())


@pytest.fixture(scope="module")
def fourteen_days() -> list[dict]:
    return _generated(14, 0.08)


def test_history_has_daily_and_weekly_seasonality(fourteen_days):
    moments = Moments.before(SHAPE_END)
    launch_day = moments.launch_s // DAY_S
    by_hour = collections.Counter()
    by_day = collections.Counter()
    for e in fourteen_days:
        second = e["ts"] // 1000
        if second // DAY_S == launch_day or second // DAY_S == launch_day + 1:
            continue  # the launch is its own shape
        by_hour[second % DAY_S // 3600] += 1
        by_day[second // DAY_S] += 1
    afternoon = sum(by_hour[h] for h in (14, 15, 16, 17))
    night = sum(by_hour[h] for h in (2, 3, 4, 5))
    assert afternoon > 3 * night  # the daily factor is 1.6-1.7 vs 0.3-0.5
    whole = [
        day
        for day in by_day
        if day * DAY_S >= SHAPE_END - 14 * DAY_S and (day + 1) * DAY_S <= SHAPE_END
    ]
    weekdays = [by_day[day] for day in whole if (day + 3) % 7 < 5]
    weekend = [by_day[day] for day in whole if (day + 3) % 7 >= 5]
    assert weekend and weekdays
    assert max(weekend) < min(weekdays)  # 0.6 of a weekday's traffic


def test_history_has_the_launch_spike_and_the_incident(fourteen_days):
    moments = Moments.before(SHAPE_END)
    per_hour = collections.Counter(e["ts"] // 1000 // 3600 for e in fourteen_days)
    launch_hour = moments.launch_s // 3600
    same_hour_before = launch_hour - 7 * 24  # a week earlier, same weekday and hour
    assert per_hour[launch_hour] > 2.5 * per_hour[same_hour_before]
    signups_launch = sum(
        1
        for e in fourteen_days
        if e["event"] == "signup" and moments.launch_s <= e["ts"] // 1000 < moments.launch_s + DAY_S
    )
    signups_other_day = sum(
        1
        for e in fourteen_days
        if e["event"] == "signup"
        and moments.launch_s - 7 * DAY_S <= e["ts"] // 1000 < moments.launch_s - 6 * DAY_S
    )
    assert signups_launch > 5 * max(1, signups_other_day)

    def error_share(lo: int, hi: int) -> float:
        window = [e for e in fourteen_days if lo <= e["ts"] // 1000 < hi]
        return sum(e["event"] == "error" for e in window) / max(1, len(window))

    incident = error_share(moments.incident_s, moments.incident_s + INCIDENT_S)
    day_before = error_share(moments.incident_s - DAY_S, moments.incident_s - DAY_S + INCIDENT_S)
    assert incident > 0.25 and day_before < 0.05
