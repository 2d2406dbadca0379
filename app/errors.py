"""One error shape for every 4xx/5xx the API answers:

    {"error": {"code": "invalid_metric", "message": "...", "where": {...} | null}}

`code` is stable and machine-readable, `message` is for people, `where` points at the
offending part of the request (a field, an event index, a position in metric text).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException
from litestar.exceptions import ValidationException as LitestarValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR


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


def _internal_error(request: Request, exc: Exception) -> Response[ErrorResponse]:
    request.logger.exception("unhandled error", exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error; it has been logged"
    )


exception_handlers = {
    ApiError: _api_error,
    LitestarValidationException: _validation_error,
    NotAuthorizedException: _http_error,
    NotFoundException: _http_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
