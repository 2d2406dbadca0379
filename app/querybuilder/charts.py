"""Chart-shaped queries from the same compiler and the same guard: funnel, heatmap, top-N.

Each builds its AST from model nodes (user values bound as parameters) and leaves through
`planner.finish`, which applies the tenant guard last and verifies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec
from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.guard import check_org_id
from app.querybuilder.language import parse_condition
from app.querybuilder.model import (
    Agg,
    Binary,
    Col,
    CompiledQuery,
    Expr,
    Filter,
    Lit,
    Plan,
)
from app.querybuilder.planner import (
    RESULT_LIMIT,
    align,
    check_range,
    finish,
    resolve_filters,
    resolve_metric,
    to_epoch,
)
from app.querybuilder.sqlbuild import (
    Context,
    Params,
    Renderer,
    conjunction,
    fn,
    num,
    paren,
    table_node,
    time_filter,
    uint32_placeholder,
)
from app.querybuilder.tables import auto_step, choose_table, requirement
from app.querybuilder.validate import check_string, dimension_name, parse_dimension

MAX_FUNNEL_STEPS = 10
MAX_FUNNEL_WINDOW = 90 * 86_400
MAX_TOP_N = 100


def _now(now: Any) -> int:
    import time

    return to_epoch(now, "now") if now is not None else int(time.time())


# -- funnel --------------------------------------------------------------------------------


class FunnelStep(msgspec.Struct, frozen=True):
    """A funnel step: an event name, or a condition in the metric language, or both (AND)."""

    name: str
    event: str | None = None
    where: str | None = None


def _step_condition(step: FunnelStep, index: int) -> Expr:
    field = f"steps[{index}]"
    parts: list[Expr] = []
    if step.event is not None:
        parts.append(Binary("=", Col("event"), Lit(check_string(step.event, {"field": field}))))
    if step.where is not None:
        try:
            parts.append(parse_condition(step.where))
        except MetricError as exc:
            raise MetricError(
                exc.code,
                exc.message,
                token=exc.token,
                line=exc.line,
                column=exc.column,
                offset=exc.offset,
                field=f"{field}.where",
            ) from None
    if not parts:
        raise MetricError(
            "invalid_step", "a funnel step needs an event or a condition", field=field
        )
    return parts[0] if len(parts) == 1 else Binary("and", parts[0], parts[1])


def _funnel_step(step: FunnelStep | dict | str, index: int) -> FunnelStep:
    """A step as given: an event name, a FunnelStep, or its JSON object (a malformed one is a
    MetricError naming the step, not a crash)."""
    if isinstance(step, str):
        return FunnelStep(name=step, event=step)
    if isinstance(step, FunnelStep):
        return step
    try:
        return msgspec.convert(step, FunnelStep)
    except msgspec.ValidationError as exc:
        raise MetricError(
            "invalid_step",
            f"a funnel step is an event name or {{name, event?, where?}}: {exc}",
            field=f"steps[{index}]",
        ) from None


def compile_funnel(
    steps: Sequence[FunnelStep | dict | str],
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    window_seconds: int,
    breakdown: str | None = None,
    filters: Iterable[Filter | dict] = (),
) -> CompiledQuery:
    """Ordered-steps conversion with ClickHouse `windowFunnel` over raw events.

    Rows: `[breakdown,] step, step_name, users, conversion, conversion_total` — users who
    reached step n (in order, within `window_seconds` of their first step), the share of the
    previous step's users (1 for step 1) and of step 1's users. A user's breakdown value is
    the one on their earliest matching event.
    """
    check_org_id(org_id)
    parsed = [_funnel_step(s, i) for i, s in enumerate(steps)]
    if not 2 <= len(parsed) <= MAX_FUNNEL_STEPS:
        raise MetricError(
            "invalid_funnel", f"a funnel has 2-{MAX_FUNNEL_STEPS} steps", field="steps"
        )
    if (
        isinstance(window_seconds, bool)
        or not isinstance(window_seconds, int)
        or not 1 <= window_seconds <= MAX_FUNNEL_WINDOW
    ):
        raise MetricError(
            "invalid_window", f"window_seconds is 1..{MAX_FUNNEL_WINDOW}", field="window_seconds"
        )
    conditions = [_step_condition(s, i) for i, s in enumerate(parsed)]
    names = [check_string(s.name, {"field": f"steps[{i}].name"}) for i, s in enumerate(parsed)]
    lower, upper = to_epoch(time_from, "time_from"), to_epoch(time_to, "time_to")
    check_range(lower, upper)
    dim = parse_dimension(breakdown, field="breakdown") if breakdown is not None else None
    params = Params()
    params.named("time_from", lower)
    params.named("time_to", upper)
    render = Renderer("raw", params)
    step_sql = [render.expr(c) for c in conditions]
    where = [time_filter("events", uint32_placeholder("time_from"), uint32_placeholder("time_to"))]
    where += [render.expr(c) for c in resolve_filters(filters)]
    where.append(paren(_any_of([s.copy() for s in step_sql])))
    funnel = exp.ParameterizedAgg(
        this="windowFunnel",
        expressions=[num(window_seconds)],
        params=[fn("toDateTime", exp.column("ts")), *step_sql],
    )
    per_user: list[exp.Expression] = [exp.column("user_id"), exp.alias_(funnel, "level")]
    if dim is not None:
        per_user.append(exp.alias_(fn("argMin", render.expr(dim), exp.column("ts")), "dim_value"))
    inner = exp.Select(expressions=per_user).from_(table_node(database, "events"))
    inner.set("where", exp.Where(this=conjunction(where)))
    inner.set("group", exp.Group(expressions=[exp.column("user_id")]))
    # counts[k] = users whose funnel level reached step k.
    counts = exp.Array(
        expressions=[
            fn("countIf", exp.GTE(this=exp.column("level"), expression=num(k)))
            for k in range(1, len(parsed) + 1)
        ]
    )
    middle_cols: list[exp.Expression] = [exp.alias_(counts, "counts")]
    if dim is not None:
        middle_cols.insert(0, exp.column("dim_value"))
    middle = exp.Select(expressions=middle_cols).from_(exp.Subquery(this=inner))
    if dim is not None:
        middle.set("group", exp.Group(expressions=[exp.column("dim_value")]))
    name_array = exp.Array(expressions=[params.bind(n) for n in names])
    step = exp.column("step")

    def at(array: exp.Expression, index: exp.Expression) -> exp.Expression:
        return fn("arrayElement", array, index)

    users = at(exp.column("counts"), step.copy())
    previous = at(
        exp.column("counts"), fn("greatest", exp.Sub(this=step.copy(), expression=num(1)), num(1))
    )
    outer_cols: list[exp.Expression] = []
    label = dimension_name(dim) if dim is not None else None
    if dim is not None:
        outer_cols.append(exp.alias_(exp.column("dim_value"), label, quoted=True))
    outer_cols += [
        exp.alias_(fn("arrayJoin", fn("range", num(1), num(len(parsed) + 1))), "step"),
        exp.alias_(at(name_array, step.copy()), "step_name"),
        exp.alias_(users, "users"),
        exp.alias_(
            exp.Div(this=users.copy(), expression=fn("nullIf", previous, num(0))), "conversion"
        ),
        exp.alias_(
            exp.Div(
                this=users.copy(), expression=fn("nullIf", at(exp.column("counts"), num(1)), num(0))
            ),
            "conversion_total",
        ),
    ]
    outer = exp.Select(expressions=outer_cols).from_(exp.Subquery(this=middle))
    order = ([exp.Ordered(this=exp.column(label, quoted=True))] if label else []) + [
        exp.Ordered(this=step.copy())
    ]
    outer.set("order", exp.Order(expressions=order))
    outer.set("limit", exp.Limit(expression=num(RESULT_LIMIT)))
    columns = ((label,) if label else ()) + (
        "step",
        "step_name",
        "users",
        "conversion",
        "conversion_total",
    )
    plan = Plan(
        table="events",
        granularity_s=0,
        raw=True,
        time_from=lower,
        time_to=upper,
        kind="funnel",
        columns=columns,
    )
    return finish(outer, org_id=org_id, database=database, params=params, plan=plan)


def _any_of(conditions: list[exp.Expression]) -> exp.Expression:
    result = paren(conditions[0])
    for condition in conditions[1:]:
        result = exp.Or(this=result, expression=paren(condition))
    return result


# -- heatmap -------------------------------------------------------------------------------


def compile_heatmap(
    metric: Any,
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    axes: Literal["weekday_hour"] | str = "weekday_hour",
    granularity: str = "auto",
    filters: Iterable[Filter | dict] = (),
    now: Any = None,
) -> CompiledQuery:
    """A metric over two axes.

    `axes="weekday_hour"`: rows `weekday` (1 = Monday … 7), `hour` (0-23, UTC), outputs…; all
    168 cells present. Any other value names a dimension: a dimension × time-bucket grid, i.e.
    the metric's series grouped by that dimension (rows `t, <dimension>, outputs…`).
    """
    if axes != "weekday_hour":
        from app.querybuilder.planner import compile_metric

        compiled = compile_metric(
            metric,
            org_id=org_id,
            database=database,
            time_from=time_from,
            time_to=time_to,
            granularity=granularity,
            filters=filters,
            group_by=[axes],
            now=now,
        )
        return msgspec.structs.replace(
            compiled, plan=msgspec.structs.replace(compiled.plan, kind="heatmap")
        )
    check_org_id(org_id)
    resolved = resolve_metric(metric, group_by=[])
    conditions = resolve_filters(filters)
    lower, upper = to_epoch(time_from, "time_from"), to_epoch(time_to, "time_to")
    check_range(lower, upper)
    lower, upper = align(lower, upper, 3_600)
    req = requirement(resolved, conditions)
    table, grain, reason = choose_table(req, 3_600, lower, _now(now))
    ctx = Context(resolved, database, table, grain, 3_600, 0, req.family)
    ctx.params.named("time_from", lower)
    ctx.params.named("time_to", upper)
    render = ctx.renderer
    when = exp.column("ts" if table == "events" else "bucket")
    columns: list[exp.Expression] = [
        exp.alias_(fn("toDayOfWeek", when), "weekday"),
        exp.alias_(fn("toHour", when.copy()), "hour"),
    ]
    columns += [exp.alias_(render.expr(o.expr), o.name, quoted=True) for o in resolved.outputs]
    where = [time_filter(table, uint32_placeholder("time_from"), uint32_placeholder("time_to"))]
    if resolved.where is not None:
        where.append(render.expr(resolved.where))
    where += [render.expr(c) for c in conditions]
    select = exp.Select(expressions=columns).from_(table_node(database, table))
    select.set("where", exp.Where(this=conjunction(where)))
    select.set("group", exp.Group(expressions=[exp.column("weekday"), exp.column("hour")]))
    select.set(
        "order",
        exp.Order(
            expressions=[
                exp.Ordered(
                    this=exp.column("weekday"), with_fill=exp.WithFill(from_=num(1), to=num(8))
                ),
                exp.Ordered(
                    this=exp.column("hour"), with_fill=exp.WithFill(from_=num(0), to=num(24))
                ),
            ]
        ),
    )
    plan = Plan(
        table=table,
        granularity_s=3_600,
        raw=table == "events",
        time_from=lower,
        time_to=upper,
        kind="heatmap",
        reason=reason,
        columns=("weekday", "hour", *(o.name for o in resolved.outputs)),
    )
    return finish(select, org_id=org_id, database=database, params=ctx.params, plan=plan)


# -- top-N ---------------------------------------------------------------------------------


def compile_top_n(
    metric: Any,
    *,
    dimension: str,
    n: int,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    filters: Iterable[Filter | dict] = (),
    now: Any = None,
) -> CompiledQuery:
    """The top `n` values of `dimension` (a column such as `country` or `path`, or
    `props.<key>`) ranked by the metric's first output, plus one "other" row for the rest.

    Rows: `<dimension>, is_other, outputs…` — top rows by the first output descending, then
    the other row (`is_other` = 1, dimension value 'other'), absent when nothing is left. The
    other row's values are computed over the remaining rows, so they are exact for uniq too.
    """
    check_org_id(org_id)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOP_N:
        raise MetricError("invalid_arguments", f"n is an integer 1..{MAX_TOP_N}", field="n")
    dim = parse_dimension(dimension, field="dimension")
    resolved = resolve_metric(metric, group_by=[dimension])
    first = resolved.outputs[0].expr
    if isinstance(first, Agg) and first.name == "topK":
        raise MetricError(
            "invalid_metric", "top-N ranks by a number; the first output is a list", field="metric"
        )
    conditions = resolve_filters(filters)
    lower, upper = to_epoch(time_from, "time_from"), to_epoch(time_to, "time_to")
    check_range(lower, upper)
    req = requirement(resolved, conditions)
    current = _now(now)
    # Bucket the range like a ~500-point series would, so the table choice matches the charts.
    step = auto_step(upper - lower, req, lower, current)
    lower, upper = align(lower, upper, step)
    table, grain, reason = choose_table(req, step, lower, current)
    ctx = Context(resolved, database, table, grain, step, 0, req.family)
    ctx.params.named("time_from", lower)
    ctx.params.named("time_to", upper)
    render = ctx.renderer
    metric_only = msgspec.structs.replace(resolved, group_by=())

    def where_clause() -> exp.Expression:
        parts = [time_filter(table, uint32_placeholder("time_from"), uint32_placeholder("time_to"))]
        if resolved.where is not None:
            parts.append(render.expr(resolved.where))
        parts += [render.expr(c) for c in conditions]
        return conjunction(parts)

    dim_sql = render.expr(dim)
    ranking = exp.Select(expressions=[dim_sql.copy()]).from_(table_node(database, table))
    ranking.set("where", exp.Where(this=where_clause()))
    ranking.set("group", exp.Group(expressions=[dim_sql.copy()]))
    ranking.set(
        "order",
        exp.Order(
            expressions=[
                exp.Ordered(this=render.expr(first), desc=True),
                exp.Ordered(this=dim_sql.copy()),
            ]
        ),
    )
    ranking.set("limit", exp.Limit(expression=num(n)))
    is_top = exp.In(this=dim_sql.copy(), query=exp.Subquery(this=ranking))
    inner_cols: list[exp.Expression] = [
        exp.alias_(is_top, "is_top"),
        exp.alias_(
            fn("if", exp.column("is_top"), dim_sql.copy(), exp.Literal.string("")), "dim_value"
        ),
    ]
    inner_cols += [
        exp.alias_(render.expr(o.expr), o.name, quoted=True) for o in metric_only.outputs
    ]
    inner = exp.Select(expressions=inner_cols).from_(table_node(database, table))
    inner.set("where", exp.Where(this=where_clause()))
    inner.set("group", exp.Group(expressions=[exp.column("is_top"), exp.column("dim_value")]))
    label = dimension_name(dim)
    outer_cols: list[exp.Expression] = [
        exp.alias_(
            fn("if", exp.column("is_top"), exp.column("dim_value"), exp.Literal.string("other")),
            label,
            quoted=True,
        ),
        exp.alias_(exp.Not(this=exp.column("is_top")), "is_other"),
    ]
    outer_cols += [exp.column(o.name, quoted=True) for o in metric_only.outputs]
    outer = exp.Select(expressions=outer_cols).from_(exp.Subquery(this=inner))
    first_name = exp.column(resolved.outputs[0].name, quoted=True)
    outer.set(
        "order",
        exp.Order(
            expressions=[
                exp.Ordered(this=exp.column("is_other")),
                exp.Ordered(this=first_name, desc=True),
                exp.Ordered(this=exp.column("dim_value")),
            ]
        ),
    )
    outer.set("limit", exp.Limit(expression=num(n + 1)))
    plan = Plan(
        table=table,
        granularity_s=0,
        raw=table == "events",
        time_from=lower,
        time_to=upper,
        kind="top_n",
        reason=reason,
        columns=(label, "is_other", *(o.name for o in metric_only.outputs)),
    )
    return finish(outer, org_id=org_id, database=database, params=ctx.params, plan=plan)


__all__ = ["FunnelStep", "compile_funnel", "compile_heatmap", "compile_top_n"]
