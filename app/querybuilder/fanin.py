"""Fan-in live reads: the same live shapes of many orgs answered by ONE guarded statement.

Most live keys are shapes many orgs share (the built-in metrics; any metric text two orgs both
watch) and differ only by their org. `compile_fan_in_batch` takes the unguarded SELECT of a
batch of shapes (`batch.build_live_select`: `__k` per shape), `compile_fan_in_window` that of
one windowed shape (`planner.plan_metric`); both make `org_id AS __org` the first output and
the first GROUP BY, ORDER BY and LIMIT BY key, then `planner.finish_fan_in` isolates the read
with `has({org_ids:Array(UInt32)}, org_id)` and verifies it (guard.FANIN_POLICY).

Why no org's value reaches another org's key: every aggregate is computed per `__org` group
(the verifier refuses a statement not grouped by it first), and `FanInBatch.split` hands a row
only to the key of the org its `__org` names. Why an org's expression is never the reason
another org's read fails: only total shapes fan in (`total_live_query`: every node on the
allow-list of operations that cannot raise on any value), and a statement that fails anyway is
read again per org by the poller. docs/push.md, "Fan-in".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from sqlglot import exp

from app.querybuilder.batch import (
    BATCH_TABLE,
    BatchMember,
    LiveQuery,
    build_live_select,
    records_as_dicts,
)
from app.querybuilder.errors import MetricError
from app.querybuilder.guard import ORG_GROUP, ORG_PARAM, check_org_ids
from app.querybuilder.model import FanInQuery, Plan
from app.querybuilder.planner import RESULT_LIMIT, check_range, finish_fan_in, plan_metric
from app.querybuilder.sqlbuild import Params, Renderer, num

#: Functions that return a value for every input (no division by zero, parse or range error);
#: a shape using anything else is read per org. Lower-case; combinators included by name.
TOTAL_FUNCTIONS = frozenset(
    {
        "count",
        "countif",
        "sum",
        "sumif",
        "avg",
        "avgif",
        "min",
        "max",
        "minif",
        "maxif",
        "uniqcombinedmerge",
        "uniqcombinedmergeif",
        "quantiletdigestmerge",
        "quantiletdigestmergeif",
        "if",
        "nullif",
        "coalesce",
        "round",
        "greatest",
        "least",
        "not",
    }
)
# Operators and leaves that cannot raise on a value (ClickHouse's `/` is a float division:
# x / 0 is inf or nan, never an error; `%` and intDiv can raise and are not here).
_TOTAL_NODES = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Placeholder,
    exp.Var,
    exp.DataType,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.In,
    exp.Is,
    exp.Null,
    exp.Boolean,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
    exp.Tuple,
    exp.Array,
    exp.Bracket,
    exp.Like,
    exp.ILike,
)


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous | exp.CombinedAggFunc | exp.AnonymousAggFunc):
        return str(node.this).lower()
    return type(node).__name__.lower()


def total_expression(node: exp.Expression) -> bool:
    """Whether evaluating `node` on any row can never raise (allow-list, fails closed)."""
    for part in node.walk():
        if isinstance(part, exp.Func) and not isinstance(part, _TOTAL_NODES):
            if _function_name(part) not in TOTAL_FUNCTIONS:
                return False
        elif not isinstance(part, _TOTAL_NODES):
            return False
    return True


def total_live_query(query: LiveQuery) -> bool:
    """Whether every expression `query` evaluates on a row (outputs, its WHERE, the filters)
    is `total_expression`: the condition for reading it together with other orgs."""
    renderer = Renderer("rollup", Params())
    nodes = [renderer.expr(o.expr) for o in query.metric.outputs]
    if query.metric.where is not None:
        nodes.append(renderer.expr(query.metric.where))
    nodes.extend(renderer.expr(c) for c in query.conditions)
    return all(total_expression(n) for n in nodes)


def fan_in_window_eligible(query: LiveQuery | None, plan: Plan) -> bool:
    """A windowed live key (e.g. active users over 5 minutes) that `compile_fan_in_window` can
    read for many orgs: 1-second rollup, no comparison, no group-by, total."""
    return (
        query is not None
        and plan.table == BATCH_TABLE
        and plan.granularity_s == 1
        and plan.window_s > 0
        and not plan.comparison
        and not query.metric.group_by
        and total_live_query(query)
    )


@dataclass(frozen=True)
class FanInBatch:
    """A compiled fan-in statement and how to split its rows into (org, shape) results."""

    compiled: FanInQuery
    members: tuple[BatchMember, ...]  # one per shape, in the order given
    keyed: bool  # rows carry `__k` (a batch of shapes) or not (one windowed shape)
    window_s: int
    time_from: int
    time_to: int

    def bind(self, time_from: int, time_to: int, org_ids: Iterable[int]) -> FanInBatch:
        """The same statement over [time_from, time_to) for `org_ids` (its text depends on
        neither: both are bound parameters, so it is compiled once per set of shapes)."""
        check_range(time_from, time_to)
        orgs = check_org_ids(tuple(sorted(set(org_ids))))
        params = {
            **self.compiled.params,
            "time_from": int(time_from),
            "time_to": int(time_to),
            "org_ids": list(orgs),
        }
        if "time_from_read" in params:
            params["time_from_read"] = max(int(time_from) - (self.window_s - 1), 0)
        plan = msgspec.structs.replace(
            self.compiled.plan, time_from=int(time_from), time_to=int(time_to)
        )
        compiled = msgspec.structs.replace(self.compiled, params=params, org_ids=orgs, plan=plan)
        return replace(self, compiled=compiled, time_from=int(time_from), time_to=int(time_to))

    def split_records(
        self,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        wanted: Iterable[tuple[int, int]],
    ) -> dict[tuple[int, int], list[tuple[Any, ...]]]:
        """The rows → {(org, shape index): what that org's key's own statement returns}, for
        the `wanted` pairs only, each row a record (a tuple in its member's `names` order); a
        row goes to the pair of the org its `__org` names."""
        index = {name: i for i, name in enumerate(columns)}
        ocol = index[ORG_GROUP]
        kcol = index["__k"] if self.keyed else None
        dim_column = "__d_{}" if self.keyed else "{}"
        out: dict[tuple[int, int], list[tuple[Any, ...]]] = {pair: [] for pair in wanted}
        # One itemgetter per shape (tens of thousands of rows a round at the seed's scale: no
        # per-row loop over the columns, no dict per row).
        getters = [member.getter(index, dim_column) for member in self.members]
        get = out.get
        for row in rows:
            k = int(row[kcol]) - 1 if kcol is not None else 0
            target = get((int(row[ocol]), k))
            if target is not None:  # else an org/shape pair no key of this read asked for
                target.append(getters[k](row))
        for (org, k), got in out.items():
            out[(org, k)] = self.members[k].own_records(
                got, types, index, self.time_from, self.time_to, dim_column
            )
        return out

    def split(
        self,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        wanted: Iterable[tuple[int, int]],
    ) -> dict[tuple[int, int], list[dict[str, Any]]]:
        """`split_records` as row dicts (what each org's key's own statement's `dicts()`
        returns)."""
        return {
            pair: records_as_dicts(self.members[pair[1]].names, records)
            for pair, records in self.split_records(columns, types, rows, wanted).items()
        }


def _group_by_org(select: exp.Select, by: Sequence[str]) -> None:
    """`org_id AS __org` first in the outputs, GROUP BY and ORDER BY; LIMIT n BY __org, *by."""
    select.set("expressions", [exp.alias_(exp.column(ORG_PARAM), ORG_GROUP), *select.expressions])
    group = select.args["group"]
    group.set("expressions", [exp.column(ORG_GROUP), *group.expressions])
    order = select.args["order"]
    order.set("expressions", [exp.Ordered(this=exp.column(ORG_GROUP)), *order.expressions])
    keys = [exp.column(ORG_GROUP), *(exp.column(name) for name in by)]
    select.set("limit", exp.Limit(expression=num(RESULT_LIMIT), expressions=keys))


def compile_fan_in_batch(
    queries: Sequence[LiveQuery],
    *,
    org_ids: Iterable[int],
    database: str,
    time_from: int,
    time_to: int,
) -> FanInBatch:
    """Live `queries` (each `batch.batchable` and `total_live_query`) for every org of
    `org_ids` over [time_from, time_to), as one guarded statement; see the module docstring."""
    for query in queries:
        if not total_live_query(query):
            raise MetricError("invalid_batch", "only total shapes are read for many orgs")
    orgs = check_org_ids(tuple(sorted(set(org_ids))))
    select, params, members, plan = build_live_select(queries, database, time_from, time_to)
    _group_by_org(select, ["__k"])
    plan = msgspec.structs.replace(plan, kind="live_fan_in", columns=(ORG_GROUP, *plan.columns))
    compiled = finish_fan_in(select, org_ids=orgs, database=database, params=params, plan=plan)
    return FanInBatch(compiled, members, True, 0, int(time_from), int(time_to))


def compile_fan_in_window(
    query: LiveQuery,
    window_s: int,
    *,
    org_ids: Iterable[int],
    database: str,
    time_from: int,
    time_to: int,
) -> FanInBatch:
    """One windowed live shape (`fan_in_window_eligible`) for every org of `org_ids`."""
    orgs = check_org_ids(tuple(sorted(set(org_ids))))
    select, params, plan = plan_metric(
        query.metric,
        database=database,
        time_from=time_from,
        time_to=time_to,
        granularity="1s",
        window_seconds=window_s,
        conditions=query.conditions,
    )
    if not fan_in_window_eligible(query, plan):
        raise MetricError("invalid_batch", "this windowed shape cannot be read for many orgs")
    _group_by_org(select, [])
    outputs = tuple(o.name for o in query.metric.outputs)
    member = BatchMember((), tuple((o, o) for o in outputs))
    plan = msgspec.structs.replace(plan, kind="live_fan_in", columns=(ORG_GROUP, *plan.columns))
    compiled = finish_fan_in(select, org_ids=orgs, database=database, params=params, plan=plan)
    return FanInBatch(compiled, (member,), False, plan.window_s, int(time_from), int(time_to))
