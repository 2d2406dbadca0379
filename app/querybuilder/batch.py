"""Batched live reads: many live keys of one org over rollup_1s as ONE guarded statement.

One isolated read of the org (added by `planner.finish`, verified unchanged under
`METRIC_POLICY`), `arrayJoin` of the key numbers as `__k`, each key's conditions as
`(__k = i AND …)`, grouped by `__k, t` and per-key dimension columns, each distinct output
expression once; `LiveBatch.split` hands each key exactly the rows its own statement returns.
`batchable` says which keys qualify (rollup_1s, no sliding window, plain group-by). Why this
shape and what was rejected: docs/push.md, "Batched polling".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import msgspec
from sqlglot import exp

from app.querybuilder.errors import MetricError
from app.querybuilder.model import Col, CompiledQuery, Expr, Metric, Plan
from app.querybuilder.planner import (
    RESULT_LIMIT,
    check_range,
    finish,
    resolve_filters,
    resolve_metric,
)
from app.querybuilder.sqlbuild import (
    DIALECT,
    Params,
    Renderer,
    conjunction,
    fn,
    num,
    paren,
    table_node,
    time_filter,
    with_fill,
)
from app.querybuilder.validate import dimension_name

#: The one table live keys are batched on (1-second rollup; raw plans keep their own statement).
BATCH_TABLE = "rollup_1s"
#: Most keys in one statement (the statement grows with the keys' conditions).
MAX_BATCH = 200

_UINT32 = exp.DataType.build("UInt32", dialect=DIALECT)


@dataclass(frozen=True, slots=True)
class LiveQuery:
    """What a live key was compiled from, kept so it can be compiled again into a batch."""

    metric: Metric  # resolved: group-by override applied
    conditions: tuple[Expr, ...]  # the drilldown filters, as model expressions


def live_query(
    metric: Any, *, filters: Sequence[Any] = (), group_by: Sequence[str] | None = None
) -> LiveQuery:
    """The `LiveQuery` of a key compiled with these arguments (MetricError if refused)."""
    return LiveQuery(resolve_metric(metric, group_by), tuple(resolve_filters(filters)))


def batchable(query: LiveQuery | None, plan: Plan) -> bool:
    """Whether a key compiled to `plan` from `query` can be answered by `compile_live_batch`."""
    return (
        query is not None
        and plan.table == BATCH_TABLE
        and plan.granularity_s == 1
        and not plan.window_s
        and not plan.comparison
        and all(isinstance(d, Col) for d in query.metric.group_by)
    )


class _SharedParams(Params):
    """Parameters shared by value: the same value of the same type is one `{pN:T}`, so two
    keys' identical expressions render to identical text (one column, one aggregate)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_value: dict[tuple[Any, ...], str] = {}

    def bind(
        self, value: Any, type_: exp.DataType | None = None, name: str | None = None
    ) -> exp.Placeholder:
        if type_ is None:
            return self._shared(value, None)
        if name is not None:
            return super().bind(value, type_, name)
        return self._shared(value, type_)

    def _shared(self, value: Any, type_: exp.DataType | None) -> exp.Placeholder:
        ident = (type(value).__name__, value, type_.sql(dialect=DIALECT) if type_ else "String")
        name = self._by_value.get(ident)
        if name is None:
            placeholder = super().bind(value) if type_ is None else super().bind(value, type_)
            self._by_value[ident] = placeholder.name
            return placeholder
        return exp.Placeholder(this=exp.Var(this=name), kind=_placeholder_type(type_))


def _placeholder_type(type_: exp.DataType | None) -> exp.DataType:
    template = type_ or exp.DataType.build("String", dialect=DIALECT)
    return exp.DataType(this=template.this, nested=False, nullable=False)


@dataclass(frozen=True, slots=True)
class BatchMember:
    """One key of a batch: its dimension names and (output name, batch column) pairs."""

    dims: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]  # (output name, batch column)

    @property
    def names(self) -> tuple[str, ...]:
        """The key's record layout: `t`, its dimensions, its outputs (`records_as_dicts`)."""
        return ("t", *self.dims, *(name for name, _ in self.outputs))

    def getter(self, index: dict[str, int], dim_column: str = "__d_{}") -> Any:
        """A batch row -> the key's record (a tuple in `names` order), one C call per row."""
        cols = [index["t"]]
        cols += [index[dim_column.format(d)] for d in self.dims]
        cols += [index[col] for _, col in self.outputs]
        return record_getter(cols)

    def own_records(
        self,
        records: list[tuple[Any, ...]],
        types: Sequence[str],
        index: dict[str, int],
        time_from: int,
        time_to: int,
        dim_column: str = "__d_{}",
    ) -> list[tuple[Any, ...]]:
        """The key's records from a batch, ordered and filled as its own statement returns
        them (`index`: the batch's column positions; `dim_column`: a dimension's batch column)."""
        if records and len(self.dims) > 1:
            # The batch orders by every dimension column in name order; the key's own
            # statement by its group-by order (then t).
            width = 1 + len(self.dims)
            records.sort(key=lambda r: (*r[1:width], r[0]))
        elif not records:
            # No row of the key at all: its own statement fills every second of the range
            # (WITH FILL on an empty result: every column at its type's default), so does this.
            filler = tuple(fill_value(types[index[dim_column.format(d)]]) for d in self.dims)
            filler += tuple(fill_value(types[index[col]]) for _, col in self.outputs)
            records = [(t, *filler) for t in range(time_from, time_to)]
        return records


def record_getter(positions: Sequence[int]) -> Any:
    """row -> the tuple of its values at `positions` (a record), one C call per row; always a
    tuple (itemgetter of one position is not — a key always has `t` and an output, so never
    happens, but a record must not depend on that)."""
    if len(positions) == 1:
        (position,) = positions
        return lambda row: (row[position],)
    return itemgetter(*positions)


def records_as_dicts(
    names: Sequence[str], records: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    """Records (tuples in `names` order) → row dicts, as a key's own statement's `dicts()`."""
    return [dict(zip(names, record, strict=True)) for record in records]


@dataclass(frozen=True)
class LiveBatch:
    """A compiled batch and how to split its result back into the keys' own rows."""

    compiled: CompiledQuery
    members: tuple[BatchMember, ...]
    time_from: int
    time_to: int

    def bind(self, time_from: int, time_to: int) -> LiveBatch:
        """The same statement over [time_from, time_to): its SQL text does not depend on the
        range (times are bound parameters), so a batch is compiled once and re-bound each
        round, like a key (`KeySpec.bind`)."""
        check_range(time_from, time_to)
        params = {**self.compiled.params, "time_from": int(time_from), "time_to": int(time_to)}
        plan = msgspec.structs.replace(
            self.compiled.plan, time_from=int(time_from), time_to=int(time_to)
        )
        compiled = msgspec.structs.replace(self.compiled, params=params, plan=plan)
        return LiveBatch(compiled, self.members, int(time_from), int(time_to))

    def split_records(
        self, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[list[tuple[Any, ...]]]:
        """The result of `compiled` → one list of records per query given to
        `compile_live_batch`, in that order: what each key's own statement returns, each row
        a tuple in its member's `names` order (what the poller diffs, without a dict a row)."""
        index = {name: i for i, name in enumerate(columns)}
        kcol = index["__k"]
        out: list[list[tuple[Any, ...]]] = [[] for _ in self.members]
        getters = [member.getter(index) for member in self.members]
        for row in rows:
            i = int(row[kcol]) - 1
            out[i].append(getters[i](row))
        for i, member in enumerate(self.members):
            out[i] = member.own_records(out[i], types, index, self.time_from, self.time_to)
        return out

    def split(self, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]):
        """`split_records` as row dicts (what each key's own statement's `dicts()` returns)."""
        return [
            records_as_dicts(member.names, records)
            for member, records in zip(
                self.members, self.split_records(columns, types, rows), strict=True
            )
        ]


def fill_value(type_name: str) -> Any:
    """The value ClickHouse's WITH FILL puts in a non-sort column of this type."""
    if type_name.startswith("Nullable("):
        return None
    if type_name.startswith(("UInt", "Int", "Float", "BFloat", "Decimal")):
        # 0, not 0.0, for floats too: the facade decodes ClickHouse's JSON, where a float
        # fill value is written `0` (a key's own statement returns the same int).
        return 0
    if type_name.startswith("Array("):
        return []
    return ""


def compile_live_batch(
    queries: Sequence[LiveQuery],
    *,
    org_id: int,
    database: str,
    time_from: int,
    time_to: int,
) -> LiveBatch:
    """Compile live `queries` of one org (each `batchable`) over [time_from, time_to) on
    rollup_1s into one guarded statement; `LiveBatch.split` gives each query's own rows.

    Goes through `planner.finish` (guard applied last, then verified) like every compile."""
    select, params, members, plan = build_live_select(queries, database, time_from, time_to)
    compiled = finish(select, org_id=org_id, database=database, params=params, plan=plan)
    return LiveBatch(compiled, members, int(time_from), int(time_to))


def build_live_select(
    queries: Sequence[LiveQuery], database: str, time_from: int, time_to: int
) -> tuple[exp.Select, Params, tuple[BatchMember, ...], Plan]:
    """The unguarded SELECT of a batch of `queries` (`compile_live_batch` guards it for one
    org, fanin.py for many), its parameters, members and plan."""
    if not queries:
        raise MetricError("invalid_batch", "a batch needs at least one query")
    if len(queries) > MAX_BATCH:
        raise MetricError("invalid_batch", f"at most {MAX_BATCH} queries per batch")
    check_range(time_from, time_to)
    params = _SharedParams()
    renderer = Renderer("rollup", params)
    lower = params.named("time_from", int(time_from))
    upper = params.named("time_to", int(time_to))
    key = exp.column("__k")

    dim_users: dict[str, list[int]] = {}
    output_columns: dict[str, tuple[str, exp.Expression]] = {}  # sql → (alias, node)
    members: list[BatchMember] = []
    branches: list[exp.Expression] = []
    for i, query in enumerate(queries, start=1):
        metric = query.metric
        dims = tuple(dimension_name(d) for d in metric.group_by)
        for dim in metric.group_by:
            if not isinstance(dim, Col):
                raise MetricError("invalid_batch", "only plain columns can be batched")
            dim_users.setdefault(dim.name, []).append(i)
        outputs = []
        for output in metric.outputs:
            node = renderer.expr(output.expr)
            text = node.sql(dialect=DIALECT)
            if text not in output_columns:
                output_columns[text] = (f"__o{len(output_columns)}", node)
            outputs.append((output.name, output_columns[text][0]))
        members.append(BatchMember(dims, tuple(outputs)))
        parts: list[exp.Expression] = [exp.EQ(this=key.copy(), expression=num(i))]
        if metric.where is not None:
            parts.append(renderer.expr(metric.where))
        parts.extend(renderer.expr(c) for c in query.conditions)
        branches.append(paren(conjunction(parts)))

    columns: list[exp.Expression] = [
        exp.alias_(
            fn("arrayJoin", exp.Array(expressions=[num(i) for i in range(1, len(queries) + 1)])),
            "__k",
        ),
        exp.alias_(fn("toUInt32", exp.column("bucket")), "t"),
    ]
    dim_names = sorted(dim_users)
    for name in dim_names:
        users = dim_users[name]
        chosen = (
            exp.EQ(this=key.copy(), expression=num(users[0]))
            if len(users) == 1
            else exp.In(this=key.copy(), expressions=[num(u) for u in users])
        )
        if len(users) == len(queries):
            columns.append(exp.alias_(exp.column(name), f"__d_{name}"))
        else:
            columns.append(
                exp.alias_(
                    fn("if", chosen, exp.column(name), exp.Literal.string("")), f"__d_{name}"
                )
            )
    for alias, node in output_columns.values():
        columns.append(exp.alias_(node, alias))

    any_key = branches[0]
    for branch in branches[1:]:
        any_key = exp.Or(this=any_key, expression=branch)
    where = conjunction([time_filter(BATCH_TABLE, lower, upper), exp.Paren(this=any_key)])
    select = exp.Select(expressions=columns).from_(table_node(database, BATCH_TABLE))
    select.set("where", exp.Where(this=where))
    group = [exp.column("__k"), exp.column("t"), *(exp.column(f"__d_{d}") for d in dim_names)]
    select.set("group", exp.Group(expressions=group))
    order = [exp.Ordered(this=exp.column("__k"))]
    order += [exp.Ordered(this=exp.column(f"__d_{d}")) for d in dim_names]
    fill_lower = exp.Placeholder(this=exp.Var(this="time_from"), kind=_placeholder_type(_UINT32))
    fill_upper = exp.Placeholder(this=exp.Var(this="time_to"), kind=_placeholder_type(_UINT32))
    order.append(with_fill(1, fill_lower, fill_upper))
    select.set("order", exp.Order(expressions=order))
    select.set("limit", exp.Limit(expression=num(RESULT_LIMIT * len(queries))))
    names = ("__k", "t", *(f"__d_{d}" for d in dim_names), *(a for a, _ in output_columns.values()))
    plan = Plan(
        table=BATCH_TABLE,
        granularity_s=1,
        raw=False,
        time_from=int(time_from),
        time_to=int(time_to),
        kind="live_batch",
        columns=names,
    )
    return select, params, tuple(members), plan
