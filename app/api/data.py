"""Running compiled metric queries for the API: hot cache, per-org quotas, degradation.

cache fresh?  ── yes ─▶ answer (meta.cached)
    │ no
quotas (rows/minute, concurrent slot) ── over ─▶ 429 Retry-After
    │
run_compiled (tenant guard re-checked) with a timeout
    ├─ ok ─▶ cache it (TTL by range/granularity) ─▶ answer
    └─ ClickHouse error/timeout ─▶ last known answer of this compiled query (whoever asked
                                   for it: chart, history, /query) with stale: true, age_s
                                   (nothing cached ─▶ 503)
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.api import series
from app.api.schemas import Meta_
from app.cache import GRANULARITY_S, Entry, jittered, last_known_key, query_key, ttl_for
from app.clickhouse import ClickHouseError
from app.clickhouse.public_errors import public_error
from app.errors import ApiError
from app.jsondepth import DEFAULT_MAX_DEPTH, check_depth
from app.querybuilder.planner import MAX_ROWS_PER_QUERY

# ClickHouse error codes that mean "this query is too expensive", not "ClickHouse is down".
_LIMIT_CODES = {158, 159, 160, 241, 307, 396}
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


def _plan_meta(plan: Any) -> dict[str, Any]:
    if plan is None:
        return {}
    gran_s = getattr(plan, "granularity_s", None)
    names = {v: k for k, v in GRANULARITY_S.items()}
    return {
        "table": getattr(plan, "table", None),
        "granularity_s": gran_s,
        "granularity": names.get(gran_s) if gran_s else None,
        "raw": getattr(plan, "raw", None),
        "reason": getattr(plan, "reason", None) or None,
        "time_from": getattr(plan, "time_from", None),
        "time_to": getattr(plan, "time_to", None),
        "comparison": getattr(plan, "comparison", None) or None,
    }


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


def fallback_key(org_id: int, compiled: Any, window: tuple[Any, ...] | None) -> str:
    """The last-known-answer key of a compiled query (app.cache.last_known_key)."""
    return last_known_key(org_id, compiled.sql, compiled.params, window)


async def run_cached(
    services: Any, org_id: int, compiled: Any, fallback_key: str | None = None
) -> tuple[dict[str, Any], Meta_]:
    """The answer to one compiled query of `org_id`: {columns, rows, plan} and its meta.

    Fresh in the cache → that (and, in the entry's last moments, one background refresh).
    Otherwise the query runs once per key in this process (single flight): concurrent requests
    for the same key wait for that one run and answer `cached: true` from it.
    """
    cache = services.cache
    key = query_key(org_id, compiled.sql, compiled.params)
    entry = await cache.get(key)
    now = cache.clock()
    if entry is not None and entry.fresh(now):
        if entry.refresh_due(now):
            _flight(services, org_id, compiled, key, fallback_key)  # not awaited
        value = entry.value
        return value, Meta_(cached=True, age_s=round(entry.age_s(now), 3), **value["plan"])

    task, leader = _flight(services, org_id, compiled, key, fallback_key)
    try:
        value, stored, rows_read = await asyncio.shield(task)
    except (ClickHouseError, TimeoutError) as exc:
        code = getattr(exc, "code", None)
        if code in _LIMIT_CODES:
            raise ApiError(
                422,
                "query_too_expensive",
                "the query exceeded its execution limits; narrow the range or filters",
                {"clickhouse_code": code},
            ) from exc
        if entry is None and fallback_key is not None:
            entry = await cache.get(fallback_key)
        if entry is not None:
            services.degradation.served_stale("clickhouse")
            value = entry.value
            return value, Meta_(
                stale=True, age_s=round(entry.age_s(cache.clock()), 3), **value["plan"]
            )
        raise ApiError(
            503,
            "clickhouse_unavailable",
            "ClickHouse did not answer and nothing is cached for this query",
            None,
            {"Retry-After": "5"},
        ) from exc
    if leader:
        return value, Meta_(rows_read=rows_read, **value["plan"])
    # Another request's run answered this one: remember it as this request's last answer too.
    if fallback_key is not None and fallback_key != key:
        await cache.set(fallback_key, value, max(0.0, stored.fresh_until - stored.stored_at))
    return value, Meta_(cached=True, age_s=round(stored.age_s(cache.clock()), 3), **value["plan"])


def _flight(
    services: Any, org_id: int, compiled: Any, key: str, fallback_key: str | None
) -> tuple[asyncio.Task, bool]:
    """The running query for `key` in this process, or a new one: (task, started here)."""
    return services.cache.flights.run(
        key, lambda: _query_and_store(services, org_id, compiled, key, fallback_key)
    )


async def _query_and_store(
    services: Any, org_id: int, compiled: Any, key: str, fallback_key: str | None
) -> tuple[dict[str, Any], Entry, int]:
    """Run one compiled query under the org's quotas and a timeout, cache the answer (TTL by
    range and granularity, jittered down) under its key and the request's fallback key.
    Answers (value, cache entry, rows read); ClickHouse failures are raised to every waiter,
    which degrades on its own last answer."""
    cache = services.cache
    try:
        async with services.limiter.query_slot(org_id):
            timeout = services.settings.query_timeout_s
            rows_read = await asyncio.wait_for(series.count_rows(services.ch, compiled), timeout)
            if rows_read > MAX_ROWS_PER_QUERY:
                raise ApiError(
                    422,
                    "query_too_expensive",
                    f"the query covers {rows_read} rows (at most {MAX_ROWS_PER_QUERY}); "
                    "narrow the range or filters",
                    {"rows": rows_read},
                )
            result = await asyncio.wait_for(series.run(services.ch, compiled), timeout)
    except (ClickHouseError, TimeoutError) as exc:
        if getattr(exc, "code", None) not in _LIMIT_CODES:
            # /readyz shows this to anyone: never ClickHouse's text (it can quote values).
            message = (
                public_error(exc.code, str(exc)).message
                if isinstance(exc, ClickHouseError)
                else type(exc).__name__
            )
            services.degradation.failed("clickhouse", message)
        raise
    services.degradation.ok("clickhouse")
    await services.limiter.record_rows(org_id, rows_read)
    plan = _plan_meta(getattr(compiled, "plan", None))
    # Rows as tuples of scalars: the collector stops tracking those, so thousands of cached
    # answers do not lengthen every full collection (a stall of the event loop).
    rows = [tuple(row) for row in result.rows]
    value = {"columns": result.columns, "rows": rows, "plan": plan}
    time_to = plan.get("time_to") or time.time()
    ttl = jittered(ttl_for(plan.get("granularity") or "1m", time_to, cache.clock()))
    stored = await cache.set(key, value, ttl)
    if fallback_key is not None and fallback_key != key:
        await cache.set(fallback_key, value, ttl)
    return value, stored, rows_read
