"""Funnel, heatmap and top-N on real chDB with known data."""

from __future__ import annotations

from collections import Counter

import pytest

from app.querybuilder import (
    MetricError,
    compile_funnel,
    compile_heatmap,
    compile_top_n,
    run_compiled,
)


def test_funnel_counts_users_reaching_each_step_in_order(ch):
    from .data import insert, minute_start

    base = minute_start(120)  # recent: events older than the 90-day TTL are dropped
    rows = []
    # u1: view → cart → buy; u2: view → cart; u3: view; u4: buy → view (wrong order); u5: view → buy too late
    for user, steps in {
        "u1": [("pageview", 0), ("add_to_cart", 10), ("purchase", 20)],
        "u2": [("pageview", 0), ("add_to_cart", 5)],
        "u3": [("pageview", 0)],
        "u4": [("purchase", 0), ("pageview", 10)],
        "u5": [("pageview", 0), ("add_to_cart", 4000), ("purchase", 4001)],
    }.items():
        country = "DE" if user in ("u1", "u3") else "FR"
        rows += [
            {"org_id": 1, "ts": base + t, "event": e, "user_id": user, "country": country}
            for e, t in steps
        ]
    rows += [
        {"org_id": 2, "ts": base + t, "event": e, "user_id": "u1"}
        for e, t in [("pageview", 0), ("add_to_cart", 1), ("purchase", 2)]
    ]
    insert(ch, rows)
    compiled = compile_funnel(
        [
            "pageview",
            "add_to_cart",
            {"name": "bought", "where": "event = 'purchase' AND value >= 0"},
        ],
        org_id=1,
        database=ch.database,
        time_from=base,
        time_to=base + 10_000,
        window_seconds=3_600,
    )
    assert compiled.plan.kind == "funnel" and compiled.plan.raw
    result = run_compiled(ch, compiled).dicts()
    assert [(r["step"], r["step_name"], r["users"]) for r in result] == [
        (1, "pageview", 5),
        (2, "add_to_cart", 2),
        (3, "bought", 1),
    ]
    assert [r["conversion"] for r in result] == pytest.approx([1, 0.4, 0.5])
    assert [r["conversion_total"] for r in result] == pytest.approx([1, 0.4, 0.2])

    by_country = compile_funnel(
        ["pageview", "add_to_cart"],
        org_id=1,
        database=ch.database,
        time_from=base,
        time_to=base + 10_000,
        window_seconds=3_600,
        breakdown="country",
    )
    got = {(r["country"], r["step"]): r["users"] for r in run_compiled(ch, by_country).dicts()}
    assert got == {("DE", 1): 2, ("DE", 2): 1, ("FR", 1): 3, ("FR", 2): 1}


@pytest.mark.parametrize(
    "steps",
    [
        ["only-one"],
        [{"name": "x", "where": "event = 'a' FROM system.tables"}, "b"],
        [{"name": "x", "where": "org_id = 2"}, "b"],
    ],
)
def test_bad_funnels_are_rejected(steps):
    with pytest.raises(MetricError):
        compile_funnel(steps, org_id=1, database="db", time_from=0, time_to=60, window_seconds=60)


@pytest.mark.parametrize("bad", [{}, {"name": 3}, {"name": ["x"], "event": "a"}, {"where": "x"}])
def test_a_malformed_funnel_step_is_a_metric_error_naming_it(bad):
    # schemathesis found these answered 500 by POST /ui/data/funnel (a msgspec error escaped).
    with pytest.raises(MetricError) as caught:
        compile_funnel(
            ["a", bad], org_id=1, database="db", time_from=0, time_to=60, window_seconds=60
        )
    assert caught.value.code == "invalid_step"
    assert caught.value.where["field"] == "steps[1]"


def test_heatmap_weekday_by_hour_has_every_cell(loaded):
    import datetime as dt

    compiled = compile_heatmap(
        "SELECT count() AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
    )
    result = run_compiled(loaded.ch, compiled).dicts()
    assert len(result) == 7 * 24 and compiled.plan.kind == "heatmap"
    want = Counter()
    for row in loaded.rows:
        when = dt.datetime.fromtimestamp(row["ts"], dt.UTC)
        want[(when.isoweekday(), when.hour)] += 1
    got = {(r["weekday"], r["hour"]): r["v"] for r in result if r["v"]}
    assert got == dict(want)


def test_heatmap_dimension_by_time(loaded):
    compiled = compile_heatmap(
        "SELECT count() AS v",
        axes="country",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
        granularity="1m",
    )
    rows = run_compiled(loaded.ch, compiled).dicts()
    assert len(rows) == 3 * 3 and all(r["v"] == 20 for r in rows)


def test_top_n_paths_with_other(loaded):
    compiled = compile_top_n(
        "SELECT count() AS v, uniq(user_id) AS visitors",
        dimension="path",
        n=2,
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
    )
    assert compiled.plan.raw  # path is not a rollup key
    rows = run_compiled(loaded.ch, compiled).dicts()
    counts = Counter(r["path"] for r in loaded.rows)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(r["path"], r["v"], r["is_other"]) for r in rows[:2]] == [
        (p, c, 0) for p, c in ranked[:2]
    ]
    assert rows[2]["path"] == "other" and rows[2]["is_other"] == 1
    assert rows[2]["v"] == sum(c for _, c in ranked[2:])
    assert rows[2]["visitors"] == 13  # exact distinct count over the remaining rows, not a sum
    assert all("org2" not in r["path"] for r in rows)


def test_top_n_dimension_on_rollups(loaded):
    compiled = compile_top_n(
        "SELECT sum(value) AS v",
        dimension="browser",
        n=3,
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
    )
    assert not compiled.plan.raw
    rows = run_compiled(loaded.ch, compiled).dicts()
    totals = Counter()
    for r in loaded.rows:
        totals[r["browser"]] += r["value"]
    assert sum(r["v"] for r in rows) == pytest.approx(sum(totals.values()))
    assert len(rows) == 4 and rows[-1]["is_other"] == 1
