"""Dashboards with their charts inline, and their data."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.common import (
    MAX_BODY_BYTES,
    IfMatch,
    check_id,
    copy_name,
    etag,
    exactly_one_metric,
    expected_version,
)
from app.api.params import parse_range_s
from app.api.schemas import (
    ChartData,
    DashboardData,
    DashboardIn,
    DashboardOut,
    DashboardSummary,
)
from app.api.series import answer_series, saved_definition, validate_definition
from app.auth import Principal
from app.cache import config_key
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError
from app.openapi import api_doc
from app.store import StoreUnavailable

if TYPE_CHECKING:
    from app.services import Services


def _charts(data: JSONBody[DashboardIn]) -> list[dict[str, Any]]:
    charts = []
    for i, chart in enumerate(data.charts):
        exactly_one_metric(chart.metric_id, chart.metric_inline, f"charts[{i}].")
        if chart.metric_inline is not None:
            validate_definition(chart.metric_inline, f"charts[{i}].metric_inline")
        charts.append(msgspec.to_builtins(chart))
    return normalise_layout(charts)


def normalise_layout(charts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The charts in reading order with no two overlapping, so that `position` (their index
    when stored) is the order a reader meets them on the grid.

    When every chart has a layout they are ordered by (y, x), ties in the order sent; then each
    chart that overlaps one placed before it moves down, just below the lowest such chart,
    until it overlaps none (x, w and h are kept). Charts without a layout (a client that does
    not know the grid) keep the order sent and are placed by the browser."""
    if not charts or any(c.get("layout") is None for c in charts):
        return charts
    ordered = sorted(charts, key=lambda c: (c["layout"]["y"], c["layout"]["x"]))
    placed: list[dict[str, int]] = []
    for chart in ordered:
        box = dict(chart["layout"])
        while True:
            below = [p["y"] + p["h"] for p in placed if _overlap(box, p)]
            if not below:
                break
            box["y"] = max(below)
        chart["layout"] = box
        placed.append(box)
    return sorted(ordered, key=lambda c: (c["layout"]["y"], c["layout"]["x"]))


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def _out(row: dict[str, Any], *, stale: bool = False, age_s: float = 0.0) -> DashboardOut:
    out = msgspec.convert(row, DashboardOut)
    out.stale = stale
    out.age_s = age_s
    return out


async def read_dashboard(
    services: Services, principal: Principal, dashboard_id: int
) -> DashboardOut:
    """From PostgreSQL (and remembered in the hot cache); from that cache if PostgreSQL is down."""
    key = config_key(principal.org_id, "dashboard", dashboard_id)
    cache = services.cache
    try:
        row = await services.store.dashboards.get(principal.org_id, dashboard_id)
    except StoreUnavailable as exc:
        services.degradation.failed("postgres", str(exc))
        entry = await cache.get(key)
        if entry is None:
            raise
        services.degradation.served_stale("postgres")
        return _out(entry.value, stale=True, age_s=round(entry.age_s(cache.clock()), 3))
    out = _out(row)
    await cache.set(key, msgspec.to_builtins(out), 0)
    return out


class DashboardController(Controller):
    path = "/dashboards"
    tags = ["dashboards"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_dashboards(
        self, services: ServicesDep, principal: PrincipalDep
    ) -> list[DashboardSummary]:
        rows = await services.store.dashboards.list(principal.org_id)
        return [msgspec.convert(r, DashboardSummary) for r in rows]

    @post("/", opt=api_doc(etag=True))
    async def create_dashboard(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[DashboardIn]
    ) -> Response[DashboardOut]:
        """Create a dashboard with its charts (each: a saved metric_id or an inline metric)."""
        principal.require("editor")
        row = await services.store.dashboards.create(
            principal.org_id, data.name, data.description, _charts(data), principal.user_id
        )
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

    @get("/{dashboard_id:int}", opt=api_doc(etag=True))
    async def get_dashboard(
        self, services: ServicesDep, principal: PrincipalDep, dashboard_id: FromPath[int]
    ) -> Response[DashboardOut]:
        """The dashboard and its charts. `stale: true` when served from cache (PostgreSQL down)."""
        out = await read_dashboard(services, principal, check_id(dashboard_id))
        return Response(out, headers={"ETag": etag(out.version)})

    @put("/{dashboard_id:int}", opt=api_doc(etag=True))
    async def update_dashboard(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        dashboard_id: FromPath[int],
        data: JSONBody[DashboardIn],
        if_match: IfMatch = None,
    ) -> Response[DashboardOut]:
        """Replace the dashboard and all its charts; needs If-Match (or `version`)."""
        principal.require("editor")
        check_id(dashboard_id)
        version = expected_version(request, data.version)
        charts = _charts(data)
        row = await services.store.dashboards.update(
            principal.org_id,
            dashboard_id,
            version,
            data.name,
            data.description,
            charts,
            principal.user_id,
        )
        await services.cache.delete(config_key(principal.org_id, "dashboard", dashboard_id))
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @post("/{dashboard_id:int}/duplicate", opt=api_doc(etag=True))
    async def duplicate_dashboard(
        self, services: ServicesDep, principal: PrincipalDep, dashboard_id: FromPath[int]
    ) -> Response[DashboardOut]:
        """A copy of the dashboard, named "… (copy)", with copies of its charts and layout."""
        principal.require("editor")
        source = await services.store.dashboards.get(principal.org_id, check_id(dashboard_id))
        row = await services.store.dashboards.duplicate(
            principal.org_id, dashboard_id, copy_name(source["name"]), principal.user_id
        )
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

    @delete("/{dashboard_id:int}", status_code=204)
    async def delete_dashboard(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        dashboard_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> None:
        principal.require("editor")
        check_id(dashboard_id)
        await services.store.dashboards.delete(
            principal.org_id, dashboard_id, expected_version(request)
        )
        await services.cache.delete(config_key(principal.org_id, "dashboard", dashboard_id))

    @get("/{dashboard_id:int}/data")
    async def dashboard_data(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        dashboard_id: FromPath[int],
        from_: Annotated[str | None, QueryParameter(name="from", max_length=64)] = None,
        to: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> DashboardData:
        """Every chart's series over its default range (or [from, to)); each chart degrades
        on its own (stale from cache, or an `error` for that chart only)."""
        dashboard = await read_dashboard(services, principal, check_id(dashboard_id))
        return await charts_data(services, principal, dashboard, from_, to)


async def charts_data(
    services: Services,
    principal: Principal,
    dashboard: DashboardOut,
    from_: str | None = None,
    to: str | None = None,
) -> DashboardData:
    """Every chart of `dashboard` (already read for `principal`'s org) as saved, over its
    default range or [from, to), compiled for that org; each chart degrades on its own."""

    async def one(chart: Any) -> ChartData:
        try:
            if chart.metric_id is not None:
                definition = await saved_definition(services, principal, chart.metric_id)
            else:
                definition = chart.metric_inline
            filters: list[dict[str, Any]] = []
            series = await answer_series(
                services,
                principal,
                definition,
                from_=from_,
                to=to,
                granularity=chart.granularity,
                filters=filters,
                group_by=chart.dimension,
                compare=chart.comparison,
                default_range_s=parse_range_s(chart.default_range),
                field="metric_inline",
            )
        except ApiError as exc:
            if exc.status == 429:
                raise
            return ChartData(
                chart_id=chart.id,
                error={"code": exc.code, "message": exc.message, "where": exc.where},
            )
        return ChartData(
            chart_id=chart.id, columns=series.columns, rows=series.rows, meta=series.meta
        )

    charts = await asyncio.gather(*(one(c) for c in dashboard.charts))
    stale = dashboard.stale or any(c.meta is not None and c.meta.stale for c in charts)
    return DashboardData(dashboard_id=dashboard.id, charts=list(charts), stale=stale)
