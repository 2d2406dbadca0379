"""Checks on the internal model shared by both input forms (text and JSON form).

The language and form front-ends build `model` nodes; everything here is about whether a
model is a metric we can answer: literal sizes, names, types, where aggregates may appear,
and that every non-aggregated output is grouped. Errors are `MetricError`; the text
front-end passes `locate` so that errors point at the token the user wrote.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from app.querybuilder.errors import MetricError
from app.querybuilder.model import (
    EVENT_COLUMNS,
    RESERVED_NAMES,
    Agg,
    Binary,
    Col,
    Dimension,
    Expr,
    Filter,
    Func,
    InList,
    Lit,
    Metric,
    Output,
    Prop,
    Unary,
)

# Caps: a metric is a few lines a person writes; anything far bigger is a mistake or an attack
# on the compiler (recursion, memory) or on ClickHouse (huge IN lists, giant strings).
MAX_TEXT_LENGTH = 10_000
MAX_DEPTH = 24
MAX_NODES = 2_000
MAX_STRING_LENGTH = 1_000
MAX_NUMBER_TEXT = 40
MAX_ABS_NUMBER = 1e15
MAX_IN_LIST = 1_000
MAX_OUTPUTS = 20
MAX_GROUP_BY = 3
MAX_FILTERS = 50
MAX_TOPK = 1_000

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PROP_KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
# Characters that make text look different from what it is: controls, zero-width, bidi.
_INVISIBLE_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5"
    "\u180b-\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)

Locate = Callable[[Any], dict[str, Any]]


def _no_locate(_node: Any) -> dict[str, Any]:
    return {}


def find_invisible(text: str) -> re.Match[str] | None:
    """The first control, zero-width or bidi character in `text`, if any."""
    return _INVISIBLE_RE.search(text)


def check_string(value: str, locate: dict[str, Any] | None = None) -> str:
    """A user string value: bounded length, no control/invisible characters."""
    where = locate or {}
    if len(value) > MAX_STRING_LENGTH:
        raise MetricError(
            "literal_too_long",
            f"string literal is {len(value)} characters; the limit is {MAX_STRING_LENGTH}",
            **where,
        )
    # Tabs and newlines too: ClickHouse parses parameter values in its escaped text format,
    # where a raw tab/newline is not a valid String (the query would fail with a 500).
    bad = find_invisible(value) or re.search("[\t\n\r]", value)
    if bad:
        raise MetricError(
            "invisible_character",
            f"string literal contains the control/invisible character U+{ord(bad.group()):04X}",
            **where,
        )
    return value


def check_number(value: Any, locate: dict[str, Any] | None = None) -> int | float:
    """A user number: finite, bounded; bools are not numbers here."""
    where = locate or {}
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricError("invalid_literal", f"{value!r} is not a number", **where)
    if isinstance(value, float) and not math.isfinite(value):
        raise MetricError("invalid_literal", "numbers must be finite", **where)
    if abs(value) > MAX_ABS_NUMBER:
        raise MetricError(
            "literal_too_large",
            f"number {value!r} is outside ±{MAX_ABS_NUMBER:g}",
            **where,
        )
    return value


def check_alias(name: str, locate: dict[str, Any] | None = None) -> str:
    """An output column name: an identifier that cannot shadow a column we read."""
    where = locate or {}
    if not NAME_RE.match(name):
        raise MetricError(
            "invalid_name",
            "output names must be identifiers ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)",
            **where,
        )
    if name.lower() in RESERVED_NAMES or name.startswith("_"):
        raise MetricError(
            "reserved_name",
            f"{name!r} is a column name or reserved; choose another output name",
            **where,
        )
    return name


def check_prop_key(key: str, locate: dict[str, Any] | None = None) -> str:
    if not PROP_KEY_RE.match(key):
        raise MetricError(
            "invalid_prop_key",
            "props keys are 1-64 characters of letters, digits and _ . : -",
            **(locate or {}),
        )
    return key


def column(name: str, locate: dict[str, Any] | None = None) -> Col:
    """A column reference, rejecting org_id (the tenant is never the user's to choose)."""
    where = locate or {}
    if name.lower() == "org_id":
        raise MetricError(
            "org_id_forbidden",
            "org_id cannot appear in a metric: the organisation comes from your credential",
            **where,
        )
    if name not in EVENT_COLUMNS:
        known = ", ".join(sorted(EVENT_COLUMNS))
        raise MetricError(
            "unknown_column",
            f"unknown column {name!r}; columns are {known} and props['key']",
            **where,
        )
    return Col(name)


def parse_dimension(text: str, *, field: str | None = None) -> Dimension:
    """`country` → Col, `props.plan` or `props['plan']` → Prop (for forms and drilldowns)."""
    where = {"field": field} if field else {}
    if not isinstance(text, str) or len(text) > 80:
        raise MetricError(
            "invalid_dimension", "a dimension is a column name or props.<key>", **where
        )
    match = re.fullmatch(r"props(?:\.(.+)|\['(.+)'\])", text)
    if match:
        return Prop(check_prop_key(match.group(1) or match.group(2), where))
    return column(text, where)


def dimension_name(dim: Dimension) -> str:
    """The output column name of a group-by dimension: columns keep their names."""
    if isinstance(dim, Col):
        return dim.name
    return "prop_" + re.sub(r"[^A-Za-z0-9_]", "_", dim.key)


def filter_to_expr(flt: Filter, *, field: str = "filters") -> Expr:
    """A drilldown/form filter as a model expression, validated like metric text."""
    dim = parse_dimension(flt.dimension, field=field)
    where = {"field": field}
    kind = "string" if isinstance(dim, Prop) else EVENT_COLUMNS[dim.name]

    def lit(value: Any) -> Lit:
        if kind == "string":
            if not isinstance(value, str):
                raise MetricError(
                    "type_mismatch",
                    f"{flt.dimension} compares with strings, not {value!r}",
                    **where,
                )
            return Lit(check_string(value, where))
        return Lit(check_number(value, where))

    if flt.op in ("in", "not_in"):
        if not isinstance(flt.value, list) or not flt.value:
            raise MetricError("invalid_filter", f"{flt.op} needs a non-empty list", **where)
        if len(flt.value) > MAX_IN_LIST:
            raise MetricError(
                "literal_too_large", f"IN lists hold at most {MAX_IN_LIST} values", **where
            )
        return InList(dim, tuple(lit(v) for v in flt.value), negated=flt.op == "not_in")
    if isinstance(flt.value, list):
        raise MetricError("invalid_filter", f"{flt.op} takes one value, not a list", **where)
    if flt.op in ("like", "not_like") and kind != "string":
        raise MetricError("type_mismatch", "LIKE applies to string columns", **where)
    if flt.op in ("<", "<=", ">", ">=") and kind != "number":
        raise MetricError("type_mismatch", f"{flt.op} applies to numeric columns", **where)
    return Binary(flt.op, dim, lit(flt.value))


def and_all(parts: list[Expr]) -> Expr | None:
    """The conjunction of `parts` (None when empty)."""
    result: Expr | None = None
    for part in parts:
        result = part if result is None else Binary("and", result, part)
    return result


# -- walking and checking the model --------------------------------------------------------


def children(node: Expr) -> Iterator[Expr]:
    """The direct sub-expressions of a model node."""
    if isinstance(node, Unary):
        yield node.arg
    elif isinstance(node, Binary):
        yield node.left
        yield node.right
    elif isinstance(node, InList):
        yield node.arg
        yield from node.values
    elif isinstance(node, Func):
        yield from node.args
    elif isinstance(node, Agg):
        if node.arg is not None:
            yield node.arg
        if node.cond is not None:
            yield node.cond


def walk(node: Expr) -> Iterator[Expr]:
    """`node` and all its descendants, depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(children(current))


def has_aggregate(node: Expr) -> bool:
    return any(isinstance(n, Agg) for n in walk(node))


def columns_outside_aggregates(node: Expr) -> Iterator[Col | Prop]:
    """Column references not inside an aggregate (these must be grouped)."""
    if isinstance(node, Col | Prop):
        yield node
    elif not isinstance(node, Agg):
        for child in children(node):
            yield from columns_outside_aggregates(child)


class _Checker:
    """Type inference plus placement rules; one instance per metric."""

    def __init__(self, locate: Locate):
        self.locate = locate

    def fail(self, node: Any, code: str, message: str) -> MetricError:
        return MetricError(code, message, **self.locate(node))

    def kind(self, node: Expr, *, in_agg: bool) -> str:
        if isinstance(node, Lit):
            if isinstance(node.value, bool):
                return "bool"
            return "string" if isinstance(node.value, str) else "number"
        if isinstance(node, Col):
            return EVENT_COLUMNS[node.name]
        if isinstance(node, Prop):
            return "string"
        if isinstance(node, Unary):
            inner = self.kind(node.arg, in_agg=in_agg)
            want = "bool" if node.op == "not" else "number"
            if inner != want:
                raise self.fail(node, "type_mismatch", f"{node.op.upper()} needs a {want}")
            return want
        if isinstance(node, Binary):
            left = self.kind(node.left, in_agg=in_agg)
            right = self.kind(node.right, in_agg=in_agg)
            if node.op in ("and", "or"):
                if left != "bool" or right != "bool":
                    raise self.fail(node, "type_mismatch", f"{node.op.upper()} joins conditions")
                return "bool"
            if node.op in ("like", "not_like", "ilike", "not_ilike"):
                if left != "string" or right != "string":
                    raise self.fail(node, "type_mismatch", "LIKE compares strings")
                return "bool"
            if node.op in ("=", "!=", "<", "<=", ">", ">="):
                if left != right or left == "array":
                    raise self.fail(
                        node, "type_mismatch", f"cannot compare a {left} with a {right}"
                    )
                return "bool"
            if left != "number" or right != "number":
                raise self.fail(node, "type_mismatch", f"{node.op} needs numbers")
            return "number"
        if isinstance(node, InList):
            arg = self.kind(node.arg, in_agg=in_agg)
            for value in node.values:
                if self.kind(value, in_agg=in_agg) != arg:
                    raise self.fail(value, "type_mismatch", f"IN list values must be {arg}s")
            return "bool"
        if isinstance(node, Func):
            kinds = [self.kind(a, in_agg=in_agg) for a in node.args]
            if node.name == "if":
                if len(kinds) != 3 or kinds[0] != "bool" or kinds[1] != kinds[2]:
                    raise self.fail(
                        node,
                        "invalid_arguments",
                        "if(condition, a, b) needs a condition and two values of one type",
                    )
                return kinds[1]
            if node.name == "nullIf":
                if len(kinds) != 2 or kinds[0] != kinds[1]:
                    raise self.fail(
                        node, "invalid_arguments", "nullIf(a, b) needs two values of one type"
                    )
                return kinds[0]
            if node.name == "round":
                if not 1 <= len(kinds) <= 2 or any(k != "number" for k in kinds):
                    raise self.fail(node, "invalid_arguments", "round(x[, digits]) needs numbers")
                if len(node.args) == 2 and not (
                    isinstance(node.args[1], Lit)
                    and isinstance(node.args[1].value, int)
                    and 0 <= node.args[1].value <= 12
                ):
                    raise self.fail(
                        node, "invalid_arguments", "round's digits must be an integer 0-12"
                    )
                return "number"
            # coalesce
            if len(kinds) < 2 or len(set(kinds)) != 1:
                raise self.fail(node, "invalid_arguments", "coalesce needs 2+ values of one type")
            return kinds[0]
        if isinstance(node, Agg):
            if in_agg:
                raise self.fail(node, "nested_aggregate", "aggregates cannot be nested")
            if node.cond is not None and self.kind(node.cond, in_agg=True) != "bool":
                raise self.fail(
                    node.cond, "type_mismatch", f"the {node.name}If condition must be a condition"
                )
            arg = None if node.arg is None else self.kind(node.arg, in_agg=True)
            if node.name == "count":
                return "number"
            if node.name in ("sum", "avg", "quantile"):
                if arg != "number":
                    raise self.fail(node, "type_mismatch", f"{node.name} needs a numeric argument")
                return "number"
            if node.name == "uniq":
                if arg not in ("string", "number"):
                    raise self.fail(node, "type_mismatch", "uniq needs a column value")
                return "number"
            if arg not in ("string", "number"):
                raise self.fail(node, "type_mismatch", "topK needs a column value")
            return "array"
        raise self.fail(node, "invalid_expression", f"unsupported expression {type(node).__name__}")


def check_metric(metric: Metric, locate: Locate | None = None) -> Metric:
    """Raise MetricError unless `metric` is answerable; return it unchanged."""
    checker = _Checker(locate or _no_locate)
    fail = checker.fail
    if not metric.outputs:
        raise MetricError("no_outputs", "a metric needs at least one output column")
    if len(metric.outputs) > MAX_OUTPUTS:
        raise MetricError("too_many_outputs", f"at most {MAX_OUTPUTS} output columns")
    if len(metric.group_by) > MAX_GROUP_BY:
        raise MetricError("too_many_group_by", f"at most {MAX_GROUP_BY} GROUP BY dimensions")
    grouped = set(metric.group_by)
    if len(grouped) != len(metric.group_by):
        raise MetricError("duplicate_group_by", "a dimension is grouped twice")
    for dim in metric.group_by:
        if isinstance(dim, Col) and EVENT_COLUMNS[dim.name] != "string":
            raise fail(dim, "invalid_group_by", f"cannot group by the numeric column {dim.name}")
    names = set()
    group_names = {dimension_name(d) for d in metric.group_by}
    for output in metric.outputs:
        check_alias(output.name, locate(output) if locate else None)
        if output.name in names or output.name in group_names:
            raise fail(output, "duplicate_name", f"two output columns are named {output.name!r}")
        names.add(output.name)
        if not has_aggregate(output.expr):
            raise fail(
                output.expr,
                "not_aggregated",
                "every output must aggregate (count, sum, avg, uniq, quantile, topK); "
                "grouped columns are output automatically",
            )
        for ref in columns_outside_aggregates(output.expr):
            if ref not in grouped:
                raise fail(
                    ref,
                    "ungrouped_column",
                    "a column used outside an aggregate must be in GROUP BY",
                )
        kind = checker.kind(output.expr, in_agg=False)
        if kind == "array" and not isinstance(output.expr, Agg):
            raise fail(
                output.expr, "type_mismatch", "topK gives a list; it cannot be computed with"
            )
    if metric.where is not None:
        if has_aggregate(metric.where):
            agg = next(n for n in walk(metric.where) if isinstance(n, Agg))
            raise fail(agg, "aggregate_in_where", "aggregates are not allowed in WHERE")
        if checker.kind(metric.where, in_agg=False) != "bool":
            raise fail(metric.where, "type_mismatch", "WHERE needs a condition")
    nodes = sum(1 for o in metric.outputs for _ in walk(o.expr))
    nodes += sum(1 for _ in walk(metric.where)) if metric.where is not None else 0
    if nodes > MAX_NODES:
        raise MetricError("too_complex", f"the metric has {nodes} terms; the limit is {MAX_NODES}")
    return metric


def check_depth(node: Expr, limit: int = MAX_DEPTH) -> None:
    """Reject expression trees deeper than `limit` (form input has no token-level check)."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            raise MetricError("too_deep", f"expressions may nest at most {limit} levels")
        stack.extend((child, depth + 1) for child in children(current))


def output(name: str, expr: Expr) -> Output:
    return Output(name, expr)
