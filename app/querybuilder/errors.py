"""The one exception users see from the query builder, and the one they must never see.

`MetricError` is bad input: the API layer turns it into a 422 `{code, message, where}`.
`TenantGuardError` is a compiler bug or a tampered query: it must surface as a 500 and the
query must not run.
"""

from __future__ import annotations

from typing import Any


class MetricError(Exception):
    """A metric definition, form or compile request that cannot be compiled.

    `code` is machine-friendly (e.g. ``unknown_function``); `token`, `line`, `column` and
    `offset` (0-based character offset) say where in the metric text, when there is text.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        token: str | None = None,
        line: int | None = None,
        column: int | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.token = token
        self.line = line
        self.column = column
        self.offset = offset
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.message]
        if self.line is not None:
            parts.append(f"at line {self.line}, column {self.column}")
        if self.token is not None:
            parts.append(f"(near {self.token!r})")
        if self.field is not None:
            parts.append(f"in {self.field}")
        return " ".join(parts)

    @property
    def where(self) -> dict[str, Any]:
        """Where the problem is, for the 422 body; empty keys are left out."""
        where = {
            "token": self.token,
            "line": self.line,
            "column": self.column,
            "offset": self.offset,
            "field": self.field,
        }
        return {k: v for k, v in where.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the 422 response."""
        return {"code": self.code, "message": self.message, "where": self.where}


class TenantGuardError(Exception):
    """A query reached execution without a provable `org_id` guard on every table it reads."""


def line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def at_offset(text: str, offset: int, token: str) -> dict[str, Any]:
    """`token`, `line`, `column`, `offset` for an error at `offset` in `text` (the `where` of a
    MetricError; shared by the metric language and analysts' SQL)."""
    line, column = line_column(text, offset)
    return {"token": token[:60], "line": line, "column": column, "offset": offset}
