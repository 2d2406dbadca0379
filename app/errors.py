"""One error shape for every 4xx/5xx the API answers:

    {"error": {"code": "invalid_metric", "message": "...", "where": {...} | null}}

`code` is stable and machine-readable, `message` is for people, `where` points at the
offending part of the request (a field, an event index, a position in metric text).
`exception_handlers` (the app's, passed to Litestar once) maps every exception a handler lets
out to that shape: `ApiError`, the config store's errors, a metric the compiler refuses.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException
from litestar.exceptions import ValidationException as LitestarValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.querybuilder.errors import MetricError
from app.store.base import Conflict, Invalid, NotFound, StoreUnavailable, VersionConflict


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    where: Any = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    """Raise from any handler to answer `status` with the shared error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        where: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.where = where
        self.headers = headers or {}


class LocatedMetricError(MetricError):
    """A compiler refusal placed in the request: `where` names the request's field or
    parameter the metric came from (the compiler only knows positions inside the metric)."""

    def __init__(self, refused: MetricError, where: dict[str, Any]):
        super().__init__(refused.code, refused.message)
        self._where = where

    @property
    def where(self) -> dict[str, Any]:
        return self._where


def error_response(
    status: int, code: str, message: str, where: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorResponse]:
    return Response(
        ErrorResponse(ErrorBody(code, message, where)), status_code=status, headers=headers
    )


def _api_error(_: Request, exc: ApiError) -> Response[ErrorResponse]:
    return error_response(exc.status, exc.code, exc.message, exc.where, exc.headers)


def _validation_error(_: Request, exc: LitestarValidationException) -> Response[ErrorResponse]:
    return error_response(400, "invalid_request", exc.detail, exc.extra or None)


def _http_error(_: Request, exc: HTTPException) -> Response[ErrorResponse]:
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, None, exc.headers)


def _metric_error(_: Request, exc: MetricError) -> Response[ErrorResponse]:
    return error_response(422, exc.code, exc.message, exc.where or None)


def _not_found(_: Request, exc: NotFound) -> Response[ErrorResponse]:
    return error_response(404, "not_found", f"no such {exc.args[0] if exc.args else 'object'}")


def _version_conflict(_: Request, exc: VersionConflict) -> Response[ErrorResponse]:
    where: dict[str, Any] = {"current_version": exc.current}
    if exc.updated_at is not None:  # a dashboard or a metric: who changed it, and when
        where["updated_by"] = exc.editor
        where["updated_at"] = exc.updated_at.isoformat()
    return error_response(
        409,
        "version_conflict",
        "this was changed since you read it; re-read it and apply your change again",
        where,
        {"ETag": f'"{exc.current}"'},  # the object's ETag, as app.api.common.etag writes it
    )


def _conflict(_: Request, exc: Conflict) -> Response[ErrorResponse]:
    return error_response(409, exc.code, exc.message, exc.where)


def _invalid(_: Request, exc: Invalid) -> Response[ErrorResponse]:
    return error_response(422, exc.code, exc.message, exc.where)


def _store_unavailable(request: Request, exc: StoreUnavailable) -> Response[ErrorResponse]:
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.degradation.failed("postgres", str(exc))
    return error_response(
        503,
        "store_unavailable",
        "the configuration store is unavailable; try again shortly",
        None,
        {"Retry-After": "5"},
    )


def _internal_error(request: Request, exc: Exception) -> Response[ErrorResponse]:
    request.logger.exception("unhandled error", exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error; it has been logged"
    )


exception_handlers = {
    ApiError: _api_error,
    MetricError: _metric_error,
    NotFound: _not_found,
    VersionConflict: _version_conflict,
    Conflict: _conflict,
    Invalid: _invalid,
    StoreUnavailable: _store_unavailable,
    LitestarValidationException: _validation_error,
    NotAuthorizedException: _http_error,
    NotFoundException: _http_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
