"""The tenant guard: added in one place, last, and proven again before execution. Long because
both policies' construction and verification live here, in one place.

`apply_tenant_guard` replaces every read of one of our tables by an *isolated read* —
`(SELECT * REPLACE (CAST(<LowCardinality col> AS String) AS …) FROM <db>.<table> WHERE org_id =
{org_id:UInt32} [AND <read bounds>] LIMIT 10^18) AS <alias>` — so that no expression a user
wrote is ever evaluated on another org's row: a filter cannot cross the LIMIT, and the casts
keep dictionaries holding other orgs' values away from user functions. `verify_tenant_guard`
fails closed on any final AST (re-parsed from the SQL about to run) not of that shape under its
`GuardPolicy` (metric compiler or analysts' SQL). `visible_rows_query` counts the org's rows the
reads cover: what is shown and charged as rows read. The reasoning is in docs/schema.md ("Why no user expression sees
another org's row") and docs/metric-language.md ("The tenant guard").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from app.querybuilder.catalog import (
    ANALYST_TABLES,
    MAX_ORG_ID,
    METRIC_TABLES,
    low_cardinality_columns,
)
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.sql_functions import analyst_function_allowed

ORG_PARAM = "org_id"
ORG_TYPE = "UInt32"
#: The fan-in policy's guard parameter: the sorted orgs one live statement reads at once.
ORGS_PARAM = "org_ids"
#: The fan-in policy's group key: every output row belongs to the org it names.
ORG_GROUP = "__org"
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
        "least",
        "isNaN",
        "toNullable",
        "mapKeys",  # the schema browser's property names (browse.py)
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
    """What a guarded query may contain around its isolated reads.

    `read_bounds`: an isolated read may carry the compiler's time range next to the guard.
    `free_params`: parameters other than the guard's may appear (the compiler binds every value
    it writes; analysts' SQL has none).
    """

    name: str
    tables: frozenset[str]
    read_bounds: bool
    free_params: bool
    allow_joins: bool
    allow_ctes: bool
    function_allowed: Callable[[exp.Func], bool]
    fan_in: bool = False


METRIC_POLICY = GuardPolicy(
    name="metric",
    tables=METRIC_TABLES,
    read_bounds=True,
    free_params=True,
    allow_joins=False,
    allow_ctes=False,
    function_allowed=_emitted_function,
)
#: Live reads of many orgs in one statement (app/querybuilder/fanin.py): the metric policy, with
#: the read guarded by `has({org_ids:Array(UInt32)}, org_id)` and the whole statement grouped
#: by `org_id AS __org` first, so no aggregate ever combines two orgs' rows (`_verify_fan_in`).
FANIN_POLICY = GuardPolicy(
    name="fan-in",
    tables=frozenset({"rollup_1s"}),
    read_bounds=True,
    free_params=True,
    allow_joins=False,
    allow_ctes=False,
    function_allowed=_emitted_function,
    fan_in=True,
)
ANALYST_POLICY = GuardPolicy(
    name="analyst",
    tables=ANALYST_TABLES,
    read_bounds=False,
    free_params=False,
    allow_joins=True,
    allow_ctes=True,
    function_allowed=analyst_function_allowed,
)

#: The LIMIT of every isolated read: the barrier no filter may cross (module docstring). Far
#: above any table's size (ClickHouse's LIMIT is a UInt64), so it never cuts a result.
BARRIER_LIMIT = 10**18

# A read bound as sqlglot writes it: a bare time column against a UInt32 parameter made a
# DateTime. Matched on the rendered text, so the shape is exactly what will run.
_BOUND_COLUMNS = frozenset({"ts", "bucket"})
_BOUND_OPS = (exp.GTE, exp.GT, exp.LT, exp.LTE)
_STRING = exp.DataType.build("String", dialect="clickhouse")


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


def fan_in_guard_condition() -> exp.ArrayContains:
    """`has({org_ids:Array(UInt32)}, org_id)`; the orgs are always the bound parameter."""
    return exp.ArrayContains(
        this=exp.Placeholder(
            this=exp.Var(this=ORGS_PARAM),
            kind=exp.DataType.build(f"Array({ORG_TYPE})", dialect="clickhouse"),
        ),
        expression=exp.column(ORG_PARAM),
    )


def check_org_ids(org_ids: object) -> tuple[int, ...]:
    """The orgs of a fan-in statement: a non-empty, strictly increasing tuple of org ids."""
    if not isinstance(org_ids, tuple) or not org_ids:
        raise TenantGuardError(f"org_ids must be a non-empty tuple, got {org_ids!r}")
    for org_id in org_ids:
        check_org_id(org_id)
    if any(a >= b for a, b in zip(org_ids, org_ids[1:], strict=False)):
        raise TenantGuardError("org_ids must be strictly increasing")
    return org_ids


def _is_uint32_param(node: exp.Expression) -> bool:
    kind = node.args.get("kind")
    return (
        isinstance(node, exp.Placeholder)
        and node.name != ORG_PARAM
        and isinstance(kind, exp.DataType)
        and kind.this is exp.DataType.Type.UINT  # UInt32 in ClickHouse
        and not kind.expressions
    )


def is_read_bound(node: exp.Expression) -> bool:
    """`node` is a read bound: `ts|bucket <op> toDateTime({p:UInt32}, 'UTC')`, exactly (checked
    node by node: every argument set, and nothing else, is the one the compiler writes)."""
    if not isinstance(node, _BOUND_OPS) or not _plain_args(node, {"this", "expression"}):
        return False
    column, value = node.this, node.expression
    if not (
        isinstance(column, exp.Column)
        and _plain_args(column, {"this"})
        and isinstance(column.this, exp.Identifier)
        and not column.this.quoted
        and column.name in _BOUND_COLUMNS
    ):
        return False
    if not (
        isinstance(value, exp.Anonymous)
        and _plain_args(value, {"this", "expressions"})
        and value.this == "toDateTime"
        and len(value.expressions) == 2
    ):
        return False
    param, zone = value.expressions
    return (
        _is_uint32_param(param)
        and _plain_args(param, {"this", "kind"})
        and isinstance(zone, exp.Literal)
        and zone.is_string
        and zone.this == "UTC"
    )


def _plain_casts(table: str) -> list[exp.Expression]:
    """`CAST(c AS String) AS c` for each LowCardinality column of `table` (catalog.py: a
    function over such a column runs on a dictionary holding other orgs' values)."""
    return [
        exp.alias_(exp.Cast(this=exp.column(name), to=_STRING.copy()), name)
        for name in low_cardinality_columns().get(table, ())
    ]


def _is_plain_cast(item: exp.Expression, name: str) -> bool:
    """`item` is exactly `CAST(<name> AS String) AS <name>`."""
    if not (isinstance(item, exp.Alias) and _plain_args(item, {"this", "alias"})):
        return False
    cast, alias = item.this, item.args["alias"]
    return (
        isinstance(alias, exp.Identifier)
        and alias.this == name
        and isinstance(cast, exp.Cast)
        and _plain_args(cast, {"this", "to", "_type"})
        and isinstance(cast.this, exp.Column)
        and _plain_args(cast.this, {"this"})
        and isinstance(cast.this.this, exp.Identifier)
        and cast.this.name == name
        and isinstance(cast.args.get("to"), exp.DataType)
        and cast.args["to"].this is exp.DataType.Type.TEXT
        and not cast.args["to"].expressions
    )


def isolated_read(
    database: str,
    table: str,
    alias: exp.TableAlias | None,
    bounds: list[exp.Expression] | None = None,
    *,
    fan_in: bool = False,
) -> exp.Subquery:
    """`(SELECT * [REPLACE (CAST(c AS String) AS c, …)] FROM <db>.<table> WHERE org_id =
    {org_id:UInt32} [AND bounds] LIMIT <barrier>) AS <alias>`.

    The alias defaults to the table's name, so `events.country` keeps working around it.
    `fan_in`: the guard is `fan_in_guard_condition()` (many orgs, FANIN_POLICY) instead.
    """
    source = exp.Table(this=exp.to_identifier(table), db=exp.to_identifier(database))
    star = exp.Star(replace=_plain_casts(table) or None)
    condition: exp.Expression = fan_in_guard_condition() if fan_in else guard_condition()
    for bound in bounds or []:
        condition = exp.And(this=condition, expression=bound)
    select = exp.Select(
        expressions=[star],
        from_=exp.From(this=source),
        where=exp.Where(this=condition),
        limit=exp.Limit(expression=exp.Literal.number(BARRIER_LIMIT)),
    )
    return exp.Subquery(this=select, alias=alias or exp.TableAlias(this=exp.to_identifier(table)))


def _shown(node: exp.Expression) -> str:
    """A node's text for an error message; never raises (refusing must not fail itself)."""
    try:
        return repr(node.sql(dialect="clickhouse")[:60])
    except Exception:  # noqa: BLE001 - a node sqlglot cannot write (e.g. FINAL) is named instead
        return type(node).__name__


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    """Top-level AND terms of a condition (through parentheses); never through OR/NOT."""
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _and_all(parts: list[exp.Expression]) -> exp.Expression | None:
    result: exp.Expression | None = None
    for part in parts:
        result = part if result is None else exp.And(this=result, expression=exp.Paren(this=part))
    return result


def _isolate_direct_read(select: exp.Select, database: str, fan_in: bool = False) -> None:
    """The metric compiler's `SELECT … FROM <db>.<t> WHERE <bounds ∧ rest>`: the table becomes
    an isolated read carrying the bounds; the rest stays above it."""
    table = select.args["from_"].this
    where = select.args.get("where")
    terms = _conjuncts(where.this) if where is not None else []
    bounds = [t.copy() for t in terms if is_read_bound(t)]
    rest = [t for t in terms if not is_read_bound(t)]
    alias = table.args.get("alias")
    read = isolated_read(
        database, table.name, alias.copy() if alias else None, bounds, fan_in=fan_in
    )
    table.replace(read)
    remaining = _and_all([t.copy() for t in rest])
    select.set("where", exp.Where(this=remaining) if remaining is not None else None)


def apply_tenant_guard(
    ast: exp.Expression,
    org_id: int | tuple[int, ...],
    *,
    policy: GuardPolicy = METRIC_POLICY,
    database: str | None = None,
) -> exp.Expression:
    """Replace every read of one of the policy's tables in `ast` by its `isolated_read`;
    returns `ast`.

    Must be the last transformation of a query's AST. `org_id` is checked here and travels
    as the `org_id` parameter of the compiled query. The metric policy isolates every table a
    SELECT reads directly (its database is taken from the table when not given) and moves the
    SELECT's read bounds into the isolated read; the analyst policy replaces exactly the
    `<database>.<table>` references the caller qualified. The fan-in policy takes a tuple of
    orgs (`check_org_ids`) and isolates like the metric policy, with the many-org guard.
    """
    if policy.fan_in:
        check_org_ids(org_id)
    else:
        check_org_id(org_id)
    if policy.read_bounds:
        for select in list(ast.find_all(exp.Select)):
            source = select.args.get("from_")
            if source is not None and isinstance(source.this, exp.Table):
                _isolate_direct_read(select, database or source.this.db, policy.fan_in)
        return ast
    if database is None:
        raise TenantGuardError("isolating table reads needs the database")
    for table in list(ast.find_all(exp.Table)):
        if table.db == database and table.name in policy.tables:
            alias = table.args.get("alias")
            table.replace(isolated_read(database, table.name, alias.copy() if alias else None))
    return ast


def _is_fan_in_guard(node: exp.Expression) -> bool:
    """`node` is exactly `has({org_ids:Array(UInt32)}, org_id)` (sqlglot's ArrayContains)."""
    if not (isinstance(node, exp.ArrayContains) and _plain_args(node, {"this", "expression"})):
        return False
    orgs, column = node.this, node.expression
    kind = orgs.args.get("kind")
    return (
        isinstance(orgs, exp.Placeholder)
        and _plain_args(orgs, {"this", "kind"})
        and orgs.name == ORGS_PARAM
        and isinstance(kind, exp.DataType)
        and kind.this is exp.DataType.Type.ARRAY
        and len(kind.expressions) == 1
        and isinstance(kind.expressions[0], exp.DataType)
        and kind.expressions[0].this is exp.DataType.Type.UINT
        and not kind.expressions[0].expressions
        and isinstance(column, exp.Column)
        and _plain_args(column, {"this"})
        and isinstance(column.this, exp.Identifier)
        and not column.this.quoted
        and column.name == ORG_PARAM
    )


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


def verify_tenant_guard(
    ast: exp.Expression,
    org_id: int | tuple[int, ...],
    *,
    database: str,
    params: dict[str, object] | None = None,
    policy: GuardPolicy = METRIC_POLICY,
) -> None:
    """Raise TenantGuardError unless every table read in `ast` is provably an isolated read of
    this org's rows and nothing else in `ast` is outside the policy.

    `params`, when given, must bind `org_id` to exactly `org_id` (fan-in: `org_ids` to exactly
    the tuple of orgs, and no `org_id` at all).
    """
    verify_guard_params(org_id, params, policy)
    verify_guard_structure(ast, database, policy)


def verify_guard_params(
    org_id: int | tuple[int, ...], params: dict[str, object] | None, policy: GuardPolicy
) -> None:
    """The parameter half of `verify_tenant_guard` (it depends on the values, not the text)."""
    if policy.fan_in:
        orgs = check_org_ids(org_id)
        if params is not None and (
            ORG_PARAM in params
            or not isinstance(params.get(ORGS_PARAM), list | tuple)
            or tuple(params[ORGS_PARAM]) != orgs
            or any(isinstance(o, bool) for o in params[ORGS_PARAM])
        ):
            raise TenantGuardError("the org_ids parameter does not match the statement's orgs")
        return
    check_org_id(org_id)
    if params is not None and (
        params.get(ORG_PARAM) != org_id or isinstance(params.get(ORG_PARAM), bool)
    ):
        raise TenantGuardError("the org_id parameter does not match the credential's org")


def verify_guard_structure(ast: exp.Expression, database: str, policy: GuardPolicy) -> None:
    """The structural half of `verify_tenant_guard`: a function of the statement's text alone
    (the org is a bound parameter), so a verified text may be remembered (execute.py)."""
    _verify_isolated(ast, database, policy)
    if policy.fan_in:
        _verify_fan_in(ast, database, policy)


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


def _is_barrier(limit: object) -> bool:
    return (
        isinstance(limit, exp.Limit)
        and _plain_args(limit, {"expression"})
        and isinstance(limit.expression, exp.Literal)
        and not limit.expression.is_string
        and limit.expression.this == str(BARRIER_LIMIT)
    )


def _read_condition(where: exp.Where | None, policy: GuardPolicy) -> exp.Expression | None:
    """The guard of an isolated read's WHERE: the guard alone, or (metric policy) the guard
    AND-ed with read bounds, left-deep as `isolated_read` builds it; None if anything else."""
    if where is None:
        return None
    node = where.this
    while isinstance(node, exp.And) and policy.read_bounds:
        if not is_read_bound(node.expression):
            return None
        node = node.this
    if policy.fan_in:
        return node if _is_fan_in_guard(node) else None
    return node if _is_guard(node) else None


def _casts_plain(star: exp.Star, table: str) -> bool:
    """The star replaces exactly the table's LowCardinality columns by plain casts of
    themselves, in catalog order — nothing else (`_plain_casts`)."""
    names = low_cardinality_columns().get(table, ())
    found = star.args.get("replace") or []
    return len(found) == len(names) and all(
        _is_plain_cast(item, name) for item, name in zip(found, names, strict=True)
    )


def _is_isolated_read(select: exp.Select, database: str, policy: GuardPolicy) -> bool:
    """`select` is exactly `SELECT * FROM <database>.<ours> WHERE <guard> [AND bounds] LIMIT
    <barrier>` inside `(…) AS <alias>` in a FROM or JOIN — the shape `isolated_read` builds,
    nothing more."""
    if not _plain_args(select, {"expressions", "from_", "where", "limit"}):
        return False
    star = select.expressions
    if len(star) != 1 or not isinstance(star[0], exp.Star) or not _plain_args(star[0], {"replace"}):
        return False
    source = select.args.get("from_")
    if source is None or not _plain_args(source, {"this"}):
        return False
    table = source.this
    if not isinstance(table, exp.Table) or not _casts_plain(star[0], table.name):
        return False
    subquery = select.parent
    return (
        isinstance(table, exp.Table)
        and _plain_args(table, {"this", "db"})
        and isinstance(table.this, exp.Identifier)
        and isinstance(table.args.get("db"), exp.Identifier)
        and table.db == database
        and table.name in policy.tables
        and _read_condition(select.args.get("where"), policy) is not None
        and _is_barrier(select.args.get("limit"))
        and isinstance(subquery, exp.Subquery)
        and _plain_args(subquery, {"this", "alias"})
        and isinstance(subquery.args.get("alias"), exp.TableAlias)
        and isinstance(subquery.parent, exp.From | exp.Join)
    )


def _identifier_names(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Identifier | exp.Var):
        return str(node.this)
    return None


def isolated_reads(ast: exp.Expression, database: str, policy: GuardPolicy) -> list[exp.Select]:
    """The isolated reads of `ast` (the SELECTs inside them), in document order."""
    return [s for s in ast.find_all(exp.Select) if _is_isolated_read(s, database, policy)]


def visible_rows_query(
    ast: exp.Expression, database: str, policy: GuardPolicy
) -> exp.Select | None:
    """The statement counting the rows `ast`'s isolated reads hand to the query around them
    (each read counted once), or None when it reads no table.

    Built from copies of the verified reads alone, so it holds nothing the user wrote; its one
    output column `n` is what the org is shown and charged as rows read.
    """
    branches: list[exp.Select] = []
    for read in isolated_reads(ast, database, policy):
        source = exp.Subquery(this=read.copy(), alias=exp.TableAlias(this=exp.to_identifier("r")))
        branches.append(
            exp.Select(
                expressions=[exp.alias_(exp.Count(this=exp.Star()), "n")],
                from_=exp.From(this=source),
            )
        )
    if not branches:
        return None
    if len(branches) == 1:
        return branches[0]
    union = exp.union(*branches, distinct=False)
    return exp.Select(
        expressions=[exp.alias_(exp.Sum(this=exp.column("n")), "n")],
        from_=exp.From(this=exp.Subquery(this=union)),
    )


def _verify_isolated(ast: exp.Expression, database: str, policy: GuardPolicy) -> None:
    if not isinstance(ast, exp.Select | exp.SetOperation):
        raise TenantGuardError(f"only SELECT queries may run, not {type(ast).__name__}")
    guards: set[int] = set()
    reads: set[int] = set()
    for select in isolated_reads(ast, database, policy):
        reads.add(id(select.args["from_"].this))
        guards.update(id(n) for n in select.args["where"].this.walk())
    fan_in_root = policy.fan_in and isinstance(ast, exp.Select) and ast.expressions
    if fan_in_root and _is_org_group_column(ast.expressions[0]):
        guards.update(id(n) for n in ast.expressions[0].walk())
    for node in ast.walk():
        if isinstance(node, exp.Select):
            for key in ("settings", "format", "into", "sample", "prewhere", "laterals"):
                if node.args.get(key):
                    raise TenantGuardError(f"{key.upper()} is not allowed in a {policy.name} query")
            if node.args.get("joins") and not policy.allow_joins:
                raise TenantGuardError("JOIN is not allowed by this policy")
        elif isinstance(node, exp.From):
            if not isinstance(node.this, exp.Table | exp.Subquery):
                raise TenantGuardError(f"unsupported FROM source {_shown(node.this)}")
        elif isinstance(node, exp.With):
            if not policy.allow_ctes or node.args.get("recursive"):
                raise TenantGuardError("this WITH is not allowed by this policy")
        elif isinstance(node, exp.Table):
            _verify_table(node, reads)
        elif isinstance(node, exp.Join):
            if not policy.allow_joins:
                raise TenantGuardError("JOIN is not allowed by this policy")
            if not isinstance(node.this, exp.Subquery | exp.Table) and node.kind != "ARRAY":
                raise TenantGuardError(f"unsupported JOIN source {_shown(node.this)}")
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
            raise TenantGuardError(f"{type(node).__name__} is not allowed in a {policy.name} query")
        elif isinstance(node, exp.Placeholder) and id(node) not in guards:
            if node.name in (ORG_PARAM, ORGS_PARAM) or not policy.free_params:
                raise TenantGuardError("a query parameter appears outside a tenant guard")
        elif (name := _identifier_names(node)) is not None:
            if name.lower() == ORG_PARAM and id(node) not in guards:
                raise TenantGuardError("org_id appears outside a tenant guard")
        elif (
            isinstance(node, exp.Func)
            and id(node) not in guards
            and not policy.function_allowed(node)
        ):
            raise TenantGuardError(f"function {_shown(node)} is not allowed")


def _is_org_group_column(node: exp.Expression) -> bool:
    """`node` is exactly `org_id AS __org` (the fan-in statement's first output)."""
    return (
        isinstance(node, exp.Alias)
        and _plain_args(node, {"this", "alias"})
        and isinstance(node.args["alias"], exp.Identifier)
        and node.args["alias"].this == ORG_GROUP
        and isinstance(node.this, exp.Column)
        and _plain_args(node.this, {"this"})
        and isinstance(node.this.this, exp.Identifier)
        and not node.this.this.quoted
        and node.this.name == ORG_PARAM
    )


def _is_org_group_ref(node: exp.Expression) -> bool:
    return (
        isinstance(node, exp.Column)
        and _plain_args(node, {"this"})
        and isinstance(node.this, exp.Identifier)
        and node.name == ORG_GROUP
    )


def _verify_fan_in(ast: exp.Expression, database: str, policy: GuardPolicy) -> None:
    """A fan-in statement is one SELECT over one isolated read, whose first output is `org_id
    AS __org` and whose GROUP BY (and LIMIT BY, if limited) starts with `__org`: every output
    row is one org's aggregate, and no cut or window crosses orgs."""
    if not isinstance(ast, exp.Select):
        raise TenantGuardError("a fan-in statement is one SELECT")
    reads = isolated_reads(ast, database, policy)
    if len(reads) != 1 or any(s is not ast and s is not reads[0] for s in ast.find_all(exp.Select)):
        raise TenantGuardError("a fan-in statement reads one isolated read and nothing else")
    if not ast.expressions or not _is_org_group_column(ast.expressions[0]):
        raise TenantGuardError("a fan-in statement's first output must be org_id AS __org")
    for node in ast.find_all(exp.Alias):
        if node is not ast.expressions[0] and node.alias == ORG_GROUP:
            raise TenantGuardError("__org is defined twice")
    group = ast.args.get("group")
    if not (
        isinstance(group, exp.Group)
        and _plain_args(group, {"expressions"})
        and group.expressions
        and _is_org_group_ref(group.expressions[0])
    ):
        raise TenantGuardError("a fan-in statement must GROUP BY __org first")
    limit = ast.args.get("limit")
    if limit is not None and not (
        isinstance(limit, exp.Limit)
        and _plain_args(limit, {"expression", "expressions"})
        and limit.expressions
        and _is_org_group_ref(limit.expressions[0])
    ):
        raise TenantGuardError("a fan-in statement may only be limited BY __org")
    if ast.args.get("offset") or ast.args.get("distinct") or ast.args.get("qualify"):
        raise TenantGuardError("OFFSET, DISTINCT and QUALIFY are not allowed in a fan-in statement")
    for node in ast.walk():
        if isinstance(node, exp.Window):
            raise TenantGuardError("window functions are not allowed in a fan-in statement")
        if isinstance(node, exp.WithFill) and node.args.get("interpolate"):
            raise TenantGuardError("INTERPOLATE is not allowed in a fan-in statement")


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
        raise TenantGuardError(f"table {_shown(table)} is not a guarded read of ours")


def _verify_in(node: exp.In) -> None:
    # `x IN t` / `x IN (t)` reads table `t` in ClickHouse: only lists of values, tuples and
    # subqueries (whose tables are guarded like any other) may follow IN.
    field = node.args.get("field")
    if isinstance(field, exp.Column | exp.Dot | exp.Table | exp.Identifier):
        raise TenantGuardError("IN <table> is not allowed in an analyst query")
    for item in node.expressions:
        if isinstance(item, exp.Column | exp.Dot | exp.Table | exp.Identifier):
            raise TenantGuardError("IN (<identifier>) is not allowed in an analyst query")
