"""What a user is told about a failed ClickHouse query: the code, our own words, a position.

ClickHouse's exception text quotes the values it failed on (`Cannot parse string 'SECRET' as
UInt64`), and those values come from rows. A user is never shown that text: the message is
chosen by the error code alone from the table below (an unknown code says only its number),
and the only words taken from ClickHouse's text are names the user wrote themselves — a
function or column name, accepted only when it is an identifier that also occurs in the
user's query — to say where the error is. So an error answer carries nothing from data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# code → (ClickHouse's name, what it means for the person who wrote the query)
_KNOWN: dict[int, tuple[str, str]] = {
    6: (
        "CANNOT_PARSE_TEXT",
        "a value could not be converted to the requested type; the "
        "…OrNull / …OrZero forms of conversion functions return NULL or 0 instead",
    ),
    8: ("THERE_IS_NO_COLUMN", "a column does not exist"),
    10: ("NOT_FOUND_COLUMN_IN_BLOCK", "a column does not exist"),
    27: ("CANNOT_PARSE_INPUT_ASSERTION_FAILED", "a value could not be parsed"),
    36: ("BAD_ARGUMENTS", "a function got an argument it cannot use"),
    38: ("CANNOT_PARSE_DATE", "a value could not be read as a date"),
    41: ("CANNOT_PARSE_DATETIME", "a value could not be read as a date and time"),
    42: ("NUMBER_OF_ARGUMENTS_DOESNT_MATCH", "a function got the wrong number of arguments"),
    43: ("ILLEGAL_TYPE_OF_ARGUMENT", "a function got an argument of a type it does not take"),
    44: ("ILLEGAL_COLUMN", "a function got a column it cannot use"),
    46: ("UNKNOWN_FUNCTION", "unknown function"),
    47: ("UNKNOWN_IDENTIFIER", "unknown column or alias"),
    48: ("NOT_IMPLEMENTED", "this combination is not supported by ClickHouse"),
    53: ("TYPE_MISMATCH", "a value does not have the type it is used as"),
    60: ("UNKNOWN_TABLE", "unknown table"),
    62: ("SYNTAX_ERROR", "syntax error"),
    69: ("ARGUMENT_OUT_OF_BOUND", "an argument is out of the range the function accepts"),
    70: ("CANNOT_CONVERT_TYPE", "a value could not be converted to the requested type"),
    72: ("CANNOT_PARSE_NUMBER", "a value could not be read as a number"),
    117: ("INCORRECT_DATA", "a value is not in the form the function expects"),
    125: ("INCORRECT_RESULT_OF_SCALAR_SUBQUERY", "a scalar subquery returned more than one row"),
    128: ("TOO_LARGE_ARRAY_SIZE", "an array would be too large"),
    131: ("TOO_LARGE_STRING_SIZE", "a string would be too large"),
    153: ("ILLEGAL_DIVISION", "division by zero (intDiv and modulo by 0 fail; `/` gives inf)"),
    158: ("TOO_MANY_ROWS", "the query reads more rows than allowed"),
    159: ("TIMEOUT_EXCEEDED", "the query ran longer than allowed"),
    160: ("TOO_SLOW", "the query would run longer than allowed"),
    179: ("MULTIPLE_EXPRESSIONS_FOR_ALIAS", "one alias names two different expressions"),
    184: ("ILLEGAL_AGGREGATION", "an aggregate function is used where it cannot be"),
    190: ("SIZES_OF_ARRAYS_DONT_MATCH", "arrays of different lengths where equal ones are needed"),
    215: ("NOT_AN_AGGREGATE", "a column is neither aggregated nor in GROUP BY"),
    241: ("MEMORY_LIMIT_EXCEEDED", "the query needs more memory than allowed"),
    307: ("TOO_MANY_BYTES", "the query reads more data than allowed"),
    321: ("VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "a value does not fit its type"),
    352: ("AMBIGUOUS_COLUMN_NAME", "a column name is ambiguous; qualify it with its table"),
    386: ("NO_COMMON_TYPE", "values of incompatible types are combined"),
    394: ("QUERY_WAS_CANCELLED", "the query was cancelled"),
    396: ("TOO_MANY_ROWS_OR_BYTES", "the result is larger than allowed"),
    407: ("DECIMAL_OVERFLOW", "a decimal value overflowed"),
    427: ("CANNOT_COMPILE_REGEXP", "a regular expression is not valid"),
}

# ClickHouse appends "while executing 'FUNCTION f(…' " after its message (and after any value it
# quotes): the last such mention is its own.
_FUNCTION_IN_TEXT = re.compile(r"while executing 'FUNCTION ([A-Za-z_][A-Za-z0-9_]*)\(")
_QUOTED_NAME = re.compile(r"[`'\"]([A-Za-z_][A-Za-z0-9_]*)[`'\"]")
# Failures found while analysing the query, before any row is read: their quoted names come
# from the query and the schema, never from data.
_ANALYSIS_CODES = frozenset({8, 10, 46, 47, 60, 179, 352})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class PublicError:
    """What may be shown: `message` never holds text from data; `where` locates it."""

    code: int | None
    name: str | None
    message: str
    where: dict[str, Any]


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _named_in_query(code: int | None, raw: str, query: str) -> str | None:
    """A name the failure concerns that is also an identifier of the user's query, or None:
    the function ClickHouse last says it was executing, or, for a failure of analysis, the
    first quoted name."""
    written = set(_IDENTIFIER.findall(query))
    functions = [m.group(1) for m in _FUNCTION_IN_TEXT.finditer(raw)]
    if functions and functions[-1] in written:
        return functions[-1]
    if code in _ANALYSIS_CODES:
        for match in _QUOTED_NAME.finditer(raw):
            if match.group(1) in written:
                return match.group(1)
    return None


def public_error(code: int | None, raw: str, query: str | None = None) -> PublicError:
    """The shown form of a ClickHouse failure with `code` and exception text `raw`.

    `query` is the text the user wrote; when given, a name from it that the failure concerns
    is added, with its first position (`where.token`, `line`, `column`).
    """
    name, meaning = _KNOWN.get(code or 0, (None, "the query failed in ClickHouse"))
    label = f"ClickHouse error {code} ({name})" if name else f"ClickHouse error {code}"
    where: dict[str, Any] = {}
    if query:
        token = _named_in_query(code, raw, query)
        if token is not None:
            found = re.search(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", query)
            if found is not None:
                line, column = _line_column(query, found.start())
                where = {"token": token, "line": line, "column": column}
                meaning = f"{meaning} (at {token!r})"
    return PublicError(code=code, name=name, message=f"{label}: {meaning}", where=where)
