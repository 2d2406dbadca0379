"""Chart data beyond a metric's series, for the UI: funnel, heatmap and top-N (JSON, `/ui/data`).

Everything goes through the querybuilder (`compile_funnel`, `compile_heatmap`,
`compile_top_n`) and is answered by app/api/series.py (hot cache, per-org quotas,
stale-on-failure; `count_rows` and `run_compiled_async`, the tenant guard re-verified on the
final SQL). The org comes from the token only; nothing here builds SQL.

    POST /ui/data/funnel   {steps, window_seconds, from, to, filters, breakdown}
    POST /ui/data/heatmap  {definition | metric_id, from, to, axes, granularity, filters}
    POST /ui/data/top      {definition | metric_id, dimension, n, from, to, filters}

Answers have the shape of `/metrics/{id}/history`: `{columns, rows, meta}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody
from msgspec import Meta

from app.api.common import MAX_BODY_BYTES, check_id
from app.api.params import time_range, window_of
from app.api.schemas import Dimension, Granularity, SeriesOut
from app.api.series import answer_compiled
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError, LocatedMetricError
from app.openapi import api_doc
from app.querybuilder import MetricError, compile_funnel, compile_heatmap, compile_top_n

if TYPE_CHECKING:
    from app.services import Services

DEFAULT_RANGE_S = 3600
Filters = Annotated[list[dict[str, Any]], Meta(max_length=20)]


class FunnelIn(msgspec.Struct, forbid_unknown_fields=True):
    # an event name, or {"name", "event"?, "where"?} (a condition in the metric language)
    steps: Annotated[list[str | dict[str, Any]], Meta(min_length=2, max_length=10)]
    window_seconds: Annotated[int, Meta(ge=1, le=90 * 86400)] = 3600
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    filters: Filters = msgspec.field(default_factory=list)
    breakdown: Dimension | None = None


class HeatmapIn(msgspec.Struct, forbid_unknown_fields=True):
    definition: dict[str, Any] | None = None
    metric_id: int | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    # "weekday_hour" (weekday × hour of day, UTC) or a dimension (dimension × time)
    axes: Annotated[str, Meta(max_length=100)] = "weekday_hour"
    granularity: Granularity = "auto"
    filters: Filters = msgspec.field(default_factory=list)


class TopIn(msgspec.Struct, forbid_unknown_fields=True):
    dimension: Dimension
    definition: dict[str, Any] | None = None
    metric_id: int | None = None
    n: Annotated[int, Meta(ge=1, le=100)] = 10
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    filters: Filters = msgspec.field(default_factory=list)


def _located(exc: MetricError, field: str) -> LocatedMetricError:
    """The compiler's refusal placed under the request's `field` (app/errors.py answers 422)."""
    where = dict(exc.where)
    inner = where.pop("field", None)
    where["field"] = f"{field}.{inner}" if inner else field
    return LocatedMetricError(exc, where)


async def metric_of(services: Services, principal: Any, definition: Any, metric_id: Any) -> Any:
    """A text or form metric for the compiler: inline, or a saved metric of the caller's org."""
    if (definition is None) == (metric_id is None):
        raise ApiError(
            422,
            "invalid_metric_ref",
            "give exactly one of definition and metric_id",
            {"field": "metric_id"},
        )
    if metric_id is not None:
        definition = (await services.store.metrics.get(principal.org_id, check_id(metric_id)))[
            "definition"
        ]
    if "text" in definition:
        text = definition["text"]
        if not isinstance(text, str) or len(definition) != 1:
            raise ApiError(
                422,
                "invalid_metric",
                'a text definition is {"text": "<metric>"} and nothing else',
                {"field": "definition"},
            )
        return text
    return definition


async def chart_answer(
    services: Services,
    principal: Any,
    data: Any,
    field: str,
    compile_chart: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> SeriesOut:
    """Compile one chart query for the caller's org over the request's range and answer it
    through the cache; a compiler refusal is a 422 pointing at `field`."""
    start, end = time_range(data.from_, data.to, DEFAULT_RANGE_S, time.time())
    try:
        compiled = compile_chart(
            *args,
            org_id=principal.org_id,
            database=services.ch.database,
            time_from=start,
            time_to=end,
            **kwargs,
        )
    except MetricError as exc:
        raise _located(exc, field) from None
    window = window_of(data.from_, data.to, DEFAULT_RANGE_S)
    return await answer_compiled(services, principal.org_id, compiled, window)


class ChartDataController(Controller):
    path = "/ui/data"
    tags = ["ui"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @post("/funnel", status_code=200)
    async def funnel(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[FunnelIn]
    ) -> SeriesOut:
        """Users reaching each ordered step within `window_seconds`, with step conversion."""
        return await chart_answer(
            services, principal, data, "funnel", compile_funnel, data.steps,
            window_seconds=data.window_seconds, breakdown=data.breakdown, filters=data.filters,
        )  # fmt: skip

    @post("/heatmap", status_code=200, opt=api_doc(errors={404}))  # metric_id not found
    async def heatmap(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[HeatmapIn]
    ) -> SeriesOut:
        """The metric over weekday × hour (all 168 cells) or a dimension × time grid."""
        metric = await metric_of(services, principal, data.definition, data.metric_id)
        return await chart_answer(
            services, principal, data, "definition", compile_heatmap, metric,
            axes=data.axes, granularity=data.granularity, filters=data.filters,
        )  # fmt: skip

    @post("/top", status_code=200, opt=api_doc(errors={404}))  # metric_id not found
    async def top(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[TopIn]
    ) -> SeriesOut:
        """The top `n` values of a dimension by the metric's first output, plus `other`."""
        metric = await metric_of(services, principal, data.definition, data.metric_id)
        return await chart_answer(
            services, principal, data, "definition", compile_top_n, metric,
            dimension=data.dimension, n=data.n, filters=data.filters,
        )  # fmt: skip
