"""Planner decisions (table, granularity, alignment, limits), comparisons, sliding windows,
the JSON form and the built-in metrics — checked on values from real chDB."""

from __future__ import annotations

import pytest

from app.querybuilder import (
    BUILTIN_METRICS,
    MetricError,
    compile_builtin,
    compile_metric,
    parse_form,
    parse_metric,
    run_compiled,
)

NOW = 1_800_000_000  # a fixed "now" for pure planning tests (no execution)
DAY = 86_400


def plan(text="SELECT count() AS v", *, span, ago=0, granularity="auto", **kwargs):
    compiled = compile_metric(
        text,
        org_id=9,
        database="db",
        time_from=NOW - ago - span,
        time_to=NOW - ago,
        granularity=granularity,
        now=NOW,
        **kwargs,
    )
    return compiled.plan


@pytest.mark.parametrize(
    ("span", "ago", "granularity", "table", "step"),
    [
        (300, 0, "auto", "rollup_1s", 1),
        (600, 0, "1s", "rollup_1s", 1),
        (
            3_600,
            0,
            "auto",
            "rollup_1m",
            60,
        ),  # 10 s buckets are not served by any rollup within 1 h → 1 m
        (3_600, 0, "1m", "rollup_1m", 60),
        (DAY, 0, "auto", "rollup_1m", 300),
        (DAY, 0, "1h", "rollup_1h", 3_600),
        (30 * DAY, 0, "auto", "rollup_1h", 10_800),
        (400 * DAY, 0, "auto", "rollup_1d", DAY),
        (3 * DAY, 0, "1d", "rollup_1d", DAY),
        (3_600, 30 * DAY, "1m", "events", 60),  # 1 m buckets a month ago: only raw has them
        (60, 3_600, "1s", "events", 1),  # 1 s an hour ago: rollup_1s is gone
    ],
)
def test_coarsest_table_that_covers_the_range(span, ago, granularity, table, step):
    p = plan(span=span, ago=ago, granularity=granularity)
    assert (p.table, p.granularity_s) == (table, step)
    assert (p.time_to - p.time_from) // p.granularity_s <= max(500, span // step + 1)


def test_raw_columns_force_raw_with_limits():
    compiled = compile_metric(
        "SELECT count() AS v WHERE props['plan'] = 'pro'",
        org_id=9,
        database="db",
        time_from=NOW - 3_600,
        time_to=NOW,
        now=NOW,
    )
    assert compiled.plan.raw and compiled.plan.table == "events"
    assert "props" in compiled.plan.reason
    assert compiled.settings == {"max_execution_time": 10}
    assert compiled.sql.endswith("LIMIT 100000")


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("SELECT quantile(0.9)(value) AS v", "rollup_detail_1m"),
        ("SELECT topK(50)(path) AS v WHERE event = 'pageview'", "rollup_detail_1m"),
        ("SELECT topK(51)(path) AS v", "events"),
        ("SELECT quantile(0.9)(value) AS v WHERE country = 'DE'", "events"),
        ("SELECT quantile(0.9)(value) AS v, count() AS c", "events"),
        ("SELECT uniqIf(user_id, path = '/') AS v", "events"),
        ("SELECT uniqIf(user_id, event = 'x') AS v GROUP BY browser", "rollup_1m"),
    ],
)
def test_detail_and_rollup_requirements(text, table):
    assert plan(text, span=3_600, granularity="1m").table == table


def test_detail_tables_never_serve_one_second_buckets():
    assert plan("SELECT quantile(0.5)(value) AS v", span=300, granularity="1s").table == "events"


def test_range_is_aligned_to_whole_buckets_and_too_many_points_is_rejected():
    p = plan(span=3_600 + 17, ago=13, granularity="1m")
    assert p.time_from % 60 == 0 and p.time_to % 60 == 0
    with pytest.raises(MetricError) as info:
        plan(span=30 * DAY, granularity="1s")
    assert info.value.code == "too_many_points"
    for bad in [dict(granularity="5m"), dict(time_from_override=(10, 5))]:
        with pytest.raises(MetricError):
            if "time_from_override" in bad:
                compile_metric(
                    "SELECT count() AS v", org_id=1, database="db", time_from=10, time_to=5
                )
            else:
                plan(span=60, **bad)


def test_datetimes_and_epochs_are_the_same_range():
    import datetime as dt

    a = compile_metric(
        "SELECT count() AS v", org_id=1, database="db", time_from=NOW - 600, time_to=NOW, now=NOW
    )
    b = compile_metric(
        "SELECT count() AS v",
        org_id=1,
        database="db",
        now=NOW,
        time_from=dt.datetime.fromtimestamp(NOW - 600, dt.UTC),
        time_to=dt.datetime.fromtimestamp(NOW, dt.UTC).replace(tzinfo=None),
    )
    assert a == b


def test_one_second_since_a_watermark_is_a_cheap_rollup_plan(loaded):
    """What the push tier asks each tick: the last seconds from rollup_1s, same SQL text for
    any watermark (times are parameters)."""
    first = compile_metric(
        "SELECT count() AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base + 100,
        time_to=loaded.base + 110,
        granularity="1s",
    )
    later = compile_metric(
        "SELECT count() AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base + 110,
        time_to=loaded.base + 120,
        granularity="1s",
    )
    assert first.plan.table == "rollup_1s" and first.sql == later.sql
    rows = run_compiled(loaded.ch, first).rows
    assert [r[0] for r in rows] == list(range(loaded.base + 100, loaded.base + 110))
    assert all(r[1] == 1 for r in rows)


def test_previous_period_comparison_shifts_onto_current_t(loaded):
    compiled = compile_metric(
        "SELECT count() AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base + 120,
        time_to=loaded.base + 180,
        granularity="1m",
        compare="previous_period",
    )
    assert compiled.plan.comparison == "previous_period"
    rows = run_compiled(loaded.ch, compiled).dicts()
    assert rows == [
        {"series": "current", "t": loaded.base + 120, "v": 60},
        {"series": "previous", "t": loaded.base + 120, "v": 60},
    ]


def test_segment_comparison_gives_series_a_and_b(loaded):
    compiled = compile_metric(
        "SELECT sum(value) AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
        granularity="1m",
        filters=[{"dimension": "device", "op": "=", "value": "mobile"}],
        compare={
            "a": [{"dimension": "country", "value": "DE"}],
            "b": [{"dimension": "country", "op": "in", "value": ["FR", "US"]}],
        },
    )
    rows = run_compiled(loaded.ch, compiled).dicts()
    for series, countries in (("a", {"DE"}), ("b", {"FR", "US"})):
        got = sum(r["v"] for r in rows if r["series"] == series)
        want = sum(
            r["value"] for r in loaded.rows if r["device"] == "mobile" and r["country"] in countries
        )
        assert got == pytest.approx(want)
    assert {r["t"] for r in rows} == {loaded.base, loaded.base + 60, loaded.base + 120}


def test_sliding_window_counts_distinct_users_over_the_trailing_window(loaded):
    compiled = compile_metric(
        "SELECT uniq(user_id) AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base + 3,
        time_to=loaded.base + 8,
        granularity="1s",
        window_seconds=3,
    )
    assert compiled.plan.window_s == 3 and compiled.plan.table == "rollup_1s"
    rows = run_compiled(loaded.ch, compiled).rows
    # one event per second with user u{i % 13}: the window ending at t holds t-2, t-1, t
    assert rows == [[loaded.base + s, 3] for s in range(3, 8)]


def test_group_by_override_and_drilldown_filters(loaded):
    compiled = compile_metric(
        "SELECT count() AS v",
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
        granularity="1m",
        group_by=["device"],
        filters=[{"dimension": "props.plan", "op": "=", "value": "pro"}],
    )
    assert compiled.plan.columns == ("t", "device", "v") and compiled.plan.raw
    rows = run_compiled(loaded.ch, compiled).dicts()
    by_device = {}
    for r in rows:
        by_device[r["device"]] = by_device.get(r["device"], 0) + r["v"]
    assert by_device == {"desktop": 30}  # i % 6 == 0 rows are all even → desktop


@pytest.mark.parametrize(
    ("filters", "code"),
    [
        ([{"dimension": "org_id", "value": "2"}], "org_id_forbidden"),
        ([{"dimension": "nope", "value": "2"}], "unknown_column"),
        ([{"dimension": "country", "op": "in", "value": []}], "invalid_filter"),
        ([{"dimension": "value", "op": "like", "value": "x"}], "type_mismatch"),
        ([{"dimension": "country", "value": "x" * 2000}], "literal_too_long"),
        ([{"dimension": "country", "op": "drop", "value": "x"}], "invalid_filter"),
        ([{"dimension": "country", "value": "a\u200bb"}], "invisible_character"),
    ],
)
def test_bad_drilldown_filters_are_rejected(filters, code):
    with pytest.raises(MetricError) as info:
        compile_metric(
            "SELECT count() AS v", org_id=1, database="db", time_from=0, time_to=60, filters=filters
        )
    assert info.value.code == code and info.value.field


def test_form_compiles_to_the_same_model_as_text():
    form = {
        "outputs": [
            {
                "name": "purchases",
                "agg": "count",
                "where": [{"dimension": "event", "value": "purchase"}],
            },
            {"name": "revenue", "agg": "sum", "column": "value"},
            {"name": "p90", "agg": "quantile", "column": "value", "param": 0.9},
        ],
        "filters": [{"dimension": "country", "op": "in", "value": ["DE", "FR"]}],
        "group_by": ["device"],
    }
    text = (
        "SELECT countIf(event = 'purchase') AS purchases, sum(value) AS revenue, quantile(0.9)(value) AS p90 "
        "WHERE country IN ('DE', 'FR') GROUP BY device"
    )
    assert parse_form(form) == parse_metric(text)


def test_form_formula_and_its_value(loaded):
    form = {
        "outputs": [
            {
                "name": "buys",
                "agg": "count",
                "where": [{"dimension": "event", "value": "purchase"}],
            },
            {"name": "buyers", "agg": "uniq", "column": "user_id"},
            {"name": "per_user", "formula": {"op": "/", "left": "buys", "right": "buyers"}},
        ]
    }
    compiled = compile_metric(
        form,
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 60,
        granularity="1m",
    )
    assert not compiled.plan.raw
    [row] = run_compiled(loaded.ch, compiled).dicts()
    assert row["buys"] == 12 and row["buyers"] == 13 and row["per_user"] == pytest.approx(12 / 13)


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"outputs": []}, "no_outputs"),
        ({"outputs": [{"name": "x", "agg": "max", "column": "value"}]}, "invalid_form"),
        ({"outputs": [{"name": "x", "agg": "sum", "column": "org_id"}]}, "org_id_forbidden"),
        ({"outputs": [{"name": "events", "agg": "count"}]}, "reserved_name"),
        ({"outputs": [{"name": "x", "agg": "count"}], "group_by": ["org_id"]}, "org_id_forbidden"),
        ({"outputs": [{"name": "x", "agg": "count"}], "sql": "DROP TABLE x"}, "invalid_form"),
        (
            {"outputs": [{"name": "x", "formula": {"op": "/", "left": "y", "right": 1}}]},
            "unknown_output",
        ),
        (
            {"outputs": [{"name": "x", "agg": "quantile", "column": "value", "param": 7}]},
            "invalid_arguments",
        ),
        ({"outputs": [{"name": "x", "agg": "sum", "column": "event"}]}, "type_mismatch"),
    ],
)
def test_bad_forms_are_rejected_like_bad_text(form, code):
    with pytest.raises(MetricError) as info:
        parse_form(form)
    assert info.value.code == code


def test_builtin_metrics_are_metric_language(loaded):
    assert set(BUILTIN_METRICS) == {"page_views", "active_users", "revenue", "error_rate"}
    for builtin in BUILTIN_METRICS.values():
        assert builtin.text.startswith("SELECT ") and builtin.metric.outputs
    values = {}
    for key in BUILTIN_METRICS:
        compiled = compile_builtin(
            key,
            org_id=1,
            database=loaded.database,
            time_from=loaded.base + 120,
            time_to=loaded.base + 180,
            granularity="1m",
        )
        assert not compiled.plan.raw
        [row] = run_compiled(loaded.ch, compiled).rows
        values[key] = row[1]
    last_minute = [r for r in loaded.rows if r["ts"] >= loaded.base + 120]
    assert values["page_views"] == sum(r["event"] == "pageview" for r in last_minute)
    assert values["revenue"] == pytest.approx(
        sum(r["value"] for r in last_minute if r["event"] == "purchase")
    )
    assert values["error_rate"] == pytest.approx(
        sum(r["event"] == "error" for r in last_minute)
        / sum(r["event"] == "pageview" for r in last_minute)
    )
    assert values["active_users"] == 13  # the 5-minute window reaches back over all three minutes
