"""ClickHouse's HTTP conventions, as far as clients rely on them: credentials, the statement
and its format, the settings a read-only user may send, the answer's headers and the error
convention (`Code: N. DB::Exception: <message>. (NAME)` with `X-ClickHouse-Exception-Code`).

Pure functions over a request's parts; app/api/clickhouse_http/routes.py wires them.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from app.credentials import bearer_token
from app.querybuilder.analyst import DEFAULT_LIMITS, PROTOCOL_FORMATS
from app.querybuilder.analyst.system import split_format

#: ClickHouse answers a statement without FORMAT in TabSeparated (clients read commands so).
DEFAULT_FORMAT = "TabSeparated"
_FORMAT_ALIASES = {
    "tsv": "TabSeparated",
    "tsvwithnames": "TabSeparatedWithNames",
    "tsvwithnamesandtypes": "TabSeparatedWithNamesAndTypes",
    **{name.lower(): name for name in PROTOCOL_FORMATS},
}

#: What `system.settings` shows, every one read-only: the analyst limits, and the client
#: behaviours we do not offer switched off (clients skip read-only settings; clickhouse-connect
#: reads this list on connect and so never sends them).
SHOWN_SETTINGS: dict[str, str] = {
    "readonly": "1",
    "max_execution_time": str(DEFAULT_LIMITS.max_execution_time_s),
    "max_result_rows": str(DEFAULT_LIMITS.max_result_rows),
    "max_result_bytes": str(DEFAULT_LIMITS.max_result_bytes),
    "result_overflow_mode": "throw",
    "max_memory_usage": str(DEFAULT_LIMITS.max_memory_usage),
    "date_time_input_format": "basic",
    "cast_string_to_dynamic_use_inference": "0",
    "cancel_http_readonly_queries_on_client_close": "0",
    "enable_http_compression": "0",
    "send_progress_in_http_headers": "0",
    "http_headers_progress_interval_ms": "100",
    "output_format_arrow_string_as_string": "1",
    "wait_end_of_query": "1",
}

# URL parameters that are part of the transport, not settings: accepted (and, apart from
# `query`, `database`, `default_format` and `query_id`, without effect: there is no session
# state, no compression and every answer is complete before it is sent).
_TRANSPORT = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout",
        "session_check", "user", "password", "quota_key", "wait_end_of_query",
        "client_protocol_version", "compress", "decompress", "buffer_size", "role",
        "enable_http_compression", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    }
)  # fmt: skip

# Our refusal codes (AnalystSqlError.code) → ClickHouse's code, name and HTTP status.
_REFUSALS: dict[str, tuple[int, str, int]] = {
    "not_select": (164, "READONLY", 403),
    "forbidden_keyword": (164, "READONLY", 403),
    "unknown_table": (60, "UNKNOWN_TABLE", 404),
    "system_table": (60, "UNKNOWN_TABLE", 404),
    "table_function": (60, "UNKNOWN_TABLE", 404),
    "unknown_function": (46, "UNKNOWN_FUNCTION", 404),
    "parameters": (456, "UNKNOWN_QUERY_PARAMETER", 400),
    "org_id_forbidden": (497, "ACCESS_DENIED", 403),
    "reserved_name": (497, "ACCESS_DENIED", 403),
}
_SYNTAX = (62, "SYNTAX_ERROR", 400)
_NAMES = {
    36: "BAD_ARGUMENTS",
    81: "UNKNOWN_DATABASE",
    73: "UNKNOWN_FORMAT",
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    194: "REQUIRED_PASSWORD",
    201: "QUOTA_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    210: "NETWORK_ERROR",
    396: "TOO_MANY_ROWS_OR_BYTES",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
    1002: "UNKNOWN_EXCEPTION",
}


_QUERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class ProtocolError(Exception):
    """An answer in ClickHouse's error convention: `code` (ClickHouse's), HTTP `status`, our
    `message` (never text from ClickHouse or from data), extra `headers`."""

    def __init__(
        self,
        code: int,
        message: str,
        status: int = 500,
        *,
        name: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.name = name or _NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.headers = headers or {}


def refusal(code: str, message: str) -> ProtocolError:
    """A statement the analysts' compiler refused (`AnalystSqlError.code`), ClickHouse-style."""
    ch_code, name, status = _REFUSALS.get(code, _SYNTAX)
    return ProtocolError(ch_code, message, status, name=name)


def error_body(error: ProtocolError, version: str) -> bytes:
    """ClickHouse's error text, which clients show and parse (code, then `(NAME)`)."""
    message = error.message.rstrip(".")
    return f"Code: {error.code}. DB::Exception: {message}. ({error.name}) (version {version})\n".encode()


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The secret a ClickHouse client sends as its password: `Authorization: Basic` (user:
    password), `Authorization: Bearer`, `X-ClickHouse-Key`, or the `password` URL parameter.
    The user name is not checked: the token alone names the org and the person."""
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[2] or None
        return bearer_token(header)
    return headers.get("x-clickhouse-key") or params.get("password") or None


def output_format(name: str | None) -> str:
    """The ClickHouse format `name` names (TSV aliases included); UNKNOWN_FORMAT otherwise."""
    if not name:
        return DEFAULT_FORMAT
    found = _FORMAT_ALIASES.get(name.lower())
    if found is None:
        raise ProtocolError(73, f"Unknown output format {name[:40]!r} here", 400)
    return found


def check_params(params: Mapping[str, str], database: str) -> None:
    """Refuse what a read-only ClickHouse user could not do with these URL parameters: another
    database, or a setting changed from the value `system.settings` shows."""
    asked = params.get("database", "")
    if asked not in ("", "default", database):
        raise ProtocolError(81, f"Database {asked[:60]!r} does not exist; yours is {database}", 404)
    for name, value in params.items():
        if name in _TRANSPORT or name.startswith("param_"):
            continue
        if SHOWN_SETTINGS.get(name) != value:
            raise ProtocolError(164, f"Cannot modify {name[:60]!r} setting in readonly mode", 403)


@dataclass(slots=True)
class Statement:
    """One request's statement: the SQL without its FORMAT clause, and the output format."""

    sql: str
    fmt: str
    query_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def statement(params: Mapping[str, str], body: bytes, content_type: str = "") -> Statement:
    """The statement of a request: the `query` URL parameter followed by the body (as
    ClickHouse reads them), its trailing `FORMAT x` or else `default_format`."""
    if content_type.lower().startswith("multipart/form-data"):
        # What clickhouse-connect sends for large server-side query parameters.
        raise ProtocolError(456, "form-encoded queries (query parameters) are not supported", 400)
    try:
        text = "\n".join(p for p in (params.get("query", ""), body.decode()) if p)
    except UnicodeDecodeError:
        raise ProtocolError(62, "the query is not valid UTF-8", 400, name="SYNTAX_ERROR") from None
    if not text.strip():
        raise ProtocolError(62, "Empty query", 400, name="SYNTAX_ERROR")
    sql, fmt = split_format(text)
    found = Statement(sql, output_format(fmt or params.get("default_format")))
    asked = params.get("query_id", "")
    if _QUERY_ID.fullmatch(asked):  # echoed in a header: nothing but a plain id
        found.query_id = asked
    return found


def summary(rows_read: int | None, result_bytes: int, elapsed_s: float) -> str:
    """`X-ClickHouse-Summary`: what ClickHouse reports, as strings; rows read are the org's own
    rows the query covered (what it is charged), never ClickHouse's count of granules."""
    read = str(rows_read or 0)
    return msgspec.json.encode(
        {
            "read_rows": read,
            "read_bytes": "0",
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": read,
            "result_bytes": str(result_bytes),
            "elapsed_ns": str(int(elapsed_s * 1e9)),
        }
    ).decode()
