"""The planner: a validated metric + a compile request → one guarded sqlglot AST.

Passes, in order (each a small function, like sqlglot's optimizer):

1. `resolve_metric`     text / form / model → Metric, with group-by override applied;
2. `resolve_range`      [from, to) → epoch seconds; granularity → bucket width (auto: ≤ ~500 points);
3. `requirement`        which table family can answer it: rollup, detail (quantiles, top paths) or raw;
4. `choose_table`       the coarsest table whose grain divides the bucket and whose retention
                        covers the range start (raw `events` when none does);
5. `build_series`       the SELECT(s) over that table, values as bound parameters;
6. `apply_tenant_guard` last, on the whole AST; then `verify_tenant_guard` and render.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.guard import apply_tenant_guard, check_org_id, verify_tenant_guard
from app.querybuilder.model import (
    DETAIL_KEYS,
    ROLLUP_KEYS,
    Agg,
    Binary,
    Col,
    CompiledQuery,
    Dimension,
    Expr,
    Filter,
    Func,
    InList,
    Lit,
    Metric,
    Plan,
    Prop,
    SegmentComparison,
    Unary,
)
from app.querybuilder.validate import (
    MAX_FILTERS,
    check_metric,
    children,
    dimension_name,
    filter_to_expr,
    parse_dimension,
)

DIALECT = "clickhouse"
DAY = 86_400

#: (table, grain seconds, retention seconds or None = kept), coarsest first.
ROLLUP_TABLES = (
    ("rollup_1d", DAY, None),
    ("rollup_1h", 3_600, 365 * DAY),
    ("rollup_1m", 60, 7 * DAY),
    ("rollup_1s", 1, 600),
)
DETAIL_TABLES = (
    ("rollup_detail_1d", DAY, None),
    ("rollup_detail_1h", 3_600, 365 * DAY),
    ("rollup_detail_1m", 60, 7 * DAY),
)
GRANULARITIES = {"1s": 1, "1m": 60, "1h": 3_600, "1d": DAY}
#: Bucket widths `auto` may choose, finest first.
AUTO_STEPS = (
    1,
    5,
    10,
    15,
    30,
    60,
    300,
    600,
    900,
    1_800,
    3_600,
    10_800,
    21_600,
    43_200,
    DAY,
    7 * DAY,
)
AUTO_MAX_POINTS = 500
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

_UINT32 = exp.DataType.build("UInt32", dialect=DIALECT)
_STRING = exp.DataType.build("String", dialect=DIALECT)


def _type_node(template: exp.DataType) -> exp.DataType:
    # A fresh node per placeholder, built directly: deep-copying templates dominated compile time.
    return exp.DataType(this=template.this, nested=False, nullable=False)


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


# -- 3/4. which table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    family: str  # rollup | detail | raw
    reason: str


def requirement(metric: Metric, conditions: Sequence[Expr]) -> Requirement:
    """The cheapest family of tables that holds every column this query touches."""
    used: set[str] = set()
    aggs: list[Agg] = []
    props: list[Prop] = []

    def scan(node: Expr, as_argument: bool) -> None:
        # A column that is an aggregate's argument (sum(value), uniq(user_id)) is judged with
        # its aggregate; every other column (filters, -If conditions, groups) must be a key.
        if isinstance(node, Agg):
            aggs.append(node)
            if node.arg is not None:
                scan(node.arg, True)
            if node.cond is not None:
                scan(node.cond, False)
        elif isinstance(node, Prop):
            props.append(node)
        elif isinstance(node, Col):
            if not as_argument:
                used.add(node.name)
        else:
            for child in children(node):
                scan(child, as_argument)

    roots = [o.expr for o in metric.outputs] + list(conditions) + list(metric.group_by)
    if metric.where is not None:
        roots.append(metric.where)
    for root in roots:
        scan(root, False)
    if props:
        return Requirement("raw", f"props['{props[0].key}'] is only in raw events")
    families = set()
    for agg in aggs:
        if (
            agg.name == "count"
            or agg.name in ("sum", "avg")
            and agg.arg == Col("value")
            or agg.name == "uniq"
            and agg.arg == Col("user_id")
        ):
            families.add("rollup")
        elif (
            agg.name == "quantile"
            and agg.arg == Col("value")
            or agg.name == "topK"
            and agg.arg == Col("path")
            and int(agg.param or 0) <= 50
        ):
            families.add("detail")
        else:
            return Requirement("raw", f"{agg.name} over this argument needs raw events")
    if len(families) > 1:
        return Requirement("raw", "quantile/topK mixed with count/sum/uniq needs raw events")
    family = families.pop() if families else "rollup"
    keys = ROLLUP_KEYS if family == "rollup" else DETAIL_KEYS
    extra = sorted(used - keys)
    if extra:
        return Requirement("raw", f"{extra[0]} is not a key of the {family} tables")
    return Requirement(family, "")


def choose_table(req: Requirement, step: int, oldest: int, now: int) -> tuple[str, int, str]:
    """(table, grain, reason): the coarsest table that can answer buckets of `step` seconds
    reaching back to `oldest`; raw events otherwise."""
    if req.family == "raw":
        return "events", 1, req.reason
    tables = ROLLUP_TABLES if req.family == "rollup" else DETAIL_TABLES
    reason = ""
    for table, grain, retention in tables:
        if step % grain:
            reason = reason or f"{table} is coarser than {step}s buckets"
            continue
        if retention is not None and oldest < now - retention:
            reason = f"{table} keeps {retention}s; the range starts earlier"
            continue
        return table, grain, ""
    return "events", 1, reason or "no rollup fits"


def auto_step(span: int, req: Requirement, time_from: int, now: int) -> int:
    """The finest bucket width giving ≤ AUTO_MAX_POINTS that a rollup can serve (if any)."""
    fitting = [s for s in AUTO_STEPS if math.ceil(span / s) <= AUTO_MAX_POINTS] or [AUTO_STEPS[-1]]
    if req.family != "raw":
        for step in fitting:
            start = time_from // step * step
            if choose_table(req, step, start, now)[0] != "events":
                return step
    return fitting[0]


# -- 5. SQL --------------------------------------------------------------------------------


class Params:
    """Allocates bound parameters: every user value becomes `{pN:Type}`."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._count = 0

    def bind(
        self, value: Any, type_: exp.DataType = _STRING, name: str | None = None
    ) -> exp.Placeholder:
        if name is None:
            name = f"p{self._count}"
            self._count += 1
        self.values[name] = value
        return exp.Placeholder(this=exp.Var(this=name), kind=_type_node(type_))

    def named(self, name: str, value: int) -> exp.Placeholder:
        return self.bind(value, _UINT32, name)


def fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def num(value: int | float) -> exp.Literal:
    return exp.Literal.number(repr(value) if isinstance(value, float) else str(value))


def paren(node: exp.Expression) -> exp.Expression:
    return (
        node
        if isinstance(node, exp.Column | exp.Literal | exp.Placeholder | exp.Anonymous | exp.Paren)
        else exp.Paren(this=node)
    )


_BINARY_SQL = {
    "+": exp.Add,
    "-": exp.Sub,
    "*": exp.Mul,
    "/": exp.Div,
    "%": exp.Mod,
    "=": exp.EQ,
    "!=": exp.NEQ,
    "<": exp.LT,
    "<=": exp.LTE,
    ">": exp.GT,
    ">=": exp.GTE,
    "and": exp.And,
    "or": exp.Or,
    "like": exp.Like,
    "ilike": exp.ILike,
}


class Renderer:
    """Model expressions → sqlglot nodes for one table family (`rollup`, `detail`, `raw`)."""

    def __init__(self, family: str, params: Params):
        self.family = family
        self.params = params

    def expr(self, node: Expr) -> exp.Expression:
        if isinstance(node, Lit):
            value = node.value
            if isinstance(value, bool):
                return exp.true() if value else exp.false()
            if isinstance(value, str):
                return self.params.bind(value)
            return num(value)
        if isinstance(node, Col):
            return exp.column(node.name)
        if isinstance(node, Prop):
            return exp.Bracket(this=exp.column("props"), expressions=[self.params.bind(node.key)])
        if isinstance(node, Unary):
            inner = paren(self.expr(node.arg))
            return exp.Not(this=inner) if node.op == "not" else exp.Neg(this=inner)
        if isinstance(node, Binary):
            op = node.op.removeprefix("not_")
            built = _BINARY_SQL[op](
                this=paren(self.expr(node.left)), expression=paren(self.expr(node.right))
            )
            return exp.Not(this=exp.Paren(this=built)) if node.op.startswith("not_") else built
        if isinstance(node, InList):
            built = exp.In(
                this=paren(self.expr(node.arg)), expressions=[self.expr(v) for v in node.values]
            )
            return exp.Not(this=exp.Paren(this=built)) if node.negated else built
        if isinstance(node, Func):
            return fn(node.name, *(self.expr(a) for a in node.args))
        if isinstance(node, Agg):
            return self.aggregate(node)
        raise MetricError("invalid_expression", f"cannot compile {type(node).__name__}")

    def aggregate(self, agg: Agg) -> exp.Expression:
        cond = self.expr(agg.cond) if agg.cond is not None else None

        def call(name: str, *args: exp.Expression) -> exp.Expression:
            return fn(name + "If", *args, cond) if cond is not None else fn(name, *args)

        def param_call(name: str, param: exp.Expression, *args: exp.Expression) -> exp.Expression:
            if cond is not None:
                return exp.CombinedParameterizedAgg(
                    this=name + "If", expressions=[param], params=[*args, cond]
                )
            return exp.ParameterizedAgg(this=name, expressions=[param], params=list(args))

        if self.family == "raw":
            arg = self.expr(agg.arg) if agg.arg is not None else None
            if agg.name == "count":
                return fn("countIf", cond) if cond is not None else fn("count")
            if agg.name in ("sum", "avg"):
                return call(agg.name, arg)
            if agg.name == "uniq":
                return call("uniqCombined", arg)
            if agg.name == "quantile":
                return param_call("quantileTDigest", num(float(agg.param)), arg)
            return exp.ParameterizedAgg(
                this="topK", expressions=[num(int(agg.param))], params=[arg]
            )
        if agg.name == "count":
            return call("sum", exp.column("events"))
        if agg.name == "sum":
            return call("sum", exp.column("value_sum"))
        if agg.name == "avg":
            return exp.Div(
                this=call("sum", exp.column("value_sum")),
                expression=call("sum", exp.column("events")),
            )
        if agg.name == "uniq":
            return call("uniqCombinedMerge", exp.column("users"))
        if agg.name == "quantile":
            return param_call(
                "quantileTDigestMerge", num(float(agg.param)), exp.column("value_quantiles")
            )
        # The detail tables keep topK(50) states: merge with the same parameter, then cut to n.
        merged = exp.ParameterizedAgg(
            this="topKMerge", expressions=[num(50)], params=[exp.column("top_paths")]
        )
        return fn("arraySlice", merged, num(1), num(int(agg.param)))


def table_node(database: str, table: str) -> exp.Table:
    return exp.table_(table, db=database)


def bucket_start(table: str, grain: int, step: int) -> exp.Expression:
    """UInt32 epoch seconds of the bucket start, aligned to multiples of `step` since epoch."""
    source = exp.column("ts" if table == "events" else "bucket")
    seconds = fn("toUInt32", source)
    if step == grain:
        return seconds
    return exp.Mul(this=fn("intDiv", seconds, num(step)), expression=num(step))


def time_filter(table: str, lower: exp.Expression, upper: exp.Expression) -> exp.Expression:
    column = exp.column("ts" if table == "events" else "bucket")
    return exp.And(
        this=exp.GTE(this=column, expression=fn("toDateTime", lower, exp.Literal.string("UTC"))),
        expression=exp.LT(
            this=column.copy(), expression=fn("toDateTime", upper, exp.Literal.string("UTC"))
        ),
    )


def conjunction(parts: Sequence[exp.Expression]) -> exp.Expression | None:
    result = None
    for part in parts:
        result = part if result is None else exp.And(this=result, expression=paren(part))
    return result


def dimension_sql(renderer: Renderer, dim: Dimension) -> exp.Expression:
    return renderer.expr(dim)


def with_fill(step: int, lower: exp.Expression, upper: exp.Expression) -> exp.Ordered:
    return exp.Ordered(
        this=exp.column("t"),
        with_fill=exp.WithFill(from_=lower, to=upper, step=num(step)),
    )


@dataclass
class SeriesSpec:
    """One series of a (possibly compared) query."""

    label: str | None
    conditions: list[Expr]
    lower: str  # parameter names
    upper: str
    shift: int = 0


@dataclass
class Context:
    metric: Metric
    database: str
    table: str
    grain: int
    step: int
    window: int
    family: str
    params: Params = field(default_factory=Params)

    @property
    def renderer(self) -> Renderer:
        return Renderer("raw" if self.table == "events" else self.family, self.params)


def build_series(ctx: Context, spec: SeriesSpec) -> exp.Select:
    """SELECT [series,] t, dims…, outputs… FROM <table> WHERE time ∧ metric ∧ filters GROUP BY t, dims."""
    renderer = ctx.renderer
    base = bucket_start(ctx.table, ctx.grain, ctx.step)
    lower = exp.Placeholder(this=exp.Var(this=spec.lower), kind=_type_node(_UINT32))
    upper = exp.Placeholder(this=exp.Var(this=spec.upper), kind=_type_node(_UINT32))
    having = None
    if ctx.window > ctx.step:
        # Sliding window: each bucket's row counts toward every point whose window covers it.
        start = base if isinstance(base, exp.Anonymous) else fn("toUInt32", base)
        t_expr: exp.Expression = fn(
            "arrayJoin",
            fn(
                "range",
                start,
                exp.Add(this=start.copy(), expression=num(ctx.window)),
                num(ctx.step),
            ),
        )
        read_name = f"{spec.lower}_read"
        ctx.params.named(read_name, max(ctx.params.values[spec.lower] - (ctx.window - ctx.step), 0))
        read_lower = exp.Placeholder(this=exp.Var(this=read_name), kind=_type_node(_UINT32))
        having = exp.And(
            this=exp.GTE(this=exp.column("t"), expression=lower.copy()),
            expression=exp.LT(this=exp.column("t"), expression=upper.copy()),
        )
    else:
        t_expr = fn("toUInt32", base) if not isinstance(base, exp.Anonymous) else base
        read_lower = lower
    if spec.shift:
        t_expr = fn("toUInt32", exp.Add(this=paren(t_expr), expression=num(spec.shift)))
    columns: list[exp.Expression] = []
    if spec.label is not None:
        columns.append(exp.alias_(exp.Literal.string(spec.label), "series"))
    columns.append(exp.alias_(t_expr, "t"))
    dims = []
    for dim in ctx.metric.group_by:
        name = dimension_name(dim)
        node = dimension_sql(renderer, dim)
        columns.append(node if isinstance(dim, Col) else exp.alias_(node, name, quoted=True))
        dims.append(exp.column(name, quoted=isinstance(dim, Prop)))
    for output in ctx.metric.outputs:
        columns.append(exp.alias_(renderer.expr(output.expr), output.name, quoted=True))
    where_parts = [time_filter(ctx.table, read_lower, upper)]
    if ctx.metric.where is not None:
        where_parts.append(renderer.expr(ctx.metric.where))
    where_parts.extend(renderer.expr(c) for c in spec.conditions)
    select = exp.Select(expressions=columns).from_(table_node(ctx.database, ctx.table))
    select.set("where", exp.Where(this=conjunction(where_parts)))
    select.set("group", exp.Group(expressions=[exp.column("t"), *dims]))
    if having is not None:
        select.set("having", exp.Having(this=having))
    return select


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
    resolved = resolve_metric(metric, group_by)
    conditions = resolve_filters(filters)
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
        ast = _union_outer(branches)
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
        ast = _union_outer(branches)
        order = [exp.Ordered(this=exp.column("series"))]
    for dim in resolved.group_by:
        order.append(
            exp.Ordered(this=exp.column(dimension_name(dim), quoted=isinstance(dim, Prop)))
        )
    fill_lower = exp.Placeholder(this=exp.Var(this="time_from"), kind=_type_node(_UINT32))
    fill_upper = exp.Placeholder(this=exp.Var(this="time_to"), kind=_type_node(_UINT32))
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
    return finish(ast, org_id=org_id, database=database, params=ctx.params, plan=plan)


def _union_outer(branches: list[exp.Select]) -> exp.Select:
    union = exp.union(*branches, distinct=False)
    return exp.Select(expressions=[exp.Star()]).from_(exp.Subquery(this=union))


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
