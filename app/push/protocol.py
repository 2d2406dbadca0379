"""The wire protocol of `/ws/subscribe`: client messages (decoded with msgspec), server
messages (encoded once, as text frames), close codes. docs/push.md is the reference."""

from __future__ import annotations

from typing import Any

import msgspec

from app.jsondepth import DEFAULT_MAX_DEPTH, too_deep

# Close codes (RFC 6455 private range 4000-4999, plus the standard ones that fit).
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_TOO_BIG = 1009  # a client frame over push_max_message_bytes
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013  # the config store is down: cannot check the token now
CLOSE_TOO_MANY_SUBSCRIPTIONS = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOO_DEEP = 4422  # a frame whose JSON nests deeper than max_json_depth
CLOSE_FLOOD = 4429

Id = str | int


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    id: Id
    metric: str | dict[str, Any] | None = None  # metric language text or the form builder's JSON
    metric_id: int | None = None  # a saved metric of the token's org
    builtin: str | None = None  # page_views | active_users | revenue | error_rate
    chart_id: int | None = None  # a chart of a shared link's dashboard (link sockets only)
    filters: list[dict[str, Any]] = msgspec.field(default_factory=list)
    group_by: list[str] | None = None
    range_s: int = 600
    window_s: int | None = None  # sliding window per point (built-ins/saved metrics may set it)
    since: int | None = None  # epoch ms of the last second the client saw: resume


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    id: Id


class Ping(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


ClientMessage = Subscribe | Unsubscribe | Ping

_decoder = msgspec.json.Decoder(ClientMessage)
_loose = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, id: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


class TooDeep(ProtocolError):
    """The frame's JSON nests deeper than allowed: it is never decoded (the decoder recurses
    per level), and the socket is closed with CLOSE_TOO_DEEP."""


def decode(data: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> ClientMessage:
    """One client message, or ProtocolError (with the message's `id` when it had one)."""
    if too_deep(data, max_depth):
        raise TooDeep("too_deep", f"the message nests deeper than {max_depth} levels")
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        msg_id = None
        try:
            loose = _loose.decode(data)
            if isinstance(loose, dict) and isinstance(loose.get("id"), str | int):
                msg_id = loose["id"]
        except msgspec.DecodeError:
            pass
        raise ProtocolError("invalid_message", str(exc), msg_id) from None


def encode(message: Any) -> str:
    """JSON text of one server message (encode once, hand the same str to every socket)."""
    return _encoder.encode(message).decode()


def encode_bytes(message: Any) -> bytes:
    return _encoder.encode(message)


def error(id: Any, code: str, message: str, where: Any = None) -> str:
    body: dict[str, Any] = {"type": "error", "id": id, "code": code, "message": message}
    if where:
        body["where"] = where
    return encode(body)


PONG = encode({"type": "pong"})
