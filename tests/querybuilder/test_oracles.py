"""Error and resource oracles: org A's answers never depend on a marker only org B has.

Two databases hold the same rows for org A (1) and for org B (2), except that in one of them
org B also has *marker* rows: values that make a conversion, a division, a regular expression,
an array or a string size fail (`((SECRET`, 0, 1e15, …). Every query below runs as org A in
both; its outcome — rows, the rows-read figure, or the error code, message and position a user
is shown — must be identical, and never mention the marker. A query that evaluated any of its
own expressions on org B's rows would fail in one database and not the other (the error is the
channel, and a timing is the same evaluation made slow instead of failing).

`test_the_corpus_detects_the_old_construction` runs the same corpus with the barrier taken out
of the guarded reads (the guard as a plain filtered subquery, as before): most answers then do
differ (28 of 121 measured), so this corpus is able to catch a leak.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.clickhouse import ClickHouse, ClickHouseError
from app.clickhouse.public_errors import public_error
from app.querybuilder.analyst import AnalystLimits, compile_analyst_sql, run_analyst_sync
from app.sql_command import run_sql
from tests.querybuilder.conftest import _database
from tests.querybuilder.data import insert, minute_start

ORG_A, ORG_B = 1, 2
MARKER = "((SECRET"
LIMITS = AnalystLimits(max_execution_time_s=20, max_memory_usage=512 * 1024**2)


def _rows(org_id: int, base: int) -> list[dict[str, Any]]:
    events = ("pageview", "purchase", "signup")
    return [
        {
            "org_id": org_id,
            "ts": base + i,
            "event": events[i % 3],
            "user_id": str(10 + i),
            "value": 1 + i % 50,
            "path": f"/p{i % 7}",
            "country": ("DE", "FR", "US")[i % 3],
            "device": ("desktop", "mobile")[i % 2],
            "props": {"k": str(i % 5)},
        }
        for i in range(120)
    ]


def _markers(base: int) -> list[dict[str, Any]]:
    common = {
        "org_id": ORG_B,
        "ts": base + 30,
        "event": "zz" + MARKER,
        "user_id": MARKER,
        "path": "/" + MARKER,
        "country": "ZZ",
        "device": "zz",
        "browser": "zz",
        "os": "zz",
        "props": {"k": MARKER},
    }
    return [{**common, "value": 0}, {**common, "value": 1e15, "ts": base + 31}]


@pytest.fixture(scope="module")
def pair(ch_root: ClickHouse) -> Iterator[tuple[ClickHouse, ClickHouse]]:
    """(with org B's markers, without them); org A's rows are the same in both."""
    base = minute_start(4)
    dbs = []
    for with_markers in (True, False):
        ch = _database(ch_root)
        rows = _rows(ORG_A, base) + _rows(ORG_B, base)
        insert(ch, rows + (_markers(base) if with_markers else []))
        dbs.append(ch)
    yield dbs[0], dbs[1]
    for ch in dbs:
        ch.command_sync(f"DROP DATABASE IF EXISTS {ch.database} SYNC")
        ch.close()


# -- the corpus ----------------------------------------------------------------------------------
# Expressions that fail only on a marker row (org A's values all pass them).
_FAILS_ON_MARKER = [
    "toUInt64(user_id)",
    "toInt32(user_id)",
    "toFloat64(user_id)",
    "toDecimal32(user_id, 2)",
    "CAST(user_id AS UInt16)",
    "toUInt8(user_id)",
    "accurateCast(value, 'UInt16')",
    "intDiv(100, toUInt64(value))",
    "modulo(100, toUInt64(value))",
    "length(range(toUInt64(value)))",
    "length(repeat(path, toUInt64(value) * 1000))",
    "length(extract(path, user_id))",
    "length(replaceRegexpAll(path, user_id, 'x'))",
    "toUInt64(props['k'])",
]
# Where a user expression can stand in a query over events.
_PLACEMENTS = [
    "SELECT count() AS n FROM events WHERE {e} >= 0",
    "SELECT sum({e}) AS s FROM events",
    "SELECT countIf({e} >= 0) AS n FROM events",
    "SELECT {e} AS k, count() AS n FROM events GROUP BY k ORDER BY k LIMIT 3",
    "SELECT user_id FROM events ORDER BY {e}, user_id LIMIT 2",
    "SELECT country, max({e}) AS m FROM events GROUP BY country HAVING m >= 0 ORDER BY country",
]
# Guessing: the failing branch runs only where the attacker's condition holds.
_GUESSES = [
    f"if(user_id = '{MARKER}', toUInt64(user_id), 0)",
    "if(startsWith(path, '/(('), intDiv(1, 0 * toUInt64(value)), 0)",
    f"if(props['k'] = '{MARKER}', toDate(user_id), toDate('2020-01-01'))",
    "if(country = 'ZZ', toIPv4(user_id), toIPv4('1.2.3.4'))",
    f"if(event = 'zz{MARKER}', toUUID(user_id), toUUID('00000000-0000-0000-0000-000000000000'))",
    "if(value > 1e14, length(range(toUInt64(value))), 0)",
]
_GUESS_PLACEMENTS = [
    "SELECT count() AS n FROM events WHERE {e} IS NOT NULL",
    "SELECT a.country AS c, count() AS n FROM events AS a JOIN (SELECT user_id, {e} AS g FROM "
    "events) AS b ON a.user_id = b.user_id GROUP BY c ORDER BY c",
    "WITH g AS (SELECT {e} AS x FROM events) SELECT count() AS n FROM g",
    "SELECT count() AS n FROM events WHERE user_id IN (SELECT user_id FROM events WHERE {e} "
    "IS NOT NULL)",
    "SELECT user_id, row_number() OVER (ORDER BY {e}, user_id) AS r FROM events ORDER BY r LIMIT 1",
    "SELECT count() AS n FROM (SELECT {e} AS x FROM events UNION ALL SELECT {e} AS x FROM events)",
]
# Rollups and the analysts' views: the marker is an event name and a country.
_VIEWS = [
    f"SELECT sum(events) AS n FROM {{t}} WHERE if(event = 'zz{MARKER}', toUInt64(event), 1) > 0",
    "SELECT sum(events) AS n FROM {t} WHERE intDiv(1, toUInt8(country != 'ZZ')) > 0",
    "SELECT count() AS n FROM {t} WHERE match('abc', event)",
    "SELECT sum(toUInt64(if(country = 'ZZ', event, '1'))) AS s FROM {t}",
    "SELECT event, sum(events) AS n FROM {t} GROUP BY event ORDER BY toUInt64("
    f"if(event = 'zz{MARKER}', event, '0')), event",
]
_VIEW_TABLES = ["rollup_1m", "rollup_1h", "metrics_1s", "metrics_1m", "metrics_1d"]
# LowCardinality columns: a function over one runs on its dictionary, which holds every value
# of the part (catalog.py) — these failed behind the barrier until the reads cast them.
_DICTIONARY = [
    "SELECT count() AS n FROM events WHERE match('abc', event)",
    "SELECT count() AS n FROM events WHERE length(extract('abc', event)) >= 0",
    "SELECT countIf(toUInt64(if(country = 'ZZ', event, '1')) > 0) AS n FROM events",
    "SELECT count() AS n FROM metrics_detail_1m WHERE match('abc', event)",
]

CORPUS = (
    [p.format(e=e) for e in _FAILS_ON_MARKER for p in _PLACEMENTS[:3]]
    + [p.format(e=e) for e in _FAILS_ON_MARKER[:6] for p in _PLACEMENTS[3:]]
    + [p.format(e=e) for e in _GUESSES for p in _GUESS_PLACEMENTS]
    + [v.format(t=t) for v in _VIEWS for t in _VIEW_TABLES]
    + _DICTIONARY
)


def _outcome(ch: ClickHouse, sql: str, org_id: int = ORG_A) -> tuple[Any, ...]:
    """What a user is shown for `sql`: its rows and rows read, or the error as shown."""
    query = compile_analyst_sql(sql, org_id, database=ch.database)
    try:
        result = run_analyst_sync(ch, query, "json", limits=LIMITS)
    except ClickHouseError as exc:
        shown = public_error(exc.code, str(exc), sql)
        return ("error", shown.code, shown.message, tuple(sorted(shown.where.items())))
    return ("ok", json.loads(result.data)["data"], result.rows_read)


def test_the_corpus_is_large_and_compiles():
    assert len(CORPUS) >= 60 and len(set(CORPUS)) == len(CORPUS)
    for sql in CORPUS:
        compile_analyst_sql(sql, ORG_A, database="db")  # none refused: each one is a real probe


@pytest.mark.parametrize("sql", CORPUS)
def test_org_a_cannot_tell_whether_org_b_has_the_marker(sql, pair):
    with_marker, without = pair
    seen = _outcome(with_marker, sql)
    assert seen == _outcome(without, sql)
    assert "SECRET" not in repr(seen)


def test_org_b_itself_does_fail_on_its_marker(pair):
    # The corpus probes real failures: org B's own query does hit its marker, and the
    # message it is shown still quotes nothing from the row.
    with_marker, without = pair
    sql = "SELECT count() AS n FROM events WHERE toUInt64(user_id) >= 0"
    failed = _outcome(with_marker, sql, ORG_B)
    assert failed[:2] == ("error", 6), failed
    assert "SECRET" not in repr(failed) and failed[3] == (
        ("column", 39),
        ("line", 1),
        ("token", "toUInt64"),
    )
    assert _outcome(without, sql, ORG_B)[0] == "ok"


def test_the_cli_answers_the_same_without_data_in_errors(pair):
    with_marker, without = pair
    for sql in CORPUS[::7]:
        shown = []
        for ch in (with_marker, without):
            out, err = io.BytesIO(), io.StringIO()
            status = run_sql(ch, ORG_A, sql, "json", out, err)
            body = json.loads(out.getvalue())["data"] if status == 0 else None
            shown.append((status, body, err.getvalue()))
        assert shown[0] == shown[1], sql
        assert "SECRET" not in repr(shown[0])


def _unbarred(sql: str) -> str:
    """The guarded SQL as it was before: each read a plain filtered subquery (no LIMIT
    barrier, LowCardinality columns not cast)."""
    sql = re.sub(r"\* REPLACE \((?:CAST\(\w+ AS String\) AS \w+(?:, )?)+\)", "*", sql)
    return sql.replace(" LIMIT 1000000000000000000)", ")")


def _raw_outcome(ch: ClickHouse, sql: str) -> tuple[Any, ...]:
    query = compile_analyst_sql(sql, ORG_A, database=ch.database)
    try:
        result = ch.query_raw_sync(
            _unbarred(query.sql), params=dict(query.params), settings={"readonly": 1}, fmt="JSON"
        )
    except ClickHouseError as exc:
        return ("error", exc.code)
    return ("ok", json.loads(result.data)["data"])


def test_the_corpus_detects_the_old_construction(pair):
    with_marker, without = pair
    differing = [s for s in CORPUS if _raw_outcome(with_marker, s) != _raw_outcome(without, s)]
    # 28 of 121 differ on chDB 26.9 (the guessing ones mostly short-circuit on org A's rows).
    assert len(differing) >= 20, len(differing)


# -- the plan ClickHouse runs: no user expression below the barrier ------------------------------
_STEP = re.compile(r"^(?P<indent>[ │]*)(?:└──|├──)(?P<name>\w+)")
_FILTER = re.compile(r"(?:Prewhere filter column|Filter column|Condition): (?P<expr>.*)$")
_SAFE_NAMES = {"org_id", "ts", "bucket", "and", "AND", "in", "UTC", "toDateTime", "true"}


def _plan_steps(lines: list[str]) -> list[tuple[int, str, list[str], int | None]]:
    """(depth, name, filter expressions, parent index) of each step of an EXPLAIN tree."""
    steps: list[tuple[int, str, list[str], int | None]] = []
    stack: list[int] = []
    for line in lines:
        match = _STEP.match(line)
        if match is not None or (not steps and line and not line.startswith(("│", " "))):
            depth = len(match.group("indent")) if match else -1
            name = match.group("name") if match else line.split(" ")[0]
            while stack and steps[stack[-1]][0] >= depth:
                stack.pop()
            steps.append((depth, name, [], stack[-1] if stack else None))
            stack.append(len(steps) - 1)
        elif steps and (found := _FILTER.search(line)):
            steps[-1][2].append(found.group("expr"))
    return steps


def _names(expression: str) -> set[str]:
    text = re.sub(r"'[^']*'", "''", expression)
    text = re.sub(r"__table\d+\.", "", text)
    return {n for n in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text) if not n.startswith("_")}


@pytest.mark.parametrize("sql", CORPUS[::4])
def test_clickhouse_reads_with_the_guard_alone_below_the_barrier(sql, pair):
    with_marker, _ = pair
    query = compile_analyst_sql(sql, ORG_A, database=with_marker.database)
    plan = with_marker.query_sync(
        "EXPLAIN actions = 1, indexes = 1 " + query.sql, params=dict(query.params)
    )
    steps = _plan_steps([row[0] for row in plan.rows])
    reads = [i for i, step in enumerate(steps) if step[1].startswith("Read")]
    assert reads, "no read step found in the plan"
    for index in reads:
        # Walk up from the read to the first Limit: only the guard's columns on the way.
        current: int | None = index
        while current is not None and steps[current][1] != "Limit":
            for expression in steps[current][2]:
                assert _names(expression) <= _SAFE_NAMES | {"equals", "greaterOrEquals", "less"}, (
                    expression
                )
            current = steps[current][3]
        assert current is not None, f"read step {steps[index][1]} has no LIMIT above it"
