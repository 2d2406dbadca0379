"""Other tools' tracking formats (PostHog, Segment/RudderStack, Plausible) → our events.

Each module maps one vendor's request body to `Batch`: the events as dicts in the shape of
`POST /v1/events` (app/ingest/schema.py `EventIn`), and the ingest keys the body names. The
events then go through exactly the path of `/v1/events` (validation by `EventIn`, enrichment,
rate limit, event-id window, writer), so a vendor format can never store what our own format
would refuse. This module holds what the formats share: reading a body that may be gzipped,
form-encoded or base64 (each bounded by the ingest body limit), timestamps, URL paths and
flat properties. The mapping tables are in docs/ingest.md, "Other tools' formats".
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from app.errors import ApiError
from app.jsondepth import depth_error, too_deep

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Batch:
    """Events mapped to our event shape, and every ingest key the request body names."""

    events: list[Any] = field(default_factory=list)  # dicts in EventIn's shape (or junk: refused)
    keys: set[str] = field(default_factory=set)


def too_large(max_bytes: int) -> ApiError:
    """The 413 of `/v1/events`, also for a body that only grows past the limit once inflated."""
    return ApiError(
        413,
        "body_too_large",
        f"the request body exceeds {max_bytes} bytes (after decompression); send fewer events",
        where={"limit_bytes": max_bytes},
    )


def malformed(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """`body` inflated, refusing more than `max_bytes` of output (a gzip bomb stops there:
    zlib never produces more than it is asked for)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise malformed("malformed_gzip", f"the body is not valid gzip: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise too_large(max_bytes)
    if not inflater.eof:
        raise malformed("malformed_gzip", "the gzip body is truncated")
    return out


def inflate(body: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """The body as sent before compression: gzip by `Content-Encoding` or by its magic bytes
    (posthog-js sends gzip as `text/plain` with `?compression=gzip-js`, no header)."""
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip") or body[:2] == GZIP_MAGIC:
        return gunzip(body, max_bytes)
    if encoding not in ("", "identity"):
        raise malformed("unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
    return body


def form_data(body: bytes) -> bytes | None:
    """The `data=` field of a form-encoded body as bytes (base64 decoded when it is not JSON
    already), or None when the body is not a form with `data`."""
    if body[:5] != b"data=" and b"&data=" not in body:
        return None
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise malformed("malformed_form", "a form-encoded body must be ASCII") from exc
    values = fields.get("data")
    if not values:
        return None
    data = values[0].strip()
    if data[:1] in ("[", "{"):
        return data.encode()
    # '+' arrives as ' ' when a client did not percent-encode it.
    data = data.replace(" ", "+")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise malformed("malformed_base64", "the form field `data` is not valid base64") from exc


def load_json(body: bytes, max_depth: int) -> Any:
    """The body as JSON (depth checked before decoding, like every JSON we take)."""
    if not body.strip():
        raise ApiError(400, "empty_batch", "the body holds no events")
    if too_deep(body, max_depth):
        raise depth_error(max_depth)
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise malformed("malformed_json", f"the body is not valid JSON: {exc}") from exc


def epoch_ms(value: Any) -> Any:
    """A vendor timestamp as epoch milliseconds: ISO 8601 (no offset = UTC) or a number
    (seconds below 10^11, else milliseconds). Anything else is passed on as it is, so that
    event alone is refused by validation (`ts`)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    return value


def url_path(url: Any) -> str | None:
    """The path of a URL (`https://x.test/a/b?q=1` → `/a/b`); None when not a string."""
    if not isinstance(url, str) or not url:
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return None


def text(value: Any) -> str | None:
    """A string field, or None (absent, or not a string: the vendor field is dropped)."""
    return value if isinstance(value, str) and value else None


def number(value: Any) -> float | None:
    """A numeric field (a number, or a string holding one), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def flat_props(*sources: Any, drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Scalar entries of the given objects, later ones winning; keys starting with `$` (the
    SDKs' automatic properties), keys in `drop`, nulls and nested values left out."""
    props: dict[str, Any] = {}
    for source in sources:
        if not isinstance(source, dict):
            continue
        for key, value in source.items():
            if not isinstance(key, str) or key.startswith("$") or key in drop:
                continue
            if isinstance(value, str | int | float | bool):
                props[key] = value
    return props


def put(event: dict[str, Any], name: str, value: Any) -> None:
    """Set `event[name]` unless `value` is None (null means "not given" in our format)."""
    if value is not None:
        event[name] = value
