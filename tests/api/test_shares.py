"""Public dashboard links (app/api/shares.py): admin lifecycle, exactly one dashboard's data,
dead links, the link as a credential anywhere else, other orgs, crafted requests, rate limit."""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.api.conftest import insert_metric, pg_exec, seed_events

VIEWS = "SELECT count() AS views"


async def dashboard(api, org, metric_id: int, name: str = "Traffic") -> int:
    body = {
        "name": name,
        "charts": [{"chart_type": "line", "metric_id": metric_id, "title": "Views", "default_range": "1h"}],
    }  # fmt: skip
    r = await api.post("/dashboards", json=body, headers=org.h("admin"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def share(api, org, did: int, **body) -> dict:
    r = await api.post(f"/dashboards/{did}/shares", json=body, headers=org.h("admin"))
    assert r.status_code == 201, r.text
    return r.json()


def total(data: dict) -> float:
    (chart,) = data["charts"]
    assert chart["error"] is None, chart
    i = chart["columns"].index("views")
    return sum(row[i] for row in chart["rows"])


@pytest.fixture
async def two_orgs(api, org, other_org, pg_url, ch):
    """Org A with 3 recent views, org B with 5; a dashboard each on their own saved metric."""
    now = time.time()
    seed_events(ch, [{"org_id": org.id, "ts": now - 60 - i} for i in range(3)])
    seed_events(ch, [{"org_id": other_org.id, "ts": now - 60 - i} for i in range(5)])
    ma = await insert_metric(pg_url, org.id, "views", VIEWS)
    mb = await insert_metric(pg_url, other_org.id, "views", VIEWS)
    return await dashboard(api, org, ma), await dashboard(api, other_org, mb, "Secret")


async def test_link_lifecycle_and_data(api, org, two_orgs):
    da, _ = two_orgs
    made = await share(api, org, da, frame_ancestors=["https://example.com"], expires_in_s=3600)
    token = made["token"]
    assert token.startswith("cps_") and len(token) == 47
    assert made["url"].endswith(f"/s/{token}") and made["prefix"] == token[:10]
    assert made["frame_ancestors"] == ["https://example.com"] and made["expires_at"]
    r = await api.get(f"/s/{token}/dashboards/{da}")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "id": da,
        "name": "Traffic",
        "description": "",
        "charts": [{"id": r.json()["charts"][0]["id"], "title": "Views", "chart_type": "line",
                    "kind": "series", "granularity": "auto", "default_range": "1h",
                    "dimension": None, "axes": None, "unit": None, "live": True, "layout": None}],
    }  # fmt: skip
    # the visitor never sees the chart's query
    assert "count()" not in r.text and "metric" not in r.text
    r = await api.get(f"/s/{token}/dashboards/{da}/data")
    assert r.status_code == 200, r.text
    assert total(r.json()) == 3
    listed = (await api.get(f"/dashboards/{da}/shares", headers=org.h("admin"))).json()
    assert [(s["id"], s["prefix"], s["token"], s["revoked_at"]) for s in listed] == [
        (made["id"], token[:10], None, None)
    ]
    assert token not in str(listed)
    r = await api.delete(f"/dashboards/{da}/shares/{made['id']}", headers=org.h("admin"))
    assert r.status_code == 204
    for path in (f"/s/{token}/dashboards/{da}", f"/s/{token}/dashboards/{da}/data", f"/s/{token}"):
        r = await api.get(path)
        assert r.status_code == 404, path
    listed = (await api.get(f"/dashboards/{da}/shares", headers=org.h("admin"))).json()
    assert listed[0]["revoked_at"] is not None


async def test_only_admins_manage_links(api, org, other_org, two_orgs):
    da, db = two_orgs
    for role in ("viewer", "editor"):
        r = await api.post(f"/dashboards/{da}/shares", json={}, headers=org.h(role))
        assert r.status_code == 403, role
        r = await api.get(f"/dashboards/{da}/shares", headers=org.h(role))
        assert r.status_code == 403, role
    # another org's dashboard: not found, to create, list or revoke its links
    r = await api.post(f"/dashboards/{db}/shares", json={}, headers=org.h("admin"))
    assert r.status_code == 404
    theirs = await share(api, other_org, db)
    assert (await api.get(f"/dashboards/{db}/shares", headers=org.h("admin"))).json() == []
    r = await api.delete(f"/dashboards/{db}/shares/{theirs['id']}", headers=org.h("admin"))
    assert r.status_code == 404
    r = await api.delete(f"/dashboards/{da}/shares/{theirs['id']}", headers=org.h("admin"))
    assert r.status_code == 404
    assert (await api.get(f"/s/{theirs['token']}/dashboards/{db}/data")).status_code == 200


@pytest.mark.parametrize(
    "sources",
    [["*"], ["https://a.com; script-src *"], ["javascript:x"], ["'unsafe-inline'"], ["https://a.com/path"]],
)  # fmt: skip
async def test_frame_ancestors_are_origins_only(api, org, two_orgs, sources):
    da, _ = two_orgs
    r = await api.post(
        f"/dashboards/{da}/shares", json={"frame_ancestors": sources}, headers=org.h("admin")
    )
    assert r.status_code == 422
    assert r.json()["error"]["where"] == {"field": "frame_ancestors[0]"}


async def test_other_dashboard_ids_are_404(api, org, other_org, two_orgs, pg_url):
    da, db = two_orgs
    mine2 = await dashboard(api, org, await insert_metric(pg_url, org.id, "v2", VIEWS), "Other")
    token = (await share(api, org, da))["token"]
    for did in (db, mine2, da + 1000, 0, 2**40):
        for suffix in ("", "/data"):
            r = await api.get(f"/s/{token}/dashboards/{did}{suffix}")
            assert r.status_code == 404, (did, suffix)
            assert "Secret" not in r.text and "Other" not in r.text
    # org B's data never comes through org A's link
    assert total((await api.get(f"/s/{token}/dashboards/{da}/data")).json()) == 3


async def test_expired_link_is_404(api, org, two_orgs, pg_url):
    da, _ = two_orgs
    made = await share(api, org, da, expires_in_s=60)
    assert (await api.get(f"/s/{made['token']}/dashboards/{da}")).status_code == 200
    await pg_exec(
        pg_url,
        "UPDATE dashboard_shares SET expires_at = now() - interval '1 second' WHERE id = %s",
        (made["id"],),
    )
    assert (await api.get(f"/s/{made['token']}/dashboards/{da}")).status_code == 404
    assert (await api.get(f"/s/{made['token']}")).status_code == 404


async def test_link_is_no_credential_on_the_rest_api(api, org, two_orgs):
    da, db = two_orgs
    token = (await share(api, org, da))["token"]
    h = {"Authorization": f"Bearer {token}"}
    for method, path, body in [
        ("GET", "/dashboards", None),
        ("GET", f"/dashboards/{da}", None),
        ("GET", f"/dashboards/{da}/data", None),
        ("GET", f"/dashboards/{db}/data", None),
        ("GET", "/metrics", None),
        ("POST", "/query", {"definition": {"text": VIEWS}}),
        ("POST", "/sql", {"sql": "SELECT 1"}),
        ("GET", "/alerts", None),
        ("GET", f"/dashboards/{da}/shares", None),
        ("POST", "/ws/ticket", None),
        ("GET", "/me", None),
    ]:
        r = await api.request(method, path, json=body, headers=h)
        assert r.status_code == 401, (path, r.status_code)


async def test_crafted_requests_are_refused(api, org, two_orgs):
    da, _ = two_orgs
    token = (await share(api, org, da))["token"]
    base = f"/s/{token}/dashboards/{da}"
    for query in (
        "?from=now-30d",
        "?filter=%5B%7B%22dimension%22%3A%22org_id%22%2C%22op%22%3A%22%3D%22%2C%22value%22%3A%222%22%7D%5D",
        "?definition=SELECT%20count()%20FROM%20events",
        "?group_by=user_id",
    ):
        r = await api.get(f"{base}/data{query}")
        assert r.status_code == 400, query
        assert r.json()["error"]["code"] == "parameters_not_allowed"
    # no write or query verbs exist under a link
    for method in ("POST", "PUT", "DELETE"):
        r = await api.request(method, f"{base}/data", json={"text": "SELECT 1"})
        assert r.status_code == 405, method
        r = await api.request(method, base, json={"name": "pwned", "charts": []})
        assert r.status_code == 405, method
    for path in (f"/s/{token}/sql", f"/s/{token}/metrics", f"/s/{token}/dashboards"):
        assert (await api.get(path)).status_code == 404, path
    # malformed or guessed tokens
    for bad in ("cps_x", token[:-1] + ("A" if token[-1] != "A" else "B"), "cpt_" + token[4:]):
        assert (await api.get(f"/s/{bad}/dashboards/{da}/data")).status_code == 404
    assert (await api.get(f"/dashboards/{da}", headers=org.h("viewer"))).json()["name"] == "Traffic"


@pytest.mark.parametrize("api_settings", [{"share_rate_per_min": 3}])
async def test_rate_limited_per_link(api, org, two_orgs, api_settings):
    da, _ = two_orgs
    one = (await share(api, org, da))["token"]
    two = (await share(api, org, da))["token"]
    # 3 per minute: among 8 quick requests (two windows at most) some must be refused
    codes = [(await api.get(f"/s/{one}/dashboards/{da}")).status_code for _ in range(8)]
    assert codes[0] == 200
    assert 429 in codes and set(codes) == {200, 429}
    r = await api.get(f"/s/{one}/dashboards/{da}")
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 60
    # another link of the same dashboard has its own budget
    assert (await api.get(f"/s/{two}/dashboards/{da}")).status_code == 200


@pytest.mark.parametrize("api_settings", [{"auth_fail_max": 5}])
async def test_guessing_links_is_throttled_by_address(api, org, two_orgs, api_settings):
    da, _ = two_orgs
    token = (await share(api, org, da))["token"]
    for i in range(5):
        guess = token[:10] + ("x" * 36) + str(i)
        assert (await api.get(f"/s/{guess}/dashboards/{da}")).status_code == 404
    r = await api.get(f"/s/{token[:10]}{'y' * 37}/dashboards/{da}/data")
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_attempts"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # the same address is refused even with the real link (the window is the address's)
    assert (await api.get(f"/s/{token}/dashboards/{da}")).status_code == 429


async def test_every_chart_kind_as_the_owner_reads_it(api, org, other_org, two_orgs, pg_url, ch):
    """Top-N, heatmap and funnel charts through a link: the rows the org's own viewer gets from
    /ui/data for the chart as saved, and nothing of the other org's."""
    now = time.time()
    seed_events(ch, [{"org_id": org.id, "ts": now - 30, "event": "signup", "country": "FR"}])
    seed_events(ch, [{"org_id": other_org.id, "ts": now - 30, "country": "US"}])
    m = await insert_metric(pg_url, org.id, "all", "SELECT count() AS n")
    charts = [
        {"chart_type": "bar", "metric_id": m, "title": "Top", "dimension": "country",
         "default_range": "1h", "options": {"n": 5}},
        {"chart_type": "heatmap", "metric_id": m, "title": "Heat", "default_range": "7d"},
        {"chart_type": "funnel", "metric_id": m, "title": "Funnel", "default_range": "1h",
         "options": {"steps": ["pageview", "signup"], "window_seconds": 600}},
    ]  # fmt: skip
    r = await api.post("/dashboards", json={"name": "Kinds", "charts": charts}, headers=org.h())
    did = r.json()["id"]
    token = (await share(api, org, did))["token"]
    shown = (await api.get(f"/s/{token}/dashboards/{did}")).json()["charts"]
    assert [(c["kind"], c["axes"]) for c in shown] == [
        ("top", None),
        ("heatmap", "weekday_hour"),
        ("funnel", None),
    ]
    got = (await api.get(f"/s/{token}/dashboards/{did}/data")).json()["charts"]
    assert [c["error"] for c in got] == [None, None, None]
    v = org.h("viewer")
    top = (
        await api.post(
            "/ui/data/top",
            json={"metric_id": m, "dimension": "country", "n": 5, "from": "now-1h"},
            headers=v,
        )
    ).json()
    heat = (
        await api.post("/ui/data/heatmap", json={"metric_id": m, "from": "now-7d"}, headers=v)
    ).json()
    funnel = (
        await api.post(
            "/ui/data/funnel",
            json={"steps": ["pageview", "signup"], "window_seconds": 600, "from": "now-1h"},
            headers=v,
        )
    ).json()
    for mine, theirs in zip(got, (top, heat, funnel), strict=True):
        assert (mine["columns"], mine["rows"]) == (theirs["columns"], theirs["rows"])
    assert got[0]["columns"] == ["country", "is_other", "n"]
    assert got[0]["rows"] == [["DE", 0, 3], ["FR", 0, 1]]  # org B's US never shows
    assert sum(row[-1] for row in got[1]["rows"]) == 4  # org A's 4 events, not B's 6


async def test_rate_limit_is_shared_by_nodes_through_redis(
    ch, pg_url, app_settings, redis_url, org, two_orgs, api, tmp_path
):
    """Two app instances (two nodes) on one Redis: the link's budget is counted once."""
    import redis.asyncio as aioredis
    from litestar.testing import AsyncTestClient

    from tests.api.conftest import build_services, make_app

    da, _ = two_orgs
    made = await share(api, org, da)
    token = made["token"]
    nodes = [  # each node with a data dir (WAL) of its own
        build_services(
            ch,
            pg_url,
            redis_url,
            base=msgspec.structs.replace(app_settings, data_dir=str(tmp_path / f"node{i}")),
            share_rate_per_min=4,
        )
        for i in range(2)
    ]
    async with (
        AsyncTestClient(app=make_app(nodes[0])) as one,
        AsyncTestClient(app=make_app(nodes[1])) as two,
    ):
        codes = []
        for _ in range(5):  # 10 requests, alternating nodes: at most 2 windows of 4
            codes.append((await one.get(f"/s/{token}/dashboards/{da}")).status_code)
            codes.append((await two.get(f"/s/{token}/dashboards/{da}")).status_code)
    assert codes[0] == 200 and codes.count(200) <= 8 and set(codes) == {200, 429}
    # every request of both nodes was counted in Redis, under this link's key
    r = aioredis.Redis.from_url(redis_url)
    try:
        keys = await r.keys(f"cp:share:{ch.database}:{made['id']}:*")
        assert sum([int(await r.get(k)) for k in keys]) == 10
    finally:
        await r.aclose()


async def test_charts_carry_their_unit_and_whether_they_are_live(api, org, pg_url):
    """The shared page formats values like the dashboard page: the saved metric's unit, or an
    inline chart's options.unit; a funnel has no live key."""
    from psycopg.types.json import Jsonb

    m = await insert_metric(pg_url, org.id, "revenue", "SELECT sum(value) AS revenue")
    await pg_exec(
        pg_url,
        "UPDATE metrics SET unit = %s WHERE id = %s",
        (Jsonb({"kind": "currency", "currency": "EUR"}), m),
    )
    body = {
        "name": "Units",
        "charts": [
            {"chart_type": "line", "metric_id": m, "title": "Revenue"},
            {"chart_type": "line", "metric_inline": {"text": "SELECT avg(value) AS share"},
             "options": {"unit": {"kind": "percent"}}, "title": "Share"},
            {"chart_type": "funnel", "metric_inline": {"text": "SELECT count() AS n"},
             "title": "Funnel", "options": {"steps": ["a", "b"]}},
        ],
    }  # fmt: skip
    r = await api.post("/dashboards", json=body, headers=org.h("admin"))
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    token = (await share(api, org, did))["token"]
    charts = (await api.get(f"/s/{token}/dashboards/{did}")).json()["charts"]
    assert [(c["title"], c["unit"], c["live"]) for c in charts] == [
        ("Revenue", {"kind": "currency", "currency": "EUR"}, True),
        ("Share", {"kind": "percent"}, True),
        ("Funnel", None, False),
    ]
