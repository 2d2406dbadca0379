"""Threshold alerts: definitions (CRUD), history, "test now" and backtest (docs/alerts.md).

Bodies are decoded here rather than by the framework so that every invalid field — an unknown
comparator, a negative or absurd `for_seconds`, a wrong type — is a 422 naming the field, like
a bad metric or a webhook that is not http(s) or points at a non-public address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, QueryParameter
from msgspec import Meta

from app.alerts.netguard import check_url as check_webhook_url
from app.api.common import (
    MAX_BODY_BYTES,
    MAX_ID,
    IfMatch,
    check_id,
    etag,
    exactly_one_metric,
    expected_version,
)
from app.api.params import parse_time
from app.api.schemas import (
    AlertEventsOut,
    AlertIn,
    AlertOut,
    AnomalyIn,
    GroupBy,
    Name,
    SilenceBrief,
    Version,
)
from app.api.series import locate_metric_error, validate_definition
from app.clickhouse import ClickHouseError
from app.clickhouse.public_errors import public_error
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError
from app.jsondepth import check_depth
from app.openapi import api_doc
from app.querybuilder import MetricError
from app.store import NotFound

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("clickpulse.api.alerts")


class BacktestIn(msgspec.Struct, forbid_unknown_fields=True, rename={"from_": "from"}):
    """An alert definition (as for POST /alerts; name optional) and a past range."""

    for_seconds: Annotated[int, Meta(ge=1, le=86400)]
    from_: str | int
    to: str | int = "now"
    comparator: Literal[">", ">=", "<", "<="] | None = None
    threshold: float | None = None
    kind: Literal["threshold", "anomaly"] = "threshold"
    recovery_threshold: float | None = None
    keep_firing_seconds: Annotated[int, Meta(ge=0, le=86400)] = 0
    anomaly: AnomalyIn | None = None
    group_by: GroupBy = msgspec.field(default_factory=list)
    max_groups: Annotated[int, Meta(ge=1, le=100)] = 20
    name: Name | None = None
    metric_id: int | None = None
    metric_inline: dict[str, Any] | None = None
    filters: Annotated[list[dict[str, Any]], Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    resolve_after_seconds: Annotated[int, Meta(ge=1, le=86400)] | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    webhook_url: Annotated[str, Meta(max_length=2000)] | None = None
    version: Version | None = None


async def decode_body(request: Request, type_: type) -> Any:
    """The JSON body as `type_`; a field the schema refuses → 422 with the field."""
    body = await request.body()
    check_depth(body, request.app.state.services.settings.max_json_depth)
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        text, _, path = message.partition(" - at `$")
        field = path.rstrip("`").lstrip(".") or None
        raise ApiError(422, "invalid_field", text, {"field": field} if field else None) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, {"field": field})


def _check_kind(data: Any) -> None:
    """The fields each kind needs, and the recovery side of the hysteresis."""
    if data.kind == "anomaly":
        if data.anomaly is None:
            raise _invalid("anomaly", "an anomaly alert needs `anomaly` (its band)")
        for name in ("comparator", "threshold", "recovery_threshold"):
            if getattr(data, name) is not None:
                raise _invalid(name, f"an anomaly alert has a band, not a {name}")
        if data.group_by:
            raise _invalid("group_by", "anomaly alerts cannot be grouped (yet)")
        a = data.anomaly
        if a.recovery_sensitivity is not None and a.recovery_sensitivity > a.sensitivity:
            raise _invalid(
                "anomaly.recovery_sensitivity",
                "recovery_sensitivity must not exceed sensitivity (the recovery band is "
                "inside the firing band)",
            )
        return
    if data.anomaly is not None:
        raise _invalid("anomaly", "only anomaly alerts (kind = anomaly) have `anomaly`")
    for name in ("comparator", "threshold"):
        if getattr(data, name) is None:
            raise _invalid(name, f"a threshold alert needs {name}")
    r = data.recovery_threshold
    if r is not None:
        above = data.comparator in (">", ">=")
        if (above and r > data.threshold) or (not above and r < data.threshold):
            side = "at most" if above else "at least"
            raise _invalid(
                "recovery_threshold",
                f"with comparator {data.comparator} the recovery threshold must be {side} "
                f"the threshold ({data.threshold:g})",
            )


def _check_fields(data: Any, settings: Any) -> None:
    _check_kind(data)
    exactly_one_metric(data.metric_id, data.metric_inline)
    if data.metric_inline is not None:
        validate_definition(data.metric_inline, "metric_inline")
    if data.webhook_url is not None:
        # http(s) only, no userinfo, allowed ports, no non-public IP literal or local name
        # (SSRF guard; the send-time guard re-checks resolved addresses).
        problem = check_webhook_url(
            data.webhook_url, allow_private=settings.alert_webhook_allow_private
        )
        if problem is not None:
            raise ApiError(
                422, "invalid_webhook_url", f"webhook_url {problem}", {"field": "webhook_url"}
            )
    for i, cid in enumerate(getattr(data, "channel_ids", ())):
        if not 1 <= cid <= MAX_ID:
            raise ApiError(
                422, "unknown_channel", f"no channel with id {cid}", {"field": f"channel_ids[{i}]"}
            )
    for i, f in enumerate(data.filters):
        if not isinstance(f.get("dimension"), str):
            raise ApiError(
                422,
                "invalid_filter",
                "each filter needs a dimension, an op and a value",
                {"field": f"filters[{i}]"},
            )


async def _definition(services: Services, org_id: int, data: Any) -> dict[str, Any]:
    """The metric definition an alert watches (inline, or the org's saved metric)."""
    if data.metric_inline is not None:
        return data.metric_inline
    try:
        row = await services.store.metrics.get(org_id, data.metric_id)
    except NotFound:
        raise ApiError(
            422, "unknown_metric", f"no metric with id {data.metric_id}", {"field": "metric_id"}
        ) from None
    return row["definition"]


async def _check_watchable(services: Services, org_id: int, data: Any) -> dict[str, Any]:
    """Compile exactly what the evaluator will watch: 422 when it cannot (GROUP BY, topK,
    a bad filter)."""
    from app.alerts.rules import watched_metric
    from app.push.keys import make_key

    definition = await _definition(services, org_id, data)
    field = "metric_inline" if data.metric_inline is not None else "metric_id"
    try:
        watched = watched_metric(definition)
        make_key(
            watched.metric,
            org_id=org_id,
            database=services.ch.database,
            filters=data.filters,
            group_by=data.group_by or None,
            window_s=60 if data.kind == "anomaly" else 0,
        )
    except MetricError as exc:
        if exc.where.get("field", "").startswith(("filters", "group_by")):
            raise  # the alert's own `filters`/`group_by`: already where the request has them
        raise locate_metric_error(exc, field, "text" in definition) from None
    return definition


async def _validated(services: Services, org_id: int, data: AlertIn) -> dict[str, Any]:
    _check_fields(data, services.settings)
    await _check_watchable(services, org_id, data)
    values = msgspec.structs.asdict(data)
    values.pop("version")
    values["anomaly"] = msgspec.to_builtins(data.anomaly)
    return values


async def _sync(services: Services, org_id: int, alert_id: int) -> None:
    """Tell this node's evaluator at once (other nodes pick it up within alert_sync_s)."""
    evaluator = getattr(services, "alerts", None)
    if evaluator is None:
        return
    try:
        await evaluator.sync(org_id=org_id, alert_id=alert_id)
    except Exception as exc:
        log.warning("alerts: sync after a change to alert %s failed: %s", alert_id, exc)


def _out(row: dict[str, Any]) -> AlertOut:
    out = msgspec.convert(row, AlertOut)
    if row.get("silence_id") is not None:
        out.silenced = SilenceBrief(
            row["silence_id"],
            row["silence_ends_at"],
            row["silence_reason"],
            row["silence_metric_id"],
        )
    return out


async def _run(services: Services, org_id: int, work: Any) -> Any:
    """A query-running request under the org's quotas and the query timeout."""
    try:
        async with services.limiter.query_slot(org_id):
            return await asyncio.wait_for(work, services.settings.query_timeout_s)
    except (ClickHouseError, TimeoutError) as exc:
        # /readyz shows this to anyone: never ClickHouse's text (it can quote values).
        shown = public_error(getattr(exc, "code", None), str(exc)).message
        services.degradation.failed(
            "clickhouse", shown if isinstance(exc, ClickHouseError) else type(exc).__name__
        )
        raise ApiError(
            503, "clickhouse_unavailable", "ClickHouse did not answer", None, {"Retry-After": "5"}
        ) from exc


class AlertController(Controller):
    path = "/alerts"
    tags = ["alerts"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_alerts(self, services: ServicesDep, principal: PrincipalDep) -> list[AlertOut]:
        return [_out(r) for r in await services.store.alerts.list(principal.org_id)]

    @post("/", opt=api_doc(request_body=AlertIn, etag=True))
    async def create_alert(
        self, request: Request, services: ServicesDep, principal: PrincipalDep
    ) -> Response[AlertOut]:
        """Notify when the metric is `comparator threshold` for `for_seconds` seconds.
        Body: AlertIn."""
        principal.require("editor")
        data = await decode_body(request, AlertIn)
        values = await _validated(services, principal.org_id, data)
        row = await services.store.alerts.create(principal.org_id, values)
        await _sync(services, principal.org_id, row["id"])
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

    @get("/{alert_id:int}", opt=api_doc(etag=True))
    async def get_alert(
        self, services: ServicesDep, principal: PrincipalDep, alert_id: FromPath[int]
    ) -> Response[AlertOut]:
        row = await services.store.alerts.get(principal.org_id, check_id(alert_id))
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @put("/{alert_id:int}", opt=api_doc(request_body=AlertIn, etag=True))
    async def update_alert(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> Response[AlertOut]:
        """Body: AlertIn (with `version`, or send If-Match)."""
        principal.require("editor")
        check_id(alert_id)
        data = await decode_body(request, AlertIn)
        version = expected_version(request, data.version)
        values = await _validated(services, principal.org_id, data)
        row = await services.store.alerts.update(principal.org_id, alert_id, version, values)
        await _sync(services, principal.org_id, alert_id)
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @delete("/{alert_id:int}", status_code=204)
    async def delete_alert(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> None:
        principal.require("editor")
        check_id(alert_id)
        await services.store.alerts.delete(principal.org_id, alert_id, expected_version(request))
        await _sync(services, principal.org_id, alert_id)

    @get("/{alert_id:int}/events")
    async def alert_events(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        before: Annotated[int | None, QueryParameter(ge=1)] = None,
    ) -> AlertEventsOut:
        """Firing/resolved history, newest first, each event with its delivery attempts
        (`deliveries`). Page with `before=<next_before>`."""
        from app.alerts.state import AlertStateRepo

        await services.store.alerts.get(principal.org_id, check_id(alert_id))
        repo = AlertStateRepo(services.pg, services.settings.pg_timeout_s)
        rows = await repo.events(principal.org_id, alert_id, limit, before)
        by_event: dict[int, list[dict[str, Any]]] = {}
        for d in await repo.deliveries(principal.org_id, [r["id"] for r in rows]):
            by_event.setdefault(d["event_id"], []).append(d)
        for r in rows:
            r["deliveries"] = by_event.get(r["id"], [])
        return msgspec.convert(
            {"events": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None},
            AlertEventsOut,
        )

    @post("/{alert_id:int}/test", status_code=200, opt=api_doc(errors={422}))
    async def test_alert(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        now: Annotated[float | None, QueryParameter()] = None,
    ) -> dict[str, Any]:
        """Evaluate now (or as of `now`, epoch seconds within the last 5 minutes) over the
        last for/resolve window: value, breach run and state per second. No side effects."""
        from app.alerts.backtest import evaluate_now

        row = await services.store.alerts.get(principal.org_id, check_id(alert_id))
        wall = time.time()
        if now is not None and not wall - 300 <= now <= wall + 1:
            raise ApiError(
                422, "invalid_time", "now must be within the last 5 minutes", {"param": "now"}
            )
        data = msgspec.convert(
            {"metric_id": row["metric_id"], "metric_inline": row["metric_inline"]},
            _MetricRef,
        )
        definition = await _definition(services, principal.org_id, data)
        return await _run(
            services,
            principal.org_id,
            evaluate_now(services, principal.org_id, row, definition, now),
        )

    @post("/backtest", status_code=200, opt=api_doc(request_body=BacktestIn))
    async def backtest_alert(
        self, request: Request, services: ServicesDep, principal: PrincipalDep
    ) -> dict[str, Any]:
        """When this definition would have fired and resolved over [from, to) (epoch seconds,
        ISO 8601 or now-<n><unit>): 1 s buckets within rollup_1s retention, 1 min beyond
        (approximation stated in the answer). Body: BacktestIn."""
        from app.alerts.backtest import backtest

        data = await decode_body(request, BacktestIn)
        _check_fields(data, services.settings)
        definition = await _check_watchable(services, principal.org_id, data)
        wall = time.time()
        time_from = parse_time(str(data.from_), "from", wall)
        time_to = parse_time(str(data.to), "to", wall)
        if time_from is None or time_to is None or time_from >= time_to:
            raise ApiError(422, "invalid_range", "from must be before to", {"field": "from"})
        alert = {
            "comparator": data.comparator,
            "threshold": data.threshold,
            "for_seconds": data.for_seconds,
            "resolve_after_seconds": data.resolve_after_seconds,
            "filters": data.filters,
            "kind": data.kind,
            "recovery_threshold": data.recovery_threshold,
            "keep_firing_seconds": data.keep_firing_seconds,
            "anomaly": msgspec.to_builtins(data.anomaly),
            "group_by": data.group_by,
            "max_groups": data.max_groups,
        }
        return await _run(
            services,
            principal.org_id,
            backtest(services, principal.org_id, alert, definition, time_from, time_to, wall),
        )


class _MetricRef(msgspec.Struct):
    metric_id: int | None = None
    metric_inline: dict[str, Any] | None = None
