"""Hostile and malformed metric text: rejected with a code and a position, or — where harmless
— compiled with the tenant guard intact and executed without leaking another org's rows."""

from __future__ import annotations

import pytest

from app.querybuilder import MetricError, compile_metric, parse_metric, run_compiled

# (text, expected error code)
REJECTED: list[tuple[str, str]] = [
    ("SELECT count() FROM system.tables", "forbidden_keyword"),
    ("SELECT count() FROM events", "forbidden_keyword"),
    ("SELECT count() FROM file('/etc/passwd')", "forbidden_keyword"),
    ("SELECT count() FROM url('http://evil/x', CSV)", "forbidden_keyword"),
    ("SELECT count() FROM remote('10.0.0.1', default.events)", "forbidden_keyword"),
    ("SELECT count() FROM s3('https://bucket/x')", "forbidden_keyword"),
    ("SELECT count() JOIN events ON 1", "forbidden_keyword"),
    ("SELECT count() SETTINGS max_execution_time = 100000", "forbidden_keyword"),
    ("SELECT count() FORMAT JSON", "forbidden_keyword"),
    ("SELECT count() INTO OUTFILE '/tmp/x'", "forbidden_keyword"),
    ("SELECT count() UNION ALL SELECT count()", "forbidden_keyword"),
    ("WITH x AS (SELECT 1) SELECT count()", "syntax"),
    ("SELECT count(); DROP TABLE events", "multiple_statements"),
    ("SELECT count(); SELECT 1", "multiple_statements"),
    ("SELECT count() WHERE event IN (SELECT event FROM system.events)", "subquery"),
    ("SELECT (SELECT count() FROM events)", "subquery"),
    ("SELECT count() WHERE org_id = 2", "org_id_forbidden"),
    ("SELECT count() WHERE org_id IN (1, 2)", "org_id_forbidden"),
    ("SELECT uniq(org_id)", "org_id_forbidden"),
    ("SELECT count() WHERE event = 'x' OR org_id != 1", "org_id_forbidden"),
    ("SELECT count() GROUP BY org_id", "org_id_forbidden"),
    ("SELECT count() WHERE ORG_ID = 2", "org_id_forbidden"),
    ("SELECT sleep(3)", "unknown_function"),
    ("SELECT sleepEachRow(1)", "unknown_function"),
    ("SELECT count() WHERE event = currentDatabase()", "unknown_function"),
    ("SELECT dictGet('d', 'x', 1)", "unknown_function"),
    ("SELECT joinGet('j', 'x', 1)", "unknown_function"),
    ("SELECT arrayJoin([1, 2])", "unknown_function"),
    ("SELECT count() WHERE has(arrayMap(x -> x, [1]), 1)", "unknown_function"),
    ("SELECT sum(x -> x)", "forbidden_keyword"),
    ("SELECT max(value)", "unknown_function"),
    ("SELECT median(value)", "unknown_function"),
    ("SELECT uniqExact(user_id)", "unknown_function"),
    ("SELECT approx_count_distinct(user_id)", "unknown_function"),
    ("SELECT ifNull(sum(value), 0)", "unknown_function"),
    ("SELECT file('x')", "unexpected_token"),
    ("SELECT count() AS FINAL", "unexpected_token"),
    ("SELECT count() WHERE event = {p:String}", "forbidden_keyword"),
    ("SELECT count() WHERE event = ?", "forbidden_keyword"),
    ("SELECT count() WHERE event = @x", "forbidden_keyword"),
    ("SELECT CAST(value AS String)", "unknown_function"),
    ("SELECT value::String", "forbidden_keyword"),
    ("SELECT count() WHERE system.tables.name = 'x'", "unexpected_token"),
    ("SELECT count() WHERE e.event = 'x'", "forbidden_keyword"),
    ("SELECT count() WHERE nosuchcolumn = 1", "unknown_column"),
    ("SELECT count() WHERE ts > 0", "unknown_column"),
    ("SELECT count() WHERE \u0435vent = 'x'", "unknown_column"),  # Cyrillic 'е'
    ("SELECT \uff43\uff4f\uff55\uff4e\uff54()", "unknown_function"),  # fullwidth count
    ("SELECT count\u200b()", "invisible_character"),
    ("SELECT count() WHERE event = 'a\u202eb'", "invisible_character"),
    ("SELECT count() WHERE event = 'a\x00b'", "invisible_character"),
    ("SELECT count()\ufeff", "invisible_character"),
    ("SELECT count() WHERE event = '" + "x" * 5000 + "'", "literal_too_long"),
    ("SELECT count() * 1" + "0" * 50, "literal_too_large"),
    ("SELECT count() * 1e300", "literal_too_large"),
    ("SELECT count() * 0x7fffffff", "unexpected_token"),
    ("SELECT " + "(" * 40 + "count()" + ")" * 40, "too_deep"),
    (
        "SELECT count() WHERE "
        + " AND ".join(["NOT (event = 'x')"] * 10)
        + " AND "
        + "(" * 30
        + "true"
        + ")" * 30,
        "too_deep",
    ),
    ("SELECT count() " + "-- x\n" * 3000, "text_too_long"),
    ("SELECT country", "not_aggregated"),
    ("SELECT country, count()", "not_aggregated"),
    ("SELECT count() + value", "ungrouped_column"),
    ("SELECT if(country = 'DE', count(), 0)", "ungrouped_column"),
    ("SELECT 1", "not_aggregated"),
    ("SELECT *", "unsupported"),
    ("SELECT sum(count())", "nested_aggregate"),
    ("SELECT count() WHERE count() > 1", "aggregate_in_where"),
    ("SELECT count() HAVING count() > 1", "forbidden_keyword"),
    ("SELECT count() ORDER BY 1", "forbidden_keyword"),
    ("SELECT count() LIMIT 1", "forbidden_keyword"),
    ("SELECT DISTINCT count()", "forbidden_keyword"),
    ("SELECT count(DISTINCT user_id)", "forbidden_keyword"),
    ("SELECT count(user_id)", "invalid_arguments"),
    ("SELECT sum(value) OVER ()", "unexpected_token"),
    ("SELECT count() WHERE value = 'x'", "type_mismatch"),
    ("SELECT sum(event)", "type_mismatch"),
    ("SELECT count() WHERE event", "type_mismatch"),
    ("SELECT quantile(2)(value)", "invalid_arguments"),
    ("SELECT topK(100000)(path)", "invalid_arguments"),
    ("SELECT topK(3)(path) + 1", "type_mismatch"),
    ("SELECT count() AS events", "reserved_name"),
    ("SELECT count() AS org_id", "reserved_name"),
    ("SELECT count() AS `a b`", "invalid_name"),
    ("SELECT count() AS x, sum(value) AS x", "duplicate_name"),
    ("SELECT count() WHERE props[event] = 'x'", "invalid_subscript"),
    ("SELECT count() WHERE path[1] = 'x'", "invalid_subscript"),
    ("SELECT count() WHERE props['a''b'] = 'x'", "invalid_prop_key"),
    ("SELECT count() WHERE event = NULL", "forbidden_keyword"),
    ("SELECT count() WHERE CASE WHEN 1 THEN 1 END", "forbidden_keyword"),
    ("SELECT count() WHERE event = 'x", "syntax"),
    ("SELECT count() /* unterminated", "syntax"),
    ("DROP TABLE events", "syntax"),
    ("INSERT INTO events VALUES (1)", "syntax"),
    ("", "empty"),
    (";", "empty"),
]


def test_hostile_corpus_is_big_enough():
    assert len(REJECTED) >= 60


@pytest.mark.parametrize(("text", "code"), REJECTED, ids=[f"{i:02d}" for i in range(len(REJECTED))])
def test_hostile_text_is_rejected_with_code_and_position(text, code):
    with pytest.raises(MetricError) as info:
        parse_metric(text)
    error = info.value
    assert error.code == code, (error.code, str(error))
    body = error.to_dict()
    assert body["code"] == code and body["message"]
    if code != "empty":
        # every rejection of non-empty text says where: a token and a line/column
        assert error.token is not None or error.line is not None, str(error)


def test_position_is_line_and_column_of_the_offending_token():
    with pytest.raises(MetricError) as info:
        parse_metric("SELECT count()\nWHERE event = 'x'\n  AND sleep(1) = 0")
    assert (info.value.line, info.value.column, info.value.token) == (3, 7, "sleep")
    assert info.value.offset == len("SELECT count()\nWHERE event = 'x'\n  AND ")


# Harmless: compiled with the guard intact; the hostile part is only ever a bound value.
HARMLESS = [
    "SELECT count() AS v WHERE event = '1'' OR org_id = 2 --'",
    "SELECT count() AS v WHERE event = 'x\\' OR 1=1 -- '",
    "SELECT count() AS v WHERE event = '; DROP TABLE events; --'",
    "SELECT count() AS v WHERE event = '{org_id:UInt32}'",
    "SELECT count() AS v WHERE props['org_id'] = '2'",
    "SELECT count() AS v -- FROM system.tables",
    "SELECT count() AS v /* SETTINGS max_threads=1000 */",
    "SELECT count() AS v WHERE path = '/org2-secret' OR event = 'x'",
    "SELECT count() AS v WHERE event = 'ünïcödé ✓'",
]


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_oddities_compile_with_the_guard_and_leak_nothing(text, loaded):
    compiled = compile_metric(
        text, org_id=1, database=loaded.database, time_from=loaded.base, time_to=loaded.base + 180
    )
    assert compiled.sql.count("org_id = {org_id: UInt32}") == 1
    assert "--" not in compiled.sql and "/*" not in compiled.sql and "DROP" not in compiled.sql
    result = run_compiled(loaded.ch, compiled)
    if "count() AS v" in text and ("WHERE" in text and "OR event" not in text):
        assert all(row[-1] == 0 for row in result.rows)  # matches nothing of org 1's
    if "/org2-secret" in text:
        assert all(row[-1] == 0 for row in result.rows)  # org 2's path is invisible to org 1
    if "WHERE" not in text:
        assert sum(row[-1] for row in result.rows) == len(loaded.rows)
