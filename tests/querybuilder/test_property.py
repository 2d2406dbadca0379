"""Property: for random metric expression trees, every compiled query carries the org guard on
every table it reads, and running it for org 1 on a database that also holds org 2's events
answers exactly what it answers on a database holding org 1's events only."""

from __future__ import annotations

import math

import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from app.querybuilder import compile_metric, guard, run_compiled
from app.querybuilder.model import Agg, Binary, Col, Func, InList, Lit, Metric, Output, Prop, Unary

STRING_COLUMNS = [
    "event",
    "country",
    "device",
    "browser",
    "os",
    "path",
    "user_id",
    "session_id",
    "referrer",
]
STRING_VALUES = [
    "pageview",
    "purchase",
    "DE",
    "FR",
    "mobile",
    "firefox",
    "linux",
    "/p1",
    "u3",
    "s4",
    "",
    "other2",
]

string_term = st.one_of(
    st.sampled_from(STRING_COLUMNS).map(Col),
    st.sampled_from(["plan", "ab", "secret"]).map(Prop),
)
number_term = st.one_of(
    st.just(Col("value")), st.integers(-5, 50).map(Lit), st.floats(0, 10, allow_nan=False).map(Lit)
)

condition = st.recursive(
    st.one_of(
        st.builds(lambda c, v: Binary("=", c, Lit(v)), string_term, st.sampled_from(STRING_VALUES)),
        st.builds(
            lambda c, v: Binary("!=", c, Lit(v)), string_term, st.sampled_from(STRING_VALUES)
        ),
        st.builds(
            lambda c, vs, neg: InList(c, tuple(Lit(v) for v in vs), neg),
            string_term,
            st.lists(st.sampled_from(STRING_VALUES), min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda op, v: Binary(op, Col("value"), Lit(v)),
            st.sampled_from([">", "<=", "="]),
            st.integers(0, 14),
        ),
        st.builds(
            lambda v: Binary("like", Col("path"), Lit(v)), st.sampled_from(["/p%", "%1", "/org2%"])
        ),
    ),
    lambda inner: st.one_of(
        st.builds(lambda a, b: Binary("and", a, b), inner, inner),
        st.builds(lambda a, b: Binary("or", a, b), inner, inner),
        inner.map(lambda a: Unary("not", a)),
    ),
    max_leaves=4,
)

aggregate = st.one_of(
    st.builds(lambda c: Agg("count", cond=c), st.none() | condition),
    st.builds(lambda a, c: Agg("sum", arg=a, cond=c), st.just(Col("value")), st.none() | condition),
    st.builds(lambda a, c: Agg("avg", arg=a, cond=c), st.just(Col("value")), st.none() | condition),
    st.builds(
        lambda a, c: Agg("uniq", arg=a, cond=c),
        st.sampled_from([Col("user_id"), Col("session_id"), Col("path")]),
        st.none() | condition,
    ),
    st.builds(lambda c: Agg("sum", arg=Binary("*", Col("value"), Lit(2))), st.none()),
)

value_expr = st.recursive(
    aggregate,
    lambda inner: st.one_of(
        st.builds(
            lambda op, a, b: Binary(op, a, b),
            st.sampled_from(["+", "-", "*"]),
            inner,
            inner | number_term.filter(lambda x: isinstance(x, Lit)),
        ),
        st.builds(lambda a, b: Binary("/", a, Func("nullIf", (b, Lit(0)))), inner, inner),
        st.builds(lambda a: Func("round", (a, Lit(2))), inner),
    ),
    max_leaves=4,
)

metric = st.builds(
    lambda outputs, where, group: Metric(
        outputs=tuple(Output(f"m{i}", e) for i, e in enumerate(outputs)),
        where=where,
        group_by=group,
    ),
    st.lists(value_expr, min_size=1, max_size=3),
    st.none() | condition,
    st.sampled_from(
        [(), (Col("country"),), (Col("device"), Col("os")), (Prop("plan"),), (Col("path"),)]
    ),
)

filters = st.lists(
    st.builds(
        lambda d, v: {"dimension": d, "op": "=", "value": v},
        st.sampled_from(["country", "device", "path", "props.plan"]),
        st.sampled_from(STRING_VALUES),
    ),
    max_size=2,
)


def _tables_all_guarded(sql: str, database: str) -> None:
    tree = sqlglot.parse_one(sql, dialect="clickhouse")
    tables = list(tree.find_all(exp.Table))
    assert tables
    for table in tables:
        assert table.db == database
        select = table.find_ancestor(exp.Select)
        # An isolated read: the guard, then only read bounds, behind the LIMIT barrier.
        where = select.args["where"].this
        while isinstance(where, exp.And):
            assert guard.is_read_bound(where.expression), where.sql(dialect="clickhouse")
            where = where.this
        assert where.sql(dialect="clickhouse") == "org_id = {org_id: UInt32}"
        assert select.args["limit"].sql(dialect="clickhouse") == "LIMIT 1000000000000000000"
        extra = {k for k, v in select.args.items() if v} - {
            "expressions",
            "from_",
            "where",
            "limit",
        }
        assert not extra


def _normalise(rows):
    out = []
    for row in rows:
        out.append(
            tuple(
                round(v, 6)
                if isinstance(v, float) and math.isfinite(v)
                else ("nan" if isinstance(v, float) else v)
                for v in row
            )
        )
    return sorted(out, key=repr)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    metric=metric,
    granularity=st.sampled_from(["auto", "1s", "1m", "1h"]),
    drilldown=filters,
    compare=st.sampled_from(
        [None, "previous_period", {"a": [{"dimension": "country", "value": "DE"}], "b": []}]
    ),
)
def test_random_metrics_are_guarded_and_never_see_another_org(
    loaded, org1_only, metric, granularity, drilldown, compare
):
    def compiled_for(dataset):
        return compile_metric(
            metric,
            org_id=1,
            database=dataset.database,
            time_from=dataset.base,
            time_to=dataset.base + 180,
            granularity=granularity,
            filters=drilldown,
            compare=compare,
        )

    both, alone = compiled_for(loaded), compiled_for(org1_only)
    _tables_all_guarded(both.sql, loaded.database)
    assert both.params["org_id"] == 1
    with_other_org = run_compiled(loaded.ch, both)
    without = run_compiled(org1_only.ch, alone)
    assert with_other_org.columns == without.columns
    assert _normalise(with_other_org.rows) == _normalise(without.rows)
    for row in with_other_org.rows:
        assert "/org2-secret" not in row and "org2" not in row
