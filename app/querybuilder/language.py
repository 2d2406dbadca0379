"""Metric text → model: the SQL-like metric language, checked against an allow-list. Long
because the converter handles every node shape the language accepts, each with its own error.

Three passes, each failing closed with a `MetricError` naming the token and its position:

1. `_check_text`   size and invisible characters (zero-width, bidi, controls) in the raw text;
2. `_check_tokens` every token's type is on an allow-list (no FROM, JOIN, SETTINGS, FORMAT,
                   INTO, UNION, WITH, placeholders, `::`, `->`, qualified names, …), nesting
                   depth is capped, every function call names an allowed function, and there
                   is one statement;
3. `_Converter`    sqlglot's parse tree is walked node by node; only known node shapes become
                   model nodes, anything else is rejected. Then `check_metric` applies the
                   type and grouping rules.

The parse tree is then discarded: SQL is built from the model alone.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from app.querybuilder.errors import MetricError, at_offset
from app.querybuilder.model import (
    Agg,
    Binary,
    Col,
    Expr,
    Func,
    InList,
    Lit,
    Metric,
    Output,
    Prop,
    Unary,
)
from app.querybuilder.validate import (
    MAX_DEPTH,
    MAX_IN_LIST,
    MAX_NUMBER_TEXT,
    MAX_TEXT_LENGTH,
    check_alias,
    check_metric,
    check_number,
    check_prop_key,
    check_string,
    column,
    find_invisible,
    walk,
)

__all__ = ["parse_metric", "parse_condition", "ALLOWED_FUNCTIONS"]

_DIALECT = Dialect.get_or_raise("clickhouse")

#: Functions a metric may call (matched case-insensitively) → canonical name.
ALLOWED_FUNCTIONS = {
    name.lower(): name
    for name in (
        "count",
        "countIf",
        "sum",
        "sumIf",
        "avg",
        "avgIf",
        "uniq",
        "uniqIf",
        "quantile",
        "quantileIf",
        "topK",
        "if",
        "nullIf",
        "round",
        "coalesce",
    )
}

_ALLOWED_TOKENS = {
    TokenType.SELECT,
    TokenType.VAR,
    TokenType.IDENTIFIER,
    TokenType.STRING,
    TokenType.NUMBER,
    TokenType.L_PAREN,
    TokenType.R_PAREN,
    TokenType.L_BRACKET,
    TokenType.R_BRACKET,
    TokenType.COMMA,
    TokenType.ALIAS,
    TokenType.WHERE,
    TokenType.GROUP_BY,
    TokenType.AND,
    TokenType.OR,
    TokenType.NOT,
    TokenType.IN,
    TokenType.LIKE,
    TokenType.ILIKE,
    TokenType.EQ,
    TokenType.NEQ,
    TokenType.LT,
    TokenType.LTE,
    TokenType.GT,
    TokenType.GTE,
    TokenType.PLUS,
    TokenType.DASH,
    TokenType.STAR,
    TokenType.SLASH,
    TokenType.MOD,
    TokenType.TRUE,
    TokenType.FALSE,
    TokenType.SEMICOLON,
}

# Why a familiar-but-forbidden token is refused, so the message teaches the language.
_FORBIDDEN_REASONS = {
    TokenType.FROM: "metrics have no FROM: the compiler picks the table",
    TokenType.JOIN: "JOIN is not part of the metric language",
    TokenType.SETTINGS: "SETTINGS cannot be set from a metric",
    TokenType.FORMAT: "FORMAT cannot be set from a metric",
    TokenType.INTO: "INTO (OUTFILE) is not allowed",
    TokenType.UNION: "UNION is not allowed: a metric is one SELECT",
    TokenType.WITH: "WITH/CTEs are not allowed",
    TokenType.HAVING: "HAVING is not supported",
    TokenType.ORDER_BY: "ORDER BY is set by the compiler",
    TokenType.LIMIT: "LIMIT is set by the compiler",
    TokenType.L_BRACE: "query parameters cannot be written in a metric",
    TokenType.PLACEHOLDER: "placeholders cannot be written in a metric",
    TokenType.PARAMETER: "parameters cannot be written in a metric",
    TokenType.DCOLON: "casts are not allowed",
    TokenType.ARROW: "lambdas are not allowed",
    TokenType.DOT: "qualified names (db.table, table.column) are not allowed",
    TokenType.NULL: "NULL is not supported; use coalesce or nullIf",
    TokenType.CASE: "CASE is not supported; use if(condition, a, b)",
    TokenType.DISTINCT: "DISTINCT is not supported; use uniq(column)",
}


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise MetricError("invalid_text", "a metric is text")
    if len(text) > MAX_TEXT_LENGTH:
        raise MetricError(
            "text_too_long",
            f"the metric is {len(text)} characters; the limit is {MAX_TEXT_LENGTH}",
            **at_offset(text, MAX_TEXT_LENGTH, text[MAX_TEXT_LENGTH : MAX_TEXT_LENGTH + 20]),
        )
    bad = find_invisible(text.replace("\n", " ").replace("\t", " ").replace("\r", " "))
    if bad:
        raise MetricError(
            "invisible_character",
            f"the metric contains the control/invisible character U+{ord(bad.group()):04X}",
            **at_offset(text, bad.start(), f"U+{ord(bad.group()):04X}"),
        )


def unterminated_at(text: str) -> int:
    """Where the string, quoted name or comment that the tokenizer could not close starts
    (best effort: the last character when nothing is open). Shared by the analyst SQL pass."""
    index, opened = 0, 0
    while index < len(text):
        if text.startswith("--", index):
            end = text.find("\n", index)
            index = len(text) if end == -1 else end
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end == -1:
                return index
            index = end + 2
        elif text[index] in "'`\"":
            quote, opened, index = text[index], index, index + 1
            while index < len(text) and text[index] != quote:
                index += 2 if text[index] == "\\" else 1
            if index >= len(text):
                return opened
            index += 1
        else:
            index += 1
    return max(len(text) - 1, 0)


def _token_text(token: Token) -> str:
    return token.text if token.token_type is not TokenType.STRING else f"'{token.text}'"


def _check_tokens(text: str, tokens: list[Token], *, expression_only: bool) -> list[Token]:
    """The token-level allow-list; returns the tokens without a trailing semicolon."""
    if tokens and tokens[-1].token_type is TokenType.SEMICOLON:
        tokens = tokens[:-1]
    if not tokens:
        raise MetricError("empty", "the metric is empty")
    if not expression_only and tokens[0].token_type is not TokenType.SELECT:
        raise MetricError(
            "syntax",
            "a metric starts with SELECT",
            **at_offset(text, tokens[0].start, tokens[0].text),
        )
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.token_type
        where = at_offset(text, token.start, _token_text(token))
        if kind is TokenType.SEMICOLON:
            raise MetricError("multiple_statements", "a metric is exactly one statement", **where)
        if kind is TokenType.SELECT and (index > 0 or expression_only):
            raise MetricError("subquery", "subqueries are not allowed", **where)
        if kind not in _ALLOWED_TOKENS:
            reason = _FORBIDDEN_REASONS.get(
                kind, f"{token.text!r} is not part of the metric language"
            )
            code = "forbidden_keyword" if kind in _FORBIDDEN_REASONS else "unexpected_token"
            raise MetricError(code, reason, **where)
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            if depth > MAX_DEPTH:
                raise MetricError(
                    "too_deep", f"expressions may nest at most {MAX_DEPTH} levels", **where
                )
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
        if kind is TokenType.NUMBER and len(token.text) > MAX_NUMBER_TEXT:
            raise MetricError(
                "literal_too_large",
                f"number literals have at most {MAX_NUMBER_TEXT} characters",
                **where,
            )
        next_kind = tokens[index + 1].token_type if index + 1 < len(tokens) else None
        is_call = kind in (TokenType.VAR, TokenType.IDENTIFIER) and next_kind is TokenType.L_PAREN
        if is_call and token.text.lower() not in ALLOWED_FUNCTIONS:
            raise MetricError(
                "unknown_function",
                f"unknown function {token.text!r}; allowed: "
                + ", ".join(ALLOWED_FUNCTIONS.values()),
                **where,
            )
    return tokens


class _Converter:
    """sqlglot parse tree → model, keeping where each model node came from."""

    def __init__(self, text: str):
        self.text = text
        self.origins: dict[int, exp.Expression] = {}
        self._keep: list[Any] = []  # keeps model nodes alive so their ids stay unique

    # -- positions --------------------------------------------------------------------------
    def where(self, node: exp.Expression) -> dict[str, Any]:
        # sqlglot keeps positions on some nodes (identifiers, literals, named functions): the
        # earliest one in the subtree is where the user's text for this node starts.
        starts = [
            c.meta["start"]
            for c in node.walk()
            if c._meta and "start" in c.meta  # noqa: SLF001
        ]
        snippet = node.sql(dialect="clickhouse")
        if not starts:
            return {"token": snippet[:60]}
        return at_offset(self.text, min(starts), snippet)

    def fail(self, node: exp.Expression, code: str, message: str) -> MetricError:
        return MetricError(code, message, **self.where(node))

    def remember(self, model_node: Any, node: exp.Expression) -> Any:
        # Positions are computed only when an error needs one.
        self.origins[id(model_node)] = node
        self._keep.append(model_node)
        return model_node

    def locate(self, model_node: Any) -> dict[str, Any]:
        node = self.origins.get(id(model_node))
        return self.where(node) if node is not None else {}

    # -- expressions ------------------------------------------------------------------------
    def expr(self, node: exp.Expression, depth: int = 0) -> Expr:
        if depth > MAX_DEPTH:
            raise self.fail(node, "too_deep", f"expressions may nest at most {MAX_DEPTH} levels")
        return self.remember(self._expr(node, depth + 1), node)

    def _expr(self, node: exp.Expression, depth: int) -> Expr:  # noqa: C901 - one case per node shape
        e = functools.partial(self.expr, depth=depth)
        if isinstance(node, exp.Paren):
            return e(node.this)
        if isinstance(node, exp.Literal):
            return self.literal(node)
        if isinstance(node, exp.Boolean):
            return Lit(bool(node.this))
        if isinstance(node, exp.Neg):
            inner = e(node.this)
            if (
                isinstance(inner, Lit)
                and isinstance(inner.value, int | float)
                and not isinstance(inner.value, bool)
            ):
                return Lit(-inner.value)
            return Unary("neg", inner)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Bracket):
            return self.prop(node)
        if isinstance(node, exp.Not):
            inner = e(node.this)
            if isinstance(inner, InList) and not inner.negated:
                return InList(inner.arg, inner.values, negated=True)
            return Unary("not", inner)
        binary = _BINARY.get(type(node))
        if binary is not None:
            self.no_extra_args(node, {"this", "expression"}, {"negate", "typed", "safe"})
            op = binary
            if isinstance(node, exp.Like | exp.ILike) and node.args.get("negate"):
                op = "not_" + op
            if node.args.get("escape"):
                raise self.fail(node, "unsupported", "LIKE … ESCAPE is not supported")
            return Binary(op, e(node.this), e(node.expression))
        if isinstance(node, exp.In):
            if any(node.args.get(k) for k in ("query", "unnest", "field")):
                raise self.fail(node, "subquery", "IN takes a list of literal values")
            values = node.expressions
            if len(values) > MAX_IN_LIST:
                raise self.fail(
                    node, "literal_too_large", f"IN lists hold at most {MAX_IN_LIST} values"
                )
            items = []
            for value in values:
                item = e(value)
                if not isinstance(item, Lit):
                    raise self.fail(value, "invalid_in_list", "IN lists hold literal values only")
                items.append(item)
            if not items:
                raise self.fail(node, "invalid_in_list", "IN needs at least one value")
            return InList(e(node.this), tuple(items))
        return self.call(node, depth)

    def located(self, node: exp.Expression, error: MetricError) -> MetricError:
        return MetricError(error.code, error.message, **self.where(node))

    def literal(self, node: exp.Literal) -> Lit:
        try:
            if node.is_string:
                return Lit(check_string(node.this))
            raw = node.this.replace("_", "")
            try:
                value: int | float = int(raw) if raw.isdigit() else float(raw)
            except ValueError:
                raise MetricError("invalid_literal", f"{node.this!r} is not a number") from None
            return Lit(check_number(value))
        except MetricError as error:
            raise self.located(node, error) from None

    def column(self, node: exp.Column) -> Col:
        if node.table or node.args.get("db") or node.args.get("catalog"):
            raise self.fail(node, "qualified_name", "qualified names are not allowed")
        if not isinstance(node.this, exp.Identifier):
            raise self.fail(node, "unexpected_token", "expected a column name")
        try:
            return column(node.this.this)
        except MetricError as error:
            raise self.located(node, error) from None

    def prop(self, node: exp.Bracket) -> Prop:
        target = node.this
        if not (
            isinstance(target, exp.Column)
            and not target.table
            and isinstance(target.this, exp.Identifier)
            and target.this.this == "props"
        ):
            raise self.fail(node, "invalid_subscript", "only props['key'] may be subscripted")
        keys = node.expressions
        if len(keys) != 1 or not isinstance(keys[0], exp.Literal) or not keys[0].is_string:
            raise self.fail(node, "invalid_subscript", "props takes one string key: props['key']")
        try:
            return Prop(check_prop_key(keys[0].this))
        except MetricError as error:
            raise self.located(keys[0], error) from None

    def no_extra_args(
        self, node: exp.Expression, allowed: set[str], ignored: set[str] = frozenset()
    ) -> None:
        for key, value in node.args.items():
            if value in (None, [], False) or key in ignored:
                continue
            if key not in allowed:
                raise self.fail(
                    node,
                    "unsupported",
                    f"unsupported form of {node.sql(dialect='clickhouse')[:40]!r}",
                )

    def param(self, node: exp.Expression, name: str) -> int | float:
        if isinstance(node, exp.Literal) and not node.is_string:
            value = self.literal(node).value
            assert isinstance(value, int | float)
            return value
        raise self.fail(node, "invalid_arguments", f"{name}'s parameter must be a number literal")

    def call(self, node: exp.Expression, depth: int) -> Expr:  # noqa: C901 - one case per function
        e = functools.partial(self.expr, depth=depth)
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Distinct):
                raise self.fail(
                    node, "unsupported", "count(DISTINCT …) is not supported; use uniq(column)"
                )
            if node.expressions or (arg is not None and not isinstance(arg, exp.Star)):
                raise self.fail(
                    node, "invalid_arguments", "count() takes no argument; use countIf(condition)"
                )
            return Agg("count")
        if isinstance(node, exp.CountIf):
            return Agg("count", cond=e(node.this))
        if isinstance(node, exp.Sum):
            self.no_extra_args(node, {"this"})
            return Agg("sum", arg=e(node.this))
        if isinstance(node, exp.Avg):
            self.no_extra_args(node, {"this"})
            return Agg("avg", arg=e(node.this))
        if isinstance(node, exp.ApproxDistinct):
            self.no_extra_args(node, {"this"})
            return Agg("uniq", arg=e(node.this))
        if isinstance(node, exp.Quantile):
            return Agg("quantile", arg=e(node.this), param=self.quantile_p(node.args["quantile"]))
        if isinstance(node, exp.CombinedAggFunc) and not isinstance(
            node, exp.CombinedParameterizedAgg
        ):
            name = str(node.this).lower()
            args = node.expressions
            if name == "countif":
                if len(args) != 1:
                    raise self.fail(
                        node, "invalid_arguments", "countIf(condition) takes one condition"
                    )
                return Agg("count", cond=e(args[0]))
            if name in ("sumif", "avgif", "uniqif"):
                if len(args) != 2:
                    raise self.fail(
                        node,
                        "invalid_arguments",
                        f"{node.this}(column, condition) takes two arguments",
                    )
                return Agg(name[:-2], arg=e(args[0]), cond=e(args[1]))
            raise self.fail(node, "unknown_function", f"unknown function {node.this!r}")
        if isinstance(node, exp.ParameterizedAgg | exp.CombinedParameterizedAgg):
            name = str(node.this).lower()
            params, args = node.expressions, node.args.get("params") or []
            if len(params) != 1:
                raise self.fail(node, "invalid_arguments", f"{node.this} takes one parameter")
            if name == "topk" and len(args) == 1:
                n = self.param(params[0], "topK")
                if not isinstance(n, int) or not 1 <= n <= 1000:
                    raise self.fail(
                        params[0], "invalid_arguments", "topK(n): n is an integer 1-1000"
                    )
                return Agg("topK", arg=e(args[0]), param=n)
            if name == "quantile" and len(args) == 1:
                return Agg("quantile", arg=e(args[0]), param=self.quantile_p(params[0]))
            if name == "quantileif" and len(args) == 2:
                return Agg(
                    "quantile", arg=e(args[0]), cond=e(args[1]), param=self.quantile_p(params[0])
                )
            raise self.fail(node, "invalid_arguments", f"wrong arguments for {node.this}")
        if isinstance(node, exp.If):
            if node.args.get("false") is None:
                raise self.fail(
                    node, "invalid_arguments", "if(condition, a, b) takes three arguments"
                )
            return Func("if", (e(node.this), e(node.args["true"]), e(node.args["false"])))
        if isinstance(node, exp.Nullif):
            return Func("nullIf", (e(node.this), e(node.expression)))
        if isinstance(node, exp.Round):
            self.no_extra_args(node, {"this", "decimals"})
            args = [node.this] + ([node.args["decimals"]] if node.args.get("decimals") else [])
            return Func("round", tuple(e(a) for a in args))
        if isinstance(node, exp.Coalesce):
            self.no_extra_args(node, {"this", "expressions"}, {"is_nvl", "is_null"})
            return Func("coalesce", tuple(e(a) for a in [node.this, *node.expressions]))
        raise self.fail(
            node,
            "unsupported",
            f"{node.sql(dialect='clickhouse')[:40]!r} is not part of the metric language",
        )

    def quantile_p(self, node: exp.Expression) -> float:
        p = self.param(node, "quantile")
        if not 0 <= p <= 1:
            raise self.fail(node, "invalid_arguments", "quantile(p): p is between 0 and 1")
        return float(p)


_BINARY: dict[type, str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.And: "and",
    exp.Or: "or",
    exp.Like: "like",
    exp.ILike: "ilike",
}


def _parse(text: str, *, expression_only: bool) -> tuple[exp.Expression, _Converter]:
    _check_text(text)
    try:
        tokens = _DIALECT.tokenize(text)
    except TokenError:
        offset = unterminated_at(text)
        raise MetricError(
            "syntax",
            "unterminated string, identifier or comment",
            **at_offset(text, offset, text[offset : offset + 20]),
        ) from None
    tokens = _check_tokens(text, tokens, expression_only=expression_only)
    try:
        trees = _DIALECT.parser().parse(tokens, text)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise MetricError(
            "syntax",
            first.get("description", "syntax error"),
            token=first.get("highlight"),
            line=first.get("line"),
            column=first.get("col"),
        ) from None
    except RecursionError:
        raise MetricError("too_deep", "the metric nests too deeply") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise MetricError("multiple_statements", "a metric is exactly one statement")
    return trees[0], _Converter(text)


@functools.lru_cache(maxsize=1024)
def parse_metric(text: str) -> Metric:
    """Parse and validate metric text (`SELECT <aggregates> [WHERE …] [GROUP BY …]`).

    Raises MetricError naming the offending token and its position. The result is cached per
    text: models are immutable, so sharing them is safe.
    """
    tree, conv = _parse(text, expression_only=False)
    if not isinstance(tree, exp.Select):
        raise conv.fail(tree, "syntax", "a metric is one SELECT")
    for key, value in tree.args.items():
        if key not in ("expressions", "where", "group") and value not in (None, [], False):
            raise conv.fail(
                value if isinstance(value, exp.Expression) else tree,
                "unsupported",
                f"{key.upper()} is not part of the metric language",
            )
    group_by = []
    group = tree.args.get("group")
    if group is not None:
        for key, value in group.args.items():
            if key != "expressions" and value not in (None, [], False):
                raise conv.fail(
                    group, "unsupported", "only plain GROUP BY column lists are supported"
                )
        for item in group.expressions:
            dim = conv.expr(item)
            if not isinstance(dim, Col | Prop):
                raise conv.fail(item, "invalid_group_by", "GROUP BY takes columns or props['key']")
            group_by.append(dim)
    outputs = []
    for index, item in enumerate(tree.expressions, start=1):
        alias = None
        node = item
        if isinstance(item, exp.Alias):
            alias_id = item.args.get("alias")
            alias = alias_id.this if isinstance(alias_id, exp.Identifier) else str(alias_id)
            node = item.this
        if isinstance(node, exp.Star):
            raise conv.fail(node, "unsupported", "SELECT * is not a metric; select aggregates")
        value = conv.expr(node)
        if isinstance(value, Col | Prop) and value in group_by:
            if alias is not None:
                raise conv.fail(
                    item, "invalid_name", "grouped columns keep their names; remove the alias"
                )
            continue  # grouped dimensions are output by the planner under their own names
        try:
            name = check_alias(alias) if alias is not None else f"m{index}"
        except MetricError as error:
            raise conv.located(item, error) from None
        outputs.append(conv.remember(Output(name, value), item))
    where = conv.expr(tree.args["where"].this) if tree.args.get("where") else None
    metric = Metric(outputs=tuple(outputs), where=where, group_by=tuple(group_by))
    return check_metric(metric, conv.locate)


@functools.lru_cache(maxsize=1024)
def parse_condition(text: str) -> Expr:
    """Parse a bare condition (`event = 'signup' AND country = 'DE'`), e.g. a funnel step."""
    tree, conv = _parse(text, expression_only=True)
    condition = conv.expr(tree)
    if any(isinstance(n, Agg) for n in walk(condition)):
        raise conv.fail(tree, "aggregate_in_where", "a condition cannot aggregate")
    probe = Metric(outputs=(Output("probe", Agg("count")),), where=condition)
    check_metric(probe, conv.locate)
    return condition
