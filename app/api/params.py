"""The API's request parameters as the compiler takes them: time (`from`/`to`: epoch seconds,
ISO 8601, `now-<n><unit>`), `filter=` and `compare=`, and how a window moves with time (the
key of its last known answer, app/api/series.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.errors import ApiError
from app.jsondepth import DEFAULT_MAX_DEPTH, check_depth

_RELATIVE = re.compile(r"^now(?:-(\d{1,6})([smhdw]))?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_range_s(text: str) -> int:
    """'1h' → 3600 (chart default ranges)."""
    return int(text[:-1]) * _UNIT_S[text[-1]]


def parse_time(value: str | None, param: str, now: float) -> int | None:
    """Epoch seconds from epoch seconds, ISO 8601, `now` or `now-<n><unit>`."""
    if value is None or value == "":
        return None
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    match = _RELATIVE.match(value)
    if match:
        if match.group(1) is None:
            return int(now)
        return int(now) - int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            "invalid_time",
            f"{param} must be epoch seconds, ISO 8601 or now-<n><s|m|h|d|w>",
            {"param": param},
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def time_range(
    from_: str | None, to: str | None, default_range_s: int, now: float
) -> tuple[int, int]:
    end = parse_time(to, "to", now)
    end = int(now) if end is None else end
    start = parse_time(from_, "from", now)
    start = end - default_range_s if start is None else start
    if start >= end:
        raise ApiError(400, "invalid_time", "from must be before to", {"param": "from"})
    if end - start > 400 * 86400:
        raise ApiError(
            400, "invalid_time", "the range may span at most 400 days", {"param": "from"}
        )
    return start, end


_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*)\s*(!=|>=|<=|=|>|<|~)\s*(.*)$", re.S)


def parse_filters(
    raw: list[str] | None, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[dict[str, Any]]:
    """`filter=country=DE,FR` (→ in), `filter=device!=mobile`, `filter=value>=10`, or a JSON list."""
    out: list[dict[str, Any]] = []
    for i, text in enumerate(raw or []):
        text = text.strip()
        if text.startswith("["):
            check_depth(text, max_depth, {"param": f"filter[{i}]"})
            try:
                items = msgspec.json.decode(text)
            except msgspec.DecodeError:
                raise ApiError(
                    400, "invalid_filter", "filter is not valid JSON", {"param": f"filter[{i}]"}
                ) from None
            if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
                raise ApiError(
                    400,
                    "invalid_filter",
                    "a JSON filter is a list of objects",
                    {"param": f"filter[{i}]"},
                )
            out.extend(items)
            continue
        match = _FILTER.match(text)
        if not match:
            raise ApiError(
                400,
                "invalid_filter",
                "filter must look like dimension=value, dimension!=a,b or value>=10",
                {"param": f"filter[{i}]"},
            )
        dim, op, value = match.groups()
        if op in ("=", "!=") and "," in value:
            out.append(
                {"dimension": dim, "op": "in" if op == "=" else "not_in", "value": value.split(",")}
            )
        elif op == "~":
            out.append({"dimension": dim, "op": "like", "value": value})
        else:
            out.append(
                {
                    "dimension": dim,
                    "op": op,
                    "value": _number_or_text(value) if op in _ORDERED else value,
                }
            )
    if len(out) > 20:
        raise ApiError(400, "invalid_filter", "at most 20 filters", {"param": "filter"})
    return out


_ORDERED = (">", ">=", "<", "<=")


def _number_or_text(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


def parse_compare(raw: str | None, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    if raw is None or raw == "":
        return None
    if raw == "previous_period":
        return raw
    check_depth(raw, max_depth, {"param": "compare"})
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(
            400,
            "invalid_compare",
            'compare is previous_period or {"a": [filters], "b": [filters]}',
            {"param": "compare"},
        ) from None
    return value


def _now_offset_s(value: str | None) -> int | None:
    """Seconds before now for `None`/`now`/`now-<n><unit>`; None for an absolute time."""
    if value is None or value.strip() == "":
        return 0
    match = _RELATIVE.match(value.strip())
    if not match:
        return None
    return 0 if match.group(1) is None else int(match.group(1)) * _UNIT_S[match.group(2)]


def window_of(from_: str | None, to: str | None, default_range_s: int) -> tuple[Any, ...] | None:
    """How a request's time window moves with time, for `last_known_key`.

    `None` when the window is absolute (its `to` is a fixed time). Otherwise `("now", ends
    <n> s before now, spans <n> s)`, or `("now", ends <n> s before now, "from", <epoch>)`
    when only the start is fixed: requests meaning the same moving window (the metric's
    history over its default hour, a chart with `default_range: 1h`, `from=now-1h`) share it.
    """
    end_offset = _now_offset_s(to)
    if end_offset is None:
        return None
    if from_ is None or from_.strip() == "":
        return ("now", end_offset, default_range_s)
    start_offset = _now_offset_s(from_)
    if start_offset is None:
        return ("now", end_offset, "from", parse_time(from_, "from", 0))
    return ("now", end_offset, start_offset - end_offset)
