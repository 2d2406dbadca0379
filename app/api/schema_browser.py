"""The org's schema from its data, for the metric editor's completions and its Data panel.

    GET /catalog/events       event names with their counts
    GET /catalog/properties   property keys (of one event, or of all) with their counts
    GET /catalog/values       top values of a string column or a property, with their counts
    GET /catalog/language     the metric language's functions, columns and keywords

Each read is compiled by the querybuilder (app/querybuilder/browse.py: sqlglot AST, values
bound, the tenant guard applied last) and answered by app/api/series.py like a chart's data:
hot cache (brief: windows are whole hours, fresh for 10 s), the org's query slot and
rows-per-minute quota, stale answer on a ClickHouse failure. Any role may read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from app.api.charts import _located
from app.api.params import parse_range_s
from app.api.schemas import SeriesOut
from app.api.series import answer_compiled
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.openapi import api_doc
from app.querybuilder import MetricError
from app.querybuilder.browse import (
    MAX_EVENTS,
    MAX_KEY_LENGTH,
    MAX_PROPERTIES,
    MAX_VALUES,
    compile_event_names,
    compile_property_names,
    compile_top_values,
    language_words,
)

if TYPE_CHECKING:
    from app.services import Services

RangeParam = Annotated[
    str, QueryParameter(name="range", pattern=r"^[1-9][0-9]{0,2}[hdw]$", max_length=4)
]
EventParam = Annotated[str | None, QueryParameter(max_length=200)]


class LanguageOut(msgspec.Struct):
    functions: list[str]
    columns: list[str]
    string_columns: list[str]
    keywords: list[str]


async def _answer(
    services: Services, org_id: int, range_: str, field: str, compile_: Any, **kwargs: Any
) -> SeriesOut:
    """Compile one browse query over the last `range_` (whole hours) and answer it through the
    cache and the org's quotas; a refusal is a 422 pointing at `field`."""
    span = parse_range_s(range_)
    now = int(time.time())
    try:
        compiled = compile_(
            org_id=org_id,
            database=services.ch.database,
            time_from=now - span,
            time_to=now,
            **kwargs,
        )
    except MetricError as exc:
        raise _located(exc, field) from None
    return await answer_compiled(services, org_id, compiled, ("now", 0, span))


class SchemaBrowserController(Controller):
    path = "/catalog"
    tags = ["catalog"]
    dependencies = AUTH

    @get("/events", opt=api_doc(errors={422}))
    async def events(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        range_: RangeParam = "7d",
        n: Annotated[int, QueryParameter(ge=1, le=MAX_EVENTS)] = 100,
    ) -> SeriesOut:
        """The org's event names over the last `range` (at most 31 days), most frequent first:
        columns `event, total`."""
        return await _answer(services, principal.org_id, range_, "range", compile_event_names, n=n)

    @get("/properties", opt=api_doc(errors={422}))
    async def properties(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        event: EventParam = None,
        range_: RangeParam = "7d",
        n: Annotated[int, QueryParameter(ge=1, le=MAX_PROPERTIES)] = 100,
    ) -> SeriesOut:
        """Property keys (`props`) of the org's events, or of one `event`, by how many events
        carry them: columns `property, total`."""
        return await _answer(
            services, principal.org_id, range_, "event", compile_property_names, event=event, n=n
        )

    @get("/values", opt=api_doc(errors={422}))
    async def values(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        column: Annotated[str | None, QueryParameter(max_length=32)] = None,
        property_: Annotated[
            str | None, QueryParameter(name="property", max_length=MAX_KEY_LENGTH)
        ] = None,
        event: EventParam = None,
        range_: RangeParam = "7d",
        n: Annotated[int, QueryParameter(ge=1, le=MAX_VALUES)] = 20,
    ) -> SeriesOut:
        """The most frequent non-empty values of a string `column` or of a `property` (exactly
        one), of one `event` if given: columns `value, total`."""
        return await _answer(
            services, principal.org_id, range_, "column", compile_top_values,
            column=column, prop=property_, event=event, n=n,
        )  # fmt: skip

    @get("/language")
    async def language(self, principal: PrincipalDep) -> LanguageOut:
        """What the metric editor completes besides the org's names: the compiler's allowed
        functions, the event columns (and which hold strings), the clause keywords."""
        return LanguageOut(**language_words())
