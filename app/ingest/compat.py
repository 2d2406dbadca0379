"""Routes that take other tools' tracking formats: PostHog capture, Segment's HTTP tracking API
(RudderStack's SDKs too) and Plausible's events API.

Each route reads the body under the ingest body limit (inflated under the same limit), maps it
with its module of app/ingest/formats, finds the org from the key the SDK already sends (or the
Plausible site's domain), and hands the events to `store_items`: the validation, enrichment,
rate limit, event-id deduplication and writer of `POST /v1/events`. Errors use the one error
shape. These are the vendors' wire formats, not our API: they stay out of the OpenAPI document
and are described in docs/ingest.md ("Other tools' formats", with the CORS policy).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.types import Message, Scope

from app.errors import ApiError, ErrorBody
from app.ingest.auth import SiteKeyCache
from app.ingest.formats import (
    Batch,
    form_data,
    inflate,
    load_json,
    malformed,
    plausible,
    posthog,
    segment,
)
from app.ingest.routes import client_ip, ingest_state, read_body, store_items
from app.ingest.schema import IngestResult
from app.services import Services

if TYPE_CHECKING:
    ServicesDep = Services
else:
    ServicesDep = NamedDependency[Any]

POSTHOG_PATHS = ["/capture", "/batch", "/e", "/i/v0/e"]
SEGMENT_PATHS = {
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/batch": None,
}
PLAUSIBLE_PATH = "/api/event"

# Browsers post here from the customer's own pages (posthog-js, Plausible's script), so any
# origin may, without credentials: the key is in the body (or no key: a site's domain), never
# in a cookie, so a cross-origin request carries no authority the page did not put in it.
CORS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Content-Encoding, Authorization",
    "Access-Control-Max-Age": "86400",
}
_SITES_KEY = "ingest_sites"
_encode = msgspec.json.Encoder().encode


def _missing_key(where: str) -> ApiError:
    return ApiError(
        401,
        "missing_api_key",
        f"send the org's ingest key as {where}",
        headers={"WWW-Authenticate": "Bearer"},
    )


def header_key(authorization: str | None) -> str | None:
    """The key of an `Authorization` header: `Bearer <key>`, or Basic auth's user (Segment's
    and RudderStack's write key, password empty). None without a header; 401 when unreadable."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except (binascii.Error, ValueError):
            user = ""
        if user:
            return user
    raise ApiError(
        401,
        "missing_api_key",
        "the Authorization header must be 'Bearer <key>' or Basic auth with the key as user",
        headers={"WWW-Authenticate": "Bearer"},
    )


def the_key(batch: Batch, authorization: str | None, where: str) -> str:
    """The one key a request names, in its header and body together. Several different ones
    are refused before any is checked: a request is stored under one org or not at all, and
    a key the sender did not mean (another org's, pasted into a body) never decides it."""
    keys = set(batch.keys)
    from_header = header_key(authorization)
    if from_header is not None:
        keys.add(from_header)
    if not keys:
        raise _missing_key(where)
    if len(keys) > 1:
        raise ApiError(
            401,
            "conflicting_api_keys",
            f"the request names {len(keys)} different keys (header and body); send one",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return keys.pop()


def _items(events: list[Any], max_events: int) -> list[tuple[int, bytes]]:
    if not events:
        raise ApiError(400, "empty_batch", "the body holds no events")
    if len(events) > max_events:
        raise ApiError(
            413,
            "too_many_events",
            f"{len(events)} events in one request; the limit is {max_events}",
            where={"limit": max_events, "count": len(events)},
        )
    items = []
    for index, event in enumerate(events):
        try:
            raw = _encode(event)
        except (TypeError, OverflowError, msgspec.EncodeError):
            raw = b"null"  # refused at its index by validation, like any non-object
        items.append((index, raw))
    return items


async def _decoded(request: Request, services: Services) -> Any:
    """The request body as JSON: read and inflated under the body limit, a form's `data=`
    (base64) unwrapped."""
    settings = services.settings
    limit = settings.ingest_max_body_bytes
    body = await read_body(request, limit)
    body = inflate(body, request.headers.get("content-encoding", ""), limit)
    if request.query_params.get("compression") == "lz64":
        raise malformed(
            "unsupported_compression",
            "compression=lz64 is not supported; use gzip-js, base64 or none",
        )
    if body.lstrip()[:1] not in (b"[", b"{"):
        data = form_data(body)
        if data is not None:
            body = inflate(data, "", limit)
    return load_json(body, settings.max_json_depth)


async def _store_keyed(
    request: Request, services: Services, batch: Batch, where: str, status: int
) -> Response[IngestResult]:
    settings = services.settings
    key_text = the_key(batch, request.headers.get("authorization"), where)
    key = await ingest_state(services).keys.authenticate(
        services.store,
        f"Bearer {key_text}",
        client_ip(request, settings.ingest_trust_forwarded_for),
    )
    items = _items(batch.events, settings.ingest_max_events)
    result = await store_items(request, services, key, items)
    return Response(result, status_code=status)


@post(POSTHOG_PATHS, status_code=200, include_in_schema=False)
async def posthog_capture(request: Request, services: ServicesDep) -> Response[IngestResult]:
    """PostHog's capture endpoints: one event, an array, or `{"batch": [...]}`."""
    try:
        batch = posthog.to_batch(await _decoded(request, services))
        return await _store_keyed(request, services, batch, "`api_key` (PostHog's token)", 200)
    except ApiError as exc:  # counted like /v1/events' refusals
        services.telemetry.ingest_refused(exc.code)
        raise


class SegmentErrorResponse(msgspec.Struct):
    """The one error shape, with `code` and `message` repeated at the top, where Segment's and
    RudderStack's SDKs read them (RudderStack's treats a 4xx without them like a network
    failure and retries it for minutes)."""

    error: ErrorBody
    code: str
    message: str


def _segment_error(exc: ApiError) -> Response[SegmentErrorResponse]:
    body = SegmentErrorResponse(ErrorBody(exc.code, exc.message, exc.where), exc.code, exc.message)
    return Response(body, status_code=exc.status, headers=exc.headers)


def _segment_handler(path: str, kind: str | None) -> Any:
    async def segment_call(request: Request, services: ServicesDep) -> Response[Any]:
        try:
            batch = segment.to_batch(await _decoded(request, services), kind)
            where = "the write key (Basic auth user, or `writeKey` in the body)"
            return await _store_keyed(request, services, batch, where, 200)
        except ApiError as exc:
            services.telemetry.ingest_refused(exc.code)
            return _segment_error(exc)

    segment_call.__name__ = f"segment_{kind or 'batch'}"
    segment_call.__doc__ = f"Segment's `{path}` (also RudderStack's SDKs)."
    return post(path, status_code=200, include_in_schema=False, name=segment_call.__name__)(
        segment_call
    )


segment_calls = [_segment_handler(path, kind) for path, kind in SEGMENT_PATHS.items()]


def _site_keys(services: Services) -> SiteKeyCache:
    cache = services.extras.get(_SITES_KEY)
    if cache is None:
        settings = services.settings
        cache = services.extras[_SITES_KEY] = SiteKeyCache(
            settings.ingest_key_cache_ttl_s, stale_s=settings.ingest_key_stale_s
        )
    return cache


@post(PLAUSIBLE_PATH, status_code=202, include_in_schema=False)
async def plausible_event(request: Request, services: ServicesDep) -> Response[IngestResult]:
    """Plausible's events API: one event of the site named by `domain` (mapped to an org)."""
    try:
        return await _plausible_event(request, services)
    except ApiError as exc:  # counted like /v1/events' refusals
        services.telemetry.ingest_refused(exc.code)
        raise


async def _plausible_event(request: Request, services: Services) -> Response[IngestResult]:
    payload = await _decoded(request, services)
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", "the body must be one JSON event object")
    sites = _site_keys(services)
    found = {}
    for domain in plausible.domains(payload):
        key = await sites.for_domain(services.store, domain)
        if key is not None:
            found[key.org_id] = key
    if not found:
        raise ApiError(
            401,
            "unknown_site",
            "no org takes events for this domain (`clickpulse sites add DOMAIN --org N`)",
            where={"field": "domain"},
        )
    items = _items([plausible.to_event(payload)], 1)
    result = None
    # A comma list of sites counts the event in each site's org, as Plausible does.
    for key in found.values():
        result = await store_items(request, services, key, items)
    return Response(result, status_code=202)


def _compat_path(path: str) -> bool:
    path = path.rstrip("/") or "/"
    return path in _COMPAT_PATHS


async def cors_headers(message: Message, scope: Scope) -> None:
    """`before_send` hook: the CORS headers on every answer of the routes above (errors and
    Litestar's own preflight answer included), so a page's script can post and read why."""
    if message["type"] != "http.response.start" or not _compat_path(scope.get("path", "")):
        return
    headers = MutableScopeHeaders.from_message(message)
    extra = PREFLIGHT if scope.get("method") == "OPTIONS" else CORS
    for name, value in extra.items():
        headers[name] = value


_COMPAT_PATHS = frozenset([*POSTHOG_PATHS, *SEGMENT_PATHS, PLAUSIBLE_PATH])
route_handlers = [posthog_capture, *segment_calls, plausible_event]
