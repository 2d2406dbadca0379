"""The API's only door to the metric compiler (app/querybuilder) and to running its queries.

Nothing in the API builds SQL: a metric definition and the request's parameters go to the
querybuilder, which answers a CompiledQuery (SQL with bound params, the org guard, a plan);
`run` hands it to the querybuilder's `run_compiled_async`, which re-checks the tenant guard on
the final SQL before the facade executes it.

A stored definition is `{"text": "<metric language>"}` or the form builder's JSON (any other
object); both go to the compiler as they are.
"""

from __future__ import annotations

import time
from typing import Any

from app.errors import ApiError, LocatedMetricError
from app.querybuilder import MetricError, compile_metric, run_compiled_async
from app.querybuilder.execute import count_visible_rows_async

# Compiler fields that are request parameters of the API, not parts of the definition.
_PARAMS = {
    "filters": "filter",
    "group_by": "group_by",
    "compare": "compare",
    "granularity": "granularity",
    "time_from": "from",
    "time_to": "to",
    "window_seconds": "window_seconds",
}


def _metric(definition: dict[str, Any], field: str) -> Any:
    if "text" in definition:
        text = definition["text"]
        if not isinstance(text, str) or len(definition) != 1:
            raise ApiError(
                422,
                "invalid_metric",
                'a text definition is {"text": "<metric>"} and nothing else',
                {"field": field},
            )
        return text
    return definition


def locate_metric_error(exc: MetricError, field: str, text: bool) -> LocatedMetricError:
    """The compiler's refusal placed in the request: a request parameter's name (`where.param`)
    or the definition's field (`where.field`, `<field>.text` for a position in metric text)."""
    where = dict(exc.where)
    inner = where.pop("field", None)
    head = (inner or "").split(".")[0].split("[")[0]
    if head in _PARAMS:
        where["param"] = _PARAMS[head] + (inner[len(head) :] if inner else "")
    elif inner:
        where["field"] = f"{field}.{inner}"
    else:
        where["field"] = f"{field}.text" if text else field
    return LocatedMetricError(exc, where)


def compile_query(
    definition: dict[str, Any],
    *,
    org_id: int,
    database: str,
    time_from: int,
    time_to: int,
    granularity: str = "auto",
    filters: list[dict[str, Any]] | None = None,
    group_by: str | None = None,
    compare: Any = None,
    field: str = "definition",
) -> Any:
    """A CompiledQuery for this org; a definition or parameter the compiler refuses → 422
    with its message and position (`where.line/column/token` in the text, or `where.field`,
    or `where.param` for a request parameter)."""
    metric = _metric(definition, field)
    groups = [g.strip() for g in group_by.split(",") if g.strip()] if group_by else None
    try:
        return compile_metric(
            metric,
            org_id=org_id,
            database=database,
            time_from=time_from,
            time_to=time_to,
            granularity=granularity,
            filters=filters or (),
            group_by=groups,
            compare=compare,
        )
    except MetricError as exc:
        raise locate_metric_error(exc, field, isinstance(metric, str)) from None


def validate_definition(
    definition: dict[str, Any], field: str = "definition", *, database: str = "validate"
) -> None:
    """Compile once over the last hour (nothing runs); 422 with the position if refused."""
    now = int(time.time())
    compile_query(
        definition, org_id=1, database=database, time_from=now - 3600, time_to=now, field=field
    )


async def run(ch: Any, compiled: Any) -> Any:
    """Run through the querybuilder: tenant guard re-verified on the final SQL first.

    (The embedded facade binds parameters itself — chDB's own binding is shared by
    concurrent queries; see app/clickhouse/params.py — so queries may run in parallel.)
    """
    return await run_compiled_async(ch, compiled)


async def count_rows(ch: Any, compiled: Any) -> int:
    """How many of the org's rows `compiled` covers: what it is shown and charged as read
    (ClickHouse's own count includes other orgs' rows sharing a granule)."""
    return await count_visible_rows_async(ch, compiled)
