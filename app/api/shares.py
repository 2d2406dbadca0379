"""Public read-only dashboard links: an org admin creates, lists and revokes them
(`/dashboards/{id}/shares`); anyone holding one reads that dashboard's charts as saved
(`/s/{token}/…`), and nothing else.

A link is `cps_` + 43 url-safe random characters (256 bits); only its SHA-256 is stored.
Every request through a link reads its row from PostgreSQL (no cache), so revoking or expiring
it takes effect on every node with the next request. Through a link the visitor names no
query, range or filter: the page and data answers take no parameters beyond the dashboard id,
which must be the link's own (any other id, like a dead link, is 404). The data comes from
the org's own paths (`/dashboards/{id}/data` for time series, `/ui/data` for top-N, heatmap
and funnel charts: compile, tenant guard, quotas, cache) for a viewer of the link's org. Requests per link are limited (`CLICKPULSE_SHARE_RATE_PER_MIN`).
The link also opens a push socket scoped to its dashboard's charts (app/push/access.py
`SharePrincipal`, hub.py `_shared_chart`, docs/push.md "Shared links").
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from app.api.charts import chart_answer, metric_of
from app.api.common import MAX_BODY_BYTES, check_id
from app.api.dashboards import charts_data, read_dashboard
from app.api.schemas import ChartData, DashboardData, Layout
from app.auth import Principal, throttle_keys, well_formed
from app.credentials import SHARE_LINK_PREFIX, hash_secret
from app.deps import AUTH, PrincipalDep, ServicesDep, client_address
from app.errors import ApiError
from app.httpheaders import CONTENT_SECURITY_POLICY
from app.querybuilder import compile_funnel, compile_heatmap, compile_top_n
from app.store import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from app.services import Services

# A CSP source for frame-ancestors: 'self', or an http(s) origin (host may start with "*.").
_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?")
FrameAncestor = Annotated[str, Meta(max_length=200)]
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class ShareIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new link: who may embed it (CSP frame-ancestors sources; none = no framing) and its
    lifetime in seconds (none = until revoked)."""

    frame_ancestors: Annotated[list[FrameAncestor], Meta(max_length=10)] = msgspec.field(
        default_factory=list
    )
    expires_in_s: Annotated[int, Meta(ge=60, le=3650 * 86400)] | None = None


class ShareOut(msgspec.Struct):
    id: int
    dashboard_id: int
    prefix: str
    frame_ancestors: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    url: str | None = None  # only in the answer that creates it
    token: str | None = None  # only in the answer that creates it


class SharedChart(msgspec.Struct):
    """What a visitor sees of a chart: how to draw it, never its query. `kind` is how the
    dashboard page draws it: series, top (a bar chart by a dimension), heatmap or funnel;
    `axes` is a heatmap's (weekday_hour or a dimension)."""

    id: int
    title: str
    chart_type: str
    kind: str
    granularity: str
    default_range: str
    dimension: str | None
    axes: str | None = None
    unit: dict[str, Any] | None = None  # how its values read (the metric's, or options.unit)
    live: bool = False  # the link's socket may subscribe to it (`chart_id`): it has a metric
    # Its place on the dashboard's 12-column grid, as the editors left it (None: reading order).
    layout: Layout | None = None


def chart_kind(chart: Any) -> str:
    """How the dashboard page reads and draws a chart (dashboard.js, `ChartView.kind`)."""
    if chart.chart_type in ("funnel", "heatmap"):
        return chart.chart_type
    if chart.chart_type == "bar" and chart.dimension:
        return "top"
    return "series"


def heatmap_axes(chart: Any) -> str:
    return str(chart.options.get("axes") or chart.dimension or "weekday_hour")


def live_group_by(chart: Any) -> list[str] | None:
    """What the chart's live key is grouped by, as the dashboard page subscribes to it as
    saved: line and bar charts by their dimension; stat panels and heatmaps not at all."""
    if chart.dimension and chart.chart_type not in ("stat", "heatmap", "funnel"):
        return [chart.dimension]
    return None


def has_live_metric(chart: Any) -> bool:
    """A chart with a metric of its own (a funnel has steps, not a metric)."""
    return chart.chart_type != "funnel" and (
        chart.metric_id is not None or chart.metric_inline is not None
    )


def shared_chart(chart: Any, units: dict[int, Any] | None = None) -> SharedChart:
    kind = chart_kind(chart)
    unit = chart.options.get("unit") or (units or {}).get(chart.metric_id)
    return SharedChart(
        id=chart.id,
        title=chart.title,
        chart_type=chart.chart_type,
        kind=kind,
        granularity=chart.granularity,
        default_range=chart.default_range,
        dimension=chart.dimension,
        axes=heatmap_axes(chart) if kind == "heatmap" else None,
        unit=unit if isinstance(unit, dict) else None,
        live=has_live_metric(chart),
        layout=getattr(chart, "layout", None),
    )


class _SavedRange(msgspec.Struct):
    # The chart's own default range, as a request to /ui/data would name it.
    from_: str
    to: str | None = None


async def _other_chart(services: Services, principal: Principal, chart: Any) -> ChartData:
    """A top-N, heatmap or funnel chart as saved (options, dimension, default range), through
    the `/ui/data` path (app/api/charts.py): the same compilers, guard, quotas and cache."""
    kind = chart_kind(chart)
    opts = chart.options
    window = _SavedRange(from_=f"now-{chart.default_range}")
    try:
        if kind == "funnel":
            answer = await chart_answer(
                services, principal, window, "funnel", compile_funnel,
                opts.get("steps") or ["pageview", "signup", "purchase"],
                window_seconds=int(opts.get("window_seconds") or 3600), breakdown=None,
                filters=[],
            )  # fmt: skip
        else:
            metric = await metric_of(services, principal, chart.metric_inline, chart.metric_id)
            if kind == "heatmap":
                axes = heatmap_axes(chart)
                answer = await chart_answer(
                    services, principal, window, "definition", compile_heatmap, metric,
                    axes=axes, filters=[],
                    granularity="auto" if axes == "weekday_hour" else chart.granularity,
                )  # fmt: skip
            else:
                answer = await chart_answer(
                    services, principal, window, "definition", compile_top_n, metric,
                    dimension=chart.dimension, n=int(opts.get("n") or 10), filters=[],
                )  # fmt: skip
    except ApiError as exc:
        if exc.status == 429:
            raise
        return ChartData(
            chart_id=chart.id, error={"code": exc.code, "message": exc.message, "where": exc.where}
        )
    except NotFound:
        return ChartData(
            chart_id=chart.id,
            error={"code": "not_found", "message": "the chart's metric is gone", "where": None},
        )
    return ChartData(chart_id=chart.id, columns=answer.columns, rows=answer.rows, meta=answer.meta)


async def shared_charts_data(
    services: Services, principal: Principal, dashboard: Any
) -> DashboardData:
    """Every chart of the dashboard as saved: time series through `charts_data` (the path of
    `/dashboards/{id}/data`), the others through `_other_chart`."""
    series = [c for c in dashboard.charts if chart_kind(c) == "series"]
    others = [c for c in dashboard.charts if chart_kind(c) != "series"]
    data = await charts_data(services, principal, msgspec.structs.replace(dashboard, charts=series))
    answers = {c.chart_id: c for c in data.charts}
    for chart, answer in zip(
        others,
        await asyncio.gather(*(_other_chart(services, principal, c) for c in others)),
        strict=True,
    ):
        answers[chart.id] = answer
    charts = [answers[c.id] for c in dashboard.charts]
    stale = data.stale or any(c.meta is not None and c.meta.stale for c in charts)
    return DashboardData(dashboard_id=dashboard.id, charts=charts, stale=stale)


class SharedDashboard(msgspec.Struct):
    id: int
    name: str
    description: str
    charts: list[SharedChart]


def frame_ancestors_csp(sources: list[str]) -> str:
    """The page's Content-Security-Policy: the app's, with frame-ancestors from the link."""
    allowed = " ".join(sources) if sources else "'none'"
    return CONTENT_SECURITY_POLICY.replace("frame-ancestors 'none'", f"frame-ancestors {allowed}")


def _check_sources(sources: list[str]) -> list[str]:
    for i, source in enumerate(sources):
        if source != "'self'" and not _ORIGIN.fullmatch(source):
            raise ApiError(
                422,
                "invalid_frame_ancestor",
                "a frame ancestor is 'self' or an origin such as https://example.com",
                {"field": f"frame_ancestors[{i}]"},
            )
    return sources


def not_found() -> ApiError:
    # One answer for unknown, revoked, expired and another dashboard's id: nothing is told.
    return ApiError(404, "not_found", "no such shared dashboard", {"path": "token"})


class ShareRateLimit:
    """Requests per link per minute: in Redis when set (all nodes share the count), else — or
    while Redis fails — in process (bounded)."""

    def __init__(self, max_entries: int = 10_000):
        self._local: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self.max_entries = max_entries

    async def hit(self, services: Services, share_id: int) -> None:
        limit = services.settings.share_rate_per_min
        if limit <= 0:
            return
        now = time.time()
        window = int(now // 60)
        count = None
        if services.redis is not None:
            key = f"cp:share:{services.ch.database}:{share_id}:{window}"
            try:
                count = await services.redis.incr(key)
                if count == 1:
                    await services.redis.expire(key, 120)
            except Exception:  # Redis down: count on this node rather than refuse the link
                count = None
        if count is None:
            slot = (services.ch.database, share_id, window)
            count = self._local.get(slot, 0) + 1
            self._local[slot] = count
            self._local.move_to_end(slot)
            while len(self._local) > self.max_entries:
                self._local.popitem(last=False)
        if count > limit:
            retry = max(1, int((window + 1) * 60 - now))
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests through this link; retry in {retry} s",
                {"path": "token"},
                {"Retry-After": str(retry)},
            )


RATE = ShareRateLimit()


async def live_share(services: Services, token: str, client: str) -> dict[str, Any]:
    """The live link `token` names (its row read from PostgreSQL now), counted against its
    rate limit; 404 for anything else. Failed lookups count against the client address in the
    authenticator's failed-attempt throttle (429 past it), so guessing costs PostgreSQL little."""
    # By address only: a key on the token's prefix would let a visitor who knows the link
    # block it for everyone with a few wrong tokens sharing its first characters.
    keys = throttle_keys(client, token)[:1]
    throttle = services.auth.throttle
    retry_after = throttle.retry_after(keys)
    if retry_after is not None:
        raise ApiError(
            429,
            "too_many_failed_attempts",
            f"too many unknown links from this address; retry in {retry_after} s",
            {"path": "token"},
            {"Retry-After": str(retry_after)},
        )
    share = None
    if well_formed(token, SHARE_LINK_PREFIX):
        share = await services.store.shares.live(hash_secret(token))
    if share is None:
        throttle.failed(keys)
        raise not_found()
    await RATE.hit(services, share["id"])
    return share


def _viewer(share: dict[str, Any]) -> Principal:
    # Reads as a viewer of the link's org: the org id comes from the link's row, nowhere else.
    return Principal(org_id=share["org_id"], user_id=0, role="viewer")


class ShareAdminController(Controller):
    path = "/dashboards/{dashboard_id:int}/shares"
    tags = ["dashboards"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @post("/")
    async def create_share(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        dashboard_id: FromPath[int],
        data: JSONBody[ShareIn],
    ) -> Response[ShareOut]:
        """A public read-only link to this dashboard (admin). The token is shown only here."""
        principal.require("admin")
        sources = _check_sources(data.frame_ancestors)
        row, token = await services.store.shares.create(
            principal.org_id, check_id(dashboard_id), sources, data.expires_in_s
        )
        out = msgspec.convert(row, ShareOut)
        out.token = token
        out.url = f"{str(request.base_url).rstrip('/')}/s/{token}"
        return Response(out, status_code=201)

    @get("/")
    async def list_shares(
        self, services: ServicesDep, principal: PrincipalDep, dashboard_id: FromPath[int]
    ) -> list[ShareOut]:
        """The dashboard's links, revoked and expired ones included (admin)."""
        principal.require("admin")
        rows = await services.store.shares.list(principal.org_id, check_id(dashboard_id))
        return [msgspec.convert(r, ShareOut) for r in rows]

    @delete("/{share_id:int}", status_code=204)
    async def revoke_share(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        dashboard_id: FromPath[int],
        share_id: FromPath[int],
    ) -> None:
        """Revoke a link: every node refuses it from the next request on, and its live
        sockets close (here at once, on other nodes at their next re-check) (admin)."""
        principal.require("admin")
        token_hash = await services.store.shares.revoke(
            principal.org_id, check_id(dashboard_id), check_id(share_id)
        )
        if "push" in services.settings.roles and services.push is not None:
            services.push.close_token(token_hash)


class SharedDashboardController(Controller):
    """What a link's holder reads; no credential but the link."""

    path = "/s/{token:str}/dashboards/{dashboard_id:int}"
    tags = ["shared"]

    async def _dashboard(
        self, request: Request, services: Services, token: str, dashboard_id: int
    ) -> Any:
        share = await live_share(services, token, client_address(request))
        if dashboard_id != share["dashboard_id"]:
            raise not_found()
        return share, await read_dashboard(services, _viewer(share), dashboard_id)

    @get("/")
    async def shared_dashboard(
        self,
        request: Request,
        services: ServicesDep,
        token: FromPath[str],
        dashboard_id: FromPath[int],
    ) -> Response[SharedDashboard]:
        """The shared dashboard's name and how to draw its charts (not their queries)."""
        share, dashboard = await self._dashboard(request, services, token, dashboard_id)
        units: dict[int, Any] = {}
        if any(c.metric_id is not None for c in dashboard.charts):
            try:
                metrics = await services.store.metrics.list(share["org_id"])
                units = {m["id"]: m.get("unit") for m in metrics}
            except StoreUnavailable:  # units are cosmetic: the charts draw without them
                units = {}
        out = SharedDashboard(
            id=dashboard.id,
            name=dashboard.name,
            description=dashboard.description,
            charts=[shared_chart(c, units) for c in dashboard.charts],
        )
        return Response(out, headers=NO_STORE)

    @get("/data")
    async def shared_data(
        self,
        request: Request,
        services: ServicesDep,
        token: FromPath[str],
        dashboard_id: FromPath[int],
    ) -> Response[DashboardData]:
        """Every chart as saved, over its default range; takes no query parameters."""
        if request.query_params:
            raise ApiError(
                400,
                "parameters_not_allowed",
                "a shared dashboard is read as saved; it takes no parameters",
                {"query": sorted(request.query_params.keys())[:5]},
            )
        share, dashboard = await self._dashboard(request, services, token, dashboard_id)
        data = await shared_charts_data(services, _viewer(share), dashboard)
        return Response(data, headers=NO_STORE)
