"""Which table answers a query: the table family a metric needs, then the coarsest table of it.

The planner's third and fourth passes (`requirement`, `choose_table`) and the `auto` bucket width
that depends on them; the tables, grains and retentions themselves are the catalog's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.querybuilder.catalog import DETAIL_TABLES, RAW_TABLE, ROLLUP_TABLES
from app.querybuilder.model import DETAIL_KEYS, ROLLUP_KEYS, Agg, Col, Expr, Metric, Prop
from app.querybuilder.validate import children

DAY = 86_400

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
        return RAW_TABLE, 1, req.reason
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
    return RAW_TABLE, 1, reason or "no rollup fits"


def auto_step(span: int, req: Requirement, time_from: int, now: int) -> int:
    """The finest bucket width giving ≤ AUTO_MAX_POINTS that a rollup can serve (if any)."""
    fitting = [s for s in AUTO_STEPS if math.ceil(span / s) <= AUTO_MAX_POINTS] or [AUTO_STEPS[-1]]
    if req.family != "raw":
        for step in fitting:
            start = time_from // step * step
            if choose_table(req, step, start, now)[0] != RAW_TABLE:
                return step
    return fitting[0]
