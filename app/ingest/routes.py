"""`POST /v1/events`: authenticate, rate-limit, parse, enrich, write; answer per event.

200 when at least one event was accepted (into the WAL, or inserted with the WAL off), with the
rejected ones listed by index and reason; every other status uses the shared error shape
(app/errors.py). The status codes and when each is sent are in docs/ingest.md, section
"Responses"."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException

from app.auth import FailureThrottle
from app.errors import ApiError
from app.ingest.auth import ApiKeyCache
from app.ingest.enrich import Enricher
from app.ingest.idempotency import (
    LocalIdempotencyStore,
    RedisIdempotencyStore,
    body_hash,
    key_hash,
    valid_key,
)
from app.ingest.parse import (
    RequestContext,
    build_columns,
    idempotency_event_id_prefix,
    is_ndjson,
    split_events,
)
from app.ingest.ratelimit import RateLimiter, RedisRateLimiter
from app.ingest.schema import EventIn, IngestResult
from app.ingest.writer import (
    InsertFailed,
    WalWriteFailed,
    WriterClosed,
    WriterError,
    WriterOverloaded,
)
from app.openapi import api_doc
from app.services import Services

if TYPE_CHECKING:
    ServicesDep = Services
else:
    # Typed Any for Litestar: its signature model would otherwise convert (and introspect)
    # the Services dataclass on every request.
    ServicesDep = NamedDependency[Any]

_STATE_KEY = "ingest"
log = logging.getLogger("clickpulse.ingest")
_encode_result = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(IngestResult).decode


class IngestState:
    """Per-process ingest state: the key cache, the rate limiter, the enrichment caches."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.keys = ApiKeyCache(
            settings.ingest_key_cache_ttl_s,
            stale_s=settings.ingest_key_stale_s,
            throttle=FailureThrottle(settings.auth_fail_max, settings.auth_fail_window_s),
        )
        self.limiter = RateLimiter(settings.ingest_rate_per_s)
        # With Redis, one bucket per org shared by every node.
        self.shared_limiter = (
            RedisRateLimiter(services.redis, settings.ingest_rate_per_s)
            if services.redis is not None
            else None
        )
        self.enricher = Enricher()
        self.idempotency: LocalIdempotencyStore | RedisIdempotencyStore = (
            RedisIdempotencyStore(services.redis, settings.ingest_idempotency_ttl_s)
            if services.redis is not None
            else LocalIdempotencyStore(
                os.path.join(settings.data_dir, "ingest-idempotency.sqlite3"),
                settings.ingest_idempotency_ttl_s,
            )
        )


def ingest_state(services: Services) -> IngestState:
    """The process's IngestState (created on first use, kept in `services.extras`)."""
    state = services.extras.get(_STATE_KEY)
    if state is None:
        state = services.extras[_STATE_KEY] = IngestState(services)
    return state


def invalidate_api_key(services: Services, key_hash: str | None = None) -> None:
    """Forget a cached key (by hash; all keys if None) so a revocation applies at once here."""
    ingest_state(services).keys.invalidate(key_hash)


def client_ip(request: Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            # The rightmost entry is the one our (trusted) proxy appended; earlier ones are
            # whatever the client claimed.
            return forwarded.rsplit(",", 1)[-1].strip()
    return request.client.host if request.client else ""


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _body_too_large(max_bytes)
    try:
        body = await request.body()
    except HTTPException as exc:  # Litestar's own limit on a streamed (chunked) body
        if exc.status_code == 413:
            raise _body_too_large(max_bytes) from exc
        raise
    if len(body) > max_bytes:
        raise _body_too_large(max_bytes)
    return body


def _body_too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the request body exceeds {max_bytes} bytes; send fewer events per request",
        where={"limit_bytes": max_bytes},
    )


@post(
    "/v1/events",
    status_code=200,
    opt=api_doc(
        errors={400, 401, 413, 429, 503},
        without={422},  # a bad event is reported in the 200 (or the 400 when all are bad)
        request_body={
            "application/json": list[EventIn],
            "application/x-ndjson": {"type": "string", "description": "one event per line"},
        },
    ),
    summary="Ingest a batch of events",
    description=(
        "Body: a JSON array of events or NDJSON (one event per line). "
        "Auth: `Authorization: Bearer <ingest key>`. See docs/ingest.md."
    ),
)
async def post_events(request: Request, services: ServicesDep) -> Response[IngestResult]:
    """Store a batch of events for the key's org; answer per-event reasons for rejects."""
    try:
        return await _post_events(request, services)
    except ApiError as exc:  # counted by code (the events of it, where known, by _store_events)
        services.telemetry.ingest_refused(exc.code)
        raise


async def _post_events(request: Request, services: Services) -> Response[IngestResult]:
    settings = services.settings
    ingest = ingest_state(services)
    key = await ingest.keys.authenticate(
        services.store,
        request.headers.get("authorization"),
        client_ip(request, settings.ingest_trust_forwarded_for),
    )
    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None and not valid_key(idem_key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            where={"header": "Idempotency-Key"},
        )
    body = await read_body(request, settings.ingest_max_body_bytes)
    if idem_key is None:
        return await _store_events(request, services, key, body, None)

    store, org_id = ingest.idempotency, key.org_id
    hashed, digest = key_hash(idem_key), body_hash(body)
    try:
        begun = await store.begin(org_id, hashed, digest)
    except Exception as exc:  # Redis down: answer anyway; the derived event ids still dedup
        log.warning("idempotency store unavailable, answering without it: %s", exc)
        return await _store_events(request, services, key, body, idem_key)
    if begun.state == "done":
        return Response(
            _decode_result(begun.response),
            status_code=200,
            headers={"Idempotent-Replayed": "true"},
        )
    if begun.state == "busy":
        raise ApiError(
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is being answered; retry shortly",
            headers={"Retry-After": "1"},
        )
    if begun.state == "mismatch":
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another body; use a new key for new events",
            where={"header": "Idempotency-Key"},
        )
    try:
        response = await _store_events(request, services, key, body, idem_key)
    except BaseException:
        try:
            await store.abandon(org_id, hashed)
        except Exception as exc:
            log.warning("idempotency store: could not release a failed request's key: %s", exc)
        raise
    try:
        await store.finish(org_id, hashed, digest, _encode_result(response.content))
    except Exception as exc:  # the events are stored; a retry is deduplicated by their ids
        log.warning("idempotency store: could not record an answer: %s", exc)
    return response


async def _store_events(
    request: Request,
    services: Services,
    key: Any,
    body: bytes,
    idem_key: str | None,
) -> Response[IngestResult]:
    settings = services.settings
    items = split_events(
        body,
        ndjson=is_ndjson(request.headers.get("content-type", ""), body),
        max_events=settings.ingest_max_events,
        max_depth=settings.max_json_depth,
    )
    prefix = None if idem_key is None else idempotency_event_id_prefix(idem_key)
    result = await store_items(request, services, key, items, event_id_prefix=prefix)
    return Response(result, status_code=200)


async def store_items(
    request: Request,
    services: Services,
    key: Any,
    items: list[tuple[int, bytes]],
    *,
    event_id_prefix: str | None = None,
) -> IngestResult:
    """Rate-limit, validate, enrich, deduplicate and write `items` (index, raw JSON event) for
    the org of `key`: the one path every ingest format takes. ApiError when nothing was
    stored (every event refused, over the rate limit, the writer unavailable)."""
    settings = services.settings
    ingest = ingest_state(services)
    if ingest.shared_limiter is not None:
        wait_s = await ingest.shared_limiter.acquire(key.org_id, len(items), key.rate_per_s)
    else:
        wait_s = ingest.limiter.acquire(key.org_id, len(items), key.rate_per_s)
    if wait_s > 0:
        services.telemetry.events_rejected.labels("rate_limited").inc(len(items))
        services.telemetry.org_throttled(key.org_id, "ingest_rate")
        retry_after = RateLimiter.retry_after_header(wait_s)
        raise ApiError(
            429,
            "rate_limited",
            f"the org's ingest rate limit is exceeded; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )

    now_ms = time.time_ns() // 1_000_000
    ctx = RequestContext(
        org_id=key.org_id,
        now_ms=now_ms,
        min_ts_ms=now_ms - settings.ingest_max_past_skew_s * 1000,
        max_ts_ms=now_ms + settings.ingest_max_future_skew_s * 1000,
        max_event_bytes=settings.ingest_max_event_bytes,
        user_agent=request.headers.get("user-agent", ""),
        client_ip=client_ip(request, settings.ingest_trust_forwarded_for),
        event_id_prefix=event_id_prefix,
    )
    columns, errors = build_columns(items, ctx, ingest.enricher)
    result = IngestResult(accepted=len(columns), rejected=len(errors), errors=errors)
    if not columns:
        services.telemetry.ingest_stored(0, errors, 0)
        raise ApiError(
            400, "no_valid_events", f"all {len(errors)} events were rejected", where=result
        )

    writer = services.writer
    window = getattr(writer, "event_ids", None)  # the Kafka sink has none (docs/ingest.md)
    claim = None
    if columns.event_id and window is not None:
        claim = await window.claim(key.org_id, columns.event_id)
        result.duplicates = claim.duplicates
        if claim.duplicates:
            columns = columns.take(claim.keep)
    stored = False
    try:
        if len(columns):
            await _submit(writer, columns, key.org_id)
        stored = True
    except ApiError as exc:  # 503: none of the request's events was stored
        services.telemetry.events_rejected.labels(exc.code).inc(len(items))
        raise
    finally:
        if claim is not None:
            window.settle(claim, stored=stored)
    services.telemetry.ingest_stored(len(columns), errors, result.duplicates or 0)
    return result


async def _submit(writer: Any, columns: Any, org_id: int) -> None:
    """Hand the rows to the writer; its failures become 503s (nothing of them accepted)."""
    token = None
    if columns.event_id and all(columns.event_id) and not getattr(writer, "wal", True):
        # WAL off: events that all carry ids are inserted alone under a token of those ids,
        # so a retry of a request whose INSERT a crash cut short completes it (never doubles).
        token = insert_token(org_id, columns.event_id)
    try:
        await (writer.submit(columns, token=token) if token else writer.submit(columns))
    except WriterOverloaded as exc:
        raise ApiError(
            503, "ingest_overloaded", str(exc) + "; retry shortly", headers={"Retry-After": "1"}
        ) from exc
    except WriterClosed as exc:
        raise ApiError(
            503, "shutting_down", "the server is shutting down", headers={"Retry-After": "1"}
        ) from exc
    except (InsertFailed, WalWriteFailed) as exc:
        raise ApiError(
            503,
            "storage_unavailable",
            "the events could not be stored; none of this request was accepted, retry it",
            headers={"Retry-After": "1"},
        ) from exc
    except WriterError as exc:
        # The Kafka sink's KafkaDeliveryFailed (and any other writer failure): a 503, never a
        # 500. A delivery that timed out may still reach the broker late (docs/ingest.md).
        raise ApiError(
            503,
            "storage_unavailable",
            "the event stream did not confirm these events in time; retry the request",
            headers={"Retry-After": "1"},
        ) from exc


def insert_token(org_id: int, event_ids: list[str]) -> str:
    """The deduplication token of an INSERT of exactly these events of `org_id`."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(org_id).encode())
    for event_id in sorted(event_ids):
        digest.update(b"\0" + event_id.encode())
    return f"ids_{digest.hexdigest()}"
