"""Pass 1 — the text and its tokens, before anything is parsed.

Size, invisible characters (zero-width, bidi overrides, controls other than line breaks and
tabs), nesting depth, and the tokens no read-only query needs: SETTINGS (limits are the org's),
FORMAT and INTO OUTFILE (the output format is a request field), query parameters
(`{name:Type}`, `?`, `@x`), a second statement, and a statement that is not a SELECT.
Every refusal names the token and its line and column.
"""

from __future__ import annotations

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from app.querybuilder.analyst.errors import AnalystSqlError, at_offset
from app.querybuilder.language import unterminated_at
from app.querybuilder.validate import find_invisible

MAX_SQL_CHARS = 100_000
MAX_NESTING = 64  # parentheses and brackets; sqlglot recurses per level

_DIALECT = Dialect.get_or_raise("clickhouse")

_FORBIDDEN: dict[TokenType, tuple[str, str]] = {
    TokenType.SETTINGS: (
        "forbidden_keyword",
        "SETTINGS cannot be set from a query: limits come from your org",
    ),
    TokenType.FORMAT: (
        "forbidden_keyword",
        "FORMAT is chosen with the request's format (json, csv or parquet), not in the query",
    ),
    TokenType.INTO: ("forbidden_keyword", "INTO (OUTFILE) is not allowed: results come back"),
    TokenType.L_BRACE: ("parameters", "query parameters ({name:Type}) are not supported"),
    TokenType.PLACEHOLDER: ("parameters", "placeholders (?) are not supported"),
    TokenType.PARAMETER: ("parameters", "parameters (@name) are not supported"),
}

_STATEMENT_STARTS = {TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN}


def check_text(text: object) -> str:
    """The SQL text, if its size and characters are acceptable."""
    if not isinstance(text, str):
        raise AnalystSqlError("invalid_text", "the query must be text")
    if not text.strip():
        raise AnalystSqlError("empty", "the query is empty")
    if len(text) > MAX_SQL_CHARS:
        raise AnalystSqlError(
            "text_too_long",
            f"the query is {len(text)} characters; the limit is {MAX_SQL_CHARS}",
            **at_offset(text, MAX_SQL_CHARS, text[MAX_SQL_CHARS : MAX_SQL_CHARS + 20]),
        )
    bad = find_invisible(text.replace("\n", " ").replace("\t", " ").replace("\r", " "))
    if bad:
        code = f"U+{ord(bad.group()):04X}"
        raise AnalystSqlError(
            "invisible_character",
            f"the query contains the control/invisible character {code}",
            **at_offset(text, bad.start(), code),
        )
    return text


def tokenize(text: str) -> list[Token]:
    """ClickHouse tokens of `text`; an unterminated string, name or comment is a syntax error."""
    try:
        return _DIALECT.tokenize(text)
    except TokenError:
        start = unterminated_at(text)
        raise AnalystSqlError(
            "syntax",
            "unterminated string, quoted name or comment",
            **at_offset(text, start, text[start : start + 20]),
        ) from None


def check_tokens(text: str, tokens: list[Token]) -> None:
    """Refuse tokens a read-only query does not need; one SELECT statement only."""
    while tokens and tokens[-1].token_type is TokenType.SEMICOLON:
        tokens = tokens[:-1]
    if not tokens:
        raise AnalystSqlError("empty", "the query is empty")
    first = tokens[0]
    if first.token_type not in _STATEMENT_STARTS:
        raise AnalystSqlError(
            "not_select",
            f"only SELECT queries can run here, not {first.text.upper()}",
            **at_offset(text, first.start, first.text),
        )
    depth = 0
    for token in tokens:
        kind = token.token_type
        if kind is TokenType.SEMICOLON:
            raise AnalystSqlError(
                "multiple_statements",
                "send exactly one statement",
                **at_offset(text, token.start, token.text),
            )
        if kind in _FORBIDDEN:
            code, message = _FORBIDDEN[kind]
            raise AnalystSqlError(code, message, **at_offset(text, token.start, token.text))
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            if depth > MAX_NESTING:
                raise AnalystSqlError(
                    "too_deep",
                    f"parentheses and brackets may nest at most {MAX_NESTING} levels",
                    **at_offset(text, token.start, token.text),
                )
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
