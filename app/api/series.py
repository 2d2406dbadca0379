"""A series for the API: compile a metric for the caller's org, run it, answer it.

The API's only door to the metric compiler (app/querybuilder) and to running its queries:
nothing in the API builds SQL. A definition and the request's parameters go to the
querybuilder, which answers a CompiledQuery; `run` answers it from the hot cache, or charges
the org's quotas and runs it through `run_compiled_async` (which re-checks the tenant guard on
the final SQL), falling back to the last known answer when ClickHouse fails. The steps are in
docs/api.md, section "A series, step by step"."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

from app.api.params import time_range, window_of
from app.api.schemas import Meta_, SeriesOut
from app.auth import Principal
from app.cache import (
    GRANULARITY_S,
    Entry,
    config_key,
    jittered,
    last_known_key,
    query_key,
    ttl_for,
)
from app.clickhouse import ClickHouseError
from app.clickhouse.public_errors import public_error
from app.errors import ApiError, LocatedMetricError
from app.querybuilder import MetricError, compile_metric, run_compiled_async
from app.querybuilder.execute import count_visible_rows_async
from app.querybuilder.planner import MAX_ROWS_PER_QUERY
from app.store import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from app.services import Services

# Compiler fields that are request parameters of the API, not parts of the definition.
_PARAMS = {
    "filters": "filter",
    "group_by": "group_by",
    "compare": "compare",
    "granularity": "granularity",
    "time_from": "from",
    "time_to": "to",
    "window_seconds": "window_seconds",
}


def _metric(definition: dict[str, Any], field: str) -> Any:
    if "text" in definition:
        text = definition["text"]
        if not isinstance(text, str) or len(definition) != 1:
            raise ApiError(
                422,
                "invalid_metric",
                'a text definition is {"text": "<metric>"} and nothing else',
                {"field": field},
            )
        return text
    return definition


def locate_metric_error(exc: MetricError, field: str, text: bool) -> LocatedMetricError:
    """The compiler's refusal placed in the request: a request parameter's name (`where.param`)
    or the definition's field (`where.field`, `<field>.text` for a position in metric text)."""
    where = dict(exc.where)
    inner = where.pop("field", None)
    head = (inner or "").split(".")[0].split("[")[0]
    if head in _PARAMS:
        where["param"] = _PARAMS[head] + (inner[len(head) :] if inner else "")
    elif inner:
        where["field"] = f"{field}.{inner}"
    else:
        where["field"] = f"{field}.text" if text else field
    return LocatedMetricError(exc, where)


def compile_query(
    definition: dict[str, Any],
    *,
    org_id: int,
    database: str,
    time_from: int,
    time_to: int,
    granularity: str = "auto",
    filters: list[dict[str, Any]] | None = None,
    group_by: str | None = None,
    compare: Any = None,
    field: str = "definition",
) -> Any:
    """A CompiledQuery for this org; a definition or parameter the compiler refuses → 422
    with its message and position (`where.line/column/token` in the text, or `where.field`,
    or `where.param` for a request parameter)."""
    metric = _metric(definition, field)
    groups = [g.strip() for g in group_by.split(",") if g.strip()] if group_by else None
    try:
        return compile_metric(
            metric,
            org_id=org_id,
            database=database,
            time_from=time_from,
            time_to=time_to,
            granularity=granularity,
            filters=filters or (),
            group_by=groups,
            compare=compare,
            empty_as_null=True,
        )
    except MetricError as exc:
        raise locate_metric_error(exc, field, isinstance(metric, str)) from None


def validate_definition(
    definition: dict[str, Any], field: str = "definition", *, database: str = "validate"
) -> None:
    """Compile once over the last hour (nothing runs); 422 with the position if refused."""
    now = int(time.time())
    compile_query(
        definition, org_id=1, database=database, time_from=now - 3600, time_to=now, field=field
    )


async def run(ch: Any, compiled: Any) -> Any:
    """Run through the querybuilder: tenant guard re-verified on the final SQL first.

    (The embedded facade binds parameters itself — chDB's own binding is shared by
    concurrent queries; see app/clickhouse/params.py — so queries may run in parallel.)
    """
    return await run_compiled_async(ch, compiled)


async def count_rows(ch: Any, compiled: Any) -> int:
    """How many of the org's rows `compiled` covers: what it is shown and charged as read
    (ClickHouse's own count includes other orgs' rows sharing a granule)."""
    return await count_visible_rows_async(ch, compiled)


# ClickHouse error codes that mean "this query is too expensive", not "ClickHouse is down".
_LIMIT_CODES = {158, 159, 160, 241, 307, 396}


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
        "gap_outputs": list(getattr(plan, "gap_outputs", ()) or ()) or None,
    }


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
            rows_read = await asyncio.wait_for(count_rows(services.ch, compiled), timeout)
            if rows_read > MAX_ROWS_PER_QUERY:
                raise ApiError(
                    422,
                    "query_too_expensive",
                    f"the query covers {rows_read} rows (at most {MAX_ROWS_PER_QUERY}); "
                    "narrow the range or filters",
                    {"rows": rows_read},
                )
            result = await asyncio.wait_for(run(services.ch, compiled), timeout)
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


async def answer_series(
    services: Services,
    principal: Principal,
    definition: dict[str, Any],
    *,
    from_: str | None,
    to: str | None,
    granularity: str,
    filters: list[dict[str, Any]],
    group_by: str | None,
    compare: Any,
    default_range_s: int,
    field: str,
) -> SeriesOut:
    """Compile for this org, run through cache/quotas/degradation, answer the series."""
    start, end = time_range(from_, to, default_range_s, time.time())
    step = GRANULARITY_S.get(granularity)
    if step:  # the compiler widens to whole buckets anyway; doing it first lets compiles repeat
        start, end = start // step * step, -(-end // step) * step
    memo_key = msgspec.json.encode(
        (principal.org_id, definition, start, end, granularity, filters, group_by, compare)
    )
    memo = services.compiled_memo
    hit = memo.get(memo_key)
    now = time.monotonic()
    if hit is not None and now - hit[1] < 60:
        compiled = hit[0]
    else:
        compiled = compile_query(
            definition,
            org_id=principal.org_id,
            database=services.ch.database,
            time_from=start,
            time_to=end,
            granularity=granularity,
            filters=filters,
            group_by=group_by,
            compare=compare,
            field=field,
        )
        _remember(memo, memo_key, (compiled, now))
    window = window_of(from_, to, default_range_s)
    return await answer_compiled(services, principal.org_id, compiled, window)


async def answer_compiled(
    services: Services, org_id: int, compiled: Any, window: tuple[Any, ...] | None
) -> SeriesOut:
    """The series of a compiled query of `org_id` through `run_cached`; `window`
    (`params.window_of`) keys its last known answer."""
    value, meta = await run_cached(
        services, org_id, compiled, fallback_key(org_id, compiled, window)
    )
    return SeriesOut(columns=value["columns"], rows=value["rows"], meta=meta)


DEFINITION_FRESH_S = 2.0  # how long this process reuses a saved definition it read
# From this age on, a request still served from the memo starts one background re-read, so a
# metric in use is re-read before its 2 s are up and no request waits for PostgreSQL.
DEFINITION_REFRESH_S = 1.5


def _remember(memo: OrderedDict, key: Any, value: Any, limit: int = 4096) -> None:
    memo[key] = value
    memo.move_to_end(key)
    if len(memo) > limit:
        memo.popitem(last=False)


def forget_definition(services: Services, org_id: int, metric_id: int) -> None:
    """After a PUT/DELETE on this node: the next request reads PostgreSQL (a read already
    running started before the change, so neither it nor its answer is used)."""
    services.definition_memo.pop((org_id, metric_id), None)
    services.definition_flights.forget(f"{org_id}:{metric_id}")


async def saved_definition(
    services: Services, principal: Principal, metric_id: int
) -> dict[str, Any]:
    """The saved definition: reused for 2 s in this process (re-read in the background from
    1.5 s while in use), remembered in the hot cache so history keeps working through a
    PostgreSQL outage. Concurrent requests share one read."""
    memo = services.definition_memo
    key = (principal.org_id, metric_id)
    now = time.monotonic()
    hit = memo.get(key)
    if hit is not None and now - hit[1] < DEFINITION_FRESH_S:
        if now - hit[1] >= DEFINITION_REFRESH_S:
            _read_definition(services, principal.org_id, metric_id)  # not awaited
        return hit[0]
    task, _ = _read_definition(services, principal.org_id, metric_id)
    try:
        return await asyncio.shield(task)
    except StoreUnavailable:
        entry = await services.cache.get(config_key(principal.org_id, "metric", metric_id))
        if entry is None:
            raise
        services.degradation.served_stale("postgres")
        return entry.value


def _read_definition(services: Services, org_id: int, metric_id: int) -> tuple[Any, bool]:
    """The running read of this definition in this process, or a new one."""
    return services.definition_flights.run(
        f"{org_id}:{metric_id}", lambda: _fetch_definition(services, org_id, metric_id)
    )


async def _fetch_definition(services: Services, org_id: int, metric_id: int) -> dict[str, Any]:
    memo = services.definition_memo
    key = (org_id, metric_id)
    started = time.monotonic()  # the memo's age counts from before the read
    try:
        row = await services.store.metrics.get(org_id, metric_id)
    except StoreUnavailable as exc:
        services.degradation.failed("postgres", str(exc))
        raise
    except NotFound:
        memo.pop(key, None)  # deleted through another node
        raise
    definition = row["definition"]
    if not services.definition_flights.is_current(f"{org_id}:{metric_id}"):
        return definition  # changed on this node meanwhile: answer the waiters, keep nothing
    hit = memo.get(key)
    if hit is None or hit[0] != definition:
        await services.cache.set(config_key(org_id, "metric", metric_id), definition, 0)
    _remember(memo, key, (definition, started))
    return definition
