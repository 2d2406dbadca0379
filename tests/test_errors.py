"""app/errors.py maps every exception a handler lets out to the one error shape, for the whole
app: a route needs no handlers of its own for the store's errors or a refused metric."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Controller, Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from app.errors import LocatedMetricError, exception_handlers
from app.querybuilder import MetricError
from app.store.base import Conflict, Invalid, NotFound, StoreUnavailable, VersionConflict


class _Degradation:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    def failed(self, part: str, message: str) -> None:
        self.failures.append((part, message))


class _Services:
    def __init__(self) -> None:
        self.degradation = _Degradation()


RAISED: dict[str, Exception] = {
    "not_found": NotFound("dashboard"),
    "not_found_bare": NotFound(),
    "version_conflict": VersionConflict(7),
    "conflict": Conflict("name_taken", "a metric with this name exists", {"field": "name"}),
    "invalid": Invalid("unknown_metric", "no metric with id 9", {"field": "metric_id"}),
    "store_unavailable": StoreUnavailable("connection refused"),
    "metric": MetricError("unknown_function", "no function frob", token="frob", line=1, column=8),
    "metric_nowhere": MetricError("empty_metric", "the metric is empty"),
    "located": LocatedMetricError(
        MetricError("unknown_dimension", "no dimension planet", field="group_by"),
        {"param": "group_by"},
    ),
}


@get("/raise/{name:str}", sync_to_thread=False)
def raise_it(name: FromPath[str]) -> None:
    raise RAISED[name]


class _Plain(Controller):
    """A controller that declares no exception handlers of its own."""

    path = "/controller"

    @get("/{name:str}", sync_to_thread=False)
    def raise_here(self, name: FromPath[str]) -> None:
        raise RAISED[name]


@pytest.fixture
async def bare():
    app = Litestar([raise_it, _Plain], exception_handlers=exception_handlers)
    app.state.services = _Services()
    async with AsyncTestClient(app) as client:
        yield client, app.state.services


EXPECTED: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "not_found": (404, {"code": "not_found", "message": "no such dashboard", "where": None}, {}),
    "not_found_bare": (404, {"code": "not_found", "message": "no such object", "where": None}, {}),
    "version_conflict": (
        409,
        {
            "code": "version_conflict",
            "message": "this was changed since you read it; re-read it and apply your change again",
            "where": {"current_version": 7},
        },
        {"etag": '"7"'},
    ),
    "conflict": (
        409,
        {
            "code": "name_taken",
            "message": "a metric with this name exists",
            "where": {"field": "name"},
        },
        {},
    ),
    "invalid": (
        422,
        {
            "code": "unknown_metric",
            "message": "no metric with id 9",
            "where": {"field": "metric_id"},
        },
        {},
    ),
    "store_unavailable": (
        503,
        {
            "code": "store_unavailable",
            "message": "the configuration store is unavailable; try again shortly",
            "where": None,
        },
        {"retry-after": "5"},
    ),
    "metric": (
        422,
        {
            "code": "unknown_function",
            "message": "no function frob",
            "where": {"token": "frob", "line": 1, "column": 8},
        },
        {},
    ),
    "metric_nowhere": (
        422,
        {"code": "empty_metric", "message": "the metric is empty", "where": None},
        {},
    ),
    "located": (
        422,
        {
            "code": "unknown_dimension",
            "message": "no dimension planet",
            "where": {"param": "group_by"},
        },
        {},
    ),
}


@pytest.mark.parametrize("prefix", ["/raise", "/controller"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_each_error_has_one_answer_wherever_it_is_raised(bare, prefix, name):
    client, _ = bare
    status, body, headers = EXPECTED[name]
    r = await client.get(f"{prefix}/{name}")
    assert r.status_code == status
    assert r.json() == {"error": body}
    for header, value in headers.items():
        assert r.headers[header] == value


async def test_store_unavailable_is_reported_to_degradation(bare):
    client, services = bare
    r = await client.get("/raise/store_unavailable")
    assert r.status_code == 503
    assert services.degradation.failures == [("postgres", "connection refused")]


def test_no_route_of_the_app_maps_errors_itself(client):
    """The mapping is the app's alone: no controller or route handler declares its own."""
    own = [
        str(handler)
        for route in client.app.routes
        for handler in getattr(route, "route_handlers", [])
        for layer in handler.ownership_layers
        if layer is not client.app and getattr(layer, "exception_handlers", None)
    ]
    assert own == []
