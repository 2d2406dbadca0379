"""Stat panels, table view and CSV export, and annotations on the charts, in real Chromium:
exact numbers against inserted events, the CSV equal to the API's answer, markers read from
the ECharts option, another org's annotations never shown, hostile titles shown as text."""

from __future__ import annotations

import csv
import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.web.conftest import api, login, post_events
from tests.web.test_charts import seed_periods
from tests.web.test_pages import DE, FR, PAGEVIEWS, chart, make_dashboard, wait_chart

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
HOSTILE = 'deploy <img src=x onerror="window.__xss=1"> & <b>v2</b>'
MARKERS = """(el) => {
  const inst = echarts.getInstanceByDom(el.querySelector('.chart-box'));
  const o = inst && inst.getOption();
  const s = o && o.series && o.series.find(x => x.id === 'annotations');
  if (!s) return null;
  return {lines: s.markLine.data.map(d => ({x: d.xAxis, name: d.name})),
          areas: s.markArea.data.map(([a, b]) => ({from: a.xAxis, to: b.xAxis, name: a.name}))};
}"""


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


async def markers(page, title: str) -> Any:
    return await (await chart(page, title)).evaluate(MARKERS)


# -- annotations ---------------------------------------------------------------------------------


async def test_annotations_drawn_on_every_time_chart_listed_and_deleted(
    server, org, make_org, page
):
    other = await make_org("globex")
    now = int(time.time())
    await post_events(server, org.api_key, [{"event": "pageview", "user_id": "u1", "ip": DE}])
    deploy_t = (now - 20 * 60) // 60 * 60
    inc_from, inc_to = (now - 45 * 60) // 60 * 60, (now - 35 * 60) // 60 * 60
    made = {}
    for who, body in (
        (org.admin_token, {"time": iso(deploy_t), "title": HOSTILE, "tags": ["deploy"]}),
        (org.api_key, {"time": iso(inc_from), "end": iso(inc_to), "title": "incident: 5xx"}),
        (org.admin_token, {"time": iso(now - 3 * 3600), "title": "out of range"}),
        (other.admin_token, {"time": iso(now - 10 * 60), "title": "globex deploy"}),
    ):
        r = await api(server, who, "POST", "/annotations", body)
        assert r.status_code == 201, r.text
        made[body["title"]] = r.json()["id"]
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
            {"chart_type": "bar", "title": "Per minute", "metric_inline": PAGEVIEWS, "default_range": "1h"},
            {"chart_type": "line", "title": "Live", "metric_inline": PAGEVIEWS, "default_range": "5m"},
            {"chart_type": "heatmap", "title": "Heat", "metric_inline": PAGEVIEWS, "default_range": "1h"},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    expected = {
        "lines": [{"x": deploy_t * 1000, "name": HOSTILE}],
        "areas": [{"from": inc_from * 1000, "to": inc_to * 1000, "name": "incident: 5xx"}],
    }
    for title in ("Views", "Per minute"):
        card = await chart(page, title)
        handle = await card.element_handle()
        await page.wait_for_function(f"([el]) => !!({MARKERS})(el)", arg=[handle])
        assert await markers(page, title) == expected, title
    # Nothing of these in the last 5 minutes; a heatmap has no time axis to mark.
    await wait_chart(page, "Live", "v => v.series.length >= 1")
    assert await markers(page, "Live") is None
    assert await markers(page, "Heat") is None

    # Hovering the deploy's line shows its tooltip: the title escaped, as text.
    box = (await chart(page, "Views")).locator(".chart-box")
    x, y = await box.evaluate(
        f"""el => {{ const i = echarts.getInstanceByDom(el);
        const [px] = i.convertToPixel({{xAxisIndex: 0, yAxisIndex: 0}}, [{deploy_t * 1000}, 0]);
        const r = el.getBoundingClientRect(); return [r.left + px, r.top + r.height / 2]; }}"""
    )
    await page.mouse.move(x, y)
    tip = box.locator("div", has_text="deploy <img")
    await tip.last.wait_for()
    assert HOSTILE in await tip.last.inner_text()

    # The panel lists this org's annotations in range, oldest first; titles are text.
    panel = page.locator("#annotations")
    items = panel.locator("li[data-annotation-id]")
    await items.nth(1).wait_for()
    assert await items.locator(".annotation-title").all_text_contents() == [
        "incident: 5xx",
        HOSTILE,
    ]
    assert await panel.locator("img, b").count() == 0
    assert await page.evaluate("window.__xss") is None
    assert "globex" not in await panel.inner_text()

    # Delete from the panel: gone from the list, the charts and the API.
    await panel.get_by_role("button", name="Delete annotation incident: 5xx").click()
    await page.wait_for_function(
        "() => document.querySelectorAll('#annotations li[data-annotation-id]').length === 1"
    )
    card = await chart(page, "Views")
    handle = await card.element_handle()
    await page.wait_for_function(f"([el]) => ({MARKERS})(el).areas.length === 0", arg=[handle])
    assert (await markers(page, "Views"))["lines"] == expected["lines"]
    r = await api(server, org.admin_token, "GET", f"/annotations?from={now - 7200}&to={now}")
    assert [a["title"] for a in r.json()] == [HOSTILE]
    r = await api(server, other.admin_token, "GET", f"/annotations?from={now - 7200}&to={now}")
    assert [a["title"] for a in r.json()] == ["globex deploy"]


# -- stat panel ----------------------------------------------------------------------------------

STATS = [
    {"chart_type": "stat", "title": "Page views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
    {"chart_type": "stat", "title": "Revenue", "metric_inline": {"text": "SELECT sum(value) AS revenue"},
     "default_range": "1h", "options": {"unit": {"kind": "currency", "currency": "EUR"}}},
    {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
]  # fmt: skip


async def stat_of(page, title: str) -> dict[str, str]:
    card = await chart(page, title)
    await card.locator(".stat-value").wait_for()
    return {
        k: (await card.locator(f".stat-{k}").all_text_contents() or [""])[0]
        for k in ("value", "unit", "change")
    }


async def test_stat_panel_number_unit_and_change(server, org, page):
    await seed_periods(server, org)  # this hour: 3 views, €10; the hour before: 2 views, €5
    now = int(time.time())
    r = await api(
        server,
        org.admin_token,
        "POST",
        "/annotations",
        {"time": iso(now - 25 * 60), "title": "deploy v2.4"},
    )
    assert r.status_code == 201
    dash = await make_dashboard(server, org.admin_token, STATS, name="Shop KPIs")
    await page.set_viewport_size({"width": 1440, "height": 900})
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    assert await stat_of(page, "Page views") == {"value": "3", "unit": "", "change": "+50%"}
    assert await stat_of(page, "Revenue") == {"value": "€10.00", "unit": "EUR", "change": "+100%"}
    views = (await chart(page, "Page views")).locator(".stat")
    assert await views.inner_text() == "3\n+50%\ntotal, last hour · previous period 2"
    card = await chart(page, "Revenue")
    assert "previous period €5.00" in await card.locator(".stat-caption").inner_text()
    label = await card.locator(".chart-box").get_attribute("aria-label")
    assert label.startswith(
        "Revenue: €10.00 EUR (total, last hour), +100% against the previous period (€5.00)"
    )
    # The sparkline is the current hour's minutes; its values add up to the number.
    spark = await card.evaluate(
        "el => echarts.getInstanceByDom(el.querySelector('.chart-box')).getOption().series[0].data"
    )
    assert sum(p[1] or 0 for p in spark) == 10 and len(spark) >= 60
    await wait_chart(page, "Views", "v => v.series.length >= 2")  # drawn, with its marker
    await page.wait_for_timeout(300)  # let the last frame settle before the picture
    target = SCREENSHOTS if os.environ.get("CLICKPULSE_WRITE_SCREENSHOTS") else None
    if target:
        await page.screenshot(path=str(target / "stat-panel-desktop-light.png"))


async def test_stat_change_down_and_no_previous(server, org, page):
    now_ms = int(time.time() * 1000)
    events = [
        {"event": "pageview", "user_id": f"p{i}", "ip": DE, "ts": now_ms - 90 * 60_000 + i}
        for i in range(4)
    ]
    events += [{"event": "pageview", "user_id": "c", "ip": FR, "ts": now_ms - 10 * 60_000}]
    events += [{"event": "signup", "user_id": "c", "ip": FR, "ts": now_ms - 10 * 60_000}]
    await post_events(server, org.api_key, events)
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "stat", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
            {"chart_type": "stat", "title": "Signups", "metric_inline": {"text": "SELECT countIf(event = 'signup') AS signups"}, "default_range": "1h"},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    assert await stat_of(page, "Views") == {"value": "1", "unit": "", "change": "−75%"}
    assert await stat_of(page, "Signups") == {"value": "1", "unit": "", "change": "new"}


# -- table view and CSV --------------------------------------------------------------------------


def expected_csv(answer: dict[str, Any]) -> list[list[str]]:
    cols = answer["columns"]
    out = [cols]
    for row in answer["rows"]:
        cells = []
        for c, v in zip(cols, row, strict=True):
            if v is None:
                cells.append("")
            elif c == "t":
                cells.append(iso(v))
            else:
                cells.append(str(v))
        out.append(cells)
    return out


async def test_csv_equals_the_apis_data_and_table_view(server, org, page, tmp_path):
    await seed_periods(server, org)
    to = int(time.time()) // 60 * 60 + 60
    frm = to - 3600
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Views, by minute", "metric_inline": PAGEVIEWS, "default_range": "1h"},
            {"chart_type": "bar", "title": "Countries", "metric_inline": PAGEVIEWS, "default_range": "1h", "dimension": "country"},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}?range=custom&from={frm}&to={to}")
    await wait_chart(page, "Views, by minute", "v => v.series.length >= 1")
    await wait_chart(page, "Countries", "v => v.series.length >= 1")
    series = await api(server, org.admin_token, "POST", "/query", {
        "definition": PAGEVIEWS, "from": str(frm), "to": str(to), "granularity": "1m",
        "filters": [], "group_by": None, "compare": None,
    })  # fmt: skip
    top = await api(server, org.admin_token, "POST", "/ui/data/top", {
        "definition": PAGEVIEWS, "dimension": "country", "n": 10, "from": str(frm), "to": str(to), "filters": [],
    })  # fmt: skip
    assert series.status_code == 200 and top.status_code == 200
    for title, answer, name in (
        ("Views, by minute", series.json(), "Views-by-minute.csv"),
        ("Countries", top.json(), "Countries.csv"),
    ):
        card = await chart(page, title)
        async with page.expect_download() as info:
            await card.get_by_role("button", name=f"Download the data of {title} as CSV").click()
        download = await info.value
        assert download.suggested_filename == name
        path = tmp_path / name
        await download.save_as(path)
        raw = path.read_bytes().decode()
        assert raw.endswith("\r\n")
        rows = list(csv.reader(io.StringIO(raw, newline="")))
        assert rows == expected_csv(answer), title
    assert len(expected_csv(series.json())) == 61  # 60 minutes and the header
    assert sum(float(r[1]) for r in expected_csv(series.json())[1:]) == 3
    assert expected_csv(top.json())[1:] == [["DE", "0", "2"], ["FR", "0", "1"]]

    # The table view: the same rows, times in UTC; the chart comes back on the second press.
    card = await chart(page, "Countries")
    toggle = card.get_by_role("button", name="Show Countries as a table")
    await toggle.click()
    table = card.locator("table.data-table")
    await table.wait_for()
    assert await toggle.get_attribute("aria-pressed") == "true"
    assert await table.locator("thead th").all_text_contents() == top.json()["columns"]
    body = [
        await r.locator("td").all_text_contents() for r in await table.locator("tbody tr").all()
    ]
    assert body == expected_csv(top.json())[1:]
    assert await card.locator(".chart-box").is_hidden()
    await toggle.click()
    assert await card.locator(".chart-box").is_visible()
    assert await card.locator(".chart-table").is_hidden()
