"""Running a compiled query: re-prove the tenant guard on the exact SQL, then call the facade.

`run_compiled` does not trust the `CompiledQuery` it is given: it re-parses `compiled.sql`
(the text that will actually run), re-checks the guard on that AST and that the `org_id`
parameter is the compiled tenant, and only then hands the query to the ClickHouse facade.
The structural half of that proof depends on the text alone (the org is a bound parameter), so
a text proven once is remembered (`_proven`, bounded): the live poller runs the same few texts
every round and pays the parse once; the parameter half is checked on every run.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from app.clickhouse import ClickHouse, QueryResult
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.guard import (
    FANIN_POLICY,
    METRIC_POLICY,
    GuardPolicy,
    verify_guard_params,
    verify_guard_structure,
    verify_tenant_guard,
    visible_rows_query,
)
from app.querybuilder.model import CompiledQuery, FanInQuery

#: Texts whose structure was proven, by (policy, database, sql) → the proven tree (read-only).
_PROVEN_MAX = 4096
_proven: OrderedDict[tuple[str, str, str], exp.Expression] = OrderedDict()


def _proven_tree(sql: str, database: str, policy: GuardPolicy) -> exp.Expression:
    """The tree of `sql` once `verify_guard_structure` accepted it (TenantGuardError if not)."""
    ident = (policy.name, database, sql)
    tree = _proven.get(ident)
    if tree is not None:
        _proven.move_to_end(ident)
        return tree
    try:
        trees = sqlglot.parse(sql, dialect="clickhouse")
    except ParseError as exc:
        raise TenantGuardError(f"compiled SQL does not parse: {exc}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise TenantGuardError("compiled SQL must be exactly one statement")
    verify_guard_structure(trees[0], database, policy)
    _proven[ident] = trees[0]
    while len(_proven) > _PROVEN_MAX:
        _proven.popitem(last=False)
    return trees[0]


def check_compiled(compiled: CompiledQuery, database: str) -> exp.Expression:
    """Raise TenantGuardError unless `compiled.sql` provably reads only `compiled.org_id`'s rows;
    the verified tree of that text (shared: never modify it)."""
    if compiled.database != database:
        raise TenantGuardError(
            f"query compiled for database {compiled.database!r}, not {database!r}"
        )
    verify_guard_params(compiled.org_id, dict(compiled.params), METRIC_POLICY)
    return _proven_tree(compiled.sql, database, METRIC_POLICY)


def check_fan_in(query: FanInQuery, database: str) -> None:
    """Raise TenantGuardError unless `query.sql` provably reads only the rows of
    `query.org_ids`, every output row grouped by its org (guard.FANIN_POLICY)."""
    if query.database != database:
        raise TenantGuardError(f"query compiled for database {query.database!r}, not {database!r}")
    verify_guard_params(query.org_ids, dict(query.params), FANIN_POLICY)
    _proven_tree(query.sql, database, FANIN_POLICY)


async def run_fan_in_async(ch: ClickHouse, query: FanInQuery) -> QueryResult:
    """Verify a fan-in statement like `run_compiled_async`, then run it (in no org's lane: it
    serves many; the poller bounds its own concurrency)."""
    check_fan_in(query, ch.database)
    return await ch.query(query.sql, params=dict(query.params))


def run_compiled(ch: ClickHouse, compiled: CompiledQuery) -> QueryResult:
    """Verify the guard on the final SQL, then run it through the facade with its parameters
    and execution limits."""
    check_compiled(compiled, ch.database)
    return ch.query_sync(
        compiled.sql, params=dict(compiled.params), settings=dict(compiled.settings)
    )


async def run_compiled_async(ch: ClickHouse, compiled: CompiledQuery) -> QueryResult:
    """`run_compiled` off the event loop (verification is cheap and runs inline)."""
    check_compiled(compiled, ch.database)
    # The verified tenant names the lane this query waits in on the shared pool (fairness
    # between orgs, app/clickhouse/fair.py).
    return await ch.query(
        compiled.sql,
        params=dict(compiled.params),
        settings=dict(compiled.settings),
        org_id=compiled.org_id,
    )


def visible_rows_statement(
    compiled: CompiledQuery, tree: exp.Expression | None = None
) -> tuple[str, dict[str, Any]] | None:
    """SQL and parameters counting the rows `compiled`'s reads hand to the query (what the org
    is told it read and is charged for; `guard.visible_rows_query`), or None if it reads no
    table. The statement is verified like any other before it is returned."""
    if tree is None:  # `check_compiled`'s verified tree of the same text, when the caller has it
        tree = sqlglot.parse_one(compiled.sql, dialect="clickhouse")
    count = visible_rows_query(tree, compiled.database, METRIC_POLICY)
    if count is None:
        return None
    sql = count.sql(dialect="clickhouse")
    verify_tenant_guard(
        sqlglot.parse_one(sql, dialect="clickhouse"),
        compiled.org_id,
        database=compiled.database,
        params=dict(compiled.params),
    )
    used = {p.name for p in count.find_all(exp.Placeholder)}
    return sql, {k: v for k, v in compiled.params.items() if k in used}


async def count_visible_rows_async(ch: ClickHouse, compiled: CompiledQuery) -> int:
    """How many of the org's rows `compiled`'s reads cover (0 when it reads no table)."""
    statement = visible_rows_statement(compiled, check_compiled(compiled, ch.database))
    if statement is None:
        return 0
    sql, params = statement
    result = await ch.query(sql, params=params, org_id=compiled.org_id)  # the org's lane
    return int(result.scalar() or 0)
