"""How deep a JSON text nests, measured without decoding it.

msgspec (like every recursive-descent decoder) recurses once per `[`/`{`, so a body such as
`[[[[…]]]]` 100,000 deep ends in a RecursionError deep inside the decoder: a 500 with a
traceback, before authentication. Every JSON text a client sends (HTTP bodies, JSON query
parameters, WebSocket frames) is measured here first and refused when it nests deeper than
`CLICKPULSE_MAX_JSON_DEPTH` (64): no API body needs more than a handful of levels.

The measurement is C-speed byte work plus one pass over the brackets only: strings are cut out
(their brackets are text), everything but `[]{}` is dropped, and the running depth is summed.
Malformed text (an unterminated string, mismatched brackets) is measured conservatively: the
decoder reports it afterwards, unless it would have had to recurse too deep to get there.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Any

from app.errors import ApiError

DEFAULT_MAX_DEPTH = 64
_COUNT_FIRST_BYTES = 16 * 1024

# Escape sequences (`\\"` must not end a string), and strings once only brackets are left in them.
_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*+"')
_KEPT = b'[]{}"'
_NOT_KEPT = bytes(b for b in range(256) if b not in _KEPT)
# `[`/`{` → +1 and `]`/`}` → -1 as signed bytes (quotes of an unterminated string dropped).
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def nesting_depth(text: bytes | str) -> int:
    """The deepest `[`/`{` nesting in the JSON `text` (brackets inside strings do not count)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    # Only brackets and quotes are left; most strings are then empty and go in one C step.
    kept = data.translate(None, _NOT_KEPT).replace(b'""', b"")
    if b'"' in kept:
        kept = _STRING.sub(b"", kept)
    steps = kept.translate(_STEPS, b'"')
    return max(0, max(accumulate(array("b", steps)), default=0))


def too_deep(text: bytes | str, max_depth: int) -> bool:
    """True when `text` nests deeper than `max_depth` (cheap when it has few brackets)."""
    data = text.encode() if isinstance(text, str) else text
    # Fewer opening brackets than the limit cannot nest deeper than it: no scan needed. (Only
    # worth counting on small texts: a large body always has more, and counting costs a pass.)
    if len(data) <= _COUNT_FIRST_BYTES and data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    return nesting_depth(data) > max_depth


def depth_error(max_depth: int, where: Any = None) -> ApiError:
    """The 400 answered for JSON nested deeper than `max_depth`."""
    return ApiError(
        400,
        "invalid_request",
        f"the JSON nests deeper than {max_depth} levels",
        {"max_depth": max_depth, **(where or {})},
    )


def check_depth(text: bytes | str, max_depth: int, where: Any = None) -> None:
    """Raise the 400 `invalid_request` ApiError when `text` nests deeper than `max_depth`."""
    if too_deep(text, max_depth):
        raise depth_error(max_depth, where)
