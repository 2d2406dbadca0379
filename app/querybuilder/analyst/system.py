"""The statements ClickHouse clients send besides queries, rewritten into analysts' SELECTs.

Clients of ClickHouse's HTTP interface probe the server: `SELECT version(), timezone()`,
`system.settings`, `SHOW TABLES`, `DESCRIBE`, `system.tables|columns|databases`. The real
system tables list every database and count every org's rows, so instead: SHOW and DESCRIBE
become SELECTs over `system.*`; each `system.<t>` known here becomes a subquery over literal
rows built from the catalog (our analyst tables, their columns per `ServerFacts`, no row
counts); server functions (`version()`, `currentDatabase()`, …) become literals. The result
goes through `compile_analyst_sql` like any query (same passes, guard, limits, quota);
anything else is left as it is for the compiler to judge. Built as sqlglot ASTs: the user's
words only ever become literals (a LIKE pattern, a table name compared as a string).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError, TokenError
from sqlglot.tokens import Token, TokenType

from app.querybuilder.analyst.errors import AnalystSqlError
from app.querybuilder.analyst.text import MAX_SQL_CHARS
from app.querybuilder.catalog import ANALYST_TABLES, TABLES

_DIALECT = Dialect.get_or_raise("clickhouse")

# Functions that describe the server, not data: answered with literals (name → fact field).
_SERVER_FUNCTIONS = {
    "version": "version",
    "timezone": "timezone",
    "servertimezone": "timezone",
    "currentdatabase": "database",
    "currentuser": "user",
    "user": "user",
    "displayname": "display_name",
    "hostname": "display_name",
}
_ENGINES = {"raw": "MergeTree", "rollup": "AggregatingMergeTree", "detail": "AggregatingMergeTree"}


@dataclass(frozen=True, slots=True)
class ColumnFact:
    """One column of one of our tables, as an analyst's `SELECT *` returns it."""

    name: str
    type: str
    default_kind: str = ""
    default_expression: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the rewritten statements answer: the database analysts see, the server's version
    and time zone, the columns of each analyst table, and the settings shown (all read-only)."""

    database: str
    version: str
    timezone: str
    columns: dict[str, tuple[ColumnFact, ...]]
    settings: tuple[tuple[str, str], ...]
    user: str = "analyst"
    display_name: str = "clickpulse"


# -- the literal relations ---------------------------------------------------------------------


def _literal(value: str | int | None) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, int):
        return exp.Literal.number(value)
    return exp.Literal.string(value)


def _relation(
    columns: list[tuple[str, str]], rows: list[tuple[str | int, ...]], constants: list
) -> exp.Select:
    """`SELECT CAST(row.1 AS T1) AS c1, … , <constant> AS cN FROM (SELECT arrayJoin([(…), …]) AS
    row)`: one flat SELECT whatever the number of rows (a UNION per row would nest deeply)."""
    row = exp.column("row")
    projections: list[exp.Expression] = []
    for index, (name, kind) in enumerate(columns, start=1):
        value = exp.Anonymous(this="tupleElement", expressions=[row.copy(), _literal(index)])
        cast = exp.Cast(this=value, to=exp.DataType.build(kind, dialect="clickhouse"))
        projections.append(exp.alias_(cast, name, quoted=True))
    for name, kind, value in constants:
        cast = exp.Cast(this=_literal(value), to=exp.DataType.build(kind, dialect="clickhouse"))
        projections.append(exp.alias_(cast, name, quoted=True))
    tuples = [
        exp.Anonymous(this="tuple", expressions=[_literal(v) for v in values]) for values in rows
    ]
    source = exp.Select(
        expressions=[
            exp.alias_(
                exp.Anonymous(this="arrayJoin", expressions=[exp.Array(expressions=tuples)]),
                "row",
            )
        ]
    )
    return exp.Select(expressions=projections, from_=exp.From(this=exp.Subquery(this=source)))


def _table_rows(facts: ServerFacts) -> exp.Select:
    rows = []
    for name in sorted(ANALYST_TABLES):
        kind = TABLES[name].kind
        rows.append((facts.database, name, "View" if kind == "view" else _ENGINES[kind]))
    return _relation(
        [("database", "String"), ("name", "String"), ("engine", "String")],
        rows,
        [
            ("is_temporary", "UInt8", 0),
            # Never the real counts: they would include every org's rows.
            ("total_rows", "Nullable(UInt64)", None),
            ("total_bytes", "Nullable(UInt64)", None),
            ("comment", "String", ""),
            ("create_table_query", "String", ""),
            ("engine_full", "String", ""),
        ],
    )


def _column_rows(facts: ServerFacts) -> exp.Select:
    rows = []
    for table in sorted(facts.columns):
        for position, column in enumerate(facts.columns[table], start=1):
            rows.append(
                (
                    facts.database,
                    table,
                    column.name,
                    column.type,
                    position,
                    column.default_kind,
                    column.default_expression,
                    column.comment,
                )
            )
    return _relation(
        [
            ("database", "String"),
            ("table", "String"),
            ("name", "String"),
            ("type", "String"),
            ("position", "UInt64"),
            ("default_kind", "String"),
            ("default_expression", "String"),
            ("comment", "String"),
        ],
        rows,
        [
            ("is_in_partition_key", "UInt8", 0),
            ("is_in_sorting_key", "UInt8", 0),
            ("is_in_primary_key", "UInt8", 0),
            ("is_in_sampling_key", "UInt8", 0),
            ("compression_codec", "String", ""),
        ],
    )


def _relations(facts: ServerFacts) -> dict[str, exp.Select]:
    return {
        "one": _relation([("dummy", "UInt8")], [(0,)], []),
        "databases": _relation(
            [("name", "String"), ("engine", "String")],
            [(facts.database, "Atomic")],
            [
                ("data_path", "String", ""),
                ("metadata_path", "String", ""),
                ("comment", "String", ""),
            ],
        ),
        "tables": _table_rows(facts),
        "columns": _column_rows(facts),
        "settings": _relation(
            [("name", "String"), ("value", "String")],
            list(facts.settings),
            [
                ("changed", "UInt8", 0),
                ("description", "String", ""),
                # Every setting is read-only here: limits come from the org (docs/analysts.md).
                ("readonly", "UInt8", 1),
                ("type", "String", "String"),
            ],
        ),
    }


# -- SHOW and DESCRIBE --------------------------------------------------------------------------


def _show(text: str, show: Token, facts: ServerFacts) -> exp.Select:
    """`SHOW TABLES [FROM|IN db] [[NOT] [I]LIKE 'p'] [LIMIT n]` / `SHOW DATABASES [LIKE …]`."""
    # The tokenizer takes everything after a command keyword as one string: read it again.
    tokens = _DIALECT.tokenize(text[show.end + 1 :])
    while tokens and tokens[-1].token_type is TokenType.SEMICOLON:
        tokens = tokens[:-1]
    kind = tokens[0].text.upper() if tokens else ""
    if kind not in ("TABLES", "DATABASES"):
        raise AnalystSqlError("not_select", "only SHOW TABLES and SHOW DATABASES are answered")
    relation = "tables" if kind == "TABLES" else "databases"
    rest = tokens[1:]
    conditions: list[exp.Expression] = []
    if relation == "tables":
        database = facts.database
        if len(rest) >= 2 and rest[0].text.upper() in ("FROM", "IN"):
            database = rest[1].text
            rest = rest[2:]
        conditions.append(exp.column("database").eq(exp.Literal.string(database)))
    limit = None
    while rest:
        word = rest[0].text.upper()
        negate = word == "NOT"
        if negate:
            rest = rest[1:]
            word = rest[0].text.upper() if rest else ""
        if word in ("LIKE", "ILIKE") and len(rest) >= 2 and rest[1].token_type is TokenType.STRING:
            pattern = exp.Literal.string(rest[1].text)
            kind = exp.Like if word == "LIKE" else exp.ILike
            match: exp.Expression = kind(this=exp.column("name"), expression=pattern)
            conditions.append(exp.Not(this=match) if negate else match)
            rest = rest[2:]
        elif word == "LIMIT" and len(rest) >= 2 and rest[1].token_type is TokenType.NUMBER:
            limit = exp.Limit(expression=exp.Literal.number(int(rest[1].text)))
            rest = rest[2:]
        else:
            raise AnalystSqlError("syntax", f"cannot read this SHOW statement near {word!r}")
    select = exp.select("name").from_(exp.table_(relation, db="system")).order_by("name")
    for condition in conditions:
        select = select.where(condition)
    return select.limit(limit.expression) if limit is not None else select


def _describe(tree: exp.Describe, facts: ServerFacts) -> exp.Select:
    """`DESCRIBE [TABLE] [db.]t`: ClickHouse's columns, from `system.columns`."""
    table = tree.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise AnalystSqlError("not_select", "only DESCRIBE of one of your tables is answered")
    name, database = table.name, table.db or facts.database
    if database != facts.database or name not in facts.columns:
        raise AnalystSqlError("unknown_table", f"unknown table {name!r}", token=name)
    columns = [
        exp.column("name"),
        exp.column("type"),
        exp.alias_(exp.column("default_kind"), "default_type"),
        exp.column("default_expression"),
        exp.column("comment"),
        exp.alias_(exp.Literal.string(""), "codec_expression"),
        exp.alias_(exp.Literal.string(""), "ttl_expression"),
    ]
    return (
        exp.select(*columns)
        .from_(exp.table_("columns", db="system"))
        .where(exp.column("database").eq(exp.Literal.string(database)))
        .where(exp.column("table", quoted=True).eq(exp.Literal.string(name)))
        .order_by("position")
    )


# -- substitution --------------------------------------------------------------------------------


def _substitute(tree: exp.Expression, facts: ServerFacts) -> bool:
    """Replace `system.<t>` reads and server functions in place; whether anything changed."""
    relations: dict[str, exp.Select] | None = None
    changed = False
    for table in list(tree.find_all(exp.Table)):
        if table.db.lower() != "system" or table.catalog:
            continue
        relations = relations if relations is not None else _relations(facts)
        relation = relations.get(table.name.lower())
        if relation is None:
            continue  # left for the compiler to refuse (system tables are not ours)
        # Quoted: `AS settings` would read as a SETTINGS clause.
        alias = table.args.get("alias") or exp.TableAlias(
            this=exp.to_identifier(table.name, quoted=True)
        )
        table.replace(exp.Subquery(this=relation.copy(), alias=alias))
        changed = True
    for node in list(tree.find_all(exp.CurrentVersion, exp.CurrentDatabase, exp.Anonymous)):
        if isinstance(node, exp.CurrentVersion):
            field, shown = "version", "version()"
        elif isinstance(node, exp.CurrentDatabase):
            field, shown = "database", "currentDatabase()"
        else:
            field, shown = _SERVER_FUNCTIONS.get(str(node.this).lower(), ""), f"{node.this}()"
        if not field or node.expressions:
            continue
        literal = exp.Literal.string(getattr(facts, field))
        parent = node.parent
        if isinstance(parent, exp.Select) and node.arg_key == "expressions":
            # A bare projection keeps ClickHouse's column name, e.g. `version()`.
            literal = exp.alias_(literal, shown, quoted=True)
        node.replace(literal)
        changed = True
    return changed


def rewrite_statement(text: str, facts: ServerFacts) -> str:
    """`text` with SHOW/DESCRIBE, `system.*` reads and server functions rewritten (module
    docstring); `text` itself when there is nothing to rewrite or it does not parse here (the
    compiler then reports it). Raises AnalystSqlError for a SHOW/DESCRIBE it cannot answer."""
    if len(text) > MAX_SQL_CHARS:
        return text  # the compiler refuses it, before anything parses it here
    lowered = text.lower()
    if (
        "system" not in lowered
        and not any(f in lowered for f in _SERVER_FUNCTIONS)
        and not lowered.lstrip().startswith(("show", "desc"))
    ):
        return text
    try:
        tokens = [t for t in _DIALECT.tokenize(text) if t.token_type is not TokenType.SEMICOLON]
    except TokenError:
        return text
    if not tokens:
        return text
    first = tokens[0].text.upper()
    try:
        if first == "SHOW":
            tree: exp.Expression = _show(text, tokens[0], facts)
        else:
            parsed = sqlglot.parse(text, dialect="clickhouse")
            if len(parsed) != 1 or parsed[0] is None:
                return text
            tree = parsed[0]
            if isinstance(tree, exp.Describe):
                tree = _describe(tree, facts)
    except (SqlglotError, RecursionError, ValueError):
        return text
    if not _substitute(tree, facts):
        return text
    return tree.sql(dialect="clickhouse", comments=False)


def split_format(text: str) -> tuple[str, str | None]:
    """`(query, format)`: a trailing `FORMAT <name>` (what ClickHouse clients append) taken off
    the query; `(text, None)` when there is none."""
    offset = 0
    try:
        tokens = _DIALECT.tokenize(text)
        if tokens and tokens[0].token_type in (TokenType.SHOW, TokenType.COMMAND):
            # The tokenizer takes the rest of a command as one string: read it again.
            offset = tokens[0].end + 1
            tokens = _DIALECT.tokenize(text[offset:])
    except TokenError:
        return text, None
    while tokens and tokens[-1].token_type is TokenType.SEMICOLON:
        tokens = tokens[:-1]
    if len(tokens) >= 2 and tokens[-2].token_type is TokenType.FORMAT:
        name = tokens[-1]
        if name.token_type in (TokenType.VAR, TokenType.IDENTIFIER) or name.text.isidentifier():
            return text[: offset + tokens[-2].start].rstrip(), name.text
    return text, None
