"""From a request body to columns: split, decode, validate, enrich — per event, in one pass.

Speed matters here (the target is ≥ 100k events/s on one core next to chDB), so:

* the body is split into per-event raw JSON without building objects (`list[msgspec.Raw]`,
  or lines for NDJSON), which also isolates events: one bad event is one error, never a
  failed batch;
* each event is decoded into a Struct by msgspec, which enforces types and sizes in C;
* accepted events are appended straight into column lists; nothing else survives.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from app.errors import ApiError
from app.ingest.columns import Columns
from app.ingest.enrich import Enricher
from app.ingest.schema import EventError, EventIn

_raw_array = msgspec.json.Decoder(list[msgspec.Raw])
_event = msgspec.json.Decoder(EventIn)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_NAMED_FIELD = re.compile(r"field `([^`]*)`")


def is_ndjson(content_type: str, body: bytes) -> bool:
    """NDJSON by Content-Type, else by sniffing: an array is JSON, an object is NDJSON."""
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in (
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/jsonlines",
    ):
        return True
    return body.lstrip()[:1] == b"{"


def split_events(body: bytes, *, ndjson: bool, max_events: int) -> list[tuple[int, bytes]]:
    """The events of a body as (index, raw JSON) pairs, without decoding them.

    Raises ApiError 400 when a JSON array body is malformed as a whole (its events cannot be
    told apart) and 413 when it holds more than `max_events` events. In NDJSON each line
    stands alone, so a malformed line is that event's error, and the index is the 0-based
    line number (blank lines are skipped but counted).
    """
    if not body.strip():
        raise ApiError(400, "empty_batch", "the body holds no events")
    if ndjson:
        items = [(i, line) for i, line in enumerate(body.split(b"\n")) if line.strip()]
    else:
        try:
            raws = _raw_array.decode(body)
        except msgspec.ValidationError as exc:
            raise ApiError(
                400,
                "invalid_body",
                f"the body must be a JSON array of event objects or NDJSON: {exc}",
            ) from exc
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
        items = list(enumerate(raws))
    if not items:
        raise ApiError(400, "empty_batch", "the body holds no events")
    if len(items) > max_events:
        raise ApiError(
            413,
            "too_many_events",
            f"{len(items)} events in one request; the limit is {max_events}",
            where={"limit": max_events, "count": len(items)},
        )
    return items


def validation_error(index: int, exc: msgspec.MsgspecError) -> EventError:
    """A per-event reason from msgspec's message (which already says what and where)."""
    message = str(exc)
    at = _AT_FIELD.search(message)
    named = _NAMED_FIELD.search(message)
    field = at.group(1) if at else named.group(1) if named else None
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return EventError(index, "invalid_json", f"not valid JSON: {message}", None)
    if "unknown field" in message:
        if field == "org_id":
            return EventError(
                index,
                "forbidden_field",
                "org_id is decided by the API key and must not be sent",
                "org_id",
            )
        return EventError(index, "unknown_field", message, field)
    if "missing required field" in message:
        code = "missing_field"
    elif "length" in message:
        code = "too_long"
    elif "matching regex" in message:
        code = "invalid_format"
        if field == "event":
            message = (
                "event must start with a letter, digit, '_' or '$' and contain only "
                "letters, digits, spaces and _ . : / $ -"
            )
    elif "RFC3339" in message or "timezone" in message:
        code = "invalid_format"
    elif message.startswith("Expected"):
        code = "invalid_type"
    else:
        code = "invalid_value"
    return EventError(index, code, message, field)


@dataclass(slots=True)
class RequestContext:
    """What is the same for every event of one request."""

    org_id: int
    now_ms: int
    min_ts_ms: int
    max_ts_ms: int
    max_event_bytes: int
    user_agent: str  # the request's User-Agent header
    client_ip: str  # the request's client address (or forwarded-for, when trusted)
    # Set from an Idempotency-Key: an event without an id of its own gets `<prefix><index>`,
    # so the same request sent again carries the same ids.
    event_id_prefix: str | None = None


def idempotency_event_id_prefix(key: str) -> str:
    """The prefix of the event ids derived from an Idempotency-Key (the key itself can be
    long and is the client's text: only its hash is stored)."""
    return "idem:" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + ":"


def _event_id(e: EventIn) -> str | None:
    """The event's own id ('' when it has none); None when its id fields disagree."""
    given = {v for v in (e.event_id, e.uuid, e.message_id) if v}
    if len(given) > 1:
        return None
    return given.pop() if given else ""


def _ms(ts: datetime) -> int:
    return (ts - _EPOCH) // _ONE_MS


def build_columns(
    items: list[tuple[int, bytes]], ctx: RequestContext, enricher: Enricher
) -> tuple[Columns, list[EventError]]:
    """Decode, validate and enrich each event; accepted ones go into the returned columns."""
    cols = Columns()
    errors: list[EventError] = []
    decode = _event.decode
    max_bytes = ctx.max_event_bytes
    now_ms, min_ts, max_ts = ctx.now_ms, ctx.min_ts_ms, ctx.max_ts_ms
    ua_of = enricher.user_agent
    country_of = enricher.country
    default_device, default_browser, default_os = ua_of(ctx.user_agent)
    default_country = country_of(ctx.client_ip) or ""
    # Bound methods, looked up once: this loop runs for every event.
    ts_append, event_append = cols.ts.append, cols.event.append
    user_append, session_append = cols.user_id.append, cols.session_id.append
    value_append, path_append, ref_append = (
        cols.value.append,
        cols.path.append,
        cols.referrer.append,
    )
    country_append, device_append = cols.country.append, cols.device.append
    browser_append, os_append = cols.browser.append, cols.os.append
    pkeys_extend, pvalues_extend = cols.prop_keys.extend, cols.prop_values.extend
    pcounts_append = cols.prop_counts.append
    isfinite = math.isfinite
    event_ids: list[str] = []
    id_prefix = ctx.event_id_prefix

    for index, raw in items:
        if len(raw) > max_bytes:
            errors.append(
                EventError(
                    index,
                    "event_too_large",
                    f"the event is {len(raw)} bytes; the limit is {max_bytes}",
                )
            )
            continue
        try:
            e = decode(raw)
        except msgspec.MsgspecError as exc:
            errors.append(validation_error(index, exc))
            continue

        ts = e.ts
        if ts is None:
            ts = now_ms
        elif type(ts) is not int:
            ts = _ms(ts)
        if ts < min_ts or ts > max_ts:
            errors.append(_skew_error(index, ts, ctx))
            continue
        value = e.value
        if value is None:
            value = 0.0
        elif not isfinite(value):
            errors.append(EventError(index, "invalid_value", "value must be finite", "value"))
            continue

        if e.user_agent is None:
            device, browser, os_ = default_device, default_browser, default_os
        else:
            device, browser, os_ = ua_of(e.user_agent)
        if e.ip is None:
            country = default_country
        else:
            country = country_of(e.ip)
            if country is None:
                errors.append(
                    EventError(index, "invalid_format", "ip is not an IPv4/IPv6 address", "ip")
                )
                continue

        if e.event_id is None and e.uuid is None and e.message_id is None:
            event_id: str | None = ""  # the common case, without building a set
        else:
            event_id = _event_id(e)
        if event_id is None:
            errors.append(
                EventError(
                    index,
                    "invalid_value",
                    "event_id, uuid and messageId name the same id: give one, or equal ones",
                    "event_id",
                )
            )
            continue
        if not event_id and id_prefix is not None:
            event_id = f"{id_prefix}{index}"

        props = e.props
        if props:
            pkeys_extend(props)
            pvalues_extend([v if type(v) is str else _prop_text(v) for v in props.values()])
            pcounts_append(len(props))
        else:
            pcounts_append(0)

        user_id = e.user_id
        session_id = e.session_id
        ts_append(ts)
        event_append(e.event)
        user_append("" if user_id is None else user_id if type(user_id) is str else str(user_id))
        session_append(
            "" if session_id is None else session_id if type(session_id) is str else str(session_id)
        )
        value_append(value)
        path_append(e.path or "")
        ref_append(e.referrer or "")
        country_append(country)
        device_append(device)
        browser_append(browser)
        os_append(os_)
        event_ids.append(event_id)

    accepted = len(cols.ts)
    if any(event_ids):  # else left empty: batches without ids cost nothing more
        cols.event_id = event_ids
    # Constant per request: filled in one C-level step rather than per event.
    cols.org_id = [ctx.org_id] * accepted
    cols.received_at = [now_ms] * accepted
    return cols, errors


def _prop_text(value: int | float | bool) -> str:
    # JSON spelling for booleans, so `props['beta'] = 'true'` matches what the client sent.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _skew_error(index: int, ts: int, ctx: RequestContext) -> EventError:
    if ts < ctx.min_ts_ms:
        limit = (ctx.now_ms - ctx.min_ts_ms) // 1000
        message = f"ts is more than {limit} s in the past"
    else:
        limit = (ctx.max_ts_ms - ctx.now_ms) // 1000
        message = f"ts is more than {limit} s in the future"
    return EventError(index, "ts_out_of_range", message, "ts")
