"""What every API controller shares: ETag / If-Match handling and id checks (the auth and
services dependencies are in app/deps.py; store errors become the error shape in app/errors.py,
for the whole app)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from litestar import Request
from litestar.params import HeaderParameter

from app.errors import ApiError
from app.store.base import NotFound

MAX_ID = 2**31 - 1  # ids are PostgreSQL integers
MAX_BODY_BYTES = 256 * 1024  # config bodies (dashboards, metrics, alerts); larger → 413


# A handler that changes a versioned object declares this parameter (and passes the request to
# `expected_version`, which reads it): the OpenAPI document then shows the header and, by
# app/openapi.py's rules, the 400/409/428 answers of the If-Match rule.
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        required=False,
        description='The ETag you read (e.g. "3"). Without it (or `version` in the body, or '
        "`?version=`) the change is refused with 428; a stale one gets 409.",
    ),
]


def etag(version: int) -> str:
    return f'"{version}"'


def check_id(value: int) -> int:
    """An id from the path; out-of-range ids are simply not found."""
    if not 1 <= value <= MAX_ID:
        raise NotFound("object")
    return value


def expected_version(request: Request, body_version: int | None = None) -> int:
    """The version a write is based on: If-Match, else `version` in the body (or `?version=`).

    Neither → 428: an unconditional overwrite would silently lose a concurrent edit.
    """
    header = request.headers.get("if-match")
    if header:
        raw = header.strip()
        if raw.startswith("W/"):
            raw = raw[2:]
        raw = raw.strip('"')
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
            raise ApiError(
                400,
                "invalid_if_match",
                'If-Match must be the ETag you read, e.g. "3"',
                {"header": "If-Match"},
            )
        return int(raw)
    if body_version is not None:
        return body_version
    query = request.query_params.get("version")
    if query is not None and query.isdigit() and 1 <= int(query) <= MAX_ID:
        return int(query)
    raise ApiError(
        428,
        "precondition_required",
        "send If-Match with the ETag you read (or the `version` you read) to change this",
        {"header": "If-Match"},
    )


def exactly_one_metric(metric_id: int | None, metric_inline: Any, field_prefix: str = "") -> None:
    if (metric_id is None) == (metric_inline is None):
        raise ApiError(
            422,
            "invalid_metric_ref",
            "give exactly one of metric_id and metric_inline",
            {"field": f"{field_prefix}metric_id"},
        )
    if metric_id is not None and not 1 <= metric_id <= MAX_ID:
        raise ApiError(
            422,
            "unknown_metric",
            f"no metric with id {metric_id}",
            {"field": f"{field_prefix}metric_id"},
        )


def copy_name(name: str, taken: Collection[str] = ()) -> str:
    """`name (copy)`, or `name (copy 2)`, … — the first not in `taken`, at most 200 chars."""
    for n in range(1, 1000):
        suffix = " (copy)" if n == 1 else f" (copy {n})"
        candidate = name[: 200 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise ApiError(409, "name_taken", "too many copies of this name", {"field": "name"})
