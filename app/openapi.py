"""The OpenAPI document at `/schema` (`/schema/openapi.json`): what the API really answers.

Litestar derives each operation's parameters, request body and success body from the handler's
signature. What it cannot see (every error a route can produce, with the one error body the
API sends, and what a handler states with `opt=api_doc(...)`) is added here, in one place, from
the routes themselves, so a new route is documented without anyone remembering to. The rules
and how they are checked are in docs/api.md, section "The OpenAPI document"."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute

from app.errors import ErrorResponse

OPT_KEY = "openapi"
ERROR_SCHEMA = "ErrorResponse"
COMPONENTS = "#/components/schemas/{name}"

# Why each status is answered; the error body's `code` says which case it was.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed: a parameter, header or body that does not parse or "
    "is out of range (`invalid_request`, `invalid_json`, `invalid_time`, `invalid_filter`, "
    "`invalid_if_match`, ...); `where` names the parameter or field.",
    401: "No credential, or one that is unknown, revoked or expired (`unauthorized`).",
    403: "The token's role does not allow this operation (`forbidden`); "
    "`where.required_role` says which role would.",
    404: "No such object in the caller's org (`not_found`); another org's ids are not found.",
    409: "A write based on a version that is no longer current (`version_conflict`, "
    "`where.current_version` and the current `ETag`), or a conflict with other objects "
    "(`name_taken`, `metric_in_use`).",
    413: "The body is larger than this endpoint accepts (`body_too_large`, `http_error`).",
    422: "The request parses but is refused: a metric or SQL the compiler refuses (with its "
    "position in `where`), a field that breaks a rule, a query over its limits "
    "(`query_too_expensive`).",
    428: "A change without the version it is based on: send `If-Match` with the ETag you read "
    "(or `version` in the body, or `?version=`) (`precondition_required`).",
    429: "Over one of the org's quotas (request rate, concurrent queries, rows per minute) or "
    "the ingest rate (`rate_limited`); retry after `Retry-After` seconds.",
    503: "A dependency (PostgreSQL, ClickHouse, the event writer) is unavailable and nothing "
    "usable is cached (`store_unavailable`, `clickhouse_unavailable`, ...); retry after "
    "`Retry-After` seconds.",
}

_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, pattern=r"^[0-9]+$"),
    required=True,
    description="Seconds to wait before retrying.",
)
_WWW_AUTHENTICATE = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING),
    required=True,
    description="`Bearer`: the scheme the API expects.",
)

_ETAG = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, pattern=r'^"[0-9]+"$'),
    required=True,
    description='The object\'s version, e.g. `"3"`: send it back as If-Match to change it.',
)


@dataclass(frozen=True)
class RouteDoc:
    """What a handler tells the document beyond its signature (`opt=api_doc(...)`)."""

    errors: frozenset[int] = frozenset()
    without: frozenset[int] = frozenset()  # derived statuses this route never answers
    request_body: Mapping[str, Any] | None = None  # media type -> a type or a JSON schema
    success: Mapping[str, Any] | None = None  # media type -> a type or a JSON schema
    success_headers: Mapping[str, str] = field(default_factory=dict)
    etag: bool = False  # the success answer always carries the object's ETag


def api_doc(
    *,
    errors: Iterable[int] = (),
    without: Iterable[int] = (),
    request_body: Mapping[str, Any] | type | None = None,
    success: Mapping[str, Any] | None = None,
    success_headers: Mapping[str, str] | None = None,
    etag: bool = False,
) -> dict[str, Any]:
    """`opt=` for a route handler: error statuses beyond those derived from the route (and
    derived ones it never answers, `without`), a body
    the handler decodes itself (a type, or media type -> type or JSON schema), the success
    body by media type, headers of the success answer (name -> description), and whether that
    answer always carries the object's `ETag` (the version an `If-Match` names)."""
    if request_body is not None and not isinstance(request_body, Mapping):
        request_body = {"application/json": request_body}
    return {
        OPT_KEY: RouteDoc(
            errors=frozenset(errors),
            without=frozenset(without),
            request_body=request_body,
            success=success,
            success_headers=dict(success_headers or {}),
            etag=etag,
        )
    }


def error_statuses(route_doc: RouteDoc, operation: Operation, authenticated: bool) -> set[int]:
    """The error statuses an operation can answer, by the rules in this module's docstring."""
    statuses = set(route_doc.errors)
    if authenticated:
        statuses |= {401, 403, 429, 503}
    params = operation.parameters or []
    locations = {getattr(p, "param_in", None) for p in params}
    if "path" in locations:
        statuses.add(404)
    if locations & {"query", "header"}:
        statuses.add(400)
    if operation.request_body is not None:
        statuses |= {400, 413, 422}
    if any(_is_if_match(p) for p in params):
        statuses |= {400, 409, 428}
    return statuses - route_doc.without


def _is_if_match(param: Any) -> bool:
    return getattr(param, "param_in", None) == "header" and param.name.lower() == "if-match"


def _value(param_in: Any) -> Any:
    return getattr(param_in, "value", param_in)


class _Schemas:
    """JSON schemas of msgspec types, added to the document's components once each."""

    def __init__(self, openapi: OpenAPI):
        self.components = openapi.components
        if self.components.schemas is None:
            self.components.schemas = {}

    def of(self, value: Any) -> Any:
        """A JSON schema as it is, or the schema of a msgspec type (a struct, list[...])."""
        if isinstance(value, Mapping):
            return dict(value)
        (schema,), defs = msgspec.json.schema_components([value], ref_template=COMPONENTS)
        for name, definition in defs.items():
            self.components.schemas.setdefault(name, definition)
        return schema


def _content(schemas: _Schemas, by_media_type: Mapping[str, Any]) -> dict[str, OpenAPIMediaType]:
    return {
        media_type: OpenAPIMediaType(schema=schemas.of(value))
        for media_type, value in by_media_type.items()
    }


def complete(openapi: OpenAPI, routes: Iterable[Any]) -> None:
    """Add to `openapi` (built by Litestar from `routes`) what this module's docstring lists."""
    schemas = _Schemas(openapi)
    error_ref = schemas.of(ErrorResponse)
    for route in routes:
        if not isinstance(route, HTTPRoute):
            continue
        path_item = (openapi.paths or {}).get(route.path_format or "/")
        if path_item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(path_item, str(_value(method)).lower(), None)
            if not isinstance(operation, Operation):
                continue
            _complete_operation(operation, handler, schemas, error_ref)


def _complete_operation(
    operation: Operation, handler: Any, schemas: _Schemas, error_ref: Any
) -> None:
    route_doc: RouteDoc = (handler.opt or {}).get(OPT_KEY) or RouteDoc()
    if route_doc.request_body is not None and operation.request_body is None:
        operation.request_body = RequestBody(
            content=_content(schemas, route_doc.request_body), required=True
        )
    responses = operation.responses = dict(operation.responses or {})
    success = next((code for code in responses if code.startswith("2")), None)
    if success is not None:
        answer = responses[success]
        if route_doc.success is not None:
            answer.content = _content(schemas, route_doc.success)
        headers = dict(answer.headers or {})
        for name, text in route_doc.success_headers.items():
            headers[name] = OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=text)
        if route_doc.etag:
            headers["ETag"] = _ETAG
        answer.headers = headers
    # What the handler documented itself, with its own body, stays (e.g. /readyz's 503).
    own = {str(code) for code in (handler.responses or {})}
    # `caller`: a user token or an ingest key (app/api/annotations.py)
    authenticated = bool({"principal", "caller"} & set(handler.resolve_dependencies()))
    for status in sorted(error_statuses(route_doc, operation, authenticated)):
        if str(status) in own:
            continue
        error_headers: dict[str, OpenAPIHeader | Reference] = {}
        if status in (429, 503):
            error_headers["Retry-After"] = _RETRY_AFTER
        if status == 401 and authenticated:
            error_headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
        responses[str(status)] = OpenAPIResponse(
            description=ERROR_DESCRIPTIONS[status],
            headers=error_headers or None,
            content={"application/json": OpenAPIMediaType(schema=error_ref)},
        )
    for code, answer in responses.items():  # Litestar's default body for its own errors
        if code[0] in "45" and code not in own and isinstance(answer, OpenAPIResponse):
            answer.content = {"application/json": OpenAPIMediaType(schema=error_ref)}
            if code == "400" and answer.description.startswith("Bad request syntax"):
                answer.description = ERROR_DESCRIPTIONS[400]


class _CompletingOpenAPI(OpenAPI):
    """Litestar's OpenAPI document, completed from the app's routes when first rendered."""

    def to_schema(self) -> dict[str, Any]:
        routes = getattr(self, "_routes", None)
        if routes is not None:
            self._routes = None  # once
            complete(self, routes())
        return super().to_schema()


@dataclass
class ApiOpenAPIConfig(OpenAPIConfig):
    """`OpenAPIConfig` whose document is completed by `complete` over the app's routes;
    `bind(app)` once the app exists."""

    routes: Callable[[], Iterable[Any]] | None = None

    def bind(self, app: Any) -> None:
        self.routes = lambda: app.routes

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        document = _CompletingOpenAPI(**{f.name: getattr(base, f.name) for f in fields(base)})
        document._routes = self.routes
        return document
