"""Pass 4 — clauses and constructs a read-only analyst query may not use.

Refused: FINAL, SAMPLE, PREWHERE (they only make sense directly on a MergeTree table, and every
table read becomes a guarded subquery), LATERAL, PIVOT, SETTINGS / FORMAT / INTO found in the
tree, query parameters, statements nested inside the query, and `IN <table>` / `IN (<name>)`
(ClickHouse reads the named table; `IN (SELECT … FROM table)` is the way, and is guarded).
JOIN sources are subqueries, tables and ARRAY JOIN expressions.
"""

from __future__ import annotations

from sqlglot import exp

from app.querybuilder.analyst.errors import AnalystSqlError, at_node

_REFUSED_NODES: dict[type[exp.Expression], tuple[str, str]] = {
    exp.Final: ("forbidden_keyword", "FINAL is not supported (the metrics_* views are final)"),
    exp.TableSample: ("forbidden_keyword", "SAMPLE is not supported"),
    exp.Lateral: ("forbidden_keyword", "LATERAL is not supported"),
    exp.Pivot: ("forbidden_keyword", "PIVOT is not supported"),
    exp.Into: ("forbidden_keyword", "INTO is not allowed"),
    exp.Placeholder: ("parameters", "query parameters are not supported"),
    exp.Parameter: ("parameters", "parameters are not supported"),
    exp.SessionParameter: ("parameters", "session parameters are not supported"),
    exp.Command: ("not_select", "only SELECT queries can run here"),
    exp.DDL: ("not_select", "only SELECT queries can run here"),
    exp.DML: ("not_select", "only SELECT queries can run here"),
}

_SELECT_ARGS = {
    "prewhere": "PREWHERE is not supported; use WHERE",
    "sample": "SAMPLE is not supported",
    "settings": "SETTINGS cannot be set from a query",
    "format": "FORMAT is chosen with the request's format",
    "into": "INTO is not allowed",
    "laterals": "LATERAL is not supported",
}

_NAMES_A_TABLE = (exp.Column, exp.Dot, exp.Table, exp.Identifier)


def check_clauses(text: str, tree: exp.Expression) -> None:
    """Refuse the constructs listed in the module docstring, naming where they are."""
    for node in tree.walk():
        refused = next((v for k, v in _REFUSED_NODES.items() if isinstance(node, k)), None)
        if refused is not None:
            code, message = refused
            raise AnalystSqlError(code, message, **at_node(text, node))
        if isinstance(node, exp.Select):
            if node.args.get("joins") and not node.args.get("from_"):
                raise AnalystSqlError(
                    "syntax", "JOIN needs a FROM before it", **at_node(text, node.args["joins"][0])
                )
            for key, message in _SELECT_ARGS.items():
                if node.args.get(key):
                    value = node.args[key]
                    located = value[0] if isinstance(value, list) else value
                    if not isinstance(located, exp.Expression):
                        located = node
                    raise AnalystSqlError(
                        "forbidden_keyword", message, **at_node(text, located, key.upper())
                    )
        elif isinstance(node, exp.In):
            _check_in(text, node)
        elif isinstance(node, exp.From):
            if not isinstance(node.this, exp.Subquery | exp.Table):
                raise AnalystSqlError(
                    "unsupported",
                    "FROM a table, a CTE or a parenthesised subquery",
                    **at_node(text, node.this),
                )
        elif isinstance(node, exp.Join):
            source = node.this
            if not isinstance(source, exp.Subquery | exp.Table) and node.kind != "ARRAY":
                raise AnalystSqlError(
                    "unsupported",
                    "JOIN a table, a CTE or a subquery",
                    **at_node(text, source),
                )


def _check_in(text: str, node: exp.In) -> None:
    field = node.args.get("field")
    items = [field] if field is not None else list(node.expressions)
    for item in items:
        if isinstance(item, _NAMES_A_TABLE):
            raise AnalystSqlError(
                "in_table",
                "IN <table> / IN (<name>) is not supported: ClickHouse would read a table by "
                "that name; write IN (SELECT column FROM table)",
                **at_node(text, item),
            )
