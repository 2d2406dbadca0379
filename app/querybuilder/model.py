"""The one internal model that metric text and the JSON form both compile to.

Every node is an immutable msgspec Struct holding only validated values: column names from
the event schema, literal values, and operator/function names from closed sets. The planner
builds SQL from this model alone, never from the user's parse tree, so nothing the user wrote
reaches the SQL except as a bound parameter or a literal node the compiler made.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

# -- the event schema as the language sees it -----------------------------------------------

#: Columns of `events` a metric may name, with their kind for the type checks.
EVENT_COLUMNS: dict[str, str] = {
    "event": "string",
    "user_id": "string",
    "session_id": "string",
    "value": "number",
    "path": "string",
    "referrer": "string",
    "country": "string",
    "device": "string",
    "browser": "string",
    "os": "string",
}

#: Columns the count/sum/uniq rollups are keyed by: filters and group-bys on these stay on rollups.
ROLLUP_KEYS = frozenset({"event", "country", "device", "browser", "os"})

#: The detail rollups (quantiles, top paths) are keyed by event only.
DETAIL_KEYS = frozenset({"event"})

#: Names an output alias may not take: ClickHouse resolves aliases before columns anywhere in
#: a query, so an alias equal to a column we read (`AS events`) would change what it means.
RESERVED_NAMES = frozenset(
    set(EVENT_COLUMNS)
    | {
        "org_id",
        "ts",
        "received_at",
        "props",
        "bucket",
        "events",
        "value_sum",
        "users",
        "value_quantiles",
        "top_paths",
        "t",
        "series",
        "is_top",
        "is_other",
        "dim_value",
        "step",
        "step_name",
        "users_count",
        "level",
        "weekday",
        "hour",
    }
)

Kind = Literal["string", "number", "bool", "array"]

# -- expressions ---------------------------------------------------------------------------


class Lit(msgspec.Struct, frozen=True, tag="lit"):
    """A literal value written by the user; rendered as a bound parameter or literal node."""

    value: str | int | float | bool


class Col(msgspec.Struct, frozen=True, tag="col"):
    """A column of the event schema (a key of EVENT_COLUMNS)."""

    name: str


class Prop(msgspec.Struct, frozen=True, tag="prop"):
    """`props['key']`: one key of the event's string map (raw events only)."""

    key: str


class Unary(msgspec.Struct, frozen=True, tag="unary"):
    op: Literal["not", "neg"]
    arg: Expr


BinaryOp = Literal[
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "or",
    "like",
    "not_like",
    "ilike",
    "not_ilike",
]


class Binary(msgspec.Struct, frozen=True, tag="binary"):
    op: BinaryOp
    left: Expr
    right: Expr


class InList(msgspec.Struct, frozen=True, tag="in"):
    arg: Expr
    values: tuple[Lit, ...]
    negated: bool = False


class Func(msgspec.Struct, frozen=True, tag="func"):
    """A scalar function from the allow-list."""

    name: Literal["if", "nullIf", "round", "coalesce"]
    args: tuple[Expr, ...]


class Agg(msgspec.Struct, frozen=True, tag="agg"):
    """An aggregate. `cond` is the -If condition; `param` is quantile's p or topK's n."""

    name: Literal["count", "sum", "avg", "uniq", "quantile", "topK"]
    arg: Expr | None = None
    cond: Expr | None = None
    param: float | int | None = None


Expr = Union[Lit, Col, Prop, Unary, Binary, InList, Func, Agg]  # noqa: UP007 - msgspec needs a runtime Union for recursion

Dimension = Union[Col, Prop]  # noqa: UP007


class Output(msgspec.Struct, frozen=True):
    """One output column of a metric: its name and an expression containing aggregates."""

    name: str
    expr: Expr


class Metric(msgspec.Struct, frozen=True):
    """A validated metric: output columns, a row filter and group-by dimensions."""

    outputs: tuple[Output, ...]
    where: Expr | None = None
    group_by: tuple[Dimension, ...] = ()


# -- compile requests ----------------------------------------------------------------------

FilterOp = Literal["=", "!=", "in", "not_in", "like", "not_like", "<", "<=", ">", ">="]


class Filter(msgspec.Struct, frozen=True):
    """A drilldown or segment filter: `dimension op value`.

    `dimension` is a column of the event schema or `props.<key>`; `value` is a list for
    `in`/`not_in` and a scalar otherwise.
    """

    dimension: str
    op: FilterOp = "="
    value: str | int | float | list[str | int | float] = ""


class SegmentComparison(msgspec.Struct, frozen=True):
    """The same metric for two filter sets, in one result: series 'a' and 'b'."""

    a: tuple[Filter, ...] = ()
    b: tuple[Filter, ...] = ()


Comparison = Union[SegmentComparison, Literal["previous_period"]]  # noqa: UP007

Granularity = Literal["auto", "1s", "1m", "1h", "1d"]


# -- what the compiler answers -------------------------------------------------------------


class Plan(msgspec.Struct, frozen=True):
    """How a query is answered; the API shows this next to the data."""

    table: str  # unqualified: events, rollup_1m, rollup_detail_1h, ...
    granularity_s: int  # bucket width of `t` (0 when the result has no time axis)
    raw: bool  # True when reading the raw events table (execution limits apply)
    time_from: int  # epoch seconds, inclusive, aligned to the bucket width
    time_to: int  # epoch seconds, exclusive, aligned to the bucket width
    kind: str = "series"  # series | funnel | heatmap | top_n
    reason: str = ""  # why this table: the first requirement that ruled out a coarser one
    window_s: int = 0  # sliding window per point, when the metric has one
    comparison: str = ""  # "", "segments" or "previous_period"
    columns: tuple[str, ...] = ()  # output column names, in order


class FanInQuery(msgspec.Struct, frozen=True):
    """One live SELECT answering the same shapes for many orgs (app/querybuilder/fanin.py).

    `params` holds `org_ids` (exactly `org_ids`, sorted) and never `org_id`; every output row
    starts with `__org`, the org it belongs to (guard.FANIN_POLICY).
    """

    sql: str
    params: dict[str, Any]
    org_ids: tuple[int, ...]
    database: str
    plan: Plan


class CompiledQuery(msgspec.Struct, frozen=True):
    """One ClickHouse SELECT with its bound parameters, ready for `run_compiled`.

    `params` always holds `org_id` (the tenant, from the credential). `settings` are the
    execution limits to pass to the facade (raw plans only).
    """

    sql: str
    params: dict[str, str | int | float]
    org_id: int
    database: str
    plan: Plan
    settings: dict[str, int] = msgspec.field(default_factory=dict)
