"""Running a compiled query: re-prove the tenant guard on the exact SQL, then call the facade.

`run_compiled` does not trust the `CompiledQuery` it is given: it re-parses `compiled.sql`
(the text that will actually run), re-checks the guard on that AST and that the `org_id`
parameter is the compiled tenant, and only then hands the query to the ClickHouse facade.
"""

from __future__ import annotations

import sqlglot
from sqlglot.errors import ParseError

from app.clickhouse import ClickHouse, QueryResult
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.guard import verify_tenant_guard
from app.querybuilder.model import CompiledQuery


def check_compiled(compiled: CompiledQuery, database: str) -> None:
    """Raise TenantGuardError unless `compiled.sql` provably reads only `compiled.org_id`'s rows."""
    if compiled.database != database:
        raise TenantGuardError(
            f"query compiled for database {compiled.database!r}, not {database!r}"
        )
    try:
        trees = sqlglot.parse(compiled.sql, dialect="clickhouse")
    except ParseError as exc:
        raise TenantGuardError(f"compiled SQL does not parse: {exc}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise TenantGuardError("compiled SQL must be exactly one statement")
    verify_tenant_guard(trees[0], compiled.org_id, database=database, params=dict(compiled.params))


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
