"""Saved metrics, their history, and ad-hoc queries."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.api import series
from app.api.common import (
    AUTH,
    MAX_BODY_BYTES,
    IfMatch,
    PrincipalDep,
    ServicesDep,
    check_id,
    etag,
    expected_version,
)
from app.api.params import parse_compare, parse_filters, time_range, window_of
from app.api.schemas import Granularity, MetricIn, MetricOut, QueryIn, SeriesOut
from app.auth import Principal
from app.cache import GRANULARITY_S, SingleFlight, config_key
from app.openapi import api_doc
from app.store import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from app.services import Services

DEFAULT_HISTORY_S = 3600


def _out(row: dict[str, Any]) -> MetricOut:
    return msgspec.convert(row, MetricOut, from_attributes=False)


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
    memo = _memo(services, "compiled")
    hit = memo.get(memo_key)
    now = time.monotonic()
    if hit is not None and now - hit[1] < 60:
        compiled = hit[0]
    else:
        compiled = series.compile_query(
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
    fallback = series.fallback_key(
        principal.org_id, compiled, window_of(from_, to, default_range_s)
    )
    value, meta = await series.run_cached(services, principal.org_id, compiled, fallback)
    return SeriesOut(columns=value["columns"], rows=value["rows"], meta=meta)


class MetricController(Controller):
    path = "/metrics"
    tags = ["metrics"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_metrics(self, services: ServicesDep, principal: PrincipalDep) -> list[MetricOut]:
        """The org's saved metrics."""
        return [_out(r) for r in await services.store.metrics.list(principal.org_id)]

    @post("/", opt=api_doc(errors={409}, etag=True))  # 409: name_taken
    async def create_metric(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[MetricIn]
    ) -> Response[MetricOut]:
        """Save a metric; its definition is compiled first (422 with the position if bad)."""
        principal.require("editor")
        series.validate_definition(data.definition)
        row = await services.store.metrics.create(
            principal.org_id, data.name, data.description, data.definition
        )
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

    @get("/{metric_id:int}", opt=api_doc(etag=True))
    async def get_metric(
        self, services: ServicesDep, principal: PrincipalDep, metric_id: FromPath[int]
    ) -> Response[MetricOut]:
        row = await services.store.metrics.get(principal.org_id, check_id(metric_id))
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @put("/{metric_id:int}", opt=api_doc(etag=True))
    async def update_metric(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        metric_id: FromPath[int],
        data: JSONBody[MetricIn],
        if_match: IfMatch = None,
    ) -> Response[MetricOut]:
        """Replace a metric; needs If-Match (or `version`) — a stale one is 409."""
        principal.require("editor")
        check_id(metric_id)
        version = expected_version(request, data.version)
        series.validate_definition(data.definition)
        row = await services.store.metrics.update(
            principal.org_id, metric_id, version, data.name, data.description, data.definition
        )
        forget_definition(services, principal.org_id, metric_id)
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @delete("/{metric_id:int}", status_code=204)
    async def delete_metric(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        metric_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> None:
        principal.require("editor")
        check_id(metric_id)
        await services.store.metrics.delete(principal.org_id, metric_id, expected_version(request))
        forget_definition(services, principal.org_id, metric_id)

    @get("/{metric_id:int}/history", opt=api_doc(errors={422}))
    async def history(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        metric_id: FromPath[int],
        from_: Annotated[str | None, QueryParameter(name="from", max_length=64)] = None,
        to: Annotated[str | None, QueryParameter(max_length=64)] = None,
        granularity: FromQuery[Granularity] = "auto",
        filter_: Annotated[list[str] | None, QueryParameter(name="filter")] = None,
        group_by: Annotated[str | None, QueryParameter(max_length=100)] = None,
        compare: Annotated[str | None, QueryParameter(max_length=4000)] = None,
    ) -> SeriesOut:
        """The metric's series over [from, to) with the plan (table, granularity) in `meta`.

        If ClickHouse fails, the last cached answer comes back with `meta.stale: true`.
        """
        check_id(metric_id)
        definition = await _definition(services, principal, metric_id)
        return await answer_series(
            services,
            principal,
            definition,
            from_=from_,
            to=to,
            granularity=granularity,
            filters=parse_filters(filter_, max_depth=services.settings.max_json_depth),
            group_by=group_by,
            compare=parse_compare(compare, max_depth=services.settings.max_json_depth),
            default_range_s=DEFAULT_HISTORY_S,
            field="definition",
        )


DEFINITION_FRESH_S = 2.0  # how long this process reuses a saved definition it read
# From this age on, a request still served from the memo starts one background re-read, so a
# metric in use is re-read before its 2 s are up and no request waits for PostgreSQL.
DEFINITION_REFRESH_S = 1.5


def _memo(services: Services, name: str) -> OrderedDict:
    memo = services.extras.get(name)
    if memo is None:
        memo = services.extras[name] = OrderedDict()
    return memo


def _remember(memo: OrderedDict, key: Any, value: Any, limit: int = 4096) -> None:
    memo[key] = value
    memo.move_to_end(key)
    if len(memo) > limit:
        memo.popitem(last=False)


def _definition_flights(services: Services) -> SingleFlight:
    flights = services.extras.get("definition_flights")
    if flights is None:
        flights = services.extras["definition_flights"] = SingleFlight()
    return flights


def forget_definition(services: Services, org_id: int, metric_id: int) -> None:
    """After a PUT/DELETE on this node: the next request reads PostgreSQL (a read already
    running started before the change, so neither it nor its answer is used)."""
    _memo(services, "definitions").pop((org_id, metric_id), None)
    _definition_flights(services).forget(f"{org_id}:{metric_id}")


async def _definition(services: Services, principal: Principal, metric_id: int) -> dict[str, Any]:
    """The saved definition: reused for 2 s in this process (re-read in the background from
    1.5 s while in use), remembered in the hot cache so history keeps working through a
    PostgreSQL outage. Concurrent requests share one read."""
    memo = _memo(services, "definitions")
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
    return _definition_flights(services).run(
        f"{org_id}:{metric_id}", lambda: _fetch_definition(services, org_id, metric_id)
    )


async def _fetch_definition(services: Services, org_id: int, metric_id: int) -> dict[str, Any]:
    memo = _memo(services, "definitions")
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
    if not _definition_flights(services).is_current(f"{org_id}:{metric_id}"):
        return definition  # changed on this node meanwhile: answer the waiters, keep nothing
    hit = memo.get(key)
    if hit is None or hit[0] != definition:
        await services.cache.set(config_key(org_id, "metric", metric_id), definition, 0)
    _remember(memo, key, (definition, started))
    return definition


class QueryController(Controller):
    path = "/query"
    tags = ["metrics"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @post("/", status_code=200)
    async def query(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[QueryIn]
    ) -> SeriesOut:
        """An ad-hoc metric (text or form JSON) for exploration: same compiler, same limits."""
        return await answer_series(
            services,
            principal,
            data.definition,
            from_=data.from_,
            to=data.to,
            granularity=data.granularity,
            filters=data.filters,
            group_by=data.group_by,
            compare=data.compare,
            default_range_s=DEFAULT_HISTORY_S,
            field="definition",
        )
