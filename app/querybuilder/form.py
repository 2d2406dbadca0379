"""The JSON form the UI's form builder sends → the same Metric model as metric text.

An output is an aggregate (`agg` over `column`, an optional `param` — quantile's p or topK's n
— and optional per-aggregate filters, compiled to the -If form) or a formula combining earlier
outputs and numbers with + - * /; `filters` and `group_by` are as in text. The result goes
through the same `check_metric` as text, so both forms accept and reject the same things
(docs/metric-language.md, "The form").
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from app.querybuilder.errors import MetricError
from app.querybuilder.model import Agg, Binary, Expr, Filter, Func, Lit, Metric, Output
from app.querybuilder.validate import (
    MAX_DEPTH,
    MAX_OUTPUTS,
    and_all,
    check_alias,
    check_depth,
    check_metric,
    check_number,
    column,
    filter_to_expr,
    parse_dimension,
)


class FormFormula(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`left op right`; operands are names of earlier outputs, numbers or nested formulas."""

    op: Literal["+", "-", "*", "/"]
    left: str | int | float | FormFormula
    right: str | int | float | FormFormula


class FormOutput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    agg: Literal["count", "sum", "avg", "uniq", "quantile", "topK"] | None = None
    column: str | None = None
    param: int | float | None = None
    where: list[Filter] = []
    formula: FormFormula | None = None


class FormMetric(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    outputs: list[FormOutput]
    filters: list[Filter] = []
    group_by: list[str] = []


def parse_form(form: FormMetric | dict[str, Any]) -> Metric:
    """Validate a form (decoded JSON or FormMetric) and convert it to a checked Metric."""
    if not isinstance(form, FormMetric):
        try:
            form = msgspec.convert(form, FormMetric)
        except msgspec.ValidationError as exc:
            raise MetricError("invalid_form", str(exc), field="form") from None
    if len(form.outputs) > MAX_OUTPUTS:
        raise MetricError("too_many_outputs", f"at most {MAX_OUTPUTS} outputs", field="outputs")
    defined: dict[str, Expr] = {}
    outputs = []
    for index, item in enumerate(form.outputs):
        field = f"outputs[{index}]"
        try:
            check_alias(item.name)
        except MetricError as exc:
            raise MetricError(exc.code, exc.message, field=f"{field}.name") from None
        if item.formula is not None:
            if item.agg is not None:
                raise MetricError(
                    "invalid_form", "an output has agg or formula, not both", field=field
                )
            expr = _formula(item.formula, defined, field, depth=1)
        elif item.agg is not None:
            expr = _aggregate(item, field)
        else:
            raise MetricError("invalid_form", "an output needs agg or formula", field=field)
        check_depth(expr)
        defined[item.name] = expr
        outputs.append(Output(item.name, expr))
    where = and_all([filter_to_expr(f, field="filters") for f in form.filters])
    group_by = tuple(parse_dimension(d, field="group_by") for d in form.group_by)
    return check_metric(Metric(outputs=tuple(outputs), where=where, group_by=group_by))


def _aggregate(item: FormOutput, field: str) -> Expr:
    cond = and_all([filter_to_expr(f, field=f"{field}.where") for f in item.where])
    if item.agg == "count":
        if item.column is not None:
            raise MetricError("invalid_form", "count takes no column", field=f"{field}.column")
        return Agg("count", cond=cond)
    if item.column is None:
        raise MetricError("invalid_form", f"{item.agg} needs a column", field=f"{field}.column")
    try:
        arg = column(item.column)
    except MetricError as exc:
        raise MetricError(exc.code, exc.message, field=f"{field}.column") from None
    param = None
    if item.agg == "quantile":
        if item.param is None or not 0 <= check_number(item.param) <= 1:
            raise MetricError(
                "invalid_arguments", "quantile needs param p in [0, 1]", field=f"{field}.param"
            )
        param = float(item.param)
    elif item.agg == "topK":
        if (
            not isinstance(item.param, int)
            or isinstance(item.param, bool)
            or not 1 <= item.param <= 1000
        ):
            raise MetricError(
                "invalid_arguments", "topK needs param n, an integer 1-1000", field=f"{field}.param"
            )
        if cond is not None:
            raise MetricError(
                "invalid_arguments", "topK takes no per-aggregate filter", field=f"{field}.where"
            )
        param = item.param
    elif item.param is not None:
        raise MetricError("invalid_arguments", f"{item.agg} takes no param", field=f"{field}.param")
    return Agg(item.agg, arg=arg, cond=cond, param=param)


def _formula(
    formula: FormFormula | str | int | float, defined: dict[str, Expr], field: str, depth: int
) -> Expr:
    if depth > MAX_DEPTH:
        raise MetricError("too_deep", f"formulas may nest at most {MAX_DEPTH} levels", field=field)
    if isinstance(formula, str):
        if formula not in defined:
            raise MetricError(
                "unknown_output", f"{formula!r} is not an earlier output", field=field
            )
        return defined[formula]
    if isinstance(formula, int | float) and not isinstance(formula, bool):
        return Lit(check_number(formula, {"field": field}))
    if isinstance(formula, FormFormula):
        left = _formula(formula.left, defined, field, depth + 1)
        right = _formula(formula.right, defined, field, depth + 1)
        if formula.op == "/":
            # A ratio of counts is undefined, not infinite, when the denominator is 0.
            right = Func("nullIf", (right, Lit(0)))
        return Binary(formula.op, left, right)
    raise MetricError(
        "invalid_form", "a formula operand is a name, a number or a formula", field=field
    )
