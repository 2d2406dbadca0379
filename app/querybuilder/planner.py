"""The planner: a validated metric + a compile request → one guarded sqlglot AST.

Passes, in order (each a small function, like sqlglot's optimizer):

1. `resolve_metric`     text / form / model → Metric, with group-by override applied;
2. `to_epoch`, `align`  [from, to) → epoch seconds; granularity → bucket width (auto: ≤ ~500 points);
3. `requirement`        which table family can answer it (tables.py);
4. `choose_table`       the coarsest table that answers it (tables.py);
5. `build_series`       the SELECT(s) over that table, values as bound parameters (sqlbuild.py);
6. `finish`             `apply_tenant_guard` last, on the whole AST; `verify_tenant_guard`; render.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.guard import (
    FANIN_POLICY,
    ORGS_PARAM,
    apply_tenant_guard,
    check_org_id,
    verify_tenant_guard,
)
from app.querybuilder.model import (
    CompiledQuery,
    Expr,
    FanInQuery,
    Filter,
    Metric,
    Plan,
    Prop,
    SegmentComparison,
)
from app.querybuilder.sqlbuild import (
    DIALECT,
    Context,
    Params,
    SeriesSpec,
    build_series,
    num,
    uint32_placeholder,
    union_all_outer,
    with_fill,
)
from app.querybuilder.tables import (
    DAY,
    GRANULARITIES,
    Requirement,
    auto_step,
    choose_table,
    requirement,
)
from app.querybuilder.validate import (
    MAX_FILTERS,
    check_metric,
    dimension_name,
    filter_to_expr,
    parse_dimension,
)

MAX_POINTS = 10_000
MAX_RANGE = 20 * 365 * DAY
MAX_WINDOW = 31 * DAY
RESULT_LIMIT = 100_000
#: Execution limits for raw plans (rollup plans read few rows by construction).
# No `max_rows_to_read`: ClickHouse counts the other orgs' rows that share a granule with the
# org's, so its answer would depend on their data; callers that charge rows count the org's own
# (`execute.count_visible_rows_async`) and refuse above `MAX_ROWS_PER_QUERY`.
RAW_SETTINGS = {"max_execution_time": 10}
#: The most of an org's rows one metric query may cover (checked on the org's own rows).
MAX_ROWS_PER_QUERY = 200_000_000

# -- 1. the metric -------------------------------------------------------------------------


def resolve_metric(metric: Any, group_by: Sequence[str] | None = None) -> Metric:
    """Text, form (dict / FormMetric) or model → a checked Metric; applies a group-by override."""
    from app.querybuilder.form import FormMetric, parse_form
    from app.querybuilder.language import parse_metric

    if isinstance(metric, str):
        resolved = parse_metric(metric)
    elif isinstance(metric, dict | FormMetric):
        resolved = parse_form(metric)
    elif isinstance(metric, Metric):
        resolved = check_metric(metric)
    else:
        raise MetricError("invalid_metric", "a metric is text, a form or a Metric")
    if group_by is not None:
        dims = tuple(parse_dimension(d, field="group_by") for d in group_by)
        resolved = check_metric(msgspec.structs.replace(resolved, group_by=dims))
    return resolved


def resolve_filters(filters: Iterable[Filter | dict], field: str = "filters") -> list[Expr]:
    items = list(filters or ())
    if len(items) > MAX_FILTERS:
        raise MetricError("too_many_filters", f"at most {MAX_FILTERS} filters", field=field)
    out = []
    for item in items:
        flt = item if isinstance(item, Filter) else _decode_filter(item, field)
        out.append(filter_to_expr(flt, field=field))
    return out


def _decode_filter(item: Any, field: str) -> Filter:
    try:
        return msgspec.convert(item, Filter)
    except msgspec.ValidationError as exc:
        raise MetricError("invalid_filter", str(exc), field=field) from None


# -- 2. time -------------------------------------------------------------------------------


def to_epoch(value: Any, name: str) -> int:
    """Datetime (naive = UTC) or epoch seconds → int epoch seconds."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return math.floor(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return math.floor(value)
    raise MetricError("invalid_range", f"{name} must be a datetime or epoch seconds", field=name)


def check_range(time_from: int, time_to: int) -> None:
    if not 0 <= time_from < time_to:
        raise MetricError(
            "invalid_range", "the range must have from < to (epoch ≥ 0)", field="range"
        )
    if time_to - time_from > MAX_RANGE:
        raise MetricError("invalid_range", "the range may span at most 20 years", field="range")


def align(time_from: int, time_to: int, step: int) -> tuple[int, int]:
    """Widen [from, to) to whole buckets so rollup and raw plans see the same rows."""
    return time_from // step * step, -(-time_to // step) * step


# -- 3-6. table, SQL, guard (tables.py, sqlbuild.py, guard.py) ------------------------------


def finish(
    ast: exp.Expression, *, org_id: int, database: str, params: Params, plan: Plan
) -> CompiledQuery:
    """Guard last, verify, render: the single exit of every compile path."""
    apply_tenant_guard(ast, org_id)
    values = {**params.values, "org_id": org_id}
    verify_tenant_guard(ast, org_id, database=database, params=values)
    sql = ast.sql(dialect=DIALECT)
    settings = dict(RAW_SETTINGS) if plan.raw else {}
    return CompiledQuery(
        sql=sql, params=values, org_id=org_id, database=database, plan=plan, settings=settings
    )


def finish_fan_in(
    ast: exp.Expression, *, org_ids: tuple[int, ...], database: str, params: Params, plan: Plan
) -> FanInQuery:
    """`finish` for a statement of many orgs: the fan-in guard last, verified, rendered."""
    apply_tenant_guard(ast, org_ids, policy=FANIN_POLICY)
    values = {**params.values, ORGS_PARAM: list(org_ids)}
    verify_tenant_guard(ast, org_ids, database=database, params=values, policy=FANIN_POLICY)
    return FanInQuery(
        sql=ast.sql(dialect=DIALECT), params=values, org_ids=org_ids, database=database, plan=plan
    )


def compile_metric(
    metric: Any,
    *,
    org_id: int,
    database: str,
    time_from: Any,
    time_to: Any,
    granularity: str = "auto",
    filters: Iterable[Filter | dict] = (),
    group_by: Sequence[str] | None = None,
    compare: SegmentComparison | str | dict | None = None,
    window_seconds: int = 0,
    now: Any = None,
    force_raw: bool = False,
) -> CompiledQuery:
    """Compile a metric into one guarded ClickHouse time-series query.

    Result rows: `[series,] t, <group-by dims…>, <outputs…>` ordered by series, dims, t, with
    empty buckets filled (`t` = UInt32 epoch seconds of the bucket start). `compare` is a
    `SegmentComparison` (series 'a'/'b') or "previous_period" (series 'current'/'previous',
    previous rows moved onto the current period's t). `window_seconds` makes each point
    aggregate the trailing window ending with its bucket (sliding window, e.g. 300 for
    "active users in the last 5 minutes"). `force_raw` answers from raw events even when a
    rollup could (to cross-check rollups, or to debug them).
    """
    check_org_id(org_id)
    ast, params, plan = plan_metric(
        metric,
        database=database,
        time_from=time_from,
        time_to=time_to,
        granularity=granularity,
        filters=filters,
        group_by=group_by,
        compare=compare,
        window_seconds=window_seconds,
        now=now,
        force_raw=force_raw,
    )
    return finish(ast, org_id=org_id, database=database, params=params, plan=plan)


def plan_metric(
    metric: Any,
    *,
    database: str,
    time_from: Any,
    time_to: Any,
    granularity: str = "auto",
    filters: Iterable[Filter | dict] = (),
    group_by: Sequence[str] | None = None,
    compare: SegmentComparison | str | dict | None = None,
    window_seconds: int = 0,
    now: Any = None,
    force_raw: bool = False,
    conditions: Sequence[Expr] | None = None,
) -> tuple[exp.Select, Params, Plan]:
    """`compile_metric` before its guard: the unguarded SELECT, its parameters and plan (for
    `finish`, or fanin.py's many-org finish). Never run this AST as it is. `conditions`:
    filters already resolved (a `LiveQuery`'s), instead of `filters`."""
    resolved = resolve_metric(metric, group_by)
    conditions = list(conditions) if conditions is not None else resolve_filters(filters)
    comparison = _resolve_compare(compare)
    lower, upper = to_epoch(time_from, "time_from"), to_epoch(time_to, "time_to")
    check_range(lower, upper)
    current = to_epoch(now, "now") if now is not None else int(time.time())
    all_conditions = conditions + [c for seg in comparison[1] for c in seg]
    req = requirement(resolved, all_conditions)
    if force_raw:
        req = Requirement("raw", "forced")
    if granularity == "auto":
        lookback = window_seconds if isinstance(window_seconds, int) else 0
        step = auto_step(upper - lower, req, lower - lookback, current)
    elif granularity in GRANULARITIES:
        step = GRANULARITIES[granularity]
    else:
        raise MetricError(
            "invalid_granularity", "granularity is auto, 1s, 1m, 1h or 1d", field="granularity"
        )
    lower, upper = align(lower, upper, step)
    if (upper - lower) // step > MAX_POINTS:
        raise MetricError(
            "too_many_points",
            f"{(upper - lower) // step} buckets of {step}s; the limit is {MAX_POINTS}: use a coarser granularity",
            field="granularity",
        )
    window = _resolve_window(window_seconds, step)
    span = upper - lower
    oldest = lower - max(window - step, 0) - (span if comparison[0] == "previous_period" else 0)
    table, grain, reason = choose_table(req, step, oldest, current)
    ctx = Context(resolved, database, table, grain, step, window, req.family)
    ctx.params.named("time_from", lower)
    ctx.params.named("time_to", upper)
    kind, segments = comparison
    if kind == "":
        ast: exp.Select = build_series(ctx, SeriesSpec(None, conditions, "time_from", "time_to"))
        order = []
    elif kind == "segments":
        branches = [
            build_series(ctx, SeriesSpec(label, conditions + seg, "time_from", "time_to"))
            for label, seg in zip(("a", "b"), segments, strict=True)
        ]
        ast = union_all_outer(branches)
        order = [exp.Ordered(this=exp.column("series"))]
    else:
        ctx.params.named("prev_from", lower - span)
        ctx.params.named("prev_to", lower)
        branches = [
            build_series(ctx, SeriesSpec("current", conditions, "time_from", "time_to")),
            build_series(
                ctx, SeriesSpec("previous", conditions, "prev_from", "prev_to", shift=span)
            ),
        ]
        ast = union_all_outer(branches)
        order = [exp.Ordered(this=exp.column("series"))]
    for dim in resolved.group_by:
        order.append(
            exp.Ordered(this=exp.column(dimension_name(dim), quoted=isinstance(dim, Prop)))
        )
    fill_lower = uint32_placeholder("time_from")
    fill_upper = uint32_placeholder("time_to")
    order.append(with_fill(step, fill_lower, fill_upper))
    ast.set("order", exp.Order(expressions=order))
    ast.set("limit", exp.Limit(expression=num(RESULT_LIMIT)))
    columns = (("series",) if kind else ()) + ("t",)
    columns += tuple(dimension_name(d) for d in resolved.group_by)
    columns += tuple(o.name for o in resolved.outputs)
    plan = Plan(
        table=table,
        granularity_s=step,
        raw=table == "events",
        time_from=lower,
        time_to=upper,
        kind="series",
        reason=reason,
        window_s=window if window > step else 0,
        comparison=kind,
        columns=columns,
    )
    return ast, ctx.params, plan


def _resolve_window(window_seconds: int, step: int) -> int:
    if (
        isinstance(window_seconds, bool)
        or not isinstance(window_seconds, int)
        or not 0 <= window_seconds <= MAX_WINDOW
    ):
        raise MetricError(
            "invalid_window", f"window_seconds is 0..{MAX_WINDOW}", field="window_seconds"
        )
    if window_seconds <= step:
        return step
    return -(-window_seconds // step) * step  # a whole number of buckets, rounded up


def _resolve_compare(compare: Any) -> tuple[str, list[list[Expr]]]:
    if compare is None:
        return "", []
    if compare == "previous_period":
        return "previous_period", []
    if isinstance(compare, dict):
        try:
            compare = msgspec.convert(compare, SegmentComparison)
        except msgspec.ValidationError as exc:
            raise MetricError("invalid_compare", str(exc), field="compare") from None
    if isinstance(compare, SegmentComparison):
        return "segments", [
            resolve_filters(compare.a, "compare.a"),
            resolve_filters(compare.b, "compare.b"),
        ]
    raise MetricError(
        "invalid_compare",
        "compare is 'previous_period' or {a: [filters], b: [filters]}",
        field="compare",
    )
