"""The read-only chart data endpoints `/ui/data/*` (funnel, heatmap, top-N, app/api/charts.py)
with their tenancy and error paths."""

from __future__ import annotations

import asyncio
import time

import pytest


async def _events(client, org, events) -> None:
    r = await client.post(
        "/v1/events", json=events, headers={"Authorization": f"Bearer {org.api_key}"}
    )
    assert r.status_code in (200, 202), r.text
    await client.app.state.services.writer.wait_inserted()  # 200 = in the WAL


@pytest.fixture
async def shop(client, org):
    now = int(time.time() * 1000)
    await _events(
        client,
        org,
        [
            {"event": "pageview", "user_id": "a", "ip": "5.9.0.1", "ts": now - 3000},
            {"event": "pageview", "user_id": "b", "ip": "5.9.0.1", "ts": now - 2000},
            {"event": "pageview", "user_id": "c", "ip": "51.15.0.1", "ts": now - 2000},
            {"event": "purchase", "user_id": "a", "ip": "5.9.0.1", "value": 5, "ts": now - 1000},
        ],
    )
    # Accepted is not yet inserted (the writer batches): wait until the rows are queryable.
    deadline = time.monotonic() + 20
    while True:
        r = await client.post(
            "/query",
            json={"definition": {"text": "SELECT count() AS n"}, "from": "now-1h"},
            headers=org.h(),
        )
        assert r.status_code == 200, r.text
        if sum(row[1] for row in r.json()["rows"]) == 4:
            return org
        assert time.monotonic() < deadline, "the events never became queryable"
        await asyncio.sleep(0.2)


async def test_funnel_heatmap_top(client, shop):
    h = shop.h()
    r = await client.post(
        "/ui/data/funnel", json={"steps": ["pageview", "purchase"], "from": "now-1h"}, headers=h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["step", "step_name", "users", "conversion", "conversion_total"]
    assert [row[2] for row in body["rows"]] == [3, 1]
    assert body["meta"]["table"] == "events"

    r = await client.post(
        "/ui/data/heatmap",
        json={"definition": {"text": "SELECT count() AS n"}, "from": "now-7d"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert len(rows) == 168 and sum(row[2] for row in rows) == 4

    r = await client.post(
        "/ui/data/top",
        json={"definition": {"text": "SELECT count() AS n"}, "dimension": "country", "n": 1},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [["DE", False, 3], ["other", True, 1]]


async def test_errors_and_tenancy(client, shop, make_org):
    h = shop.h()
    assert (await client.post("/ui/data/funnel", json={"steps": ["a", "b"]})).status_code == 401

    r = await client.post(
        "/ui/data/top",
        json={"definition": {"text": "SELECT count() AS n\nWHERE contry = 'x'"}, "dimension": "os"},
        headers=h,
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "unknown_column"
    assert (error["where"]["line"], error["where"]["column"]) == (2, 7)

    r = await client.post(
        "/ui/data/funnel", json={"steps": [{"name": "x", "where": "sleep(1)"}, "b"]}, headers=h
    )
    assert r.status_code == 422
    assert r.json()["error"]["where"]["field"] == "funnel.steps[0].where"

    # Another org's saved metric is not found, exactly like a missing one.
    other = await make_org("globex")
    r = await client.post(
        "/metrics",
        json={"name": "theirs", "definition": {"text": "SELECT count() AS n"}},
        headers=other.h(),
    )
    assert r.status_code == 201, r.text
    theirs = r.json()["id"]
    for path in ("/ui/data/heatmap", "/ui/data/top"):
        body = {"metric_id": theirs}
        if path.endswith("top"):
            body["dimension"] = "country"
        r = await client.post(path, json=body, headers=h)
        assert r.status_code == 404, (path, r.text)
    r = await client.post(
        "/ui/data/heatmap",
        json={"metric_id": theirs},
        headers=other.h(),
    )
    assert r.status_code == 200
    assert sum(row[2] for row in r.json()["rows"]) == 0  # globex has no events
