"""Saved metrics: compile-validated CRUD, history with the plan, ad-hoc query, cross-org 404."""

from __future__ import annotations

import time

from tests.api.conftest import seed_events

VIEWS = "SELECT count() AS views WHERE event = 'pageview'"


def hour_window() -> tuple[int, int]:
    """A closed window [start, end) of whole minutes that ends a few minutes ago."""
    end = (int(time.time()) // 60 - 2) * 60
    return end - 3600, end


async def create_metric(api, org, name="views", text=VIEWS):
    r = await api.post(
        "/metrics", json={"name": name, "definition": {"text": text}}, headers=org.h("editor")
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_metric_crud_and_versions(api, org):
    m = await create_metric(api, org)
    assert m["version"] == 1 and m["definition"] == {"text": VIEWS}
    r = await api.get(f"/metrics/{m['id']}", headers=org.h("viewer"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    assert [x["id"] for x in (await api.get("/metrics", headers=org.h("viewer"))).json()] == [
        m["id"]
    ]

    body = {"name": "views2", "definition": {"text": "SELECT count() AS n"}}
    assert (
        await api.put(f"/metrics/{m['id']}", json=body, headers=org.h("editor"))
    ).status_code == 428
    r = await api.put(
        f"/metrics/{m['id']}", json=body, headers=org.h("editor", **{"If-Match": '"1"'})
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["name"] == "views2"
    r = await api.put(
        f"/metrics/{m['id']}", json=body, headers=org.h("editor", **{"If-Match": '"1"'})
    )
    assert r.status_code == 409
    where = r.json()["error"]["where"]
    assert where["current_version"] == 2
    assert where["updated_by"]["email"] == f"editor-{org.id}@example.com"

    # names are unique per org
    r = await api.post("/metrics", json=body, headers=org.h("editor"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "name_taken"

    # a metric used by a chart cannot be deleted
    d = await api.post(
        "/dashboards",
        json={"name": "d", "charts": [{"chart_type": "line", "metric_id": m["id"]}]},
        headers=org.h("editor"),
    )
    assert d.status_code == 201
    r = await api.delete(f"/metrics/{m['id']}", headers=org.h("editor", **{"If-Match": '"2"'}))
    assert r.status_code == 409 and r.json()["error"]["code"] == "metric_in_use"
    await api.delete(f"/dashboards/{d.json()['id']}?version=1", headers=org.h("editor"))
    r = await api.delete(f"/metrics/{m['id']}", headers=org.h("editor", **{"If-Match": '"2"'}))
    assert r.status_code == 204
    assert (await api.get(f"/metrics/{m['id']}", headers=org.h("viewer"))).status_code == 404


async def test_bad_definition_is_422_with_position(api, org):
    r = await api.post(
        "/metrics",
        json={"name": "bad", "definition": {"text": "SELECT count( AS x"}},
        headers=org.h("editor"),
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "syntax"
    assert err["where"]["line"] == 1 and err["where"]["column"] == 16
    assert err["where"]["token"] == "AS"
    assert err["where"]["field"] == "definition.text"
    # a forbidden construct (table access) is refused by the compiler, never run
    r = await api.post(
        "/metrics",
        json={"name": "evil", "definition": {"text": "SELECT count() FROM system.tables"}},
        headers=org.h("editor"),
    )
    assert r.status_code == 422
    # inline chart metrics are validated too
    r = await api.post(
        "/dashboards",
        json={
            "name": "d",
            "charts": [{"chart_type": "bar", "metric_inline": {"text": "SELECT nope("}}],
        },
        headers=org.h("editor"),
    )
    assert r.status_code == 422
    assert r.json()["error"]["where"]["field"].startswith("charts[0].metric_inline")
    # viewers cannot save metrics
    r = await api.post(
        "/metrics", json={"name": "v", "definition": {"text": VIEWS}}, headers=org.h("viewer")
    )
    assert r.status_code == 403


async def test_history_series_plan_and_filters(api, api_services, org, other_org):
    start, end = hour_window()
    t = start + 600
    seed_events(
        api_services.ch.inner,
        [{"org_id": org.id, "ts": t, "country": "DE"}] * 3
        + [{"org_id": org.id, "ts": t + 60, "country": "FR"}] * 2
        + [{"org_id": org.id, "ts": t, "event": "click"}]
        + [{"org_id": other_org.id, "ts": t}] * 7,
    )
    m = await create_metric(api, org)
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    r = await api.get(url, headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["t", "views"]
    assert len(body["rows"]) == 60  # empty minutes are filled
    assert sum(row[1] for row in body["rows"]) == 5  # other org's events never counted
    meta = body["meta"]
    assert meta["table"] == "rollup_1m" and meta["granularity"] == "1m"
    assert meta["raw"] is False and meta["stale"] is False and meta["cached"] is False
    assert meta["time_from"] == start and meta["time_to"] == end

    r = await api.get(url + "&group_by=country", headers=org.h("viewer"))
    assert r.json()["columns"] == ["t", "country", "views"]
    totals = {}
    for _, country, views in r.json()["rows"]:
        totals[country] = totals.get(country, 0) + views
    assert {k: v for k, v in totals.items() if v} == {"DE": 3, "FR": 2}

    r = await api.get(url + "&filter=country=DE", headers=org.h("viewer"))
    assert sum(row[1] for row in r.json()["rows"]) == 3
    r = await api.get(url + "&filter=country!=DE,ES", headers=org.h("viewer"))
    assert sum(row[1] for row in r.json()["rows"]) == 2

    r = await api.get(url + "&compare=previous_period", headers=org.h("viewer"))
    assert r.json()["columns"][0] == "series"
    assert r.json()["meta"]["comparison"] == "previous_period"

    seg = '{"a":[{"dimension":"country","value":"DE"}],"b":[{"dimension":"country","value":"FR"}]}'
    r = await api.get(url + "&compare=" + seg, headers=org.h("viewer"))
    assert r.status_code == 200
    per = {}
    for series, _, views in r.json()["rows"]:
        per[series] = per.get(series, 0) + views
    assert per == {"a": 3, "b": 2}

    # a 30-day hourly query reads the hourly rollup
    r = await api.get(
        f"/metrics/{m['id']}/history?from={end - 30 * 86400}&to={end}&granularity=1h",
        headers=org.h("viewer"),
    )
    assert r.status_code == 200
    assert r.json()["meta"]["table"] == "rollup_1h" and r.json()["meta"]["granularity_s"] == 3600
    assert sum(row[1] for row in r.json()["rows"]) == 5


async def test_history_parameter_errors(api, org):
    m = await create_metric(api, org)
    base = f"/metrics/{m['id']}/history"
    h = org.h("viewer")
    for query, status, where in (
        ("?from=yesterday", 400, {"param": "from"}),
        ("?from=now-1h&to=now-2h", 400, {"param": "from"}),
        ("?granularity=5m", 400, None),
        ("?filter=country", 400, {"param": "filter[0]"}),
        ("?compare={broken", 400, {"param": "compare"}),
        ("?group_by=nonexistent", 422, None),
        ("?filter=nonexistent=1", 422, None),
        ("?from=now-30d&granularity=1s", 422, {"param": "granularity"}),
    ):
        r = await api.get(base + query, headers=h)
        assert r.status_code == status, (query, r.text)
        assert set(r.json()) == {"error"}
        if where is not None:
            assert (
                r.json()["error"]["where"] == where
                or where.items() <= r.json()["error"]["where"].items()
            ), r.text


async def test_adhoc_query(api, api_services, org):
    start, end = hour_window()
    seed_events(
        api_services.ch.inner,
        [{"org_id": org.id, "ts": start + 5, "value": 2.5, "event": "purchase"}] * 4,
    )
    r = await api.post(
        "/query",
        json={
            "definition": {"text": "SELECT sum(value) AS revenue WHERE event = 'purchase'"},
            "from": str(start),
            "to": str(end),
            "granularity": "1h",
        },
        headers=org.h("viewer"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["columns"] == ["t", "revenue"]
    assert sum(row[1] for row in r.json()["rows"]) == 10.0
    r = await api.post(
        "/query",
        json={"definition": {"text": "SELECT count() AS n FROM events"}},
        headers=org.h("viewer"),
    )
    assert r.status_code == 422
    r = await api.post("/query", json={"definition": "nope"}, headers=org.h("viewer"))
    assert r.status_code == 400


async def test_other_orgs_metric_is_404_on_every_route(api, org, other_org):
    m = await create_metric(api, other_org, "secret")
    h = org.h("admin", **{"If-Match": '"1"'})
    body = {"name": "mine", "definition": {"text": VIEWS}}
    assert (await api.get(f"/metrics/{m['id']}", headers=h)).status_code == 404
    assert (await api.get(f"/metrics/{m['id']}/history", headers=h)).status_code == 404
    assert (await api.put(f"/metrics/{m['id']}", json=body, headers=h)).status_code == 404
    assert (await api.delete(f"/metrics/{m['id']}", headers=h)).status_code == 404
    assert (await api.get("/metrics", headers=h)).json() == []
    r = await api.get(f"/metrics/{m['id']}", headers=other_org.h("viewer"))
    assert r.status_code == 200 and r.json()["name"] == "secret"
