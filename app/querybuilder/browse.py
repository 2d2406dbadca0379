"""The org's schema read from its data, for the metric editor: event names, property names and
the top values of a column or property, each with its count over a bounded window.

Same compiler, same guard: each query is a sqlglot AST with every user value (an event name, a
property key, whatever characters it holds) bound as a parameter, leaving through
`planner.finish` (tenant guard applied last and verified), run through `run_compiled_async`
(verified again). Windows are whole hours, so the same request repeats the same text and
parameters within the hour (and hits the cache).
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.guard import check_org_id
from app.querybuilder.language import ALLOWED_FUNCTIONS
from app.querybuilder.model import EVENT_COLUMNS, ROLLUP_KEYS, Agg, Col, CompiledQuery, Plan, Prop
from app.querybuilder.planner import align, check_range, finish, to_epoch
from app.querybuilder.sqlbuild import (
    Params,
    Renderer,
    conjunction,
    fn,
    num,
    table_node,
    time_filter,
    uint32_placeholder,
)
from app.querybuilder.tables import Requirement, choose_table
from app.querybuilder.validate import check_string

HOUR = 3_600
MAX_BROWSE_RANGE = 31 * 86_400
MAX_EVENTS = 500
MAX_PROPERTIES = 500
MAX_VALUES = 100
#: The longest property key the browser looks up (ingest keeps keys short; this bounds the text).
MAX_KEY_LENGTH = 200
#: Columns whose top values can be listed (numbers have no useful "top values").
STRING_COLUMNS = tuple(sorted(c for c, kind in EVENT_COLUMNS.items() if kind == "string"))
COUNT_ALIAS = "total"


def _window(time_from: Any, time_to: Any) -> tuple[int, int]:
    lower, upper = to_epoch(time_from, "time_from"), to_epoch(time_to, "time_to")
    check_range(lower, upper)
    lower, upper = align(lower, upper, HOUR)
    if upper - lower > MAX_BROWSE_RANGE:
        raise MetricError(
            "invalid_range", "the schema browser reads at most 31 days", field="range"
        )
    return lower, upper


def _limit(value: int, most: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise MetricError("invalid_arguments", f"{field} is an integer 1..{most}", field=field)
    return value


def _event_condition(render: Renderer, event: str | None) -> list[exp.Expression]:
    if event is None:
        return []
    value = check_string(event, {"field": "event"})
    return [exp.EQ(this=exp.column("event"), expression=render.params.bind(value))]


def _counted(
    value: exp.Expression,
    label: str,
    table: str,
    count: exp.Expression,
    where: list[exp.Expression],
    database: str,
    n: int,
) -> exp.Select:
    """SELECT <value> AS <label>, <count> AS total FROM <table> WHERE … GROUP BY <label>
    ORDER BY total DESC, <label> LIMIT n."""
    select = exp.Select(
        expressions=[exp.alias_(value, label), exp.alias_(count, COUNT_ALIAS)]
    ).from_(table_node(database, table))
    select.set("where", exp.Where(this=conjunction(where)))
    select.set("group", exp.Group(expressions=[exp.column(label)]))
    select.set(
        "order",
        exp.Order(
            expressions=[
                exp.Ordered(this=exp.column(COUNT_ALIAS), desc=True),
                exp.Ordered(this=exp.column(label)),
            ]
        ),
    )
    select.set("limit", exp.Limit(expression=num(n)))
    return select


def _compile(
    kind: str,
    family: str,
    build: Any,
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    now: Any,
    label: str,
) -> CompiledQuery:
    check_org_id(org_id)
    lower, upper = _window(time_from, time_to)
    current = to_epoch(now, "now") if now is not None else upper
    table, _grain, reason = choose_table(Requirement(family, ""), HOUR, lower, current)
    params = Params()
    params.named("time_from", lower)
    params.named("time_to", upper)
    render = Renderer("raw" if table == "events" else family, params)
    bounds = time_filter(table, uint32_placeholder("time_from"), uint32_placeholder("time_to"))
    ast = build(render, table, bounds)
    plan = Plan(
        table=table,
        granularity_s=HOUR,
        raw=table == "events",
        time_from=lower,
        time_to=upper,
        kind=kind,
        reason=reason,
        columns=(label, COUNT_ALIAS),
    )
    return finish(ast, org_id=org_id, database=database, params=params, plan=plan)


def compile_event_names(
    *, org_id: int, database: str, time_from: Any, time_to: Any, n: int = 100, now: Any = None
) -> CompiledQuery:
    """The org's event names by how often they occurred in [from, to) (whole hours), most
    frequent first. Rows: `event, total`. Read from the hourly rollup when it covers the range."""
    n = _limit(n, MAX_EVENTS, "n")

    def build(render: Renderer, table: str, bounds: exp.Expression) -> exp.Select:
        count = render.expr(Agg("count", None))
        return _counted(exp.column("event"), "event", table, count, [bounds], database, n)

    return _compile(
        "events", "rollup", build, org_id=org_id, database=database,
        time_from=time_from, time_to=time_to, now=now, label="event",
    )  # fmt: skip


def compile_property_names(
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    event: str | None = None,
    n: int = 100,
    now: Any = None,
) -> CompiledQuery:
    """The property keys (`props`) of the org's events (of one `event`, if given) by how many
    events carry them. Rows: `property, total`. Raw events (only they hold `props`)."""
    n = _limit(n, MAX_PROPERTIES, "n")

    def build(render: Renderer, table: str, bounds: exp.Expression) -> exp.Select:
        keys = fn("arrayJoin", fn("mapKeys", exp.column("props")))
        where = [bounds, *_event_condition(render, event)]
        return _counted(keys, "property", table, fn("count"), where, database, n)

    return _compile(
        "properties", "raw", build, org_id=org_id, database=database,
        time_from=time_from, time_to=time_to, now=now, label="property",
    )  # fmt: skip


def compile_top_values(
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    column: str | None = None,
    prop: str | None = None,
    event: str | None = None,
    n: int = 20,
    now: Any = None,
) -> CompiledQuery:
    """The most frequent non-empty values of a string `column` or of the property `prop` (any
    key: it is a bound value, never SQL), of one `event` if given. Rows: `value, total`."""
    n = _limit(n, MAX_VALUES, "n")
    if (column is None) == (prop is None):
        raise MetricError(
            "invalid_arguments", "give exactly one of column and property", field="column"
        )
    if column is not None:
        if column not in STRING_COLUMNS:
            raise MetricError(
                "unknown_column",
                f"top values are listed for {', '.join(STRING_COLUMNS)} and properties",
                field="column",
            )
        dim: Col | Prop = Col(column)
        family = "rollup" if column in ROLLUP_KEYS else "raw"
    else:
        if not prop or len(prop) > MAX_KEY_LENGTH:
            raise MetricError(
                "invalid_prop_key",
                f"a property key is 1..{MAX_KEY_LENGTH} characters",
                field="property",
            )
        dim = Prop(check_string(prop, {"field": "property"}))
        family = "raw"

    def build(render: Renderer, table: str, bounds: exp.Expression) -> exp.Select:
        value = render.expr(dim)
        where = [bounds, *_event_condition(render, event)]
        where.append(exp.NEQ(this=value.copy(), expression=exp.Literal.string("")))
        count = render.expr(Agg("count", None))
        return _counted(value, "value", table, count, where, database, n)

    return _compile(
        "values", family, build, org_id=org_id, database=database,
        time_from=time_from, time_to=time_to, now=now, label="value",
    )  # fmt: skip


def language_words() -> dict[str, list[str]]:
    """What the metric editor completes besides the org's names: the language's functions (the
    compiler's allow-list), the event columns and the clause keywords."""
    return {
        "functions": sorted(ALLOWED_FUNCTIONS.values(), key=str.lower),
        "columns": sorted(EVENT_COLUMNS),
        "string_columns": list(STRING_COLUMNS),
        "keywords": [
            "SELECT",
            "AS",
            "WHERE",
            "GROUP BY",
            "AND",
            "OR",
            "NOT",
            "IN",
            "LIKE",
            "ILIKE",
        ],
    }
