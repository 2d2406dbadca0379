"""Metric text through every compile entry point: org A's answers never depend on org B's data.

The metric language has no function that fails on a value, so its probes are the guessing
kind — conditions and groupings keyed on org B's marker values — and what is compared is all
an org is shown: the rows and the rows-read count. Each entry point the API, alerts and push
use compiles through its own function (series with and without comparisons, sliding window,
funnel, heatmap, top-N, the batched live read); each runs as org A in the two databases of
test_oracles.py (identical but for org B's marker rows) and must answer identically.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.querybuilder import compile_metric
from app.querybuilder.batch import compile_live_batch, live_query
from app.querybuilder.charts import compile_funnel, compile_heatmap, compile_top_n
from app.querybuilder.execute import run_compiled, visible_rows_statement
from tests.querybuilder.test_oracles import MARKER, ORG_A, pair  # noqa: F401 - the fixture

TEXTS = [
    "SELECT count() AS n",
    f"SELECT countIf(user_id = '{MARKER}') AS n",
    f"SELECT countIf(props['k'] = '{MARKER}') AS n, sum(value) AS v",
    "SELECT sumIf(value, country = 'ZZ') / nullIf(count(), 0) AS r",
    "SELECT count() AS n WHERE country IN ('ZZ', 'DE') GROUP BY country",
    f"SELECT uniq(user_id) AS u WHERE event != 'zz{MARKER}' GROUP BY event",
    "SELECT quantile(0.9)(value) AS p WHERE value > 1e14 OR value >= 0",
    "SELECT topK(3)(path) AS top",
    f"SELECT count() AS n WHERE path = '/{MARKER}' OR device = 'zz'",
]


def _range() -> tuple[int, int]:
    now = int(time.time())
    return now - 900, now + 60


def _answer(ch, compiled) -> tuple[Any, ...]:
    result = run_compiled(ch, compiled)
    count = visible_rows_statement(compiled)
    visible = ch.query_sync(count[0], params=count[1]).scalar() if count else 0
    return result.columns, result.rows, visible


def _entry_points(text: str, database: str) -> dict[str, Any]:
    lo, hi = _range()
    common = {"org_id": ORG_A, "database": database, "time_from": lo, "time_to": hi}
    return {
        "series 1m": compile_metric(text, granularity="1m", **common),
        "series raw": compile_metric(text, granularity="1m", force_raw=True, **common),
        "previous period": compile_metric(
            text, granularity="1m", compare="previous_period", **common
        ),
        "segments": compile_metric(
            text,
            granularity="1m",
            compare={"a": [{"dimension": "country", "op": "=", "value": "ZZ"}], "b": []},
            **common,
        ),
        "sliding window": compile_metric(text, granularity="1m", window_seconds=300, **common),
        "heatmap": compile_heatmap(text, **common),
        **(
            {}  # top-N ranks by a number: not for the topK metric
            if "topK" in text
            else {"top-N": compile_top_n(text, dimension="country", n=3, **common)}
        ),
    }


@pytest.mark.parametrize("text", TEXTS)
def test_every_entry_point_answers_org_a_the_same_whatever_org_b_holds(text, pair):  # noqa: F811
    with_marker, without = pair
    compiled_with = _entry_points(text, with_marker.database)
    compiled_without = _entry_points(text, without.database)
    for name, compiled in compiled_with.items():
        seen = _answer(with_marker, compiled)
        assert seen == _answer(without, compiled_without[name]), (name, text)
        assert "SECRET" not in repr(seen), name


def test_funnels_and_the_batched_live_read_answer_org_a_the_same(pair):  # noqa: F811
    with_marker, without = pair
    lo, hi = _range()
    steps = ["pageview", {"name": "marker", "event": f"zz{MARKER}"}, "purchase"]
    answers = []
    for ch in (with_marker, without):
        funnel = compile_funnel(
            steps,
            org_id=ORG_A,
            database=ch.database,
            time_from=lo,
            time_to=hi,
            window_seconds=600,
            breakdown="country",
        )
        batch = compile_live_batch(
            [live_query(TEXTS[i]) for i in (0, 3, 4, 5)],  # those a rollup answers
            org_id=ORG_A,
            database=ch.database,
            time_from=hi - 600,
            time_to=hi,
        )
        result = run_compiled(ch, batch.compiled)
        answers.append(
            (
                _answer(ch, funnel),
                batch.split(result.columns, result.types, result.rows),
                _answer(ch, batch.compiled)[2],
            )
        )
    assert answers[0] == answers[1]
    assert "SECRET" not in repr(answers[0])


def test_the_probes_do_see_the_marker_in_org_b_own_answers(pair):  # noqa: F811
    # The probes are live: org B's own answers differ between the two databases, so an
    # entry point that read org B's rows for org A would fail the tests above.
    with_marker, without = pair
    lo, hi = _range()
    totals = []
    for ch in (with_marker, without):
        compiled = compile_metric(
            TEXTS[1], org_id=2, database=ch.database, time_from=lo, time_to=hi, granularity="1m"
        )
        totals.append(sum(row[1] for row in run_compiled(ch, compiled).rows))
    assert totals == [2, 0]
