"""Saved metrics, their history, and ad-hoc queries: the routes (the series they answer is
app/api/series.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.api.common import (
    MAX_BODY_BYTES,
    IfMatch,
    check_id,
    copy_name,
    etag,
    expected_version,
)
from app.api.params import parse_compare, parse_filters
from app.api.schemas import Granularity, MetricIn, MetricOut, QueryIn, SeriesOut
from app.api.series import answer_series, forget_definition, saved_definition, validate_definition
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.openapi import api_doc

DEFAULT_HISTORY_S = 3600


def _out(row: dict[str, Any]) -> MetricOut:
    return msgspec.convert(row, MetricOut, from_attributes=False)


def _unit(data: MetricIn) -> dict[str, Any] | None:
    """The unit as stored (defaults left out), or None for a plain count."""
    return None if data.unit is None else msgspec.to_builtins(data.unit)


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
        validate_definition(data.definition)
        row = await services.store.metrics.create(
            principal.org_id,
            data.name,
            data.description,
            data.definition,
            _unit(data),
            principal.user_id,
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
        validate_definition(data.definition)
        row = await services.store.metrics.update(
            principal.org_id,
            metric_id,
            version,
            data.name,
            data.description,
            data.definition,
            _unit(data),
            principal.user_id,
        )
        forget_definition(services, principal.org_id, metric_id)
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @post("/{metric_id:int}/duplicate", opt=api_doc(errors={409}, etag=True))
    async def duplicate_metric(
        self, services: ServicesDep, principal: PrincipalDep, metric_id: FromPath[int]
    ) -> Response[MetricOut]:
        """A copy of the metric named "… (copy)" (or "… (copy 2)", … if that name is taken)."""
        principal.require("editor")
        source = await services.store.metrics.get(principal.org_id, check_id(metric_id))
        taken = {m["name"] for m in await services.store.metrics.list(principal.org_id)}
        row = await services.store.metrics.create(
            principal.org_id,
            copy_name(source["name"], taken),
            source["description"],
            source["definition"],
            source["unit"],
            principal.user_id,
        )
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

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
        definition = await saved_definition(services, principal, metric_id)
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
