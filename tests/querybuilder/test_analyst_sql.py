"""Analysts' SQL (app/querybuilder/analyst): full read-only SELECTs, isolated per org.

Against real chDB with the querybuilder's two datasets (`loaded` holds org 1's and org 2's
events, `org1_only` org 1's alone): queries with CTEs, joins, window functions, subqueries and
UNION answer exactly what a Python oracle over org 1's rows says; hostile SQL is refused with a
code and a position, or runs and answers the same on both datasets (no other org's row can
change an answer); a tampered compiled query never reaches ClickHouse.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

from app.clickhouse import ClickHouseError
from app.querybuilder import guard
from app.querybuilder.analyst import (
    AnalystLimits,
    AnalystSqlError,
    RowBudgetExceeded,
    check_analyst_query,
    compile_analyst_sql,
    execution_settings,
    run_analyst_sync,
)
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.sql_functions import (
    AGGREGATE_FUNCTIONS,
    SCALAR_FUNCTIONS,
    name_allowed,
)

from .test_hostile import REJECTED as METRIC_HOSTILE_CORPUS

ORG = 1
PLAIN_CASTS = (
    "REPLACE (CAST(event AS String) AS event, CAST(country AS String) AS country, "
    "CAST(device AS String) AS device, CAST(browser AS String) AS browser, "
    "CAST(os AS String) AS os)"
)
ISOLATED = (
    "(SELECT * " + PLAIN_CASTS + " FROM {db}.{table} WHERE org_id = {{org_id: UInt32}} "
    "LIMIT 1000000000000000000) AS {alias}"
)


def compile_for(dataset: Any, sql: str, org_id: int = ORG):
    return compile_analyst_sql(sql, org_id, database=dataset.database)


def run_json(dataset: Any, sql: str, org_id: int = ORG, **kwargs: Any) -> list[dict[str, Any]]:
    """The query's rows for `org_id` on `dataset`, through compile + run (JSON output)."""
    result = run_analyst_sync(dataset.ch, compile_for(dataset, sql, org_id), "json", **kwargs)
    return json.loads(result.data)["data"]


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


# -- correct values for the org: CTEs, joins, windows, subqueries, UNION ----------------------------


def test_simple_select_is_guarded_and_counts_only_this_org(loaded):
    query = compile_for(loaded, "SELECT count() AS n FROM events")
    isolated = ISOLATED.format(db=loaded.database, table="events", alias="events")
    assert query.sql == f"SELECT * FROM (SELECT count() AS n FROM {isolated})"
    assert query.params == {"org_id": ORG} and query.tables == ["events"]
    read = ISOLATED.format(db=loaded.database, table="events", alias="r")
    assert query.visible_rows_sql == f"SELECT COUNT(*) AS n FROM {read}"
    assert run_json(loaded, "SELECT count() AS n FROM events") == [{"n": len(loaded.rows)}]
    assert run_json(loaded, "SELECT count() AS n FROM events", org_id=2) == [{"n": 90}]
    assert run_json(loaded, "SELECT count() AS n FROM events", org_id=3) == [{"n": 0}]


def test_cte_join_counts_pageviews_of_buyers_per_country(loaded):
    sql = """
        WITH buyers AS (SELECT DISTINCT user_id FROM events WHERE event = 'purchase')
        SELECT e.country AS country, count() AS views
        FROM events AS e
        JOIN buyers AS b ON e.user_id = b.user_id
        WHERE e.event = 'pageview'
        GROUP BY e.country
        ORDER BY e.country
    """
    buyers = {r["user_id"] for r in loaded.rows if r["event"] == "purchase"}
    expected = Counter(
        r["country"] for r in loaded.rows if r["event"] == "pageview" and r["user_id"] in buyers
    )
    assert run_json(loaded, sql) == [
        {"country": c, "views": n} for c, n in sorted(expected.items())
    ]
    query = compile_for(loaded, sql)
    assert query.sql.count("org_id = {org_id: UInt32}") == 2  # one per table read
    assert "WITH __cp_cte_1 AS (" in query.sql and "JOIN __cp_cte_1 AS b" in query.sql


def test_join_of_raw_events_and_rollup_view_agrees_per_event(loaded):
    sql = """
        SELECT r.event AS event, r.n AS raw, m.n AS rolled
        FROM (SELECT event, count() AS n FROM events GROUP BY event) AS r
        JOIN (SELECT event, sum(events) AS n FROM metrics_1m GROUP BY event) AS m
          ON r.event = m.event
        ORDER BY event
    """
    per_event = Counter(r["event"] for r in loaded.rows)
    assert run_json(loaded, sql) == [
        {"event": e, "raw": n, "rolled": n} for e, n in sorted(per_event.items())
    ]


def test_window_functions_running_total_and_rank(loaded):
    running = run_json(
        loaded,
        "SELECT bucket, sum(events) AS n, sum(sum(events)) OVER (ORDER BY bucket) AS running "
        "FROM metrics_1m GROUP BY bucket ORDER BY bucket",
    )
    assert [(r["n"], r["running"]) for r in running] == [(60, 60), (60, 120), (60, 180)]
    ranked = run_json(
        loaded,
        "SELECT path, count() AS n, rank() OVER (ORDER BY count() DESC, path) AS r, "
        "lagInFrame(count()) OVER (ORDER BY count() DESC, path) AS previous "
        "FROM events GROUP BY path ORDER BY r",
    )
    by_path = Counter(r["path"] for r in loaded.rows)
    order = sorted(by_path.items(), key=lambda item: (-item[1], item[0]))
    assert [(r["path"], r["n"], r["r"]) for r in ranked] == [
        (path, n, i + 1) for i, (path, n) in enumerate(order)
    ]
    assert [r["previous"] for r in ranked] == [0] + [n for _, n in order[:-1]]


def test_in_subquery_exists_and_scalar_subquery(loaded):
    error_users = {r["user_id"] for r in loaded.rows if r["event"] == "error"}
    in_sub = run_json(
        loaded,
        "SELECT count() AS n FROM events "
        "WHERE user_id IN (SELECT user_id FROM events WHERE event = 'error')",
    )
    assert in_sub == [{"n": sum(1 for r in loaded.rows if r["user_id"] in error_users)}]
    share = run_json(
        loaded,
        "SELECT device, count() AS n, (SELECT count() FROM events) AS total "
        "FROM events WHERE EXISTS (SELECT 1 FROM metrics_1h) GROUP BY device ORDER BY device",
    )
    per_device = Counter(r["device"] for r in loaded.rows)
    assert share == [
        {"device": d, "n": n, "total": len(loaded.rows)} for d, n in sorted(per_device.items())
    ]


def test_union_all_of_raw_and_rollup_views(loaded):
    rows = run_json(
        loaded,
        "SELECT 'raw' AS source, count() AS n FROM events "
        "UNION ALL SELECT 'hourly', sum(events) FROM metrics_1h "
        "UNION ALL SELECT 'daily', sum(events) FROM metrics_1d",
    )
    assert sorted((r["source"], r["n"]) for r in rows) == [
        ("daily", 180),
        ("hourly", 180),
        ("raw", 180),
    ]


def test_distinct_users_merge_across_buckets_but_do_not_sum(loaded):
    users = len({r["user_id"] for r in loaded.rows})
    merged = run_json(loaded, "SELECT uniqCombinedMerge(users) AS u FROM rollup_1m")
    summed = run_json(loaded, "SELECT sum(users) AS u FROM metrics_1m")
    exact = run_json(loaded, "SELECT uniqExact(user_id) AS u FROM events")
    assert merged == exact == [{"u": users}]
    assert summed[0]["u"] > users  # the caveat in docs/schema.md: per-row counts overlap


def test_detail_view_quantiles_and_top_paths(loaded):
    rows = run_json(
        loaded,
        "SELECT event, p50, p90, p99, top_paths FROM metrics_detail_1d WHERE event = 'pageview'",
    )
    pageviews = [r for r in loaded.rows if r["event"] == "pageview"]
    assert len(rows) == 1
    row = rows[0]
    values = sorted(r["value"] for r in pageviews)
    assert values[0] <= row["p50"] <= row["p90"] <= row["p99"] <= values[-1]
    by_path = Counter(r["path"] for r in pageviews)
    assert sorted(row["top_paths"]) == sorted(by_path)
    assert by_path[row["top_paths"][0]] == max(by_path.values())


def test_csv_and_parquet_outputs_hold_the_same_values(loaded):
    sql = "SELECT country, count() AS n, sum(value) AS total FROM events GROUP BY country ORDER BY country"
    expected: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in loaded.rows:
        expected[r["country"]][0] += 1
        expected[r["country"]][1] += r["value"]
    query = compile_for(loaded, sql)
    csv = run_analyst_sync(loaded.ch, query, "csv").data.decode()
    assert csv.splitlines() == ['"country","n","total"'] + [
        f'"{c}",{n},{total:g}' for c, (n, total) in sorted(expected.items())
    ]
    table = pq.read_table(io.BytesIO(run_analyst_sync(loaded.ch, query, "parquet").data))
    assert table.column_names == ["country", "n", "total"]
    assert [
        (c.decode() if isinstance(c, bytes) else c, n, t)
        for c, n, t in zip(*table.to_pydict().values(), strict=True)
    ] == [(c, n, total) for c, (n, total) in sorted(expected.items())]


def test_quoted_and_aliased_table_names_are_still_guarded(loaded):
    assert run_json(loaded, 'SELECT count() AS n FROM "events"') == [{"n": 180}]
    assert run_json(loaded, "SELECT count() AS n FROM `events` AS `e` WHERE e.value >= 0") == [
        {"n": 180}
    ]
    assert run_json(loaded, "(SELECT count() AS n FROM events)") == [{"n": 180}]


# -- limits -----------------------------------------------------------------------------------------


def test_execution_settings_are_read_only_and_throw_on_overflow():
    settings = execution_settings(AnalystLimits(), "csv")
    assert settings["readonly"] == 1 and list(settings)[-1] == "readonly"
    assert settings["result_overflow_mode"] == "throw" and settings["max_execution_time"] == 30
    # ClickHouse's rows_read counts other orgs' rows in shared granules: neither a limit on it
    # nor its figure in the output may reach the user.
    assert "max_rows_to_read" not in settings and settings["output_format_write_statistics"] == 0
    assert "output_format_json_quote_64bit_integers" not in settings
    assert (
        execution_settings(AnalystLimits(), "json")["output_format_json_quote_64bit_integers"] == 0
    )


def test_the_facade_runs_queries_with_those_settings(loaded):
    settings = execution_settings(AnalystLimits(max_result_rows=7), "csv")
    result = loaded.ch.query_raw_sync(
        "SELECT getSetting('readonly'), getSetting('max_result_rows'), "
        "getSetting('output_format_write_statistics')",
        settings=settings,
        fmt="CSV",
    )
    assert result.data.decode().strip() == "1,7,false"


def test_result_rows_over_the_limit_throw_also_for_a_union(loaded):
    small = AnalystLimits(max_result_rows=5)
    with pytest.raises(ClickHouseError) as info:
        run_json(loaded, "SELECT path FROM events GROUP BY path", limits=small)
    assert info.value.code == 396
    # ClickHouse checks a bare UNION's branches, not its result: 3 + 3 rows passed a limit
    # of 5 before the compiler put one SELECT around it.
    union = "SELECT country FROM events GROUP BY country UNION ALL SELECT country FROM metrics_1m GROUP BY country"
    with pytest.raises(ClickHouseError) as info:
        run_json(loaded, union, limits=small)
    assert info.value.code == 396
    assert len(run_json(loaded, union, limits=AnalystLimits(max_result_rows=6))) == 6


def test_rows_over_the_budget_are_refused_before_the_query_runs(loaded):
    # The budget is checked against the org's own rows (1 .. len(rows)), never ClickHouse's
    # rows_read; nothing of the query itself runs when it is over.
    own = len(loaded.rows)
    before = loaded.ch.query_count
    with pytest.raises(RowBudgetExceeded) as info:
        run_json(loaded, "SELECT sum(value) AS s FROM events", max_rows_to_read=own - 1)
    assert (info.value.visible_rows, info.value.budget) == (own, own - 1)
    assert loaded.ch.query_count == before + 1  # the count only
    assert run_json(loaded, "SELECT sum(value) AS s FROM events", max_rows_to_read=own) == [
        {"s": sum(r["value"] for r in loaded.rows)}
    ]


def test_rows_read_is_the_orgs_own_rows_each_read_counted_once(loaded):
    own = len(loaded.rows)
    query = compile_for(
        loaded, "SELECT count() AS n FROM events AS a JOIN events AS b USING (user_id)"
    )
    result = run_analyst_sync(loaded.ch, query, "json")
    assert result.rows_read == 2 * own
    body = json.loads(result.data)
    assert "statistics" not in body  # ClickHouse's rows_read would count other orgs' rows
    nothing = run_analyst_sync(loaded.ch, compile_for(loaded, "SELECT 1 AS x"), "json")
    assert nothing.rows_read == 0


def test_a_query_without_from_is_held_to_the_result_limit(loaded):
    # ClickHouse applied no result limit to a query without FROM: 2M rows under a limit of 1k.
    small = AnalystLimits(max_result_rows=1_000)
    for sql in (
        "SELECT arrayJoin(range(2000000)) AS x",
        "SELECT number FROM (SELECT arrayJoin(range(5000)) AS number)",
        "SELECT arrayJoin(range(1001)) AS x UNION ALL SELECT 1 AS x",
    ):
        with pytest.raises(ClickHouseError) as info:
            run_json(loaded, sql, limits=small)
        assert info.value.code == 396, sql
    assert len(run_json(loaded, "SELECT arrayJoin(range(1000)) AS x", limits=small)) == 1000


# -- hostile SQL: refused with a code and a position --------------------------------------------

REFUSED: list[tuple[str, str]] = [
    # other tables, databases, table functions
    ("SELECT * FROM system.tables", "system_table"),
    ("SELECT * FROM system.one", "system_table"),
    ("SELECT * FROM information_schema.tables", "system_table"),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "system_table"),
    ("SELECT * FROM default.events", "other_database"),
    ("SELECT * FROM {db}.events", "other_database"),
    ("SELECT * FROM {db}.events_queue", "other_database"),
    ("SELECT * FROM events JOIN system.users AS u ON 1 = 1", "system_table"),
    ("SELECT * FROM numbers(10)", "table_function"),
    ("SELECT * FROM file('/etc/passwd', 'RawBLOB')", "table_function"),
    ("SELECT * FROM url('http://169.254.169.254/', CSV)", "table_function"),
    ("SELECT * FROM s3('https://bucket/x.csv')", "table_function"),
    ("SELECT * FROM remote('127.0.0.1', default.events)", "table_function"),
    ("SELECT * FROM cluster('c', {db}.events)", "table_function"),
    ("SELECT * FROM merge('{db}', '.*')", "table_function"),
    ("SELECT * FROM view(SELECT * FROM {db}.events)", "table_function"),
    ("SELECT * FROM events AS e JOIN numbers(3) AS n ON 1 = 1", "table_function"),
    ("SELECT * FROM events_queue", "unknown_table"),
    ("SELECT * FROM schema_migrations", "unknown_table"),
    ("SELECT * FROM rollup_1m_mv", "unknown_table"),
    ("SELECT * FROM tables", "unknown_table"),
    ("SELECT * FROM Events", "unknown_table"),
    # functions outside the allow-list
    ("SELECT dictGet('d', 'x', toUInt64(1))", "unknown_function"),
    ("SELECT dictGetString('d', 'x', toUInt64(1))", "unknown_function"),
    ("SELECT joinGet('j', 'x', 1)", "unknown_function"),
    ("SELECT file('/etc/passwd')", "unknown_function"),
    ("SELECT currentDatabase()", "unknown_function"),
    ("SELECT version()", "unknown_function"),
    ("SELECT hostName()", "unknown_function"),
    ("SELECT getSetting('readonly')", "unknown_function"),
    ("SELECT sleep(3)", "unknown_function"),
    ("SELECT count() FROM events WHERE sleepEachRow(1) = 0", "unknown_function"),
    ("SELECT hasColumnInTable('system', 'tables', 'name')", "unknown_function"),
    ("SELECT arrayReduce('sum', [1])", "unknown_function"),
    ("SELECT globalIn(1, events)", "unknown_function"),
    ("SELECT throwIf(1)", "unknown_function"),
    ("SELECT chdb('SELECT 1')", "unknown_function"),
    ("SELECT `dictGet`('d', 'x', 1)", "unknown_function"),
    # settings, output, statements
    ("SELECT count() FROM events SETTINGS max_threads = 1", "forbidden_keyword"),
    ("SELECT count() FROM events SETTINGS readonly = 0", "forbidden_keyword"),
    ("SELECT count() FROM events FORMAT JSON", "forbidden_keyword"),
    ("SELECT count() FROM events INTO OUTFILE '/tmp/x'", "forbidden_keyword"),
    ("INSERT INTO events SELECT * FROM events", "not_select"),
    ("ALTER TABLE events DELETE WHERE 1", "not_select"),
    ("DROP TABLE events", "not_select"),
    ("TRUNCATE TABLE events", "not_select"),
    ("CREATE TABLE x (a UInt8) ENGINE = Memory", "not_select"),
    ("SYSTEM DROP DNS CACHE", "not_select"),
    ("SET readonly = 0", "not_select"),
    ("USE system", "not_select"),
    ("EXPLAIN SELECT 1", "not_select"),
    ("SHOW TABLES", "not_select"),
    ("DESCRIBE TABLE events", "not_select"),
    ("KILL QUERY WHERE 1", "not_select"),
    ("OPTIMIZE TABLE events FINAL", "not_select"),
    ("GRANT SELECT ON *.* TO default", "not_select"),
    ("SELECT 1; SELECT 2", "multiple_statements"),
    ("SELECT 1; DROP TABLE events", "multiple_statements"),
    # CTEs
    ("WITH events AS (SELECT 1 AS x) SELECT * FROM events", "cte_shadows_table"),
    (
        "WITH metrics_1m AS (SELECT * FROM events) SELECT count() FROM metrics_1m",
        "cte_shadows_table",
    ),
    ("WITH Rollup_1m AS (SELECT 1) SELECT 1", "cte_shadows_table"),
    ("WITH RECURSIVE x AS (SELECT 1) SELECT * FROM x", "forbidden_keyword"),
    # ClickHouse resolves a CTE's reference to itself, or to a later CTE, to a real table
    ("WITH x AS (SELECT * FROM x) SELECT * FROM x", "unknown_table"),
    ("WITH y AS (SELECT * FROM x), x AS (SELECT 1) SELECT * FROM y", "unknown_table"),
    ("WITH x AS (SELECT 1), x AS (SELECT 2) SELECT * FROM x", "duplicate_name"),
    ("(WITH x AS (SELECT 1 AS a) SELECT a FROM x) UNION ALL SELECT a FROM x", "unknown_table"),
    # org_id in any clause, as a name or a column
    ("SELECT 2 AS org_id FROM events", "org_id_forbidden"),
    ("SELECT count() FROM events WHERE org_id = 2 OR 1", "org_id_forbidden"),
    ("SELECT count() FROM events WHERE org_id IN (1, 2)", "org_id_forbidden"),
    ("SELECT org_id, count() FROM events GROUP BY org_id", "org_id_forbidden"),
    ("SELECT count() FROM events HAVING max(org_id) > 0", "org_id_forbidden"),
    ("SELECT count() FROM events ORDER BY org_id", "org_id_forbidden"),
    ("SELECT count() FROM events AS org_id", "org_id_forbidden"),
    ("WITH 2 AS org_id SELECT count() FROM events", "org_id_forbidden"),
    ("WITH org_id AS (SELECT 1) SELECT 1", "org_id_forbidden"),
    ("SELECT arrayMap(org_id -> org_id, [1])", "org_id_forbidden"),
    ("SELECT `org_id` FROM events", "org_id_forbidden"),
    ('SELECT "ORG_ID" FROM events', "org_id_forbidden"),
    ("SELECT e.org_id FROM events AS e", "org_id_forbidden"),
    ("SELECT * FROM events AS e JOIN metrics_1m AS m ON e.org_id = m.org_id", "org_id_forbidden"),
    (
        "SELECT count() FROM events WHERE event IN (SELECT event FROM metrics_1m WHERE org_id = 2)",
        "org_id_forbidden",
    ),
    ("SELECT count() FROM events LIMIT 1 BY org_id", "org_id_forbidden"),
    ("SELECT count() OVER (PARTITION BY org_id) FROM events", "org_id_forbidden"),
    ("SELECT * EXCEPT (org_id) FROM events", "org_id_forbidden"),
    # parameters, reserved and odd names
    ("SELECT count() FROM events WHERE {org_id:UInt32} = 1", "parameters"),
    ("SELECT count() FROM events WHERE event = ?", "parameters"),
    ("SELECT @x", "parameters"),
    ("SELECT 1 AS __cp_cte_1", "reserved_name"),
    ("SELECT * FROM __cp_cte_1", "unknown_table"),
    ("WITH __cp_cte_1 AS (SELECT 1) SELECT * FROM __cp_cte_1", "reserved_name"),
    ("SELECT 1 AS {db}", "reserved_name"),
    ('SELECT "a.b" FROM events', "invalid_name"),
    ("SELECT count() FROM events AS `system.tables`", "invalid_name"),
    # clauses that bypass the guarded subquery or read a table by name
    ("SELECT count() FROM events FINAL", "unsupported"),
    ("SELECT count() FROM events SAMPLE 0.5", "forbidden_keyword"),
    ("SELECT count() FROM events PREWHERE value > 1", "forbidden_keyword"),
    ("SELECT 1 IN events", "in_table"),
    ("SELECT count() FROM metrics_1m WHERE event IN (events)", "in_table"),
    ("SELECT count() FROM events WHERE user_id GLOBAL IN rollup_1m", "in_table"),
    ("SELECT count() FROM events WHERE (user_id, 1) IN (system.one)", "in_table"),
    ("SELECT count() FROM events WHERE event NOT IN {db}.events", "in_table"),
    # found by the fuzz test below: a JOIN without FROM re-parsed differently
    ("SELECT count() JOIN events ON 1 = 1", "syntax"),
    ("SELECT join.events", "syntax"),
    # syntax, characters, size
    ("SELECT count() FROM events WHERE event = 'x", "syntax"),
    ("SELECT count() FROM events /* unterminated", "syntax"),
    ("SELECT count( FROM events", "syntax"),
    ("SELECT map(1)", "syntax"),
    ("", "empty"),
    ("   \n ", "empty"),
    (";", "empty"),
    ("SELECT count\u200b() FROM events", "invisible_character"),
    ("SELECT 'a\u202eb'", "invisible_character"),
    ("SELECT 'a\x00b'", "invisible_character"),
    ("SELECT " + "(" * 100 + "1" + ")" * 100, "too_deep"),
    ("SELECT 1 -- " + "x" * 100_001, "text_too_long"),
]


def test_refused_corpus_is_big_enough():
    assert len(REFUSED) >= 100


@pytest.mark.parametrize(("sql", "code"), REFUSED, ids=[f"{i:03d}" for i in range(len(REFUSED))])
def test_hostile_sql_is_refused_with_code_and_position(sql, code):
    database = "db_under_test"
    text = sql.replace("{db}", database)
    with pytest.raises(AnalystSqlError) as info:
        compile_analyst_sql(text, ORG, database=database)
    error = info.value
    assert error.code == code, (error.code, str(error))
    body = error.to_dict()
    assert body["code"] == code and body["message"]
    if code not in ("empty", "too_complex"):
        assert error.token is not None and error.line is not None, str(error)


def test_position_is_line_and_column_of_the_offending_token():
    text = "SELECT count()\nFROM events\nWHERE path = '/'\n  AND dictGet('d', 'x', 1) = 0"
    with pytest.raises(AnalystSqlError) as info:
        compile_analyst_sql(text, ORG, database="db")
    assert (info.value.line, info.value.column, info.value.token) == (4, 7, "dictGet")
    assert info.value.offset == text.index("dictGet")
    with pytest.raises(AnalystSqlError) as info:
        compile_analyst_sql("SELECT a\nFROM events\nWHERE x = = 1", ORG, database="db")
    assert info.value.code == "syntax" and info.value.line == 3


# -- harmless oddities run, and another org's rows never change an answer ----------------------

HARMLESS = [
    ("SELECT count() AS n FROM events WHERE path = '/org2-secret'", [{"n": 0}]),
    ("SELECT count() AS n FROM events WHERE event = '1'' OR org_id = 2 --'", [{"n": 0}]),
    ("SELECT count() AS n FROM events WHERE event = 'x\\' OR 1=1 -- '", [{"n": 0}]),
    ("SELECT count() AS n FROM events WHERE event = '{org_id:UInt32}'", [{"n": 0}]),
    ("SELECT count() AS n FROM events WHERE props['org_id'] = '2'", [{"n": 0}]),
    ("SELECT count() AS n FROM events -- SETTINGS readonly = 0", [{"n": 180}]),
    ("SELECT count() AS n FROM events /* FORMAT JSON */ WHERE 1", [{"n": 180}]),
    ("SELECT count() AS n FROM events WHERE 1 OR 1", [{"n": 180}]),
    ("SELECT count() AS n FROM (SELECT * FROM events) WHERE 1 = 1 OR event = 'x'", [{"n": 180}]),
    ("SELECT max(value) AS m FROM events", [{"m": 13.5}]),
    ("SELECT count() AS n FROM events WHERE session_id LIKE 'o%'", [{"n": 0}]),
    (
        "SELECT count() AS n FROM events WHERE user_id IN "
        "(SELECT user_id FROM events WHERE path = '/org2-secret')",
        [{"n": 0}],
    ),
    (
        "SELECT count() AS n FROM events "
        "WHERE EXISTS (SELECT 1 FROM events WHERE referrer = 'org2.example')",
        [{"n": 0}],
    ),
    ("WITH (SELECT max(value) FROM events) AS highest SELECT highest", [{"highest": 13.5}]),
    ("SELECT (SELECT count() FROM metrics_1s) AS n", [{"n": 180}]),
    (
        "SELECT 'system.tables' AS t, 'events' AS events",
        [{"t": "system.tables", "events": "events"}],
    ),
    ("SELECT uniqExact(path) AS n FROM events", [{"n": 7}]),
    (
        "SELECT groupUniqArray(referrer) AS r FROM events WHERE referrer != ''",
        [{"r": ["google.com"]}],
    ),
    (
        "SELECT count() AS n FROM events AS a JOIN events AS b ON a.session_id = b.session_id AND a.ts = b.ts",
        [{"n": 180}],
    ),
    ("SELECT count() AS n FROM events WHERE props['secret'] != ''", [{"n": 0}]),
    ("SELECT * FROM events ORDER BY ts, event", None),
    ("SELECT * FROM metrics_1m ORDER BY ALL", None),
    (
        "SELECT e.*, m.* FROM events AS e LEFT JOIN metrics_1h AS m USING (event, country) ORDER BY ALL LIMIT 50",
        None,
    ),
    (
        "SELECT count() AS n FROM events UNION ALL SELECT count() FROM events WHERE path = '/org2-secret'",
        None,
    ),
]


@pytest.mark.parametrize(
    ("sql", "expected"), HARMLESS, ids=[f"{i:02d}" for i in range(len(HARMLESS))]
)
def test_harmless_sql_runs_and_answers_the_same_without_other_orgs(
    sql, expected, loaded, org1_only
):
    answer = run_json(loaded, sql)
    assert canonical(answer) == canonical(run_json(org1_only, sql))
    if expected is not None:
        assert answer == expected
    assert "org2" not in json.dumps(answer) and "1000000" not in json.dumps(answer)


def test_metric_hostile_corpus_is_refused_or_harmless_as_sql(loaded, org1_only):
    """The metric language's hostile corpus (tests/querybuilder/test_hostile.py), read as SQL:
    each text is refused, fails in ClickHouse, or answers the same without org 2's rows."""
    outcomes = Counter()
    for text, _ in METRIC_HOSTILE_CORPUS:
        try:
            query_loaded = compile_for(loaded, text)
        except AnalystSqlError:
            outcomes["refused"] += 1
            continue
        try:
            answer = run_analyst_sync(loaded.ch, query_loaded, "json").data
        except ClickHouseError:
            outcomes["clickhouse_error"] += 1
            with pytest.raises(ClickHouseError):
                run_analyst_sync(org1_only.ch, compile_for(org1_only, text), "json")
            continue
        outcomes["ran"] += 1
        alone = run_analyst_sync(org1_only.ch, compile_for(org1_only, text), "json").data
        assert canonical(json.loads(answer)["data"]) == canonical(json.loads(alone)["data"]), text
    assert sum(outcomes.values()) == len(METRIC_HOSTILE_CORPUS)
    assert outcomes["refused"] >= 30 and outcomes["ran"] >= 10, outcomes


def test_string_literals_reach_clickhouse_exactly(loaded):
    """sqlglot re-writes every literal; ClickHouse must read back exactly the user's string
    (an escaping mismatch could end a string early and turn the rest into SQL)."""
    rng = random.Random(9)
    alphabet = [
        "'",
        "\\",
        '"',
        "`",
        "\n",
        "\t",
        "{",
        "}",
        ":",
        ";",
        "-",
        "/",
        "*",
        "a",
        "é",
        "✓",
        " ",
        "$",
        "%",
        "?",
    ]
    for _ in range(40):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        literal = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        rows = run_json(
            loaded,
            f"SELECT {literal} AS s, count() AS n FROM events WHERE path = {literal}",
        )
        assert rows == [{"s": value, "n": 0}], value


# -- the guard on the final SQL: tampering fails closed, before ClickHouse -------------------------


def _tamper(query, transform):
    tree = sqlglot.parse_one(query.sql, dialect="clickhouse")
    tree = transform(tree) or tree
    return msgspec.structs.replace(query, sql=tree.sql(dialect="clickhouse"))


def _first_isolated_where(tree):
    return next(s for s in tree.find_all(exp.Select) if isinstance(s.args["from_"].this, exp.Table))


TAMPERINGS = {
    "guard-dropped": lambda q, db: _tamper(
        q, lambda t: _first_isolated_where(t).set("where", None)
    ),
    "guard-or-true": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("org_id = {org_id: UInt32}", "(org_id = {org_id: UInt32} OR 1)", 1)
    ),
    "literal-org": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("{org_id: UInt32}", "2")
    ),
    "param-other-org": lambda q, db: msgspec.structs.replace(q, params={"org_id": 2}),
    "claimed-other-org": lambda q, db: msgspec.structs.replace(q, org_id=2),
    "extra-param": lambda q, db: msgspec.structs.replace(q, params={"org_id": 1, "x": 1}),
    "other-database": lambda q, db: msgspec.structs.replace(q, database="other"),
    "system-table": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace(f"{db}.events", "system.tables", 1)
    ),
    "unlisted-table": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace(f"{db}.events", f"{db}.events_queue", 1)
    ),
    "cte-renamed-to-real-table": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("JOIN __cp_cte_1", "JOIN schema_migrations")
    ),
    "unguarded-join": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("JOIN __cp_cte_1 AS b", f"JOIN {db}.events AS b")
    ),
    "outer-org-filter": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("WHERE e.event", "WHERE org_id = 2 AND e.event")
    ),
    "alias-org-id": lambda q, db: msgspec.structs.replace(
        q,
        sql=q.sql.replace(
            "SELECT e.country AS country", "SELECT 2 AS org_id, e.country AS country"
        ),
    ),
    "guard-widened": lambda q, db: msgspec.structs.replace(
        q,
        sql=q.sql.replace(
            "WHERE org_id = {org_id: UInt32} LIMIT",
            "WHERE org_id = {org_id: UInt32} OR 1 = 1 LIMIT",
            1,
        ),
    ),
    # The LIMIT is the barrier no user predicate may cross (guard.py): without it, or with a
    # user condition inside the read, ClickHouse may evaluate user text on other orgs' rows.
    "barrier-removed": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace(" LIMIT 1000000000000000000)", ")", 1)
    ),
    "barrier-lowered": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace(" LIMIT 1000000000000000000)", " LIMIT 1000)", 1)
    ),
    "user-condition-inside-read": lambda q, db: msgspec.structs.replace(
        q,
        sql=q.sql.replace(
            "WHERE org_id = {org_id: UInt32} LIMIT",
            "WHERE org_id = {org_id: UInt32} AND toUInt64(user_id) > 0 LIMIT",
            1,
        ),
    ),
    "read-bound-in-analyst-sql": lambda q, db: msgspec.structs.replace(
        q,
        sql=q.sql.replace(
            "WHERE org_id = {org_id: UInt32} LIMIT",
            "WHERE org_id = {org_id: UInt32} AND ts >= toDateTime({org_id: UInt32}, 'UTC') LIMIT",
            1,
        ),
    ),
    "settings": lambda q, db: msgspec.structs.replace(q, sql=q.sql + " SETTINGS readonly = 0"),
    "format": lambda q, db: msgspec.structs.replace(q, sql=q.sql + " FORMAT TSV"),
    "two-statements": lambda q, db: msgspec.structs.replace(q, sql=q.sql + "; SELECT 1"),
    "dictget": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("count() AS views", "dictGet('d', 'x', 1) AS views")
    ),
    "in-table": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace("WHERE e.event", f"WHERE e.user_id IN {db}.events AND e.event")
    ),
    "table-function": lambda q, db: msgspec.structs.replace(
        q, sql=q.sql.replace(f"FROM {db}.events", "FROM numbers(10)", 1)
    ),
}
TAMPER_BASE = """
    WITH buyers AS (SELECT DISTINCT user_id FROM events WHERE event = 'purchase')
    SELECT e.country AS country, count() AS views
    FROM events AS e JOIN buyers AS b ON e.user_id = b.user_id
    WHERE e.event = 'pageview' GROUP BY e.country
"""


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_analyst_sql_fails_closed_before_clickhouse(name, loaded):
    query = compile_for(loaded, TAMPER_BASE)
    tampered = TAMPERINGS[name](query, loaded.database)
    assert tampered != query
    before = loaded.ch.query_count
    with pytest.raises(TenantGuardError):
        run_analyst_sync(loaded.ch, tampered, "json")
    assert loaded.ch.query_count == before  # nothing reached ClickHouse


def test_untampered_base_query_passes_the_final_check(loaded):
    query = compile_for(loaded, TAMPER_BASE)
    check_analyst_query(query, loaded.database)
    assert run_json(loaded, TAMPER_BASE)  # and it answers


def test_cte_scope_is_narrower_than_clickhouse():
    def ctes(sql):
        tree = sqlglot.parse_one(sql, dialect="clickhouse")
        return {t.name: guard.cte_in_scope(t) is not None for t in tree.find_all(exp.Table)}

    assert ctes("WITH x AS (SELECT 1) SELECT * FROM x JOIN (SELECT * FROM x) AS y ON 1") == {
        "x": True
    }
    assert ctes("WITH x AS (SELECT * FROM x) SELECT 1") == {"x": False}
    assert ctes("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b") == {
        "a": True,
        "b": True,
    }
    assert ctes("WITH b AS (SELECT * FROM a), a AS (SELECT 1) SELECT 1") == {"a": False}
    assert ctes("WITH 5 AS x SELECT * FROM x") == {"x": False}  # a scalar is not a table


def test_metric_policy_is_unchanged_by_the_analyst_one(loaded):
    query = compile_for(loaded, "SELECT count() FROM events AS a JOIN events AS b ON 1 = 1")
    tree = sqlglot.parse_one(query.sql, dialect="clickhouse")
    guard.verify_tenant_guard(tree, ORG, database=loaded.database, policy=guard.ANALYST_POLICY)
    with pytest.raises(TenantGuardError):  # the metric compiler's own SQL never joins
        guard.verify_tenant_guard(tree, ORG, database=loaded.database)


# -- the function allow-list ---------------------------------------------------------------------

# Names ClickHouse's parser accepts without a row in system.functions.
PARSER_LEVEL = {
    "countdistinct",
    "date_add",
    "date_sub",
    "dateadd",
    "datesub",
    "timestamp_add",
    "timestamp_sub",
    "timestampadd",
    "timestampsub",
    "untuple",
    "summap",
    "minmap",
    "maxmap",
}
NEVER_ALLOWED = [
    "file",
    "url",
    "s3",
    "remote",
    "numbers",
    "dictGet",
    "dictGetOrDefault",
    "dictHas",
    "joinGet",
    "joinGetOrNull",
    "hasColumnInTable",
    "getSetting",
    "getServerSetting",
    "getMacro",
    "currentDatabase",
    "currentUser",
    "hostName",
    "version",
    "uptime",
    "sleep",
    "sleepEachRow",
    "throwIf",
    "arrayReduce",
    "initializeAggregation",
    "in",
    "globalIn",
    "notIn",
    "chdb",
    "filesystemAvailable",
    "getClientHTTPHeader",
    "formatQuery",
    "catboostEvaluate",
    "evalMLMethod",
    "format",
    "input",
]


def test_every_allowed_function_exists_in_clickhouse(ch_root):
    names = {row[0].lower() for row in ch_root.query_sync("SELECT name FROM system.functions").rows}
    missing = sorted(n for n in SCALAR_FUNCTIONS | AGGREGATE_FUNCTIONS if n not in names)
    assert set(missing) <= PARSER_LEVEL, missing


@pytest.mark.parametrize("name", NEVER_ALLOWED)
def test_dangerous_functions_are_never_allowed(name):
    assert not name_allowed(name)
    with pytest.raises(AnalystSqlError) as info:
        compile_analyst_sql(f"SELECT {name}('x', 'y', 1)", ORG, database="db")
    assert info.value.code in ("unknown_function", "forbidden_keyword", "syntax", "in_table")


def test_aggregate_combinators_of_allowed_aggregates_are_allowed():
    for name in (
        "sumIf",
        "uniqCombinedMerge",
        "quantilesTDigestMerge",
        "argMaxIf",
        "sumIfMerge",
        "avgState",
        "countDistinctIf",
        "groupArrayForEach",
        "maxOrNull",
    ):
        assert name_allowed(name), name
    for name in ("dictGetIf", "fileMerge", "sleepState", "joinGetIf"):
        assert not name_allowed(name), name


def test_what_the_first_check_allows_the_final_check_accepts():
    """Every allowed function, in the shapes analysts write, compiles to SQL that the guard's
    re-check accepts: the two checks agree (a disagreement would be a 500)."""
    compiled = 0
    for name in sorted(SCALAR_FUNCTIONS | AGGREGATE_FUNCTIONS):
        for arguments in ("(value)", "(value, path)"):
            try:
                compile_analyst_sql(f"SELECT {name}{arguments} FROM events", ORG, database="db")
            except AnalystSqlError as exc:
                assert exc.code in ("syntax", "unsupported"), (name, exc.code, str(exc))
                continue
            compiled += 1
    assert compiled > 500


# -- docs/schema.md -------------------------------------------------------------------------------


def test_every_example_in_the_schema_doc_compiles_and_runs(loaded):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    examples = [block.split("```", 1)[0] for block in doc.split("```sql\n")[1:]]
    assert len(examples) >= 8
    for sql in examples:
        run_json(loaded, sql)  # raises if refused or if ClickHouse rejects it


# -- fuzz: mangled SQL is refused as the user's error, never a crash or a guard failure ----------


def test_mangled_sql_is_a_clean_refusal_or_compiles(caplog):
    """Token soup made of the corpora above: every outcome is a compiled query or an
    AnalystSqlError — never another exception, and never the final guard check refusing what
    the passes let through (logged as a warning; such inputs found this way got their own
    pass rule, e.g. a JOIN without FROM)."""
    from tests.querybuilder.test_analyst_differential import generated

    corpus = [s for s, _ in REFUSED] + [s for s, _ in HARMLESS] + generated(1) + generated(2)
    words = [
        w
        for s in corpus
        for w in s.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()
    ]
    rng = random.Random(5)
    outcomes = Counter()
    with caplog.at_level("WARNING", logger="clickpulse.analyst"):
        for _ in range(1500):
            roll = rng.random()
            if roll < 0.4:
                tokens = rng.choice(corpus).split(" ")
                for _ in range(rng.randint(1, 3)):
                    at = rng.randrange(len(tokens) + 1)
                    edit = rng.random()
                    if edit < 0.4:
                        tokens.insert(at, rng.choice(words))
                    elif tokens:
                        tokens[min(at, len(tokens) - 1)] = rng.choice(words)
                text = " ".join(tokens)
            elif roll < 0.7:
                a, b = rng.choice(corpus), rng.choice(corpus)
                text = a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1) :]
            else:
                text = "SELECT " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))
            try:
                compile_analyst_sql(text, ORG, database="db")
                outcomes["compiled"] += 1
            except AnalystSqlError:
                outcomes["refused"] += 1
    assert not [r for r in caplog.records if r.name == "clickpulse.analyst"], caplog.text[:2000]
    assert outcomes["compiled"] >= 50 and outcomes["refused"] >= 500, outcomes
