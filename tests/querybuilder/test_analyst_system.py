"""Client probes rewritten for the analysts' compiler (app/querybuilder/analyst/system.py).

The rewritten text is compiled by `compile_analyst_sql` and run on real chDB through
`run_analyst_sync` (the path of every analyst query): exact rows, our tables only, no row
counts; the user's words only ever become literals.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import sqlglot
from sqlglot import exp

from app.querybuilder.analyst import AnalystSqlError, compile_analyst_sql, run_analyst_sync
from app.querybuilder.analyst.system import (
    ColumnFact,
    ServerFacts,
    rewrite_statement,
    split_format,
)
from app.querybuilder.catalog import ANALYST_TABLES

FACTS = ServerFacts(
    database="clickpulse",
    version="26.9.2.1",
    timezone="UTC",
    columns={
        "events": (ColumnFact("org_id", "UInt32"), ColumnFact("event", "String")),
        "metrics_1m": (ColumnFact("bucket", "DateTime"), ColumnFact("events", "UInt64")),
    },
    settings=(("readonly", "1"), ("max_result_rows", "1000000")),
)


def _rows(ch, text: str) -> list[dict]:
    facts = dataclasses.replace(FACTS, database=ch.database)
    query = compile_analyst_sql(rewrite_statement(text, facts), 7, database=ch.database)
    return json.loads(run_analyst_sync(ch, query, "json").data)["data"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1 FORMAT Native", ("SELECT 1", "Native")),
        ("SELECT 1\n FORMAT TSVWithNamesAndTypes;", ("SELECT 1", "TSVWithNamesAndTypes")),
        ("SHOW TABLES\n FORMAT Native", ("SHOW TABLES", "Native")),
        ("DESCRIBE TABLE events FORMAT JSON", ("DESCRIBE TABLE events", "JSON")),
        ("SELECT 'FORMAT Native'", ("SELECT 'FORMAT Native'", None)),
        ("SELECT format FROM t", ("SELECT format FROM t", None)),
        ("SELECT 'unterminated", ("SELECT 'unterminated", None)),
    ],
)
def test_split_format_takes_only_a_trailing_format_clause(text, expected):
    assert split_format(text) == expected


def test_queries_without_probes_are_left_as_written():
    for text in (
        "SELECT count() FROM events",
        "SELECT 'sys' || 'tem'",
        "WITH x AS (SELECT 1) SELECT * FROM x",
    ):
        assert rewrite_statement(text, FACTS) == text


def test_version_timezone_and_settings_are_literals(ch):
    assert _rows(ch, "SELECT version(), timezone()") == [
        {"version()": "26.9.2.1", "timezone()": "UTC"}
    ]
    assert _rows(ch, "SELECT currentDatabase() AS db, currentUser() AS u") == [
        {"db": ch.database, "u": "analyst"}
    ]
    assert _rows(ch, "SELECT name, value, readonly FROM system.settings LIMIT 10000") == [
        {"name": "readonly", "value": "1", "readonly": 1},
        {"name": "max_result_rows", "value": "1000000", "readonly": 1},
    ]


def test_show_describe_and_system_tables_list_only_our_tables(ch):
    names = [r["name"] for r in _rows(ch, "SHOW TABLES")]
    assert names == sorted(ANALYST_TABLES)
    assert "events_queue" not in names and "schema_migrations" not in names
    assert _rows(ch, "SHOW TABLES FROM system") == []
    assert _rows(ch, "SHOW DATABASES") == [{"name": ch.database}]
    assert [r["name"] for r in _rows(ch, "SHOW TABLES LIKE 'metrics_1%' LIMIT 2")] == [
        "metrics_1d",
        "metrics_1h",
    ]
    tables = _rows(
        ch, "SELECT name, total_rows, total_bytes FROM system.tables WHERE name = 'events'"
    )
    assert tables == [{"name": "events", "total_rows": None, "total_bytes": None}]
    assert _rows(ch, "DESCRIBE TABLE events") == [
        {"name": "org_id", "type": "UInt32", "default_type": "", "default_expression": "",
         "comment": "", "codec_expression": "", "ttl_expression": ""},
        {"name": "event", "type": "String", "default_type": "", "default_expression": "",
         "comment": "", "codec_expression": "", "ttl_expression": ""},
    ]  # fmt: skip
    assert _rows(
        ch, "SELECT table, name, position FROM system.columns ORDER BY table, position"
    ) == [
        {"table": "events", "name": "org_id", "position": 1},
        {"table": "events", "name": "event", "position": 2},
        {"table": "metrics_1m", "name": "bucket", "position": 1},
        {"table": "metrics_1m", "name": "events", "position": 2},
    ]
    assert _rows(ch, "SELECT dummy FROM system.one") == [{"dummy": 0}]


def test_the_users_words_only_become_literals(ch):
    hostile = "SHOW TABLES LIKE 'x'' OR 1 = 1 UNION SELECT name FROM system.users --'"
    rewritten = rewrite_statement(hostile, FACTS)
    tree = sqlglot.parse_one(rewritten, dialect="clickhouse")
    likes = list(tree.find_all(exp.Like))
    assert [like.expression.this for like in likes] == [
        "x' OR 1 = 1 UNION SELECT name FROM system.users --"
    ]
    assert _rows(ch, hostile) == []
    with pytest.raises(AnalystSqlError) as info:
        rewrite_statement("DESCRIBE TABLE events_queue", FACTS)
    assert info.value.code == "unknown_table"
    with pytest.raises(AnalystSqlError) as info:
        rewrite_statement("DESCRIBE TABLE other.events", FACTS)
    assert info.value.code == "unknown_table"
    with pytest.raises(AnalystSqlError) as info:
        rewrite_statement("SHOW GRANTS", FACTS)
    assert info.value.code == "not_select"
    with pytest.raises(AnalystSqlError) as info:
        rewrite_statement("SHOW TABLES WHERE 1", FACTS)
    assert info.value.code == "syntax"
    # System tables not answered here stay for the compiler, which refuses them.
    for text in (
        "SELECT * FROM system.users",
        "SELECT * FROM system.tables JOIN system.parts AS p ON 1",
    ):
        with pytest.raises(AnalystSqlError) as info:
            compile_analyst_sql(rewrite_statement(text, FACTS), 7, database="clickpulse")
        assert info.value.code == "system_table"
