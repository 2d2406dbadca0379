"""The valid-metric corpus: compiled SQL shape + values on real chDB against a Python oracle.

Each entry is metric text with one output `v`, the table the planner must pick for 1-minute
buckets over the last few minutes, and an oracle computing `v` from org 1's rows of one bucket
(or of one bucket × group). Rollup and raw plans of the same metric must agree.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from app.querybuilder import compile_metric, parse_metric, run_compiled
from app.querybuilder.validate import dimension_name

Row = dict[str, Any]
R, E, D = "rollup_1m", "events", "rollup_detail_1m"


def n(rows: list[Row], pred: Callable[[Row], bool] = lambda r: True) -> int:
    return sum(1 for r in rows if pred(r))


def total(rows: list[Row], pred: Callable[[Row], bool] = lambda r: True) -> float:
    return sum(r["value"] for r in rows if pred(r))


def distinct(rows: list[Row], col: str, pred: Callable[[Row], bool] = lambda r: True) -> int:
    return len({r[col] for r in rows if pred(r)})


def ev(name: str) -> Callable[[Row], bool]:
    return lambda r: r["event"] == name


def quantile_in_range(rows: list[Row], pred: Callable[[Row], bool] = lambda r: True):
    values = [r["value"] for r in rows if pred(r)]
    return ("range", min(values), max(values)) if values else ("range", 0, 0)


def topk_valid(rows: list[Row], k: int):
    counts = Counter(r["path"] for r in rows)
    return ("topk", k, counts)


# (text, table at 1m, group-by dims or (), oracle over one bucket's rows)
CORPUS: list[tuple[str, str, tuple[str, ...], Callable[[list[Row]], Any]]] = [
    ("SELECT count() AS v", R, (), lambda rs: n(rs)),
    ("SELECT count(*) AS v", R, (), lambda rs: n(rs)),
    ("SELECT countIf(event = 'purchase') AS v", R, (), lambda rs: n(rs, ev("purchase"))),
    ("SELECT sum(value) AS v", R, (), lambda rs: total(rs)),
    ("SELECT sumIf(value, event = 'purchase') AS v", R, (), lambda rs: total(rs, ev("purchase"))),
    ("SELECT avg(value) AS v", R, (), lambda rs: total(rs) / n(rs)),
    (
        "SELECT avgIf(value, country = 'DE') AS v",
        R,
        (),
        lambda rs: (
            total(rs, lambda r: r["country"] == "DE") / n(rs, lambda r: r["country"] == "DE")
        ),
    ),
    ("SELECT uniq(user_id) AS v", R, (), lambda rs: distinct(rs, "user_id")),
    (
        "SELECT uniqIf(user_id, event = 'signup') AS v",
        R,
        (),
        lambda rs: distinct(rs, "user_id", ev("signup")),
    ),
    (
        "SELECT count() AS v WHERE country IN ('DE', 'FR')",
        R,
        (),
        lambda rs: n(rs, lambda r: r["country"] in ("DE", "FR")),
    ),
    (
        "SELECT count() AS v WHERE country NOT IN ('DE')",
        R,
        (),
        lambda rs: n(rs, lambda r: r["country"] != "DE"),
    ),
    (
        "SELECT count() AS v WHERE device = 'mobile' AND browser != 'edge'",
        R,
        (),
        lambda rs: n(rs, lambda r: r["device"] == "mobile" and r["browser"] != "edge"),
    ),
    (
        "SELECT count() AS v WHERE os = 'linux' OR os = 'mac'",
        R,
        (),
        lambda rs: n(rs, lambda r: r["os"] in ("linux", "mac")),
    ),
    (
        "SELECT count() AS v WHERE NOT (event = 'pageview')",
        R,
        (),
        lambda rs: n(rs, lambda r: r["event"] != "pageview"),
    ),
    ("SELECT count() AS v WHERE event LIKE 'page%'", R, (), lambda rs: n(rs, ev("pageview"))),
    (
        "SELECT count() AS v WHERE event NOT LIKE '%e%'",
        R,
        (),
        lambda rs: n(rs, lambda r: "e" not in r["event"]),
    ),
    ("SELECT count() AS v WHERE event ILIKE 'PURCH%'", R, (), lambda rs: n(rs, ev("purchase"))),
    ("SELECT count() AS v GROUP BY country", R, ("country",), lambda rs: n(rs)),
    ("SELECT country, count() AS v GROUP BY country", R, ("country",), lambda rs: n(rs)),
    (
        "SELECT sum(value) AS v GROUP BY device, browser",
        R,
        ("device", "browser"),
        lambda rs: total(rs),
    ),
    ("SELECT uniq(user_id) AS v GROUP BY os", R, ("os",), lambda rs: distinct(rs, "user_id")),
    (
        "SELECT countIf(event = 'purchase') / uniq(user_id) AS v",
        R,
        (),
        lambda rs: n(rs, ev("purchase")) / distinct(rs, "user_id"),
    ),
    (
        "SELECT countIf(event = 'error') / nullIf(countIf(event = 'pageview'), 0) AS v",
        R,
        (),
        lambda rs: n(rs, ev("error")) / n(rs, ev("pageview")),
    ),
    ("SELECT round(sum(value) / count(), 2) AS v", R, (), lambda rs: round(total(rs) / n(rs), 2)),
    ("SELECT sum(value) * 2 + 1 AS v", R, (), lambda rs: total(rs) * 2 + 1),
    (
        "SELECT (count() - countIf(event = 'pageview')) % 7 AS v",
        R,
        (),
        lambda rs: (n(rs) - n(rs, ev("pageview"))) % 7,
    ),
    ("SELECT -sum(value) AS v", R, (), lambda rs: -total(rs)),
    ("SELECT if(count() > 50, 1, 0) AS v", R, (), lambda rs: 1 if n(rs) > 50 else 0),
    ("SELECT coalesce(nullIf(countIf(event = 'nothing'), 0), -1) AS v", R, (), lambda rs: -1),
    (
        "SELECT if(country = 'DE', count(), 0) AS v GROUP BY country",
        R,
        ("country",),
        lambda rs: n(rs) if rs[0]["country"] == "DE" else 0,
    ),
    (
        "SELECT count() AS v -- trailing comment\n WHERE event = 'signup' /* block */",
        R,
        (),
        lambda rs: n(rs, ev("signup")),
    ),
    ("select COUNT() as v where event = 'signup'", R, (), lambda rs: n(rs, ev("signup"))),
    ("SELECT count() AS v WHERE event = 'it''s'", R, (), lambda rs: 0),
    (
        "SELECT sum(value) AS v WHERE event IN ('purchase', 'signup') AND country = 'US'",
        R,
        (),
        lambda rs: total(
            rs, lambda r: r["event"] in ("purchase", "signup") and r["country"] == "US"
        ),
    ),
    ("SELECT count() AS v WHERE true", R, (), lambda rs: n(rs)),
    (
        "SELECT count() AS v WHERE path = '/p1'",
        E,
        (),
        lambda rs: n(rs, lambda r: r["path"] == "/p1"),
    ),
    (
        "SELECT count() AS v WHERE props['plan'] = 'pro'",
        E,
        (),
        lambda rs: n(rs, lambda r: r["props"]["plan"] == "pro"),
    ),
    (
        "SELECT countIf(props['ab'] = 'y') AS v",
        E,
        (),
        lambda rs: n(rs, lambda r: r["props"]["ab"] == "y"),
    ),
    ("SELECT uniq(session_id) AS v", E, (), lambda rs: distinct(rs, "session_id")),
    (
        "SELECT count() AS v WHERE referrer != ''",
        E,
        (),
        lambda rs: n(rs, lambda r: r["referrer"] != ""),
    ),
    (
        "SELECT sum(value) AS v WHERE value > 6",
        E,
        (),
        lambda rs: total(rs, lambda r: r["value"] > 6),
    ),
    (
        "SELECT count() AS v WHERE user_id IN ('u1', 'u2', 'u3')",
        E,
        (),
        lambda rs: n(rs, lambda r: r["user_id"] in ("u1", "u2", "u3")),
    ),
    ("SELECT count() AS v GROUP BY props['plan']", E, ("props.plan",), lambda rs: n(rs)),
    ("SELECT count() AS v GROUP BY path", E, ("path",), lambda rs: n(rs)),
    (
        "SELECT sumIf(value, path LIKE '/p%' AND value >= 3) AS v",
        E,
        (),
        lambda rs: total(rs, lambda r: r["path"].startswith("/p") and r["value"] >= 3),
    ),
    ("SELECT avg(value * 2) AS v", E, (), lambda rs: 2 * total(rs) / n(rs)),
    (
        "SELECT count() AS v WHERE session_id = 's3' OR props['plan'] = 'pro'",
        E,
        (),
        lambda rs: n(rs, lambda r: r["session_id"] == "s3" or r["props"]["plan"] == "pro"),
    ),
    (
        "SELECT uniqIf(user_id, props['plan'] = 'pro') AS v",
        E,
        (),
        lambda rs: distinct(rs, "user_id", lambda r: r["props"]["plan"] == "pro"),
    ),
    ("SELECT quantile(0.5)(value) AS v", D, (), lambda rs: quantile_in_range(rs)),
    ("SELECT topK(3)(path) AS v", D, (), lambda rs: topk_valid(rs, 3)),
    (
        "SELECT quantileIf(0.9)(value, event = 'purchase') AS v",
        D,
        (),
        lambda rs: quantile_in_range(rs, ev("purchase")),
    ),
    (
        "SELECT quantile(0.5)(value) AS v WHERE country = 'DE'",
        E,
        (),
        lambda rs: quantile_in_range(rs, lambda r: r["country"] == "DE"),
    ),
]

IDS = [f"{i:02d}" for i in range(len(CORPUS))]


def _dim_value(row: Row, dim: str) -> str:
    return row["props"][dim.split(".", 1)[1]] if dim.startswith("props.") else row[dim]


def expected(rows: list[Row], step: int, dims: tuple[str, ...], oracle) -> dict[tuple, Any]:
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row["ts"] // step * step, *(_dim_value(row, d) for d in dims))].append(row)
    return {key: oracle(group) for key, group in groups.items()}


def check_value(actual: Any, want: Any, *, approx_uniq: bool) -> None:
    if isinstance(want, tuple) and want[0] == "range":
        assert want[1] - 1e-6 <= actual <= want[2] + 1e-6
    elif isinstance(want, tuple) and want[0] == "topk":
        _, k, counts = want
        assert 0 < len(actual) <= k and set(actual) <= set(counts)
        # every returned path is at least as frequent as the k-th most frequent one, ± ties
        kth = sorted(counts.values(), reverse=True)[min(k, len(counts)) - 1]
        assert all(counts[p] >= kth - 1 for p in actual)
    elif approx_uniq:
        assert actual == pytest.approx(want, rel=0.02)
    else:
        assert actual == pytest.approx(want, rel=1e-9, abs=1e-9)


def run_series(dataset, text: str, **kwargs):
    compiled = compile_metric(
        text,
        org_id=1,
        database=dataset.database,
        time_from=dataset.base,
        time_to=dataset.base + 180,
        granularity=kwargs.pop("granularity", "1m"),
        **kwargs,
    )
    return compiled, run_compiled(dataset.ch, compiled)


def keyed(result, dims: tuple[str, ...]) -> dict[tuple, Any]:
    names = [dimension_name(_dim(d)) for d in dims]
    return {(row["t"], *(row[n] for n in names)): row["v"] for row in result.dicts()}


def _dim(text: str):
    from app.querybuilder.validate import parse_dimension

    return parse_dimension(text)


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 40
    assert len({t for t, *_ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("text", "table", "dims", "oracle"), CORPUS, ids=IDS)
def test_corpus_compiles_to_guarded_sql_on_the_right_table(text, table, dims, oracle, loaded):
    compiled, result = run_series(loaded, text)
    sql = compiled.sql
    assert compiled.plan.table == table
    assert compiled.plan.raw == (table == "events")
    assert f"FROM {loaded.database}.{table} WHERE org_id = {{org_id: UInt32}} AND " in sql
    assert sql.count("org_id") == 2 and sql.count("org_id = {org_id: UInt32}") == 1
    assert sql.count(" LIMIT 1000000000000000000) AS ") == 1
    assert compiled.params["org_id"] == 1
    assert "WITH FILL FROM {time_from: UInt32} TO {time_to: UInt32} STEP 60" in sql
    # user strings travel as parameters only
    for value in ("purchase", "signup", "'DE'", "/p1", "'pro'", "--", "/*"):
        assert value not in sql
    assert compiled.settings == ({"max_execution_time": 10} if table == "events" else {})
    assert result.columns[0] == "t" and result.columns[-1] == "v"
    assert result.types[0] == "UInt32"


@pytest.mark.parametrize(("text", "table", "dims", "oracle"), CORPUS, ids=IDS)
def test_corpus_values_match_the_oracle(text, table, dims, oracle, loaded):
    _, result = run_series(loaded, text)
    got = keyed(result, dims)
    want = expected(loaded.rows, 60, dims, oracle)
    assert want, "the oracle saw no rows"
    for key, value in want.items():
        assert key in got, f"missing bucket {key}"
        check_value(got[key], value, approx_uniq="uniq" in text)
    # filled buckets: one row per minute of the range for every group that has data
    groups = {key[1:] for key in want}
    assert len(result.rows) == 3 * len(groups)
    assert sorted({k[0] for k in got}) == [loaded.base + 60 * i for i in range(3)]


ROLLUP_ANSWERABLE = [entry for entry in CORPUS if entry[1] in (R, D)]


@pytest.mark.parametrize(
    ("text", "table", "dims", "oracle"),
    ROLLUP_ANSWERABLE,
    ids=[t[:40] for t, *_ in ROLLUP_ANSWERABLE],
)
@pytest.mark.parametrize("granularity", ["1m", "1s"])
def test_rollup_and_raw_plans_agree(text, table, dims, oracle, granularity, loaded):
    if table == D and granularity == "1s":
        pytest.skip("detail rollups start at one minute")
    rolled, rolled_result = run_series(loaded, text, granularity=granularity)
    raw, raw_result = run_series(loaded, text, granularity=granularity, force_raw=True)
    assert not rolled.plan.raw and raw.plan.raw
    assert rolled.plan.table == ("rollup_1s" if granularity == "1s" else table)
    got, want = keyed(rolled_result, dims), keyed(raw_result, dims)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if table == D:
            continue  # t-digest/topK merges are approximate: checked against the oracle above
        if value is None or (isinstance(value, float) and math.isnan(value)):
            # 0/0 (no matching rows in the bucket) on both plans
            assert got[key] is None or math.isnan(got[key])
        elif "uniq" in text:
            assert got[key] == pytest.approx(value, rel=0.02)
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_parse_is_cached_and_models_are_immutable():
    assert parse_metric("SELECT count() AS v") is parse_metric("SELECT count() AS v")
