"""SQL building: model expressions and a chosen table → sqlglot nodes, values as bound parameters.

The planner's fifth pass (`build_series`) and the pieces the chart queries share with it
(`Renderer`, `time_filter`, `bucket_start`, `with_fill`, …). Nothing here decides a table or
applies the tenant guard: `planner.finish` does that, last, for every compile path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.model import (
    Agg,
    Binary,
    Col,
    Dimension,
    Expr,
    Func,
    InList,
    Lit,
    Metric,
    Prop,
    Unary,
)
from app.querybuilder.validate import dimension_name

DIALECT = "clickhouse"

_UINT32 = exp.DataType.build("UInt32", dialect=DIALECT)
_STRING = exp.DataType.build("String", dialect=DIALECT)


def _type_node(template: exp.DataType) -> exp.DataType:
    # A fresh node per placeholder, built directly: deep-copying templates dominated compile time.
    return exp.DataType(this=template.this, nested=False, nullable=False)


def uint32_placeholder(name: str) -> exp.Placeholder:
    """`{name:UInt32}`: a reference to a parameter the compiler bound (time bounds, steps)."""
    return exp.Placeholder(this=exp.Var(this=name), kind=_type_node(_UINT32))


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
    lower = uint32_placeholder(spec.lower)
    upper = uint32_placeholder(spec.upper)
    having = None
    if ctx.window > ctx.step:
        # Sliding window: each bucket's row counts toward every point whose window covers it.
        # Only the points inside [lower, upper) are generated (the bucket's window clipped to
        # the range): a live read of 6 points over a 300 s window expands each row to at most
        # 6 points, not 300. Both ends stay multiples of the step (bucket starts and the range
        # are aligned), so the points are those of the unclipped range, HAVING kept as a check.
        start = base if isinstance(base, exp.Anonymous) else fn("toUInt32", base)
        t_expr: exp.Expression = fn(
            "arrayJoin",
            fn(
                "range",
                fn("greatest", start, lower.copy()),
                fn("least", exp.Add(this=start.copy(), expression=num(ctx.window)), upper.copy()),
                num(ctx.step),
            ),
        )
        read_name = f"{spec.lower}_read"
        ctx.params.named(read_name, max(ctx.params.values[spec.lower] - (ctx.window - ctx.step), 0))
        read_lower = uint32_placeholder(read_name)
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


def union_all_outer(branches: list[exp.Select]) -> exp.Select:
    """SELECT * FROM (branch UNION ALL branch …): one outer query to order and fill."""
    union = exp.union(*branches, distinct=False)
    return exp.Select(expressions=[exp.Star()]).from_(exp.Subquery(this=union))
