"""CLICKPULSE_ROLES: one process serves ingest, api, push or any mix (docs/deployment.md).

The real app on real chDB + PostgreSQL, built with `roles` set: which routes answer, which
background parts run."""

from __future__ import annotations

import pytest
from litestar import get

from app.config import ROLES, Settings
from app.server import for_roles, role_of_path

EVENTS = [{"event": "pageview", "path": "/", "user_id": "u1"}]
ALERT = {
    "name": "errors high",
    "metric_inline": {"text": "SELECT count() AS n WHERE event = 'err'"},
    "comparator": ">",
    "threshold": 5,
    "for_seconds": 3,
}


async def _status(client, method: str, path: str, **kwargs) -> int:
    return (await client.request(method, path, **kwargs)).status_code


async def test_ingest_only_accepts_events_and_serves_nothing_else(make_client, org, ch):
    async with make_client(roles=("ingest",)) as (client, services):
        r = await client.post("/v1/events", json=EVENTS, headers=org.ingest_headers)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        await services.writer.wait_inserted()
        assert ch.query_sync(f"SELECT count() FROM {ch.table('events')}").scalar() == 1
        assert await _status(client, "GET", "/dashboards", headers=org.admin_headers) == 404
        assert await _status(client, "GET", "/", headers=org.admin_headers) == 404
        assert await _status(client, "GET", "/ws/subscribe") == 404
        assert await _status(client, "GET", "/healthz") == 200
        assert await _status(client, "GET", "/readyz") == 200
        # The push tier's background parts never started here.
        assert services.push._started is False
        assert services.alerts._poller is None


async def test_api_only_serves_the_rest_api_and_ui_but_no_ingest_or_push(make_client, org):
    async with make_client(roles=("api",)) as (client, services):
        assert (
            await _status(client, "POST", "/v1/events", json=EVENTS, headers=org.ingest_headers)
            == 404
        )
        r = await client.get("/dashboards", headers=org.admin_headers)
        assert r.status_code == 200 and r.json() == []
        assert await _status(client, "GET", "/login") == 200
        assert await _status(client, "GET", "/ws/subscribe") == 404
        assert await _status(client, "GET", "/push/stats", headers=org.admin_headers) == 404
        # An alert saved here is stored; evaluating it is the push nodes' job.
        r = await client.post("/alerts", json=ALERT, headers=org.admin_headers)
        assert r.status_code == 201, r.text
        assert services.alerts.groups == {}
        assert services.writer._task is None  # the writer never started
        assert services.push._started is False


async def test_push_only_serves_the_socket_route_and_runs_poller_and_alerts(make_client, org):
    async with make_client(roles=("push",)) as (client, services):
        # Mounted: a plain HTTP request to the socket route is told to upgrade.
        assert await _status(client, "GET", "/ws/subscribe") == 426
        r = await client.get("/push/stats", headers=org.admin_headers)
        assert r.status_code == 200 and r.json()["node_id"] == services.push.node_id
        assert (
            await _status(client, "POST", "/v1/events", json=EVENTS, headers=org.ingest_headers)
            == 404
        )
        assert await _status(client, "GET", "/dashboards", headers=org.admin_headers) == 404
        assert await _status(client, "GET", "/healthz") == 200
        assert services.push._started is True
        assert services.alerts._poller is services.push.poller
        assert services.writer._task is None


async def test_all_roles_by_default(make_client, org):
    async with make_client() as (client, services):
        assert services.settings.roles == ROLES
        r = await client.post("/v1/events", json=EVENTS, headers=org.ingest_headers)
        assert r.status_code == 200
        assert await _status(client, "GET", "/dashboards", headers=org.admin_headers) == 200
        assert await _status(client, "GET", "/ws/subscribe") == 426
        assert services.push._started is True and services.writer._task is not None


def test_roles_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLICKPULSE_ROLES", " push,INGEST ,push")
    assert Settings.from_env().roles == ("ingest", "push")
    monkeypatch.setenv("CLICKPULSE_ROLES", "")
    assert Settings.from_env().roles == ("ingest", "api", "push")
    for bad in ("ingest,worker", ",", "all"):
        monkeypatch.setenv("CLICKPULSE_ROLES", bad)
        with pytest.raises(ValueError, match="CLICKPULSE_ROLES must be a comma list of"):
            Settings.from_env()
    with pytest.raises(ValueError, match="roles must be a non-empty subset"):
        Settings(roles=())


def test_paths_map_to_roles_by_prefix():
    assert role_of_path("/v1/events") == "ingest"
    # The other tools' formats (docs/ingest.md), matched on whole path segments.
    for path in ("/e", "/e/", "/i/v0/e", "/batch", "/capture/", "/v1/batch", "/api/event"):
        assert role_of_path(path) == "ingest", path
    for path in ("/embed", "/batches", "/api/events", "/v1/eventsx", "/capturex"):
        assert role_of_path(path) == "api", path
    assert role_of_path("/ws/subscribe") == "push"
    assert role_of_path("/push/stats") == "push"
    assert role_of_path("/healthz") is None and role_of_path("/readyz") is None
    for path in ("/", "/dashboards", "/metrics/{metric_id:int}/history", "/sql", "/static/app"):
        assert role_of_path(path) == "api", path


def test_a_handler_spanning_two_roles_is_refused():
    @get(["/dashboards/x", "/v1/events/x"], sync_to_thread=False)
    def straddles() -> None:
        return None

    with pytest.raises(ValueError, match="serves paths of several roles"):
        for_roles(ROLES, [straddles])
