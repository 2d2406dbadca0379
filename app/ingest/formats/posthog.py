"""PostHog capture (`/capture`, `/batch`, `/e`, `/i/v0/e`) → our events.

Bodies PostHog's SDKs send: one event object, a JSON array of events, or
`{"batch": [...], "api_key": ...}` (posthog-python's `/batch/`, posthog-js's batches); as
JSON, gzip (header or `?compression=gzip-js`) or a form with `data=<base64 JSON>`
(posthog-js over sendBeacon). The key is `api_key` or `token` at the top, or
`properties.token` / `api_key` / `token` of an event. The mapping is docs/ingest.md's table.
"""

from __future__ import annotations

from typing import Any

from app.ingest.formats import Batch, epoch_ms, flat_props, number, put, text, url_path

# PostHog's automatic names for what our format has a word for.
EVENT_NAMES = {"$pageview": "pageview", "$screen": "screen", "$identify": "identify"}
# Properties that are credentials or identities (never stored as props).
_NOT_PROPS = frozenset({"token", "api_key", "distinct_id", "value", "revenue"})


def _keys_of(obj: dict[str, Any], batch: Batch) -> None:
    for name in ("api_key", "token"):
        key = obj.get(name)
        if isinstance(key, str) and key:
            batch.keys.add(key)


def _event(raw: Any, batch: Batch) -> Any:
    if not isinstance(raw, dict):
        return raw  # refused by validation, at its index
    _keys_of(raw, batch)
    props = raw.get("properties")
    props = props if isinstance(props, dict) else {}
    _keys_of(props, batch)
    name = raw.get("event")
    event: dict[str, Any] = {
        "event": EVENT_NAMES.get(name, name) if isinstance(name, str) else name
    }
    distinct_id = raw.get("distinct_id", props.get("distinct_id"))
    put(event, "user_id", distinct_id if isinstance(distinct_id, str | int) else None)
    put(event, "session_id", text(props.get("$session_id")))
    put(event, "ts", epoch_ms(raw.get("timestamp")))
    put(event, "path", text(props.get("$pathname")) or url_path(props.get("$current_url")))
    referrer = text(props.get("$referrer"))
    put(event, "referrer", None if referrer == "$direct" else referrer)
    put(event, "value", number(props.get("value", props.get("revenue"))))
    put(event, "user_agent", text(props.get("$raw_user_agent")))
    put(event, "ip", text(props.get("$ip")))
    put(event, "uuid", text(raw.get("uuid")))
    extra = flat_props(props, drop=_NOT_PROPS)
    if extra:
        event["props"] = extra
    return event


def to_batch(payload: Any) -> Batch:
    """The events and keys of a PostHog capture body (already decoded from JSON)."""
    batch = Batch()
    if isinstance(payload, dict) and "batch" in payload:
        _keys_of(payload, batch)
        raws = payload["batch"]
        raws = raws if isinstance(raws, list) else [raws]
    elif isinstance(payload, list):
        raws = payload
    else:
        raws = [payload]
    batch.events = [_event(raw, batch) for raw in raws]
    return batch
