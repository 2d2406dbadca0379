"""The materialized views: raw rows and every rollup hold exactly what was inserted."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests.pipeline.events import queue_batch

ROLLUPS = ["rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"]


@pytest.fixture
def inserted(ch):
    """Two orgs' events over a few minutes, inserted in several batches."""
    rng = random.Random(7)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    rows = []
    for i in range(3000):
        org = 1 if i % 3 else 2
        rows.append(
            {
                "org_id": org,
                "ts": start + timedelta(milliseconds=rng.randint(0, 150_000)),
                "event": rng.choice(["pageview", "pageview", "purchase", "error"]),
                "user_id": f"u{rng.randint(1, 400)}",
                "value": round(rng.uniform(0, 50), 2),
                "country": rng.choice(["DE", "FR", "US"]),
                "device": rng.choice(["desktop", "mobile"]),
                "path": f"/p{rng.randint(1, 30)}",
            }
        )
    for chunk in range(0, len(rows), 700):
        ch.insert_sync("events_queue", queue_batch(rows[chunk : chunk + 700]))
    return rows


def _expected(rows, org):
    mine = [r for r in rows if r["org_id"] == org]
    by_event = {}
    for r in mine:
        count, total, users = by_event.get(r["event"], (0, 0.0, set()))
        by_event[r["event"]] = (count + 1, total + r["value"], users | {r["user_id"]})
    return by_event


@pytest.mark.parametrize("table", ROLLUPS)
def test_every_rollup_has_exact_counts_sums_and_close_uniques(ch, inserted, table):
    for org in (1, 2):
        got = {
            event: (events, value_sum, users)
            for event, events, value_sum, users in ch.query_sync(
                f"SELECT event, sum(events), sum(value_sum), uniqCombinedMerge(users) "
                f"FROM {ch.table(table)} WHERE org_id = {{org:UInt32}} GROUP BY event",
                {"org": org},
            ).rows
        }
        expected = _expected(inserted, org)
        assert set(got) == set(expected)
        for event, (count, total, users) in expected.items():
            assert got[event][0] == count
            assert got[event][1] == pytest.approx(total, rel=1e-9)
            assert abs(got[event][2] - len(users)) <= max(2, 0.02 * len(users))


def test_raw_events_keep_every_row_per_org(ch, inserted):
    counts = dict(
        ch.query_sync(f"SELECT org_id, count() FROM {ch.table('events')} GROUP BY org_id").rows
    )
    assert counts == {
        1: sum(r["org_id"] == 1 for r in inserted),
        2: sum(r["org_id"] == 2 for r in inserted),
    }


def test_dimension_breakdown_matches_in_1s_rollup(ch, inserted):
    got = {
        (country, device): n
        for country, device, n in ch.query_sync(
            f"SELECT country, device, sum(events) FROM {ch.table('rollup_1s')} "
            "WHERE org_id = 1 GROUP BY country, device"
        ).rows
    }
    expected: dict[tuple[str, str], int] = {}
    for r in inserted:
        if r["org_id"] == 1:
            key = (r["country"], r["device"])
            expected[key] = expected.get(key, 0) + 1
    assert got == expected


def test_detail_rollups_hold_quantiles_and_top_paths(ch, inserted):
    purchases = sorted(
        r["value"] for r in inserted if r["org_id"] == 2 and r["event"] == "purchase"
    )
    median = ch.query_sync(
        f"SELECT quantileTDigestMerge(0.5)(value_quantiles) FROM {ch.table('rollup_detail_1h')} "
        "WHERE org_id = 2 AND event = 'purchase'"
    ).scalar()
    true_median = purchases[len(purchases) // 2]
    assert abs(median - true_median) <= 0.05 * 50  # t-digest error on a 0..50 range

    paths: dict[str, int] = {}
    for r in inserted:
        if r["org_id"] == 1 and r["event"] == "pageview":
            paths[r["path"]] = paths.get(r["path"], 0) + 1
    top = ch.query_sync(
        f"SELECT topKMerge(50)(top_paths) FROM {ch.table('rollup_detail_1d')} "
        "WHERE org_id = 1 AND event = 'pageview'"
    ).scalar()
    assert set(top) == set(paths)  # 30 distinct paths fit in 50 candidates
    assert top[0] == max(paths, key=paths.get) or paths[top[0]] == max(paths.values())


def test_org_rows_never_mix(ch, inserted):
    for table in ["events", *ROLLUPS]:
        orgs = {r[0] for r in ch.query_sync(f"SELECT DISTINCT org_id FROM {ch.table(table)}").rows}
        assert orgs == {1, 2}
    users_org2 = {r["user_id"] for r in inserted if r["org_id"] == 2}
    seen = {
        r[0]
        for r in ch.query_sync(
            f"SELECT DISTINCT user_id FROM {ch.table('events')} WHERE org_id = 2"
        ).rows
    }
    assert seen == users_org2
