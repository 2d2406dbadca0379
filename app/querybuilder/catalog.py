"""Which columns of our tables and views are LowCardinality, read from the shipped DDL.

ClickHouse runs a function over a LowCardinality column on the column's *dictionary*, and a
dictionary read from a part holds the values of every row of the part — other orgs' included —
even after a filter has removed their rows (measured: `match('abc', event)` failed on another
org's event name behind the guard and the LIMIT barrier). So each isolated read casts these
columns to plain `String` (`guard.isolated_read`): the cast itself cannot fail or vary, and
what the user's expressions then see holds the org's values only.

Derived from the embedded rendering of sql/ (tables: columns declared `LowCardinality(…)`;
views: the bare columns they pass through from such a table), so a new column or view is
covered without a list to keep up to date.
"""

from __future__ import annotations

import functools
import re

_CREATE = re.compile(r"CREATE (TABLE|VIEW) IF NOT EXISTS \S+?\.(\w+)")
_LC_COLUMN = re.compile(r"^\s+(\w+)\s+LowCardinality\(", re.MULTILINE)
_BARE_COLUMN = re.compile(r"^\s+(\w+),?\s*$", re.MULTILINE)
_SOURCE = re.compile(r"\bFROM \S+?\.(\w+)")


@functools.cache
def low_cardinality_columns() -> dict[str, tuple[str, ...]]:
    """Table or view name → its LowCardinality columns, in declaration order."""
    from app.migrate import render_clickhouse  # the DDL's one renderer

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
