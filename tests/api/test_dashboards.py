"""Dashboards CRUD with charts inline, optimistic concurrency, cross-org 404."""

from __future__ import annotations

from tests.api.conftest import insert_metric


def chart(metric_id: int, **over):
    return {"chart_type": "line", "metric_id": metric_id, "title": "views", **over}


async def test_dashboard_lifecycle(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    r = await api.post(
        "/dashboards",
        json={
            "name": "Traffic",
            "description": "top of funnel",
            "charts": [
                chart(m, granularity="1m", default_range="6h", dimension="country"),
                chart(m, chart_type="bar", comparison="previous_period", options={"stack": True}),
            ],
        },
        headers=org.h("editor"),
    )
    assert r.status_code == 201, r.text
    d = r.json()
    assert r.headers["etag"] == '"1"'
    assert d["version"] == 1 and len(d["charts"]) == 2
    assert d["charts"][0]["granularity"] == "1m"
    assert d["charts"][0]["dimension"] == "country"
    assert d["charts"][1]["options"] == {"stack": True}
    assert d["stale"] is False

    r = await api.get(f"/dashboards/{d['id']}", headers=org.h("viewer"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    assert r.json()["charts"][1]["comparison"] == "previous_period"

    listed = (await api.get("/dashboards", headers=org.h("viewer"))).json()
    assert [(x["id"], x["chart_count"]) for x in listed] == [(d["id"], 2)]

    # update: If-Match required; stale version → 409 with the current version
    body = {"name": "Traffic 2", "charts": [chart(m, chart_type="heatmap")]}
    r = await api.put(f"/dashboards/{d['id']}", json=body, headers=org.h("editor"))
    assert r.status_code == 428
    assert r.json()["error"]["code"] == "precondition_required"
    r = await api.put(
        f"/dashboards/{d['id']}", json=body, headers=org.h("editor", **{"If-Match": '"1"'})
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    assert [c["chart_type"] for c in r.json()["charts"]] == ["heatmap"]
    r = await api.put(
        f"/dashboards/{d['id']}", json=body, headers=org.h("editor", **{"If-Match": '"1"'})
    )
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "version_conflict",
        "message": r.json()["error"]["message"],
        "where": {
            "current_version": 2,
            "updated_by": r.json()["error"]["where"]["updated_by"],
            "updated_at": r.json()["error"]["where"]["updated_at"],
        },
    }
    assert r.json()["error"]["where"]["updated_by"]["email"] == f"editor-{org.id}@example.com"
    # the version may come in the body instead
    r = await api.put(
        f"/dashboards/{d['id']}", json={**body, "version": 2}, headers=org.h("editor")
    )
    assert r.status_code == 200 and r.json()["version"] == 3
    r = await api.put(
        f"/dashboards/{d['id']}", json=body, headers=org.h("editor", **{"If-Match": "junk"})
    )
    assert r.status_code == 400

    # delete: If-Match (or ?version=) required, stale → 409
    assert (await api.delete(f"/dashboards/{d['id']}", headers=org.h("editor"))).status_code == 428
    r = await api.delete(f"/dashboards/{d['id']}", headers=org.h("editor", **{"If-Match": '"2"'}))
    assert r.status_code == 409
    r = await api.delete(f"/dashboards/{d['id']}?version=3", headers=org.h("editor"))
    assert r.status_code == 204
    assert (await api.get(f"/dashboards/{d['id']}", headers=org.h("viewer"))).status_code == 404


async def test_dashboard_validation_errors(api, org, other_org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    theirs = await insert_metric(pg_url, other_org.id, "theirs", "SELECT count() AS n")
    h = org.h("editor")
    # wrong types / unknown chart type / bad range → 400
    for body in (
        {"name": 3},
        {"name": "x", "charts": [{"chart_type": "pie", "metric_id": m}]},
        {"name": "x", "charts": [chart(m, default_range="forever")]},
        {"name": "x", "charts": [chart(m, granularity="5s")]},
        {"name": ""},
    ):
        r = await api.post("/dashboards", json=body, headers=h)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "invalid_request"
    r = await api.post(
        "/dashboards", content=b"{not json", headers={**h, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    # neither / both metric_id and metric_inline → 422
    r = await api.post(
        "/dashboards", json={"name": "x", "charts": [{"chart_type": "line"}]}, headers=h
    )
    assert r.status_code == 422
    assert r.json()["error"]["where"] == {"field": "charts[0].metric_id"}
    # another org's metric id is "unknown", like a missing one
    for mid in (theirs, 987654, 2**40):
        r = await api.post("/dashboards", json={"name": "x", "charts": [chart(mid)]}, headers=h)
        assert r.status_code == 422, mid
        assert r.json()["error"]["code"] == "unknown_metric"


async def test_dashboard_body_too_large_is_413(api, org):
    body = {"name": "x", "description": "a" * (300 * 1024)}
    r = await api.post("/dashboards", json=body, headers=org.h("editor"))
    assert r.status_code == 413
    assert "error" in r.json()


async def test_other_orgs_dashboard_is_404_on_every_route(api, org, other_org, pg_url):
    m = await insert_metric(pg_url, other_org.id, "views", "SELECT count() AS views")
    r = await api.post(
        "/dashboards", json={"name": "secret", "charts": [chart(m)]}, headers=other_org.h("admin")
    )
    did = r.json()["id"]
    h = org.h("admin", **{"If-Match": '"1"'})
    assert (await api.get(f"/dashboards/{did}", headers=h)).status_code == 404
    assert (await api.get(f"/dashboards/{did}/data", headers=h)).status_code == 404
    assert (
        await api.put(f"/dashboards/{did}", json={"name": "mine"}, headers=h)
    ).status_code == 404
    assert (await api.delete(f"/dashboards/{did}", headers=h)).status_code == 404
    assert (await api.get("/dashboards", headers=h)).json() == []
    # still intact for its owner
    r = await api.get(f"/dashboards/{did}", headers=other_org.h("viewer"))
    assert r.status_code == 200 and r.json()["name"] == "secret"
    # ids beyond the integer range are not found either
    assert (await api.get(f"/dashboards/{2**40}", headers=h)).status_code == 404
