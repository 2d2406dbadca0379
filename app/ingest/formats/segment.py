"""Segment's HTTP tracking API (`/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`,
`/v1/batch`), which RudderStack's SDKs speak too → our events.

A call is one message object (its type from the path) or, on `/v1/batch`,
`{"batch": [messages with "type"], "writeKey"?: ...}`. The write key is the user of HTTP Basic
auth (both SDKs) or `writeKey` in the body (Segment's also sends it there). The mapping is
docs/ingest.md's table.
"""

from __future__ import annotations

from typing import Any

from app.ingest.formats import Batch, epoch_ms, flat_props, number, put, text, url_path

# Message type → our event name (track messages carry their own `event`).
EVENT_OF_TYPE = {
    "page": "pageview",
    "screen": "screen",
    "identify": "identify",
    "group": "group",
    "alias": "alias",
}
_MAPPED = frozenset({"path", "url", "referrer", "revenue", "value"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _message(raw: Any, kind: str | None, batch: Batch) -> Any:
    if not isinstance(raw, dict):
        return raw  # refused by validation, at its index
    key = raw.get("writeKey")
    if isinstance(key, str) and key:
        batch.keys.add(key)
    kind = kind or raw.get("type")
    props = _dict(raw.get("properties"))
    context = _dict(raw.get("context"))
    page = _dict(context.get("page"))
    if kind == "track":
        name = raw.get("event")
    else:
        # An unknown or missing type has no name: refused by validation (`event`).
        name = EVENT_OF_TYPE.get(kind) if isinstance(kind, str) else None
    event: dict[str, Any] = {"event": name}
    user = raw.get("userId")
    if user is None or user == "":
        user = raw.get("anonymousId")
    put(event, "user_id", user if isinstance(user, str | int) else None)
    session = context.get("sessionId")  # RudderStack's SDKs send one
    put(event, "session_id", session if isinstance(session, str | int) else None)
    put(event, "ts", epoch_ms(raw.get("timestamp", raw.get("originalTimestamp"))))
    put(
        event,
        "path",
        text(props.get("path"))
        or text(page.get("path"))
        or url_path(props.get("url"))
        or url_path(page.get("url")),
    )
    put(event, "referrer", text(props.get("referrer")) or text(page.get("referrer")))
    put(event, "value", number(props.get("revenue", props.get("value"))))
    put(event, "user_agent", text(context.get("userAgent")))
    put(event, "ip", text(context.get("ip")))
    put(event, "messageId", text(raw.get("messageId")))
    extra = flat_props(props, drop=_MAPPED)
    if kind in ("page", "screen") and isinstance(raw.get("name"), str):
        extra.setdefault("name", raw["name"])
    if kind == "identify":
        # The message's own traits win over context.traits (what the SDK remembered).
        extra = {**flat_props(context.get("traits"), raw.get("traits")), **extra}
    if extra:
        event["props"] = extra
    return event


def to_batch(payload: Any, kind: str | None) -> Batch:
    """The events and keys of a Segment body (decoded JSON); `kind` is the path's message type
    (`track`, `page`, …), None on `/v1/batch`."""
    batch = Batch()
    if kind is None:
        if isinstance(payload, dict):
            key = payload.get("writeKey")
            if isinstance(key, str) and key:
                batch.keys.add(key)
            raws = payload.get("batch")
        else:
            raws = payload
        raws = raws if isinstance(raws, list) else [raws]
    else:
        raws = [payload]
    batch.events = [_message(raw, kind, batch) for raw in raws]
    return batch
