"""The error analysts see, and where in their text it points.

`AnalystSqlError` is a `MetricError` (same `code`, `message`, `where` with `token`, `line`,
`column`, `offset`), so the API answers it exactly like a refused metric: 422 with the shape
of docs/api.md.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from app.querybuilder.errors import MetricError, at_offset


class AnalystSqlError(MetricError):
    """Analysts' SQL that cannot run: refused by a check, or not parseable."""


def at_node(text: str, node: exp.Expression, token: str | None = None) -> dict[str, Any]:
    """Where `node` starts in `text`: sqlglot keeps positions on identifiers, literals and
    named functions, so the earliest of those inside `node` is used."""
    starts = [
        int(candidate._meta["start"])
        for candidate in node.walk()
        if candidate._meta and "start" in candidate._meta
    ]
    token = token if token is not None else _token(node)
    return at_offset(text, min(starts), token) if starts else {"token": token[:60]}


def _token(node: exp.Expression) -> str:
    try:
        return node.sql(dialect="clickhouse", comments=False)
    except Exception:  # noqa: BLE001 - the token is only decoration for the message
        return type(node).__name__
