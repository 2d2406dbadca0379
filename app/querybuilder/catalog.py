"""Our ClickHouse tables and views, read from the shipped DDL: the one list of them.

Each table's kind (raw `events`, `rollup`, `detail`, analyst `view`, pipeline `internal`), grain
(its `_1s/_1m/_1h/_1d` suffix), retention (its TTL) and LowCardinality columns come from the
embedded rendering of sql/, so the metric compiler (tables.py), the tenant guard and the
analysts' grants read the same tables, and a new table or view needs no list kept up to date.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.migrate import Migration, render_clickhouse, split_statements

#: org_id is UInt32 in every table.
MAX_ORG_ID = 2**32 - 1
#: Tables the pipeline uses and people never query (a Kafka/Null queue consumes or discards on
#: read; the migration ledger carries no org_id). `schema_migrations` is app.migrate's ledger.
INTERNAL_TABLES = frozenset({"events_queue", "schema_migrations"})
RAW_TABLE = "events"
_DETAIL_PREFIX = "rollup_detail_"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
# A year of retention is planned as 365 days (the TTL's calendar year is never shorter).
_TTL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3_600, "DAY": 86_400, "YEAR": 365 * 86_400}
_TTL = re.compile(r"\bTTL\s+bucket\s*\+\s*INTERVAL\s+(\d+)\s+(\w+)\s*$")
_GRAIN = re.compile(r"_(\d+)([smhd])$")
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w+)")
_CREATE = re.compile(r"CREATE (TABLE|VIEW) IF NOT EXISTS \S+?\.(\w+)")
_LC_COLUMN = re.compile(r"^\s+(\w+)\s+LowCardinality\(", re.MULTILINE)
_BARE_COLUMN = re.compile(r"^\s+(\w+),?\s*$", re.MULTILINE)
_SOURCE = re.compile(r"\bFROM \S+?\.(\w+)")


@dataclass(frozen=True, slots=True)
class Table:
    """One table or view of ours.

    `grain`: seconds per bucket (1 for raw events); `retention`: seconds its TTL keeps a bucket,
    None when it keeps rows forever or its TTL is a setting (`events`: CLICKPULSE_EVENTS_TTL_DAYS).
    """

    name: str
    kind: str  # raw | rollup | detail | view | internal
    grain: int | None
    retention: int | None


def _grain(name: str) -> int | None:
    found = _GRAIN.search(name)
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2)] if found else None


def _retention(statement: str, name: str) -> int | None:
    found = _TTL.search(statement.strip())
    if found is None:
        return None
    unit = found.group(2).upper()
    if unit not in _TTL_SECONDS:
        raise ValueError(f"{name}: TTL unit {unit} is not one the catalog reads")
    return int(found.group(1)) * _TTL_SECONDS[unit]


def read_tables(migrations: Iterable[Migration]) -> dict[str, Table]:
    """Table or view name → `Table`, in migration order, from rendered embedded migrations."""
    found: dict[str, Table] = {}
    for migration in migrations:
        for statement in split_statements(migration.text):
            created = _CREATE.search(statement)
            if created is None:
                continue
            kind, name = created.groups()
            if kind == "VIEW":  # reads its rollup at query time: the rollup's retention
                source = found.get(m.group(1)) if (m := _SOURCE.search(statement)) else None
                retention = source.retention if source is not None else None
                found[name] = Table(name, "view", _grain(name), retention)
                continue
            engine = _ENGINE.search(statement)
            if name == RAW_TABLE:
                found[name] = Table(name, "raw", 1, None)
            elif engine is not None and engine.group(1) == "AggregatingMergeTree":
                family = "detail" if name.startswith(_DETAIL_PREFIX) else "rollup"
                found[name] = Table(name, family, _grain(name), _retention(statement, name))
            else:
                found[name] = Table(name, "internal", None, None)
    return found


#: Every table and view of the embedded schema.
TABLES = read_tables(render_clickhouse(database="db"))


def _family(kind: str) -> tuple[tuple[str, int, int | None], ...]:
    rows = [(t.name, t.grain, t.retention) for t in TABLES.values() if t.kind == kind]
    return tuple(sorted(rows, key=lambda row: -row[1]))  # type: ignore[operator]


#: (table, grain seconds, retention seconds or None = kept), coarsest first.
ROLLUP_TABLES = _family("rollup")
DETAIL_TABLES = _family("detail")
#: What the metric compiler reads.
METRIC_TABLES = frozenset(t.name for t in TABLES.values() if t.kind in ("raw", "rollup", "detail"))
#: What analysts may read: the metric tables and the finalizing views (0004_analyst_views.sql).
ANALYST_TABLES = METRIC_TABLES | frozenset(t.name for t in TABLES.values() if t.kind == "view")


@functools.cache
def low_cardinality_columns() -> dict[str, tuple[str, ...]]:
    """Table or view name → its LowCardinality columns, in declaration order.

    ClickHouse runs a function over a LowCardinality column on the column's *dictionary*, which
    holds the values of every row of the part — other orgs' included — even after a filter has
    removed their rows (measured: `match('abc', event)` failed on another org's event name
    behind the guard and the LIMIT barrier). So each isolated read casts these columns to plain
    `String` (`guard.isolated_read`). Tables: columns declared `LowCardinality(…)`; views: the
    bare columns they pass through from such a table.
    """
    found: dict[str, tuple[str, ...]] = {}
    for migration in render_clickhouse(database="db"):
        for statement in migration.text.split(";"):
            created = _CREATE.search(statement)
            if created is None:
                continue
            kind, name = created.groups()
            if kind == "TABLE":
                columns = _LC_COLUMN.findall(statement)
            else:
                source = _SOURCE.search(statement)
                inherited = found.get(source.group(1), ()) if source else ()
                columns = [c for c in _BARE_COLUMN.findall(statement) if c in inherited]
            if columns:
                found[name] = tuple(columns)
    return found
