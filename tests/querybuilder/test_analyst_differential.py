"""Differential: an analyst query guarded for org X answers exactly what the same query answers,
unguarded, on a copy of the data holding only org X's rows.

The copy is the schema rendered into a second database of the same chDB session
(`render_clickhouse(database=…)`, tables and views only — no materialized views, so copying
rollup rows does not cascade) filled with `INSERT … SELECT … WHERE org_id = X` from the
querybuilder's `loaded` dataset (orgs 1 and 2). Queries come from a seeded grammar of templates
over our tables: filters, group-bys, aggregates, joins, CTEs, IN-subqueries, window functions,
UNION ALL, scalar subqueries, rollup -Merge states.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlglot
from sqlglot import exp

from app.clickhouse import ClickHouse
from app.migrate import migrate_clickhouse, render_clickhouse
from app.querybuilder.analyst import compile_analyst_sql, run_analyst_sync
from app.querybuilder.catalog import ANALYST_TABLES
from app.querybuilder.guard import cte_in_scope

ORGS = (1, 2)
QUERIES_PER_ORG = 45
STORED_TABLES = [
    "events",
    "rollup_1s",
    "rollup_1m",
    "rollup_1h",
    "rollup_1d",
    "rollup_detail_1m",
    "rollup_detail_1h",
    "rollup_detail_1d",
]


@pytest.fixture(scope="module")
def copies(ch_root: ClickHouse, loaded) -> Iterator[dict[int, ClickHouse]]:
    """Per org, a database holding only that org's rows of `loaded`."""
    out: dict[int, ClickHouse] = {}
    for org in ORGS:
        db = f"qbcopy_{org}_{uuid.uuid4().hex[:8]}"
        copy = ch_root.with_database(db)
        tables_only = [
            m for m in render_clickhouse(database=db) if m.name.startswith("migrations/")
        ]
        migrate_clickhouse(copy, tables_only)
        for table in STORED_TABLES:
            copy.command_sync(
                f"INSERT INTO {db}.{table} SELECT * FROM {loaded.database}.{table} "
                f"WHERE org_id = {org}"
            )
        out[org] = copy
    yield out
    for copy in out.values():
        copy.command_sync(f"DROP DATABASE IF EXISTS {copy.database} SYNC")
        copy.close()


def test_the_copies_hold_one_org_each_and_no_views_cascade(copies, loaded):
    for org, copy in copies.items():
        for table in STORED_TABLES:
            rows = copy.query_sync(
                f"SELECT org_id, count() FROM {copy.database}.{table} GROUP BY org_id"
            ).rows
            expected = loaded.ch.query_sync(
                f"SELECT count() FROM {loaded.database}.{table} WHERE org_id = {org}"
            ).scalar()
            assert rows == [[org, expected]], (table, rows)
        mvs = copy.query_sync(
            "SELECT count() FROM system.tables WHERE database = {db:String} "
            "AND engine = 'MaterializedView'",
            {"db": copy.database},
        ).scalar()
        assert mvs == 0


# -- the grammar ---------------------------------------------------------------------------------

EVENT_DIMS = ["event", "country", "device", "browser", "os", "path", "referrer"]
ROLLUP_DIMS = ["event", "country", "device", "browser", "os"]
EVENT_FILTERS = [
    "event = 'pageview'",
    "country IN ('DE', 'FR')",
    "value > 3",
    "device != 'mobile'",
    "path LIKE '/p%'",
    "value BETWEEN 1 AND 9",
    "NOT (browser = 'chrome')",
    "props['plan'] = 'pro'",
    "user_id != ''",
    "1 = 1",
]
ROLLUP_FILTERS = [
    "event = 'purchase'",
    "country = 'US'",
    "device = 'mobile'",
    "events > 1",
    "value_sum >= 0",
    "1 = 1",
]
EVENT_AGGS = [
    "count()",
    "sum(value)",
    "uniqExact(user_id)",
    "max(value)",
    "min(value)",
    "countIf(event = 'error')",
    "avg(value)",
    "uniqExact(session_id)",
    "sumIf(value, device = 'mobile')",
]
VIEW_AGGS = ["sum(events)", "sum(value_sum)", "max(users)", "count()"]
GRAINS = ["1s", "1m", "1h", "1d"]

Template = Callable[[random.Random], str]


def _q(rng: random.Random, prefix: str, options: list[str]) -> str:
    """A filter on one side of a join: `value > 3` → `a.value > 3` (columns only)."""
    text = rng.choice(options)
    tree = sqlglot.parse_one(text, dialect="clickhouse")
    for column in tree.find_all(exp.Column):
        column.set("table", exp.to_identifier(prefix))
    return tree.sql(dialect="clickhouse")


def t_group(rng: random.Random) -> str:
    dim = rng.choice(EVENT_DIMS)
    return (
        f"SELECT {dim}, {rng.choice(EVENT_AGGS)} AS m FROM events "
        f"WHERE {rng.choice(EVENT_FILTERS)} GROUP BY {dim} ORDER BY {dim}"
    )


def t_totals(rng: random.Random) -> str:
    a, b = rng.sample(EVENT_AGGS, 2)
    return f"SELECT {a} AS m1, {b} AS m2 FROM events WHERE {rng.choice(EVENT_FILTERS)}"


def t_view(rng: random.Random) -> str:
    dim = rng.choice(ROLLUP_DIMS)
    return (
        f"SELECT {dim}, {rng.choice(VIEW_AGGS)} AS m FROM metrics_{rng.choice(GRAINS)} "
        f"WHERE {rng.choice(ROLLUP_FILTERS)} GROUP BY {dim} ORDER BY {dim}"
    )


def t_cte(rng: random.Random) -> str:
    dim = rng.choice(EVENT_DIMS)
    return (
        f"WITH c AS (SELECT * FROM events WHERE {rng.choice(EVENT_FILTERS)}) "
        f"SELECT {dim}, {rng.choice(EVENT_AGGS)} AS m FROM c GROUP BY {dim} ORDER BY {dim}"
    )


def t_cte_chain(rng: random.Random) -> str:
    dim = rng.choice(ROLLUP_DIMS)
    return (
        f"WITH a AS (SELECT {dim} AS k, {rng.choice(EVENT_AGGS)} AS m FROM events GROUP BY k), "
        f"b AS (SELECT k, m FROM a WHERE m > 0) SELECT k, m FROM b ORDER BY k"
    )


def t_join(rng: random.Random) -> str:
    key = rng.choice(ROLLUP_DIMS)
    kind = rng.choice(["", "LEFT ", "FULL "])
    return (
        f"SELECT r.{key} AS k, r.m AS raw, v.m AS rolled FROM "
        f"(SELECT {key}, count() AS m FROM events WHERE {rng.choice(EVENT_FILTERS)} "
        f"GROUP BY {key}) AS r {kind}JOIN "
        f"(SELECT {key}, sum(events) AS m FROM metrics_{rng.choice(GRAINS)} GROUP BY {key}) AS v "
        f"ON r.{key} = v.{key} ORDER BY k, raw, rolled"
    )


def t_self_join(rng: random.Random) -> str:
    return (
        "SELECT a.event AS first_event, b.event AS next_event, count() AS n FROM events AS a "
        "JOIN events AS b ON a.session_id = b.session_id AND a.ts < b.ts "
        f"WHERE {_q(rng, 'a', EVENT_FILTERS)} "
        "GROUP BY first_event, next_event ORDER BY first_event, next_event"
    )


def t_in_subquery(rng: random.Random) -> str:
    column = rng.choice(["user_id", "session_id", "path"])
    negate = rng.choice(["", "NOT "])
    return (
        f"SELECT {rng.choice(EVENT_AGGS)} AS m FROM events WHERE {column} {negate}IN "
        f"(SELECT {column} FROM events WHERE {rng.choice(EVENT_FILTERS)})"
    )


def t_window(rng: random.Random) -> str:
    dim = rng.choice(EVENT_DIMS)
    return (
        f"SELECT {dim}, m, rank() OVER (ORDER BY m DESC, {dim}) AS r, "
        f"sum(m) OVER (ORDER BY {dim}) AS running FROM "
        f"(SELECT {dim}, {rng.choice(EVENT_AGGS)} AS m FROM events "
        f"WHERE {rng.choice(EVENT_FILTERS)} GROUP BY {dim}) ORDER BY {dim}"
    )


def t_window_partition(rng: random.Random) -> str:
    return (
        "SELECT bucket, event, sum(events) AS n, "
        "row_number() OVER (PARTITION BY bucket ORDER BY sum(events) DESC, event) AS place "
        f"FROM metrics_{rng.choice(['1m', '1h'])} WHERE {rng.choice(ROLLUP_FILTERS)} "
        "GROUP BY bucket, event ORDER BY bucket, place"
    )


def t_union(rng: random.Random) -> str:
    return (
        f"SELECT 'raw' AS part, toFloat64({rng.choice(EVENT_AGGS)}) AS m FROM events "
        f"WHERE {rng.choice(EVENT_FILTERS)} UNION ALL "
        f"SELECT 'view', toFloat64({rng.choice(VIEW_AGGS)}) FROM metrics_{rng.choice(GRAINS)} "
        f"WHERE {rng.choice(ROLLUP_FILTERS)}"
    )


def t_scalar(rng: random.Random) -> str:
    dim = rng.choice(EVENT_DIMS)
    return (
        f"SELECT {dim}, count() AS n, (SELECT count() FROM events WHERE "
        f"{rng.choice(EVENT_FILTERS)}) AS total FROM events GROUP BY {dim} ORDER BY {dim}"
    )


def t_merge(rng: random.Random) -> str:
    dim = rng.choice(ROLLUP_DIMS)
    return (
        f"SELECT {dim}, uniqCombinedMerge(users) AS u, sum(events) AS n "
        f"FROM rollup_{rng.choice(GRAINS)} WHERE {rng.choice(ROLLUP_FILTERS)} "
        f"GROUP BY {dim} ORDER BY {dim}"
    )


def t_limit_by(rng: random.Random) -> str:
    dim = rng.choice(ROLLUP_DIMS)
    return (
        f"SELECT {dim}, path, count() AS n FROM events GROUP BY {dim}, path HAVING n > 1 "
        f"ORDER BY {dim}, n DESC, path LIMIT 2 BY {dim}"
    )


TEMPLATES: list[Template] = [
    t_group,
    t_totals,
    t_view,
    t_cte,
    t_cte_chain,
    t_join,
    t_self_join,
    t_in_subquery,
    t_window,
    t_window_partition,
    t_union,
    t_scalar,
    t_merge,
    t_limit_by,
]


def generated(seed: int) -> list[str]:
    rng = random.Random(seed)
    queries = [template(rng) for template in TEMPLATES]  # every template at least once
    queries += [rng.choice(TEMPLATES)(rng) for _ in range(QUERIES_PER_ORG - len(queries))]
    return queries


# -- running ---------------------------------------------------------------------------------------


def unguarded(sql: str, database: str) -> str:
    """The analyst's SQL with our tables qualified by `database`, and nothing else changed."""
    tree = sqlglot.parse_one(sql, dialect="clickhouse")
    for table in tree.find_all(exp.Table):
        if cte_in_scope(table) is None and table.name in ANALYST_TABLES:
            table.set("db", exp.to_identifier(database))
    return tree.sql(dialect="clickhouse")


def rows_of(payload: bytes) -> list[str]:
    """Rows as canonical JSON, sorted (UNION ALL has no order; ORDER BY ties are not ours)."""
    return sorted(json.dumps(row, sort_keys=True) for row in json.loads(payload)["data"])


def guarded_rows(loaded, sql: str, org: int) -> list[str]:
    query = compile_analyst_sql(sql, org, database=loaded.database)
    return rows_of(run_analyst_sync(loaded.ch, query, "json").data)


def plain_rows(ch: ClickHouse, sql: str) -> list[str]:
    settings = {"output_format_json_quote_64bit_integers": 0}
    return rows_of(
        ch.query_raw_sync(unguarded(sql, ch.database), settings=settings, fmt="JSON").data
    )


@pytest.mark.parametrize("org", ORGS)
def test_guarded_answers_equal_unguarded_answers_on_a_copy_of_the_org(org, loaded, copies):
    queries = generated(seed=100 + org)
    differs_with_both_orgs = 0
    for sql in queries:
        guarded = guarded_rows(loaded, sql, org)
        assert guarded == plain_rows(copies[org], sql), sql
        if guarded != plain_rows(loaded.ch, sql):
            differs_with_both_orgs += 1
    # The data tells the orgs apart: most of these queries answer differently when both orgs'
    # rows are visible, so an unguarded read of the other org could not go unnoticed.
    assert differs_with_both_orgs >= len(queries) // 2, differs_with_both_orgs


def test_the_grammar_produces_varied_queries():
    queries = generated(seed=101)
    assert len(set(queries)) >= QUERIES_PER_ORG - 5
    text = " ".join(queries)
    for construct in (
        "WITH ",
        " JOIN ",
        " IN (SELECT",
        " OVER (",
        "UNION ALL",
        "Merge(",
        "LIMIT 2 BY",
    ):
        assert construct in text, construct
