"""Threshold alerts (definitions; evaluation is the alerts issue)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody

from app.api.common import (
    AUTH,
    MAX_BODY_BYTES,
    STORE_ERROR_HANDLERS,
    PrincipalDep,
    ServicesDep,
    check_id,
    etag,
    exactly_one_metric,
    expected_version,
)
from app.api.compiler import validate_definition
from app.api.schemas import AlertIn, AlertOut
from app.errors import ApiError


def _validated(data: JSONBody[AlertIn]) -> dict[str, Any]:
    exactly_one_metric(data.metric_id, data.metric_inline)
    if data.metric_inline is not None:
        validate_definition(data.metric_inline, "metric_inline")
    if data.webhook_url is not None:
        parts = urlsplit(data.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(
                422,
                "invalid_webhook_url",
                "webhook_url must be an absolute http:// or https:// URL",
                {"field": "webhook_url"},
            )
    for i, f in enumerate(data.filters):
        if not isinstance(f.get("dimension"), str):
            raise ApiError(
                422,
                "invalid_filter",
                "each filter needs a dimension, an op and a value",
                {"field": f"filters[{i}]"},
            )
    values = msgspec.structs.asdict(data)
    values.pop("version")
    return values


def _out(row: dict[str, Any]) -> AlertOut:
    return msgspec.convert(row, AlertOut)


class AlertController(Controller):
    path = "/alerts"
    tags = ["alerts"]
    dependencies = AUTH
    exception_handlers = STORE_ERROR_HANDLERS
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_alerts(self, services: ServicesDep, principal: PrincipalDep) -> list[AlertOut]:
        return [_out(r) for r in await services.store.alerts.list(principal.org_id)]

    @post("/")
    async def create_alert(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[AlertIn]
    ) -> Response[AlertOut]:
        """Notify when the metric is `comparator threshold` for `for_seconds` seconds."""
        principal.require("editor")
        row = await services.store.alerts.create(principal.org_id, _validated(data))
        return Response(_out(row), status_code=201, headers={"ETag": etag(row["version"])})

    @get("/{alert_id:int}")
    async def get_alert(
        self, services: ServicesDep, principal: PrincipalDep, alert_id: FromPath[int]
    ) -> Response[AlertOut]:
        row = await services.store.alerts.get(principal.org_id, check_id(alert_id))
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @put("/{alert_id:int}")
    async def update_alert(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        data: JSONBody[AlertIn],
    ) -> Response[AlertOut]:
        principal.require("editor")
        check_id(alert_id)
        version = expected_version(request, data.version)
        row = await services.store.alerts.update(
            principal.org_id, alert_id, version, _validated(data)
        )
        return Response(_out(row), headers={"ETag": etag(row["version"])})

    @delete("/{alert_id:int}", status_code=204)
    async def delete_alert(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
    ) -> None:
        principal.require("editor")
        check_id(alert_id)
        await services.store.alerts.delete(principal.org_id, alert_id, expected_version(request))
