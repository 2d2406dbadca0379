"""Plausible's events API (`POST /api/event`) → our events.

`{"name", "url", "domain", "referrer", "props", "revenue"}` — or the tracker script's short
keys `n`, `u`, `d`, `r`, `p` (`m`: props as a JSON string), `$` (revenue). There is no key:
the site's domain (a comma list for several sites) is mapped to one of an org's ingest keys in
the config store (`clickpulse sites add`). The mapping is docs/ingest.md's table.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.errors import ApiError
from app.ingest.formats import flat_props, number, put, text, url_path

MAX_DOMAIN = 253


def _field(payload: dict[str, Any], long: str, short: str) -> Any:
    return payload[long] if long in payload else payload.get(short)


def normalize_domain(domain: str) -> str:
    """How a domain is stored and looked up: lower case, no trailing dot, no surrounding space."""
    return domain.strip().lower().rstrip(".")


def domains(payload: Any) -> list[str]:
    """The site domains an event names (Plausible allows a comma list); 400 when none."""
    raw = _field(payload, "domain", "d") if isinstance(payload, dict) else None
    if not isinstance(raw, str):
        raise ApiError(
            400, "missing_domain", "the event names no `domain` (the site it belongs to)"
        )
    names = [normalize_domain(d) for d in raw.split(",")]
    names = [d for d in names if d]
    if not names or any(len(d) > MAX_DOMAIN for d in names):
        raise ApiError(400, "invalid_domain", "`domain` must be 1-253 characters per site")
    return names


def _props(payload: dict[str, Any]) -> Any:
    props = _field(payload, "props", "p")
    if props is None:
        meta = payload.get("m")
        if isinstance(meta, str):
            try:
                props = msgspec.json.decode(meta)
            except msgspec.DecodeError:
                props = None
    return props


def to_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Our event of a Plausible event body (its `domain` already resolved to the org)."""
    name = _field(payload, "name", "n")
    event: dict[str, Any] = {"event": name}
    put(event, "path", url_path(_field(payload, "url", "u")))
    put(event, "referrer", text(_field(payload, "referrer", "r")))
    props = flat_props(_props(payload))
    revenue = _field(payload, "revenue", "$")
    if isinstance(revenue, dict):
        put(event, "value", number(revenue.get("amount")))
        currency = text(revenue.get("currency"))
        if currency is not None:
            props["currency"] = currency
    if props:
        event["props"] = props
    return event
