"""Pass 2 — parse with sqlglot (dialect clickhouse, always) into exactly one SELECT tree.

A SELECT, or a UNION / EXCEPT / INTERSECT of SELECTs, optionally in parentheses. Anything
sqlglot cannot parse is a `syntax` error at the position it reports; a statement sqlglot only
understands as an opaque command is `not_select`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.tokens import Token, TokenType

from app.querybuilder.analyst.errors import AnalystSqlError, at_node, at_offset

MAX_NODES = 20_000

_DIALECT = Dialect.get_or_raise("clickhouse")


def _offset(text: str, line: int, column: int, highlight: str) -> int:
    """sqlglot reports the line and the column where the offending token *ends*."""
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(index + 1)
    line_start = starts[min(max(line, 1), len(starts)) - 1]
    return max(0, min(len(text) - 1, line_start + column - max(len(highlight), 1)))


def _call_before(text: str, tokens: list[Token], index: int) -> dict:
    """Where the function call being parsed at token `index` starts (its name), best effort."""
    for i in range(min(index, len(tokens) - 1) - 1, -1, -1):
        if tokens[i + 1].token_type is TokenType.L_PAREN and tokens[i].text[:1].isalpha():
            return at_offset(text, tokens[i].start, tokens[i].text)
    return at_offset(text, tokens[0].start, tokens[0].text) if tokens else {}


def parse(text: str, tokens: list[Token]) -> exp.Select | exp.SetOperation:
    """The one query in `text` (already tokenized as `tokens`)."""
    parser = _DIALECT.parser()
    try:
        trees = parser.parse(tokens, text)
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        highlight = str(error.get("highlight") or "")
        where = {}
        if error.get("line"):
            where = at_offset(
                text, _offset(text, int(error["line"]), int(error["col"]), highlight), highlight
            )
        message = str(error.get("description") or exc).split("\n")[0]
        raise AnalystSqlError("syntax", f"cannot parse the query: {message}", **where) from None
    except RecursionError:
        raise AnalystSqlError("too_deep", "the query nests too deeply") from None
    except (SqlglotError, ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
        # sqlglot's function builders raise plain Python errors on malformed calls
        # (e.g. `map(1)`); that is still the user's syntax, not our failure.
        raise AnalystSqlError(
            "syntax",
            f"cannot parse the query: a function call has arguments it cannot take "
            f"({type(exc).__name__})",
            **_call_before(text, tokens, parser._index),
        ) from None
    trees = [tree for tree in trees if tree is not None]
    if len(trees) != 1:
        raise AnalystSqlError("multiple_statements", "send exactly one statement")
    tree = trees[0]
    while isinstance(tree, exp.Subquery) and set(k for k, v in tree.args.items() if v) == {"this"}:
        tree = tree.this  # `(SELECT …)` is the SELECT itself
    if isinstance(tree, exp.Command) or not isinstance(tree, exp.Select | exp.SetOperation):
        raise AnalystSqlError(
            "not_select",
            f"only SELECT queries can run here, not {type(tree).__name__.upper()}",
            **at_node(text, tree),
        )
    if tree.parent is not None:
        tree.pop()  # detach from the parentheses, so the root has no parent
    size = sum(1 for _ in tree.walk())
    if size > MAX_NODES:
        raise AnalystSqlError(
            "too_complex", f"the query has {size} syntax nodes; the limit is {MAX_NODES}"
        )
    return tree
