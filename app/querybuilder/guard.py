"""The tenant guard: added in one place, last, and proven again before execution.

`apply_tenant_guard` adds `org_id = {org_id:UInt32}` as the first conjunct of the WHERE of
every SELECT that reads a table — the planner's own subqueries (comparisons, top-N, funnels)
included — so no query path can skip it. `verify_tenant_guard` walks a final AST (normally
re-parsed from the exact SQL text about to run) and fails closed on anything it cannot prove
safe: a table read without the guard, a table outside `<db>.events` / `<db>.rollup_*`, a table
function, a JOIN, an `org_id` mention outside a guard, SETTINGS/FORMAT/INTO, or a function
outside what the compiler emits.
"""

from __future__ import annotations

import re

from sqlglot import exp

from app.querybuilder.errors import TenantGuardError

ORG_PARAM = "org_id"
ORG_TYPE = "UInt32"
MAX_ORG_ID = 2**32 - 1

_ALLOWED_TABLE = re.compile(
    r"^(events|rollup_1s|rollup_1m|rollup_1h|rollup_1d|rollup_detail_1m|rollup_detail_1h|rollup_detail_1d)$"
)

#: Functions the compiler emits (lower-cased); anything else in a final AST is refused, so a
#: reader like dictGet/joinGet/file/url/s3 cannot appear even through a compiler bug.
EMITTED_FUNCTIONS = frozenset(
    name.lower()
    for name in [
        "count",
        "countIf",
        "sum",
        "sumIf",
        "avg",
        "avgIf",
        "uniqCombined",
        "uniqCombinedIf",
        "uniqCombinedMerge",
        "uniqCombinedMergeIf",
        "quantileTDigest",
        "quantileTDigestIf",
        "quantileTDigestMerge",
        "quantileTDigestMergeIf",
        "topK",
        "topKMerge",
        "arraySlice",
        "if",
        "nullIf",
        "round",
        "coalesce",
        "toUInt32",
        "toDateTime",
        "intDiv",
        "windowFunnel",
        "arrayJoin",
        "range",
        "argMin",
        "toDayOfWeek",
        "toHour",
        "not",
        "arrayElement",
        "greatest",
    ]
)


def check_org_id(org_id: object) -> int:
    """The tenant id as a UInt32; anything else is a programming error."""
    if isinstance(org_id, bool) or not isinstance(org_id, int) or not 0 < org_id <= MAX_ORG_ID:
        raise TenantGuardError(f"org_id must be an integer in 1..{MAX_ORG_ID}, got {org_id!r}")
    return org_id


def guard_condition() -> exp.EQ:
    """`org_id = {org_id:UInt32}`; the value is always the bound parameter."""
    return exp.EQ(
        this=exp.column(ORG_PARAM),
        expression=exp.Placeholder(
            this=exp.Var(this=ORG_PARAM),
            kind=exp.DataType.build(ORG_TYPE, dialect="clickhouse"),
        ),
    )


def _reads_table(select: exp.Select) -> bool:
    source = select.args.get("from_")
    return source is not None and isinstance(source.this, exp.Table)


def apply_tenant_guard(ast: exp.Expression, org_id: int) -> exp.Expression:
    """Add the org guard to every SELECT in `ast` that reads a table; returns `ast`.

    Must be the last transformation of a query's AST. `org_id` is checked here and travels
    as the `org_id` parameter of the compiled query.
    """
    check_org_id(org_id)
    for select in list(ast.find_all(exp.Select)):
        if not _reads_table(select):
            continue
        where = select.args.get("where")
        condition = guard_condition()
        if where is not None:
            condition = exp.And(this=condition, expression=exp.Paren(this=where.this))
        select.set("where", exp.Where(this=condition))
    return ast


def _is_guard(node: exp.Expression) -> bool:
    if not isinstance(node, exp.EQ):
        return False
    column, value = node.this, node.expression
    if isinstance(value, exp.Column):
        column, value = value, column
    return (
        isinstance(column, exp.Column)
        and column.name == ORG_PARAM
        and not column.table
        and isinstance(value, exp.Placeholder)
        and value.name == ORG_PARAM
        and isinstance(value.args.get("kind"), exp.DataType)
        and value.args["kind"].this is exp.DataType.Type.UINT  # UInt32 in ClickHouse
        and not value.args["kind"].expressions
    )


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    """Top-level AND terms of a condition (through parentheses); never through OR/NOT."""
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def verify_tenant_guard(
    ast: exp.Expression, org_id: int, *, database: str, params: dict[str, object] | None = None
) -> None:
    """Raise TenantGuardError unless every table read in `ast` is provably this org's only.

    `params`, when given, must bind `org_id` to exactly `org_id`.
    """
    check_org_id(org_id)
    if params is not None and (
        params.get(ORG_PARAM) != org_id or isinstance(params.get(ORG_PARAM), bool)
    ):
        raise TenantGuardError("the org_id parameter does not match the credential's org")
    if not isinstance(ast, exp.Select | exp.Union):
        raise TenantGuardError(f"only SELECT queries may run, not {type(ast).__name__}")
    guards: set[int] = set()
    for select in ast.find_all(exp.Select):
        for key in ("settings", "format", "into", "joins", "laterals", "sample", "prewhere"):
            if select.args.get(key):
                raise TenantGuardError(f"{key.upper()} is not allowed in a compiled query")
        if not _reads_table(select):
            source = select.args.get("from_")
            if source is not None and not isinstance(source.this, exp.Subquery):
                raise TenantGuardError(f"unsupported FROM source {source.this.sql()[:60]!r}")
            continue
        where = select.args.get("where")
        found = [c for c in _conjuncts(where.this)] if where is not None else []
        found_guards = [c for c in found if _is_guard(c)]
        if not found_guards:
            table = select.args["from_"].this
            raise TenantGuardError(f"table {table.sql()!r} is read without the org_id guard")
        for guard in found_guards:
            guards.update(id(n) for n in guard.walk())
    for node in ast.walk():
        if isinstance(node, exp.Table):
            parent = node.parent
            if not isinstance(parent, exp.From) or not isinstance(parent.parent, exp.Select):
                raise TenantGuardError(f"table {node.sql()[:60]!r} is used outside a FROM")
            if not isinstance(node.this, exp.Identifier) or node.args.get("catalog"):
                raise TenantGuardError(f"table function or odd table {node.sql()[:60]!r}")
            if node.db != database or not _ALLOWED_TABLE.match(node.name):
                raise TenantGuardError(f"table {node.sql()[:60]!r} is not one of ours")
        elif isinstance(node, exp.Join | exp.Lateral | exp.TableFromRows | exp.Command):
            raise TenantGuardError(f"{type(node).__name__} is not allowed in a compiled query")
        elif (
            isinstance(node, exp.Column)
            and node.name.lower() == ORG_PARAM
            and id(node) not in guards
        ):
            raise TenantGuardError("org_id appears outside a tenant guard")
        elif (
            isinstance(node, exp.Placeholder) and node.name == ORG_PARAM and id(node) not in guards
        ):
            raise TenantGuardError("the org_id parameter appears outside a tenant guard")
        elif (
            isinstance(
                node,
                exp.Anonymous
                | exp.AnonymousAggFunc
                | exp.CombinedAggFunc
                | exp.ParameterizedAgg
                | exp.CombinedParameterizedAgg,
            )
            and str(node.this).lower() not in EMITTED_FUNCTIONS
        ):
            raise TenantGuardError(f"function {node.this!r} is not one the compiler emits")
