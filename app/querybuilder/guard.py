"""The tenant guard: added in one place, last, and proven again before execution.

`apply_tenant_guard` adds `org_id = {org_id:UInt32}` to every table read, and
`verify_tenant_guard` walks a final AST (normally re-parsed from the exact SQL text about to
run) and fails closed on anything it cannot prove safe. Both take a `GuardPolicy`:

* `METRIC_POLICY` (the metric compiler's own SQL): the guard is the first conjunct of the WHERE
  of every SELECT that reads a table — the planner's own subqueries (comparisons, top-N,
  funnels) included. Refused: a table read without the guard, a table outside `<db>.events` /
  `<db>.rollup_*`, a table function, a JOIN, an `org_id` mention outside a guard,
  SETTINGS/FORMAT/INTO, or a function outside what the compiler emits.
* `ANALYST_POLICY` (people's SQL, app/querybuilder/analyst): every read of one of our tables
  becomes its own subquery `(SELECT * FROM <db>.<table> WHERE org_id = {org_id:UInt32}) AS
  <alias>` — nothing of the user's query is inside it, so no alias, CTE or condition of theirs
  can shadow or weaken the guard (ClickHouse resolves SELECT aliases in WHERE:
  `SELECT 2 AS org_id … WHERE org_id = …` would otherwise rewrite it). JOINs, CTEs, UNION,
  subqueries and window functions are allowed around those reads; every other table reference
  must be a CTE defined in scope (renamed `__cp_cte_*`, so a reference ClickHouse would resolve
  differently can only miss, never reach a real table); functions come from the allow-list in
  app/querybuilder/sql_functions.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from app.querybuilder.errors import TenantGuardError
from app.querybuilder.sql_functions import analyst_function_allowed

ORG_PARAM = "org_id"
ORG_TYPE = "UInt32"
MAX_ORG_ID = 2**32 - 1

_ALLOWED_TABLE = re.compile(
    r"^(events|rollup_1s|rollup_1m|rollup_1h|rollup_1d|rollup_detail_1m|rollup_detail_1h|rollup_detail_1d)$"
)
#: What the metric compiler reads.
METRIC_TABLES = frozenset(
    [
        "events",
        "rollup_1s",
        "rollup_1m",
        "rollup_1h",
        "rollup_1d",
        "rollup_detail_1m",
        "rollup_detail_1h",
        "rollup_detail_1d",
    ]
)
#: What analysts may read: the metric tables and the finalizing views (0004_analyst_views.sql).
ANALYST_TABLES = METRIC_TABLES | frozenset(
    [
        "metrics_1s",
        "metrics_1m",
        "metrics_1h",
        "metrics_1d",
        "metrics_detail_1m",
        "metrics_detail_1h",
        "metrics_detail_1d",
    ]
)
#: CTEs of analysts' SQL are renamed to this prefix + a number (user names may not use it).
CTE_PREFIX = "__cp_cte_"

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


_NAMED_FUNCTIONS = (
    exp.Anonymous,
    exp.AnonymousAggFunc,
    exp.CombinedAggFunc,
    exp.ParameterizedAgg,
    exp.CombinedParameterizedAgg,
)


def _emitted_function(node: exp.Func) -> bool:
    # Typed sqlglot nodes in the compiler's output are its own constructions; names it wrote
    # as text (the catch-all nodes) must be ones it emits.
    if isinstance(node, _NAMED_FUNCTIONS):
        return str(node.this).lower() in EMITTED_FUNCTIONS
    return True


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """What a guarded query may contain, besides the guard itself.

    `isolate_tables`: each table read is its own guarded subquery (the analyst construction)
    rather than a guard conjunct in the reading SELECT's WHERE (the metric compiler's).
    """

    name: str
    tables: frozenset[str]
    isolate_tables: bool
    allow_joins: bool
    allow_ctes: bool
    function_allowed: Callable[[exp.Func], bool]


METRIC_POLICY = GuardPolicy(
    name="metric",
    tables=METRIC_TABLES,
    isolate_tables=False,
    allow_joins=False,
    allow_ctes=False,
    function_allowed=_emitted_function,
)
ANALYST_POLICY = GuardPolicy(
    name="analyst",
    tables=ANALYST_TABLES,
    isolate_tables=True,
    allow_joins=True,
    allow_ctes=True,
    function_allowed=analyst_function_allowed,
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


def isolated_read(database: str, table: str, alias: exp.TableAlias | None) -> exp.Subquery:
    """`(SELECT * FROM <database>.<table> WHERE org_id = {org_id:UInt32}) AS <alias>`.

    The alias defaults to the table's name, so `events.country` keeps working around it.
    """
    source = exp.Table(this=exp.to_identifier(table), db=exp.to_identifier(database))
    select = exp.Select(
        expressions=[exp.Star()],
        from_=exp.From(this=source),
        where=exp.Where(this=guard_condition()),
    )
    return exp.Subquery(this=select, alias=alias or exp.TableAlias(this=exp.to_identifier(table)))


def apply_tenant_guard(
    ast: exp.Expression,
    org_id: int,
    *,
    policy: GuardPolicy = METRIC_POLICY,
    database: str | None = None,
) -> exp.Expression:
    """Add the org guard to every table read in `ast`; returns `ast`.

    Must be the last transformation of a query's AST. `org_id` is checked here and travels
    as the `org_id` parameter of the compiled query. With `policy.isolate_tables`, every
    `<database>.<table>` of the policy's tables is replaced by its `isolated_read` (the
    caller has qualified exactly the references it resolved to our tables).
    """
    check_org_id(org_id)
    if policy.isolate_tables:
        if database is None:
            raise TenantGuardError("isolating table reads needs the database")
        for table in list(ast.find_all(exp.Table)):
            if table.db == database and table.name in policy.tables:
                alias = table.args.get("alias")
                table.replace(isolated_read(database, table.name, alias.copy() if alias else None))
        return ast
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
    ast: exp.Expression,
    org_id: int,
    *,
    database: str,
    params: dict[str, object] | None = None,
    policy: GuardPolicy = METRIC_POLICY,
) -> None:
    """Raise TenantGuardError unless every table read in `ast` is provably this org's only.

    `params`, when given, must bind `org_id` to exactly `org_id`.
    """
    check_org_id(org_id)
    if params is not None and (
        params.get(ORG_PARAM) != org_id or isinstance(params.get(ORG_PARAM), bool)
    ):
        raise TenantGuardError("the org_id parameter does not match the credential's org")
    if policy.isolate_tables:
        _verify_isolated(ast, database, policy)
        return
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
        elif isinstance(node, exp.Func) and not policy.function_allowed(node):
            raise TenantGuardError(f"function {node.this!r} is not one the compiler emits")


# -- the analyst construction: one guarded subquery per table read ------------------------------


def cte_in_scope(table: exp.Table) -> exp.CTE | None:
    """The table-valued CTE that an unqualified table reference names, if one is in scope.

    Deliberately narrower than ClickHouse, so that what this calls a CTE is one for ClickHouse
    too: a WITH is visible in its query's body (subqueries included) and, inside the WITH, to
    the CTEs *after* the one defining it — never to itself (ClickHouse would resolve a
    self-reference to a real table of that name) nor to earlier ones.
    """
    if (
        table.args.get("db")
        or table.args.get("catalog")
        or not isinstance(table.this, exp.Identifier)
    ):
        return None
    name = table.name
    child: exp.Expression = table
    node = table.parent
    while node is not None:
        visible: list[exp.Expression] = []
        if isinstance(node, exp.With):
            index = next(i for i, cte in enumerate(node.expressions) if cte is child)
            visible = node.expressions[:index]
        else:
            with_ = node.args.get("with_")
            if isinstance(with_, exp.With) and child is not with_:
                visible = with_.expressions
        for cte in reversed(visible):
            if isinstance(cte, exp.CTE) and not cte.args.get("scalar") and cte.alias == name:
                return cte
        child, node = node, node.parent
    return None


def _plain_args(node: exp.Expression, allowed: set[str]) -> bool:
    """No argument of `node` outside `allowed` is set (a hint, FINAL, SAMPLE, joins, …)."""
    return all(key in allowed for key, value in node.args.items() if value)


def _is_isolated_read(select: exp.Select, database: str, policy: GuardPolicy) -> bool:
    """`select` is exactly `SELECT * FROM <database>.<ours> WHERE <guard>` inside
    `(…) AS <alias>` in a FROM or JOIN — the shape `isolated_read` builds, nothing more."""
    if not _plain_args(select, {"expressions", "from_", "where"}):
        return False
    star = select.expressions
    if len(star) != 1 or not isinstance(star[0], exp.Star) or not _plain_args(star[0], set()):
        return False
    source = select.args.get("from_")
    if source is None:
        return False
    table = source.this
    where = select.args.get("where")
    subquery = select.parent
    return (
        isinstance(table, exp.Table)
        and _plain_args(table, {"this", "db"})
        and isinstance(table.this, exp.Identifier)
        and isinstance(table.args.get("db"), exp.Identifier)
        and table.db == database
        and table.name in policy.tables
        and where is not None
        and _is_guard(where.this)
        and isinstance(subquery, exp.Subquery)
        and _plain_args(subquery, {"this", "alias"})
        and isinstance(subquery.args.get("alias"), exp.TableAlias)
        and isinstance(subquery.parent, exp.From | exp.Join)
    )


def _identifier_names(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Identifier | exp.Var):
        return str(node.this)
    return None


def _verify_isolated(ast: exp.Expression, database: str, policy: GuardPolicy) -> None:
    if not isinstance(ast, exp.Select | exp.SetOperation):
        raise TenantGuardError(f"only SELECT queries may run, not {type(ast).__name__}")
    guards: set[int] = set()
    reads: set[int] = set()
    for select in ast.find_all(exp.Select):
        if _is_isolated_read(select, database, policy):
            reads.add(id(select.args["from_"].this))
            guards.update(id(n) for n in select.args["where"].this.walk())
    for node in ast.walk():
        if isinstance(node, exp.Select):
            for key in ("settings", "format", "into", "sample", "prewhere", "laterals"):
                if node.args.get(key):
                    raise TenantGuardError(f"{key.upper()} is not allowed in an analyst query")
            if node.args.get("joins") and not policy.allow_joins:
                raise TenantGuardError("JOIN is not allowed by this policy")
        elif isinstance(node, exp.With):
            if not policy.allow_ctes or node.args.get("recursive"):
                raise TenantGuardError("this WITH is not allowed by this policy")
        elif isinstance(node, exp.Table):
            _verify_table(node, reads)
        elif isinstance(node, exp.Join):
            if not isinstance(node.this, exp.Subquery | exp.Table) and node.kind != "ARRAY":
                raise TenantGuardError(f"unsupported JOIN source {node.this.sql()[:60]!r}")
        elif isinstance(node, exp.In):
            _verify_in(node)
        elif isinstance(
            node,
            exp.Lateral
            | exp.TableFromRows
            | exp.Command
            | exp.Final
            | exp.TableSample
            | exp.Into
            | exp.Pivot
            | exp.Parameter
            | exp.SessionParameter,
        ):
            raise TenantGuardError(f"{type(node).__name__} is not allowed in an analyst query")
        elif isinstance(node, exp.Placeholder) and id(node) not in guards:
            raise TenantGuardError("a query parameter appears outside a tenant guard")
        elif (name := _identifier_names(node)) is not None:
            if name.lower() == ORG_PARAM and id(node) not in guards:
                raise TenantGuardError("org_id appears outside a tenant guard")
        elif isinstance(node, exp.Func) and not policy.function_allowed(node):
            raise TenantGuardError(f"function {node.sql()[:60]!r} is not allowed")


def _verify_table(table: exp.Table, reads: set[int]) -> None:
    if id(table) in reads:
        return
    # Anything else must be a reference to a CTE in scope, under its internal name.
    if not (
        isinstance(table.parent, exp.From | exp.Join)
        and _plain_args(table, {"this", "alias"})
        and table.name.startswith(CTE_PREFIX)
        and cte_in_scope(table) is not None
    ):
        raise TenantGuardError(f"table {table.sql()[:60]!r} is not a guarded read of ours")


def _verify_in(node: exp.In) -> None:
    # `x IN t` / `x IN (t)` reads table `t` in ClickHouse: only lists of values, tuples and
    # subqueries (whose tables are guarded like any other) may follow IN.
    field = node.args.get("field")
    if isinstance(field, exp.Column | exp.Dot | exp.Table | exp.Identifier):
        raise TenantGuardError("IN <table> is not allowed in an analyst query")
    for item in node.expressions:
        if isinstance(item, exp.Column | exp.Dot | exp.Table | exp.Identifier):
            raise TenantGuardError("IN (<identifier>) is not allowed in an analyst query")
