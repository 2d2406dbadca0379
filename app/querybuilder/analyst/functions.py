"""Pass 5 — every function call is on the allow-list (app/querybuilder/sql_functions.py).

The same predicate is the guard's `ANALYST_POLICY.function_allowed`, so what this pass lets
through is exactly what the final verification accepts.
"""

from __future__ import annotations

from sqlglot import exp

from app.querybuilder.analyst.errors import AnalystSqlError, at_node
from app.querybuilder.sql_functions import analyst_function_allowed, function_name


def check_functions(text: str, tree: exp.Expression) -> None:
    """Refuse the first call of a function that is not allowed, naming it and where it is."""
    for node in tree.walk():
        if isinstance(node, exp.Func) and not analyst_function_allowed(node):
            name = function_name(node) or node.sql_name()
            raise AnalystSqlError(
                "unknown_function",
                f"the function {name!r} is not available to queries (docs/schema.md lists what "
                "is: aggregates and their -If/-Merge/-State forms, math, string, date, array, "
                "conditional, conversion and window functions)",
                **at_node(text, node, name),
            )
