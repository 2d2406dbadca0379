"""Dashboard editing (docs/ui.md, "Editing a dashboard"): chart layout on the grid, duplicating
dashboards and metrics, and a 409 that names who changed the object last."""

from __future__ import annotations

from datetime import datetime

from tests.api.conftest import insert_metric


def chart(metric_id: int, layout=None, **over):
    body = {"chart_type": "line", "metric_id": metric_id, "title": over.pop("title", "views")}
    if layout is not None:
        body["layout"] = dict(zip("xywh", layout, strict=True))
    return {**body, **over}


def boxes(dashboard):
    return [(c["title"], tuple(c["layout"][k] for k in "xywh")) for c in dashboard["charts"]]


async def test_layout_round_trips_and_position_is_reading_order(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    # Sent out of reading order: the bottom chart first, the right one before the left one.
    charts = [
        chart(m, (0, 4, 12, 5), title="bottom"),
        chart(m, (6, 0, 6, 4), title="right", chart_type="bar"),
        chart(m, (0, 0, 6, 4), title="left"),
    ]
    r = await api.post(
        "/dashboards", json={"name": "grid", "charts": charts}, headers=org.h("editor")
    )
    assert r.status_code == 201, r.text
    created = r.json()
    expected = [("left", (0, 0, 6, 4)), ("right", (6, 0, 6, 4)), ("bottom", (0, 4, 12, 5))]
    assert boxes(created) == expected
    assert [c["position"] for c in created["charts"]] == [0, 1, 2]

    read = (await api.get(f"/dashboards/{created['id']}", headers=org.h("viewer"))).json()
    assert boxes(read) == expected
    assert [c["chart_type"] for c in read["charts"]] == ["line", "bar", "line"]

    # Resize one chart and move another: stored as sent, in the new reading order.
    moved = [
        {**read["charts"][2], "layout": {"x": 0, "y": 0, "w": 4, "h": 3}},
        {**read["charts"][0], "layout": {"x": 4, "y": 0, "w": 8, "h": 6}},
        {**read["charts"][1], "layout": {"x": 0, "y": 6, "w": 12, "h": 2}},
    ]
    for c in moved:
        del c["id"], c["position"]
    r = await api.put(
        f"/dashboards/{created['id']}",
        json={"name": "grid", "charts": moved},
        headers=org.h("editor", **{"If-Match": '"1"'}),
    )
    assert r.status_code == 200, r.text
    expected = [("bottom", (0, 0, 4, 3)), ("left", (4, 0, 8, 6)), ("right", (0, 6, 12, 2))]
    assert boxes(r.json()) == expected
    read = (await api.get(f"/dashboards/{created['id']}", headers=org.h("viewer"))).json()
    assert boxes(read) == expected and read["version"] == 2


async def test_overlapping_charts_are_pushed_down(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    charts = [
        chart(m, (0, 0, 6, 4), title="a"),
        chart(m, (0, 0, 6, 4), title="b"),  # exactly on a → below it
        chart(m, (3, 2, 6, 2), title="c"),  # overlaps a and b → below b
        chart(m, (6, 0, 6, 3), title="d"),  # beside a: stays
    ]
    r = await api.post("/dashboards", json={"name": "o", "charts": charts}, headers=org.h("editor"))
    assert r.status_code == 201, r.text
    assert boxes(r.json()) == [
        ("a", (0, 0, 6, 4)),
        ("d", (6, 0, 6, 3)),
        ("b", (0, 4, 6, 4)),
        ("c", (3, 8, 6, 2)),
    ]


async def test_charts_without_layout_keep_their_order(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    charts = [chart(m, title="first"), chart(m, (0, 0, 6, 4), title="second"), chart(m, title="3")]
    r = await api.post("/dashboards", json={"name": "n", "charts": charts}, headers=org.h("editor"))
    assert r.status_code == 201, r.text
    got = [(c["title"], c["position"], c["layout"]) for c in r.json()["charts"]]
    assert got == [
        ("first", 0, None),
        ("second", 1, {"x": 0, "y": 0, "w": 6, "h": 4}),
        ("3", 2, None),
    ]


async def test_layout_values_are_validated(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    bad = [
        {"x": -1, "y": 0, "w": 6, "h": 4},  # negative
        {"x": 0, "y": -3, "w": 6, "h": 4},
        {"x": 0, "y": 0, "w": 0, "h": 4},  # empty
        {"x": 0, "y": 0, "w": 6, "h": 0},
        {"x": 0, "y": 0, "w": 13, "h": 4},  # wider than the grid
        {"x": 12, "y": 0, "w": 1, "h": 4},
        {"x": 8, "y": 0, "w": 6, "h": 4},  # sticks out on the right
        {"x": 0, "y": 1000, "w": 6, "h": 4},  # huge
        {"x": 0, "y": 0, "w": 6, "h": 25},
        {"x": 0, "y": 0, "w": 2**40, "h": 4},
        {"x": 0, "y": 0, "w": 6},  # incomplete
        {"x": 0, "y": 0, "w": 6, "h": 4, "z": 1},  # unknown field
        {"x": 0.5, "y": 0, "w": 6, "h": 4},
        [0, 0, 6, 4],
    ]
    for layout in bad:
        body = {"name": "x", "charts": [{**chart(m), "layout": layout}]}
        r = await api.post("/dashboards", json=body, headers=org.h("editor"))
        assert r.status_code == 400, layout
        assert r.json()["error"]["code"] == "invalid_request", layout
    assert (await api.get("/dashboards", headers=org.h("viewer"))).json() == []
    # the edges are fine
    body = {"name": "x", "charts": [chart(m, (11, 999, 1, 24)), chart(m, (0, 0, 12, 1))]}
    r = await api.post("/dashboards", json=body, headers=org.h("editor"))
    assert r.status_code == 201, r.text


async def test_duplicate_dashboard_copies_charts_and_layout(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    body = {
        "name": "Traffic",
        "description": "d",
        "charts": [
            chart(m, (0, 0, 8, 5), title="a", options={"stack": True}),
            chart(m, (8, 0, 4, 5), title="b", chart_type="stat"),
        ],
    }
    source = (await api.post("/dashboards", json=body, headers=org.h("admin"))).json()
    r = await api.post(f"/dashboards/{source['id']}/duplicate", headers=org.h("editor"))
    assert r.status_code == 201, r.text
    copy = r.json()
    assert r.headers["etag"] == '"1"'
    assert copy["id"] != source["id"]
    assert (copy["name"], copy["description"], copy["version"]) == ("Traffic (copy)", "d", 1)
    assert boxes(copy) == boxes(source)
    assert {c["id"] for c in copy["charts"]}.isdisjoint({c["id"] for c in source["charts"]})
    assert [c["options"] for c in copy["charts"]] == [{"stack": True}, {}]
    assert [c["chart_type"] for c in copy["charts"]] == ["line", "stat"]
    assert copy["updated_by"]["email"] == f"editor-{org.id}@example.com"
    # read back, and the source is untouched
    assert (await api.get(f"/dashboards/{copy['id']}", headers=org.h("viewer"))).json()[
        "charts"
    ] == copy["charts"]
    again = (await api.get(f"/dashboards/{source['id']}", headers=org.h("viewer"))).json()
    assert again["version"] == 1 and again["charts"] == source["charts"]
    listed = (await api.get("/dashboards", headers=org.h("viewer"))).json()
    assert [(d["name"], d["chart_count"]) for d in listed] == [
        ("Traffic", 2),
        ("Traffic (copy)", 2),
    ]
    # a copy of a long name stays within the 200 characters a name may have
    long = (await api.post("/dashboards", json={"name": "n" * 200}, headers=org.h("admin"))).json()
    r = await api.post(f"/dashboards/{long['id']}/duplicate", headers=org.h("editor"))
    assert r.status_code == 201 and r.json()["name"] == "n" * 193 + " (copy)"


async def test_duplicate_metric_picks_a_free_name(api, org):
    body = {
        "name": "revenue",
        "description": "money",
        "definition": {"text": "SELECT sum(value) AS revenue"},
        "unit": {"kind": "currency", "currency": "EUR"},
    }
    source = (await api.post("/metrics", json=body, headers=org.h("admin"))).json()
    names = []
    for _ in range(3):
        r = await api.post(f"/metrics/{source['id']}/duplicate", headers=org.h("editor"))
        assert r.status_code == 201, r.text
        copy = r.json()
        assert (copy["definition"], copy["unit"], copy["description"]) == (
            body["definition"],
            body["unit"],
            "money",
        )
        assert (
            copy["version"] == 1 and copy["updated_by"]["email"] == f"editor-{org.id}@example.com"
        )
        names.append(copy["name"])
    assert names == ["revenue (copy)", "revenue (copy 2)", "revenue (copy 3)"]


async def test_conflict_names_the_last_editor(api, org, pg_url):
    m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    d = (
        await api.post(
            "/dashboards", json={"name": "d", "charts": [chart(m)]}, headers=org.h("editor")
        )
    ).json()
    assert d["updated_by"]["email"] == f"editor-{org.id}@example.com"
    # The admin saves on top of version 1 ...
    r = await api.put(
        f"/dashboards/{d['id']}",
        json={"name": "admin's", "charts": [chart(m, (0, 0, 12, 4))]},
        headers=org.h("admin", **{"If-Match": '"1"'}),
    )
    assert r.status_code == 200
    admin_email = f"admin-{org.id}@acme.test"
    assert r.json()["updated_by"]["email"] == admin_email
    # ... so the editor, still on version 1, is told who changed it, and when.
    r = await api.put(
        f"/dashboards/{d['id']}",
        json={"name": "editor's"},
        headers=org.h("editor", **{"If-Match": '"1"'}),
    )
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "version_conflict"
    where = error["where"]
    assert where["current_version"] == 2
    assert where["updated_by"]["email"] == admin_email
    assert set(where["updated_by"]) == {"id", "email", "name"}
    assert datetime.fromisoformat(where["updated_at"]) == datetime.fromisoformat(
        (await api.get(f"/dashboards/{d['id']}", headers=org.h("viewer"))).json()["updated_at"]
    )
    # a stale delete says the same
    r = await api.delete(f"/dashboards/{d['id']}", headers=org.h("editor", **{"If-Match": '"1"'}))
    assert r.status_code == 409 and r.json()["error"]["where"]["updated_by"]["email"] == admin_email

    # metrics too
    metric = (
        await api.post(
            "/metrics",
            json={"name": "n", "definition": {"text": "SELECT count() AS n"}},
            headers=org.h("editor"),
        )
    ).json()
    r = await api.put(
        f"/metrics/{metric['id']}",
        json={"name": "n2", "definition": {"text": "SELECT count() AS n"}, "version": 1},
        headers=org.h("admin"),
    )
    assert r.status_code == 200 and r.json()["updated_by"]["email"] == admin_email
    r = await api.put(
        f"/metrics/{metric['id']}",
        json={"name": "n3", "definition": {"text": "SELECT count() AS n"}, "version": 1},
        headers=org.h("editor"),
    )
    assert r.status_code == 409
    assert r.json()["error"]["where"]["updated_by"]["email"] == admin_email
    assert r.json()["error"]["where"]["current_version"] == 2


async def test_new_routes_hide_other_orgs_and_refuse_viewers(api, org, other_org, pg_url):
    theirs_m = await insert_metric(pg_url, other_org.id, "secret", "SELECT count() AS n")
    theirs_d = (
        await api.post(
            "/dashboards",
            json={"name": "secret", "charts": [chart(theirs_m)]},
            headers=other_org.h("admin"),
        )
    ).json()
    for path in (
        f"/dashboards/{theirs_d['id']}/duplicate",
        f"/metrics/{theirs_m}/duplicate",
        f"/dashboards/{2**40}/duplicate",
        "/metrics/987654/duplicate",
    ):
        r = await api.post(path, headers=org.h("admin"))
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    # nothing was copied into either org
    assert (await api.get("/dashboards", headers=org.h("admin"))).json() == []
    assert (await api.get("/metrics", headers=org.h("admin"))).json() == []
    assert len((await api.get("/dashboards", headers=other_org.h("admin"))).json()) == 1

    # a viewer of the owning org may not duplicate, nor save a layout
    mine_m = await insert_metric(pg_url, org.id, "views", "SELECT count() AS n")
    mine_d = (
        await api.post(
            "/dashboards", json={"name": "mine", "charts": [chart(mine_m)]}, headers=org.h("editor")
        )
    ).json()
    for path in (f"/dashboards/{mine_d['id']}/duplicate", f"/metrics/{mine_m}/duplicate"):
        r = await api.post(path, headers=org.h("viewer"))
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == "forbidden"
    r = await api.put(
        f"/dashboards/{mine_d['id']}",
        json={"name": "mine", "charts": [chart(mine_m, (0, 0, 12, 8))]},
        headers=org.h("viewer", **{"If-Match": '"1"'}),
    )
    assert r.status_code == 403
    assert (await api.get("/dashboards", headers=org.h("viewer"))).json()[0]["version"] == 1
    assert len((await api.get("/metrics", headers=org.h("viewer"))).json()) == 1
