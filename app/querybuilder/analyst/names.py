"""Pass 3 — names: which tables are read, which names the query defines.

* Every table reference is resolved, in this order: a CTE defined in scope (by the guard's
  `cte_in_scope`, narrower than ClickHouse on purpose), else one of our tables or views
  (`catalog.ANALYST_TABLES`, written without a database), else refused — table functions,
  `system.*` / `information_schema`, other databases and unknown names alike.
* Our tables are qualified with the database (the guard isolates exactly those); CTEs are
  renamed `__cp_cte_<n>` (references keep the user's name as their alias), so a reference that
  ClickHouse would scope differently cannot land on a real table.
* Names the query defines or mentions may not be `org_id` (the tenant comes from the
  credential; every table already holds only the caller's rows), may not use the reserved
  `__cp_` prefix, contain a dot, or be the database's name; a CTE may not be named like one of
  our tables, and WITH RECURSIVE is refused.
"""

from __future__ import annotations

from sqlglot import exp

from app.querybuilder.analyst.errors import AnalystSqlError, at_node
from app.querybuilder.catalog import ANALYST_TABLES
from app.querybuilder.guard import CTE_PREFIX, ORG_PARAM, cte_in_scope

RESERVED_PREFIX = "__cp_"
_SYSTEM_DATABASES = {"system", "information_schema"}
_TABLE_LIST = ", ".join(sorted(ANALYST_TABLES))


def check_identifiers(text: str, tree: exp.Expression, database: str) -> None:
    """Refuse names that could impersonate the guard, our internals or a qualified table."""
    for node in tree.walk():
        if not isinstance(node, exp.Identifier | exp.Var):
            continue
        name = str(node.this)
        lowered = name.lower()
        if lowered == ORG_PARAM:
            raise AnalystSqlError(
                "org_id_forbidden",
                "org_id cannot appear in a query: every table already holds only your org's rows",
                **at_node(text, node, name),
            )
        if lowered.startswith(RESERVED_PREFIX):
            raise AnalystSqlError(
                "reserved_name",
                f"names starting with {RESERVED_PREFIX} are reserved",
                **at_node(text, node, name),
            )
        if isinstance(node, exp.Identifier) and "." in name:
            raise AnalystSqlError(
                "invalid_name", "a name may not contain a dot", **at_node(text, node, name)
            )
        if lowered == database.lower() and not _is_table_database(node):
            raise AnalystSqlError(
                "reserved_name",
                f"{name!r} is the database's name; pick another",
                **at_node(text, node, name),
            )


def _is_table_database(node: exp.Expression) -> bool:
    # `<database>.events` is refused by `resolve_tables`, with a better message.
    return isinstance(node.parent, exp.Table) and node.arg_key == "db"


def check_ctes(text: str, tree: exp.Expression) -> None:
    """No WITH RECURSIVE; CTE names unique per WITH and not shadowing our tables."""
    for with_ in tree.find_all(exp.With):
        if with_.args.get("recursive"):
            raise AnalystSqlError(
                "forbidden_keyword", "WITH RECURSIVE is not supported", **at_node(text, with_)
            )
        seen: set[str] = set()
        for cte in with_.expressions:
            alias = cte.args.get("alias")
            name = cte.alias
            where = at_node(text, alias if alias is not None else cte, name)
            if not cte.args.get("scalar") and name.lower() in ANALYST_TABLES:
                raise AnalystSqlError(
                    "cte_shadows_table",
                    f"a CTE may not be named like the table {name!r}; pick another name",
                    **where,
                )
            if name in seen:
                raise AnalystSqlError("duplicate_name", f"two CTEs are named {name!r}", **where)
            seen.add(name)


def _refuse_table(text: str, table: exp.Table) -> None:
    source = table.this
    if not isinstance(source, exp.Identifier):
        name = source.name if isinstance(source, exp.Func) else type(source).__name__
        raise AnalystSqlError(
            "table_function",
            f"table functions ({name}) are not allowed; query the tables: {_TABLE_LIST}",
            **at_node(text, source, name),
        )
    qualifier = table.args.get("catalog") or table.args.get("db")
    if qualifier is not None:
        database = str(qualifier.name)
        code = "system_table" if database.lower() in _SYSTEM_DATABASES else "other_database"
        raise AnalystSqlError(
            code,
            f"{table.sql(dialect='clickhouse')} is not one of your tables; write table names "
            f"without a database: {_TABLE_LIST}",
            **at_node(text, qualifier, database),
        )
    extra = sorted(k for k, v in table.args.items() if v and k not in ("this", "alias"))
    if extra:
        raise AnalystSqlError(
            "forbidden_keyword" if extra == ["sample"] else "unsupported",
            f"{', '.join(extra).upper()} on a table is not supported",
            **at_node(text, table, table.name),
        )
    if not isinstance(table.parent, exp.From | exp.Join):
        raise AnalystSqlError(
            "unsupported",
            f"the table {table.name!r} is used where only FROM or JOIN may name a table "
            "(FINAL, SAMPLE and the like are not supported)",
            **at_node(text, table, table.name),
        )


def check_tables(text: str, tree: exp.Expression) -> None:
    """Every table reference is a CTE in scope or one of our tables, written plainly."""
    for table in tree.find_all(exp.Table):
        _refuse_table(text, table)
        if cte_in_scope(table) is None and table.name not in ANALYST_TABLES:
            raise AnalystSqlError(
                "unknown_table",
                f"{table.name!r} is not a table you can query; tables: {_TABLE_LIST}",
                **at_node(text, table, table.name),
            )


def resolve_tables(text: str, tree: exp.Expression, database: str) -> list[str]:
    """Qualify our tables with `database`, rename CTEs; returns the tables read.

    Runs `check_tables` first, so it never resolves a reference that check refuses."""
    check_tables(text, tree)
    read: list[str] = []
    renames: list[tuple[exp.Table, exp.CTE]] = []
    for table in list(tree.find_all(exp.Table)):
        cte = cte_in_scope(table)
        if cte is not None:
            renames.append((table, cte))
        else:
            table.set("db", exp.to_identifier(database))
            read.append(table.name)
    internal: dict[int, str] = {}
    for cte in tree.find_all(exp.CTE):
        if not cte.args.get("scalar"):
            internal[id(cte)] = f"{CTE_PREFIX}{len(internal) + 1}"
    for table, cte in renames:
        if not table.args.get("alias"):
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
        table.set("this", exp.to_identifier(internal[id(cte)]))
    for cte in tree.find_all(exp.CTE):
        if id(cte) in internal:
            cte.args["alias"].set("this", exp.to_identifier(internal[id(cte)]))
    return sorted(set(read))
