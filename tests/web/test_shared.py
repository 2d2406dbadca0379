"""A public dashboard link in real Chromium: created from the dashboard page's Share control,
opened with no login (the charts with their data), embedded only where its frame-ancestors
allow, and 404 for another dashboard id, after revocation and after expiry; live over the
link's push socket, with units, range headers and the open bucket."""

from __future__ import annotations

import html
import http.server
import os
import re
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import msgspec
import psycopg
import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.web.conftest import api, login, post_events
from tests.web.test_pages import PAGEVIEWS, make_dashboard, total, wait_chart


class Embedder:
    """Another origin on loopback (a port of its own), serving `/embed?src=…`: a page that
    shows `src` in an iframe. Reached as 127.0.0.1 (`origin`) or as localhost (`elsewhere`),
    which the browser treats as two more origins."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                src = parse_qs(urlsplit(self.path).query).get("src", [""])[0]
                body = f'<!doctype html><title>embedder</title><iframe id="f" src="{html.escape(src)}" width="1200" height="700"></iframe>'
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{port}"
        self.elsewhere = f"http://localhost:{port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def embedder():
    e = Embedder()
    yield e
    e.close()


async def seed(server, org, other) -> tuple[int, int]:
    now_ms = int(time.time() * 1000)
    await post_events(
        server, org.api_key, [{"event": "pageview", "user_id": f"a{i}", "ts": now_ms - 1000 * (i + 5)} for i in range(3)]
    )  # fmt: skip
    await post_events(
        server, other.api_key, [{"event": "pageview", "user_id": f"b{i}", "ts": now_ms - 1000 * (i + 5)} for i in range(7)]
    )  # fmt: skip
    chart = {
        "chart_type": "bar",
        "title": "Page views",
        "metric_inline": PAGEVIEWS,
        "default_range": "1h",
    }
    mine = await make_dashboard(server, org.admin_token, [chart], name="Launch")
    theirs = await make_dashboard(server, other.admin_token, [chart], name="Globex secret")
    return mine, theirs


async def embedded(context, share_url: str, origin: str) -> bool:
    """Whether a page of `origin` shows the link in an iframe."""
    page = await context.new_page()
    await page.goto(f"{origin}/embed?{urlencode({'src': share_url})}")
    try:
        frame = page.frame_locator("#f")
        await frame.locator("body[data-ready='1'] #dash-title").wait_for(timeout=15_000)
        return (await frame.locator("#dash-title").text_content()) == "Launch"
    except PlaywrightTimeout:  # blocked: the frame never renders the page
        assert [f.url for f in page.frames][1:] == ["chrome-error://chromewebdata/"]
        return False
    finally:
        await page.close()


async def test_public_link_end_to_end(server, org, make_org, page, browser, pg_url, embedder):
    EMBEDDER = embedder.origin
    other = await make_org("globex")
    mine, theirs = await seed(server, org, other)
    # The admin creates a link from the dashboard page: embeddable by EMBEDDER, no expiry.
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{mine}")
    await page.get_by_text("Share", exact=True).click()
    await page.get_by_label("May be embedded by").fill(EMBEDDER)
    await page.get_by_role("button", name="Create link").click()
    url_box = page.locator("#share-url")
    await page.wait_for_function(
        "() => document.querySelector('#share-url').value.includes('/s/cps_')"
    )
    share_url = await url_box.input_value()
    token = share_url.rsplit("/", 1)[1]
    assert share_url == f"{server.url}/s/{token}"
    await page.locator("#share-list li[data-share-id]").first.wait_for()
    assert f"embed: {EMBEDDER}" in await page.locator("#share-list").text_content()

    # A visitor: a fresh context, nothing in localStorage, no credential at all.
    visitor = await browser.new_context(
        viewport={"width": 1440, "height": 900}, color_scheme="light"
    )
    visitor.set_default_timeout(60_000)
    try:
        v = await visitor.new_page()
        requests: list[str] = []
        v.on("request", lambda r: requests.append(r.url))
        response = await v.goto(share_url)
        assert response.status == 200
        csp = response.headers["content-security-policy"]
        assert f"frame-ancestors {EMBEDDER};" in csp and "frame-ancestors 'none'" not in csp
        values = await wait_chart(v, "Page views", f"v => v.series.length && {TOTAL_JS} === 3")
        assert total(values["series"]) == 3  # org A's three, never org B's seven
        assert await v.locator("#dash-title").text_content() == "Launch"
        assert await v.locator("#logout").count() == 0 and await v.locator("#share").count() == 0
        # the page asked only the link's own endpoints (and its static files)
        asked = {
            u.split(server.url, 1)[1].split("?")[0] for u in requests if u.startswith(server.url)
        }
        assert {p for p in asked if not p.startswith("/static/")} == {
            f"/s/{token}",
            f"/s/{token}/dashboards/{mine}",
            f"/s/{token}/dashboards/{mine}/data",
        }
        if os.environ.get("CLICKPULSE_SCREENSHOT_DIR"):
            await v.screenshot(
                path=os.path.join(
                    os.environ["CLICKPULSE_SCREENSHOT_DIR"], "shared-dashboard-desktop-light.png"
                )
            )

        # Any other dashboard id through this link: 404 (org B's, and a missing one).
        for did in (theirs, mine + 1000):
            r = await v.request.get(f"{server.url}/s/{token}/dashboards/{did}/data")
            assert r.status == 404, did
            assert "Globex" not in await r.text()

        # Embedding: allowed from EMBEDDER, refused from any other origin.
        assert await embedded(visitor, share_url, EMBEDDER) is True
        assert await embedded(visitor, share_url, embedder.elsewhere) is False

        # Revoked from the Share control: the link is dead at once.
        await page.get_by_role("button", name=f"Revoke link {token[:10]}").click()
        await page.locator("#share-list li", has_text="revoked").wait_for()
        response = await v.goto(share_url)
        assert response.status == 404
        assert "not found" in (await v.locator("h1").text_content()).lower()
        r = await v.request.get(f"{server.url}/s/{token}/dashboards/{mine}/data")
        assert r.status == 404

        # Expired: a link whose expiry has passed is 404 like a revoked one.
        r = await api(
            server, org.admin_token, "POST", f"/dashboards/{mine}/shares", {"expires_in_s": 60}
        )
        expiring = r.json()
        assert (await v.goto(expiring["url"])).status == 200
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE dashboard_shares SET expires_at = now() - interval '1 second' WHERE id = %s",
                (expiring["id"],),
            )
        assert (await v.goto(expiring["url"])).status == 404
    finally:
        await visitor.close()


async def test_link_without_embed_origins_cannot_be_framed(
    server, org, make_org, browser, embedder
):
    other = await make_org("globex")
    mine, _ = await seed(server, org, other)
    r = await api(server, org.admin_token, "POST", f"/dashboards/{mine}/shares", {})
    share_url = r.json()["url"]
    async with httpx.AsyncClient(timeout=10) as http:
        headers = (await http.get(share_url)).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        # the rest of the app keeps its own policy
        assert (
            "frame-ancestors 'none'"
            in (await http.get(f"{server.url}/d/{mine}")).headers["content-security-policy"]
        )
    context = await browser.new_context()
    try:
        assert await embedded(context, share_url, embedder.origin) is False
        # while the page itself opens fine on its own
        p = await context.new_page()
        await p.goto(share_url)
        await p.locator("body[data-ready='1'] #dash-title").wait_for()
        assert await p.locator("#dash-title").text_content() == "Launch"
    finally:
        await context.close()


TOTAL_JS = "v.series.reduce((a, s) => a + s.data.reduce((b, p) => b + (p[1] || 0), 0), 0)"


async def test_share_control_is_for_admins_only(server, org, make_org, page, pg_url):
    from psycopg.rows import dict_row

    from app.credentials import create_user_token

    other = await make_org("globex")
    mine, _ = await seed(server, org, other)
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        editor = await create_user_token(conn, org.id, "editor@acme.test", "editor")
    await login(page, server, editor)
    await page.goto(f"{server.url}/d/{mine}")
    await page.locator("body[data-ready='1']").wait_for(state="attached")
    await wait_chart(page, "Page views", "v => v.series.length > 0")
    await page.wait_for_load_state("networkidle")
    assert await page.locator("#share").count() == 0
    # and the API refuses the editor too
    r = await api(server, editor, "POST", f"/dashboards/{mine}/shares", {})
    assert r.status_code == 403
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{mine}")
    await page.locator("#share summary").wait_for()


async def test_shared_page_is_live_over_push_with_units_and_range_header(server, org, browser):
    """The visitor's page opens /ws/subscribe with the link, subscribes to its chart by id, and
    an event ingested afterwards reaches the chart through a delta frame (not a poll): the
    data endpoint is read once. The chart shows its unit, its range header and the open
    second, and the stamp is a clock time in a named zone."""
    r = await api(server, org.admin_token, "POST", "/metrics", {
        "name": "revenue", "definition": {"text": "SELECT sum(value) AS revenue"},
        "unit": {"kind": "currency", "currency": "EUR"},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    chart = {"chart_type": "line", "title": "Revenue", "metric_id": r.json()["id"], "default_range": "5m"}  # fmt: skip
    did = await make_dashboard(server, org.admin_token, [chart], name="Live shop")
    link = (await api(server, org.admin_token, "POST", f"/dashboards/{did}/shares", {})).json()
    visitor = await browser.new_context(viewport={"width": 1440, "height": 900})
    visitor.set_default_timeout(60_000)
    try:
        v = await visitor.new_page()
        sent: list[str] = []
        received: list[str] = []
        sockets: list[str] = []

        def on_socket(ws) -> None:
            sockets.append(ws.url)
            ws.on("framesent", lambda payload: sent.append(str(payload)))
            ws.on("framereceived", lambda payload: received.append(str(payload)))

        v.on("websocket", on_socket)
        data_reads: list[str] = []
        v.on(
            "request", lambda req: data_reads.append(req.url) if req.url.endswith("/data") else None
        )
        await v.goto(link["url"])
        await v.wait_for_function("() => document.body.dataset.live === 'live'")
        await v.wait_for_function(
            "() => document.getElementById('updated-at').textContent.includes('updated')"
        )
        assert sockets == [f"{server.url.replace('http', 'ws')}/ws/subscribe?token={link['token']}"]
        await wait_chart(v, "Revenue", "v => v.series.length > 0")
        chart_id = int(await v.locator("[data-chart-id]").first.get_attribute("data-chart-id"))
        # the chart by id, nothing else: the server knows its metric
        assert [msgspec.json.decode(s) for s in sent if '"subscribe"' in s] == [
            {"type": "subscribe", "id": f"chart-{chart_id}", "chart_id": chart_id, "range_s": 300}
        ]
        # Ingested now: it reaches the chart as a pushed delta.
        await post_events(
            server, org.api_key, [{"event": "purchase", "user_id": "u1", "value": 12.5}]
        )
        values = await wait_chart(v, "Revenue", f"v => {TOTAL_JS} === 12.5")
        deltas = [msgspec.json.decode(f) for f in received if '"delta"' in f]
        assert any(row.get("revenue") == 12.5 for d in deltas for row in d["rows"])
        assert len(data_reads) == 1  # the first draw; everything after it came over the socket
        assert values["series"][0]["open"] is True  # the newest seconds drawn open (dashed)
        # Units and the header, as on the dashboard page.
        card = v.get_by_role("article", name="Revenue", exact=True)
        assert await card.locator(".chart-status").text_content() == "Last 5 minutes · per second"
        y_name = await card.evaluate(
            "el => echarts.getInstanceByDom(el.querySelector('.chart-box')).getOption().yAxis[0].name"
        )
        assert y_name == "EUR per second"
        await v.wait_for_function(
            "el => el.getAttribute('aria-label').includes('€12.50')",
            arg=await card.locator(".chart-box").element_handle(),
        )
        stamp = await v.locator("#updated-at").text_content()
        assert re.fullmatch(r"Live · updated \d\d:\d\d:\d\d \S+", stamp), stamp
        # Revoked: the server closes the socket (4401) and the page says the link is dead.
        r = await api(server, org.admin_token, "DELETE", f"/dashboards/{did}/shares/{link['id']}")
        assert r.status_code == 204
        await v.wait_for_function("() => document.body.dataset.live === 'unavailable'")
        assert await v.locator("#dash-error").text_content() == "This link is no longer valid."
    finally:
        await visitor.close()


async def test_shared_page_polls_when_the_socket_fails_and_stops_when_revoked(server, org, browser):
    """No socket (the push tier unreachable): the page says so and reads the link's data
    every 15 s instead; once the link is revoked it shows that and stops asking."""
    chart = {"chart_type": "line", "title": "Events", "metric_inline": {"text": "SELECT count() AS n"}, "default_range": "5m"}  # fmt: skip
    did = await make_dashboard(server, org.admin_token, [chart], name="Fallback")
    link = (await api(server, org.admin_token, "POST", f"/dashboards/{did}/shares", {})).json()
    visitor = await browser.new_context(viewport={"width": 1440, "height": 900})
    visitor.set_default_timeout(60_000)
    try:
        v = await visitor.new_page()
        # Every socket to the push route fails at once, as if the push tier were down.
        await v.route_web_socket("**/ws/subscribe*", lambda ws: ws.close(code=1011))
        data_reads: list[str] = []
        v.on(
            "request", lambda req: data_reads.append(req.url) if req.url.endswith("/data") else None
        )
        await v.goto(link["url"])
        await v.wait_for_function("() => document.body.dataset.live === 'polling'")
        assert (await v.locator("#updated-at").text_content()).startswith("Refreshed every 15 s")
        await post_events(server, org.api_key, [{"event": "x", "user_id": "u1"}] * 2)
        await wait_chart(v, "Events", f"v => {TOTAL_JS} === 2", timeout=60_000)
        assert len(data_reads) >= 2  # the first draw, then a poll brought the new events
        r = await api(server, org.admin_token, "DELETE", f"/dashboards/{did}/shares/{link['id']}")
        assert r.status_code == 204
        await v.wait_for_function(
            "() => document.body.dataset.live === 'unavailable'", timeout=60_000
        )
        assert await v.locator("#dash-error").text_content() == "This link is no longer valid."
        reads = len(data_reads)
        await v.wait_for_timeout(16_000)  # one more poll period: nothing is asked any more
        assert len(data_reads) == reads
    finally:
        await visitor.close()


async def test_a_shared_dashboard_keeps_its_layout_and_stacks_on_a_phone(server, org, browser):
    """The link shows the charts where the editors put them (a wide chart over two side by
    side, 12 columns), and one column in reading order on a phone, like the dashboard page."""
    charts = [
        {"chart_type": "line", "title": "Wide", "metric_inline": PAGEVIEWS, "default_range": "1h",
         "layout": {"x": 0, "y": 0, "w": 12, "h": 4}},
        {"chart_type": "bar", "title": "Left", "metric_inline": PAGEVIEWS, "default_range": "1h",
         "layout": {"x": 0, "y": 4, "w": 4, "h": 5}},
        {"chart_type": "line", "title": "Right", "metric_inline": PAGEVIEWS, "default_range": "1h",
         "layout": {"x": 4, "y": 4, "w": 8, "h": 5}},
    ]  # fmt: skip
    did = await make_dashboard(server, org.admin_token, charts, name="Placed")
    link = (await api(server, org.admin_token, "POST", f"/dashboards/{did}/shares", {})).json()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        shared = (await http.get(f"/s/{link['token']}/dashboards/{did}")).json()
    assert [c["layout"] for c in shared["charts"]] == [c["layout"] for c in charts]

    async def boxes(width: int, height: int) -> dict[str, dict[str, float]]:
        visitor = await browser.new_context(viewport={"width": width, "height": height})
        visitor.set_default_timeout(60_000)
        try:
            v = await visitor.new_page()
            await v.goto(link["url"])
            out = {}
            for title in ("Wide", "Left", "Right"):
                card = v.get_by_role("article", name=title, exact=True)
                await card.wait_for()
                out[title] = await card.bounding_box()
            return out
        finally:
            await visitor.close()

    desk = await boxes(1440, 900)
    wide, left, right = desk["Wide"], desk["Left"], desk["Right"]
    assert left["y"] > wide["y"] + wide["height"] - 1  # the second row starts below the first
    assert abs(left["y"] - right["y"]) < 1 and abs(left["height"] - right["height"]) < 1
    assert right["x"] > left["x"] + left["width"]  # side by side
    assert 1.8 < right["width"] / left["width"] < 2.2  # 8 columns against 4
    assert abs(wide["width"] - (right["x"] + right["width"] - left["x"])) < 2  # full width
    assert 4 * 70 - 20 < wide["height"] < 4 * 70 + 20  # rows of 70 px, as the grid's cells
    phone = await boxes(390, 844)
    order = sorted(phone, key=lambda t: phone[t]["y"])
    assert order == ["Wide", "Left", "Right"]
    assert all(abs(phone[t]["width"] - phone["Wide"]["width"]) < 1 for t in phone)  # one column
