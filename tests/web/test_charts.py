"""What the charts say, in real Chromium: the open bucket at the live edge, comparisons on every
chart type (exact values), one time zone across charts, tooltips, heatmap and alert history,
units and number formats, and headers in words."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.web.conftest import api, login, post_events
from tests.web.test_pages import CHART_VALUES, DE, FR, PAGEVIEWS, chart, make_dashboard, wait_chart

TIMEOUT_MS = 30_000
COUNT = {"text": "SELECT count() AS events_n"}
RAW = """(el, id) => {
  const o = echarts.getInstanceByDom(el).getOption();
  const pt = (d) => Array.isArray(d) ? d : (d && d.value);
  return o.series.filter(Boolean).map(s => ({id: s.id, name: s.name, type: s.type, lineStyle: s.lineStyle || null,
    data: s.data.map(d => ({p: pt(d), open: !!(d && d.open), opacity: d && d.itemStyle ? d.itemStyle.opacity : null}))}));
}"""


def box(page, title: str) -> Any:
    return page.get_by_role("article", name=title, exact=True).locator(".chart-box")


async def raw_series(page, title: str) -> list[dict[str, Any]]:
    return await box(page, title).evaluate(RAW)


def series_total(series: dict[str, Any]) -> float:
    return sum(p[1] or 0 for p in series["data"])


# -- 1. the open bucket -----------------------------------------------------------------------


async def test_open_bucket_is_drawn_open_on_every_granularity(server, org, page):
    now = time.time()
    now_ms = int(now * 1000)
    # Events now (in every chart's open bucket) and earlier (in complete buckets).
    events = [{"event": "pageview", "user_id": f"n{i}", "ts": now_ms - 200} for i in range(3)]
    events += [{"event": "pageview", "user_id": "h", "ts": now_ms - 5 * 3600_000}]
    events += [{"event": "pageview", "user_id": "d", "ts": now_ms - 3 * 86400_000}]
    await post_events(server, org.api_key, events)
    charts = [
        ("Seconds", "line", "5m", "auto", 1),
        ("Minutes", "line", "1h", "auto", 60),
        ("Hours", "bar", "24h", "1h", 3600),
        ("Days", "line", "30d", "1d", 86400),
    ]
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": kind, "title": title, "metric_inline": PAGEVIEWS, "default_range": rng, "granularity": gran}
            for title, kind, rng, gran, _ in charts
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    in_range = {"Seconds": 3, "Minutes": 3, "Hours": 4, "Days": 5}
    for title, kind, _rng, _gran, step in charts:
        values = await wait_chart(
            page, title, f"v => v.series.length && v.series[0].data.reduce((a, p) => a + (p[1] || 0), 0) === {in_range[title]}"
        )  # fmt: skip
        assert values["series"][0]["open"] is (kind == "line"), title
        drawn = await raw_series(page, title)
        page_now = await page.evaluate("Date.now()")
        open_t = page_now // (step * 1000) * step * 1000
        if kind == "line":
            main, tail = drawn
            assert tail["id"] == f"{main['id']}#open" and tail["name"] == main["name"]
            assert tail["lineStyle"]["type"] == "dashed"
            # The line stops at the last complete bucket; the dashed segment leads from it to
            # the open point, which is the bucket of "now" (or the one before, at a boundary).
            assert tail["data"][0]["p"] == main["data"][-1]["p"]
            last = tail["data"][-1]
            # (1 s charts are redrawn once a second: on a busy machine the page's clock may be
            # a few seconds past the last redraw)
            newest = [open_t - k * step * 1000 for k in range(4 if step == 1 else 2)]
            assert last["open"] and last["p"][0] in newest, (title, last, open_t)
            # One bucket open (two at 1 s: the second before may still be receiving events).
            # (at 1 s the page may draw before its clock's second has a point: 2 then)
            assert len(tail["data"]) in ((2, 3) if step == 1 else (2,)), (title, tail)
            assert not any(d["open"] for d in main["data"])
        else:
            (bars,) = drawn
            opens = [d for d in bars["data"] if d["open"]]
            assert len(opens) == 1 and opens[0] is bars["data"][-1], title
            assert opens[0]["opacity"] < 1 and opens[0]["p"][0] in (open_t, open_t - step * 1000)
            if opens[0]["p"][0] == open_t:  # the 3 events of now are in the open hour
                assert opens[0]["p"][1] == 3
    # The text alternative says the latest value is incomplete.
    label = await box(page, "Minutes").get_attribute("aria-label")
    assert "(incomplete)" in label, label


# -- 2. comparisons on every chart type ---------------------------------------------------------


async def seed_periods(server, org) -> dict[str, int]:
    """Events in the current hour (10 min ago) and in the previous one (90 min ago)."""
    now_ms = int(time.time() * 1000)
    cur, prev = now_ms - 10 * 60_000, now_ms - 90 * 60_000
    events = [
        {"event": "pageview", "user_id": "u3", "ip": DE, "ts": cur},
        {"event": "pageview", "user_id": "u4", "ip": FR, "ts": cur + 1000},
        {"event": "pageview", "user_id": "u5", "ip": DE, "ts": cur + 2000},
        {"event": "purchase", "user_id": "u3", "ip": DE, "ts": cur + 3000, "value": 10},
        {"event": "pageview", "user_id": "u1", "ip": DE, "ts": prev},
        {"event": "pageview", "user_id": "u2", "ip": DE, "ts": prev + 1000},
        {"event": "purchase", "user_id": "u1", "ip": DE, "ts": prev + 2000, "value": 5},
    ]
    await post_events(server, org.api_key, events)
    return {"cur": cur, "prev": prev}


COMPARE_CHARTS = [
    {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
    {"chart_type": "bar", "title": "Views per minute", "metric_inline": PAGEVIEWS, "default_range": "1h"},
    {"chart_type": "bar", "title": "Countries", "metric_inline": COUNT, "default_range": "1h", "dimension": "country"},
    {"chart_type": "funnel", "title": "Funnel", "metric_inline": COUNT, "default_range": "1h",
     "options": {"steps": ["pageview", "purchase"], "window_seconds": 3600}},
    {"chart_type": "heatmap", "title": "Heat", "metric_inline": COUNT, "default_range": "1h", "options": {"axes": "weekday_hour"}},
]  # fmt: skip


async def test_previous_period_on_every_chart_type(server, org, page):
    ts = await seed_periods(server, org)
    dash = await make_dashboard(server, org.admin_token, COMPARE_CHARTS)
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}?range=1h&compare=previous_period")

    for title, kind in (("Views", "line"), ("Views per minute", "bar")):
        v = await wait_chart(page, title, "v => v.series.length === 2")
        by_name = {s["name"]: s for s in v["series"]}
        assert series_total(by_name["page_views"]) == 3, title
        assert series_total(by_name["previous period"]) == 2, title
        assert by_name["previous period"]["type"] == kind
        # The previous hour's views sit where they happened, moved by the window's length.
        shift = await page.evaluate(
            f"window.clickpulse.dashboard.views.find(v => v.chart.title === {title!r}).shiftS"
        )
        assert shift in (3600, 3660)
        points = [p for p in by_name["previous period"]["data"] if p[1]]
        assert [p[0] for p in points] == [(ts["prev"] // 60_000 * 60 + shift) * 1000]
        assert [p[1] for p in points] == [2]

    # Top-N: the same categories, previous period values exact; "other" is not compared.
    v = await wait_chart(page, "Countries", "v => v.series.length === 2")
    assert v["xAxis"] == ["DE", "FR"]
    assert [d["value"] for d in v["series"][0]["data"]] == [3, 1]
    assert [d["value"] for d in v["series"][1]["data"]] == [3, 0]
    assert [s["name"] for s in v["series"]] == ["this period", "previous period"]

    # Funnel: a second funnel, the previous period's users per step.
    v = await wait_chart(page, "Funnel", "v => v.series.length === 2")
    assert [d["value"] for d in v["series"][0]["data"]] == [3, 1]
    assert [d["value"] for d in v["series"][1]["data"]] == [2, 1]
    assert v["series"][1]["name"] == "previous period"

    # Heatmap: says it does not compare (visible and in its text alternative).
    heat = page.get_by_role("article", name="Heat", exact=True)
    await heat.get_by_text("Heatmaps are not compared").wait_for()
    assert "Heatmaps are not compared" in await heat.locator(".chart-box").get_attribute(
        "aria-label"
    )

    # Live: a new view now. The tail is re-read; the previous period must not jump to the
    # current values (it used to: the tail's own "previous period" was the minute before).
    await post_events(server, org.api_key, [{"event": "pageview", "user_id": "u9", "ip": FR}])
    v = await wait_chart(
        page, "Views", "v => v.series.find(s => s.name === 'page_views').data.reduce((a, p) => a + (p[1] || 0), 0) === 4"
    )  # fmt: skip
    by_name = {s["name"]: s for s in v["series"]}
    assert series_total(by_name["previous period"]) == 2
    assert [p[1] for p in by_name["previous period"]["data"] if p[1]] == [2]


async def test_segment_comparison_on_bar_and_funnel(server, org, page):
    await seed_periods(server, org)
    dash = await make_dashboard(server, org.admin_token, COMPARE_CHARTS)
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}?range=1h&compare=segment&segment=country%3DFR")
    v = await wait_chart(page, "Countries", "v => v.series.length === 2")
    assert [s["name"] for s in v["series"]] == ["all", "country=FR"]
    assert [d["value"] for d in v["series"][1]["data"]] == [0, 1]  # DE, FR within country=FR
    v = await wait_chart(page, "Funnel", "v => v.series.length === 2")
    assert [d["value"] for d in v["series"][0]["data"]] == [3, 1]
    assert [d["value"] for d in v["series"][1]["data"]] == [1, 0]
    v = await wait_chart(page, "Views per minute", "v => v.series.length === 2")
    assert {s["name"]: series_total(s) for s in v["series"]} == {"all": 3, "country=FR": 1}


# -- 4. one time zone ---------------------------------------------------------------------------

VIEW_LABELS = """(el) => echarts.getInstanceByDom(el).getModel().getComponent('xAxis', 0).axis
  .getViewLabels().map(l => [l.tickValue, l.formattedLabel])"""
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def expected_label(ms: int, zone: ZoneInfo) -> str:
    d = datetime.fromtimestamp(ms / 1000, zone)
    if d.hour == 0 and d.minute == 0:
        return f"{MONTHS[d.month - 1]} {d.day}"
    return f"{d.hour:02d}:{d.minute:02d}"


async def tooltip_text(page, title: str, series_index: int, t_ms: int, expect: str = "") -> str:
    """Hover the point of bucket `t_ms` (by time: live updates may slide the window) and read
    the tooltip; hovered again (a few times) while a live redraw moved it off `expect`."""
    target = box(page, title)
    text = ""
    for _ in range(5):
        # The point's pixel from the chart's own transform, as a user's pointer would be.
        text = await target.evaluate(
            """(el, [s, t]) => {
              const inst = echarts.getInstanceByDom(el);
              const pt = (d) => Array.isArray(d) ? d : d.value;
              const d = inst.getOption().series[s].data.map(pt).find((p) => p[0] === t);
              const [x, y] = inst.convertToPixel({seriesIndex: s}, d);
              inst.dispatchAction({type: 'showTip', x, y});
              return [...el.querySelectorAll('div')].map((n) => n.innerText)
                .filter((x) => x && x.includes('(')).sort((a, b) => a.length - b.length)[0] || '';
            }""",
            [series_index, t_ms],
        )
        if expect in text:
            break
        await asyncio.sleep(0.5)
    return text


async def test_one_time_zone_for_charts_tooltips_heatmap_and_alert_history(server, org, browser):
    zone = "America/New_York"
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id=zone)
    context.set_default_timeout(60_000)
    page = await context.new_page()
    try:
        await _time_zone_checks(server, org, page, zone)
    finally:
        await context.close()


async def _time_zone_checks(server, org, page, zone_name: str) -> None:
    event_ms = int(time.time() * 1000) - 20 * 60_000
    await post_events(server, org.api_key, [{"event": "pageview", "user_id": "z", "ts": event_ms}])
    alert = await api(
        server, org.admin_token, "POST", "/alerts",
        {"name": "Any", "metric_inline": {"text": "SELECT countIf(event = 'error') AS n"}, "comparator": ">",
         "threshold": 0, "for_seconds": 1, "severity": "warning"},
    )  # fmt: skip
    assert alert.status_code == 201, alert.text
    alert_id = alert.json()["id"]
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
            {"chart_type": "heatmap", "title": "Heat", "metric_inline": PAGEVIEWS, "default_range": "7d", "options": {"axes": "weekday_hour"}},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    await page.evaluate("localStorage.removeItem('clickpulse.tz')")
    await page.reload()
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    ny, utc = ZoneInfo(zone_name), ZoneInfo("UTC")
    for zone, label in ((ny, zone_name), (utc, "UTC")):
        if zone is utc:
            await page.get_by_label("Time zone").select_option("UTC")
        assert await page.get_by_label("Time zone").input_value() == (
            "UTC" if zone is utc else "local"
        )
        await page.wait_for_function(
            "(utc) => [...document.querySelectorAll('.chart-box')].every(el => {"
            " const o = echarts.getInstanceByDom(el).getOption(); return o && o.series && o.series.length && !!o.useUTC === utc; })",
            arg=zone is utc,
        )
        await wait_chart(
            page, "Views", "v => v.series.length && v.series[0].data.some(p => p[1] === 1)"
        )
        # Axis labels: clock times of the chosen zone (the date at midnight), never bare numbers.
        labels = await box(page, "Views").evaluate(VIEW_LABELS)
        assert len(labels) >= 3, labels
        for tick, text in labels:
            assert text == expected_label(tick, zone), (label, tick, text)
        # The tooltip names the zone and shows the bucket in it.
        data = (await raw_series(page, "Views"))[0]["data"]
        t = next(d["p"][0] for d in data if d["p"][1] == 1)
        start = datetime.fromtimestamp(t / 1000, zone)
        tip = await tooltip_text(page, "Views", 0, t, f"({label})")
        assert f"{start:%H:%M}–" in tip and f"({label})" in tip, tip
        # Heatmap: the event's weekday and hour in the chosen zone, the axis says which zone.
        heat = await wait_chart(
            page, "Heat", "v => v.series.length && v.series[0].data.some(c => c[2] === 1)"
        )
        at = datetime.fromtimestamp(event_ms / 1000, zone)
        cells = [c[:2] for c in heat["series"][0]["data"] if c[2]]
        assert cells == [[at.hour, at.weekday()]], (label, cells)
        x_name = await box(page, "Heat").evaluate(
            "el => echarts.getInstanceByDom(el).getOption().xAxis[0].name"
        )
        assert x_name == f"hour ({label})"
        # The alert history, in the same zone.
        if zone is ny:
            await post_events(server, org.api_key, [{"event": "error"}])
            deadline = time.monotonic() + 30
            while not (
                await api(server, org.admin_token, "GET", f"/alerts/{alert_id}/events")
            ).json()["events"]:
                assert time.monotonic() < deadline, "the alert did not fire"
                await asyncio.sleep(0.3)
        await page.goto(f"{server.url}/a/{alert_id}")
        table = page.locator("#history-table")
        await table.locator("tbody tr").first.wait_for()
        shown = await table.locator("tbody tr td:first-child").all_text_contents()
        # (read after the page: the alert may have resolved meanwhile, a newer row)
        fired = (await api(server, org.admin_token, "GET", f"/alerts/{alert_id}/events")).json()[
            "events"
        ]
        expected = [
            f"{datetime.fromisoformat(e['at']).astimezone(zone):%Y-%m-%d %H:%M:%S}" for e in fired
        ]
        assert await table.locator("thead th").first.text_content() == f"When ({label})"
        assert shown == expected[len(expected) - len(shown) :] or shown == expected[: len(shown)], (
            shown,
            expected,
        )
        await page.goto(f"{server.url}/d/{dash}")
        # The controls are bound once the dashboard has opened (its grid mounted): a choice
        # made before that would be drawn over by the stored zone.
        await page.wait_for_function("() => document.body.dataset.ready === '1'")
    # Remembered: a new page of the same browser keeps UTC.
    await page.reload()
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    assert await page.get_by_label("Time zone").input_value() == "UTC"


# -- 5. units and numbers; 6. headers -----------------------------------------------------------


HOSTILE = '<img src=x onerror="window.__pwned=1">'


async def test_units_format_axes_tooltips_and_gaps(server, org, page):
    now_ms = int(time.time() * 1000)
    await post_events(
        server,
        org.api_key,
        [
            {"event": "purchase", "user_id": "a", "value": 42.5, "ts": now_ms - 20 * 60_000},
            {"event": "pageview", "user_id": "a", "ts": now_ms - 20 * 60_000},
            {"event": "pageview", "user_id": "b", "ts": now_ms - 20 * 60_000},
        ],
    )
    r = await api(server, org.admin_token, "POST", "/metrics", {
        "name": "Revenue", "definition": {"text": "SELECT sumIf(value, event = 'purchase') AS revenue"},
        "unit": {"kind": "currency", "currency": "EUR"}})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["unit"] == {"kind": "currency", "currency": "EUR"}
    revenue = r.json()["id"]
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Revenue", "metric_id": revenue, "default_range": "1h"},
            {"chart_type": "line", "title": "Conversion", "default_range": "1h", "options": {"unit": {"kind": "percent"}},
             "metric_inline": {"text": "SELECT countIf(event = 'purchase') / countIf(event = 'pageview') AS conversion"}},
            {"chart_type": "line", "title": "Page p95", "default_range": "1h", "options": {"unit": {"kind": "duration", "base": "ms"}},
             "metric_inline": {"text": "SELECT quantile(0.95)(value) AS p95 WHERE event = 'purchase'"}},
            # A chart's unit is the editor's free text: shown as text, never as markup.
            {"chart_type": "line", "title": "Hostile", "default_range": "1h", "metric_inline": PAGEVIEWS,
             "options": {"unit": {"kind": "currency", "currency": HOSTILE}}},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")

    v = await wait_chart(
        page, "Revenue", "v => v.series.length && v.series[0].data.some(p => p[1] === 42.5)"
    )
    t = next(p[0] for p in v["series"][0]["data"] if p[1] == 42.5)
    assert "revenue: €42.50" in await tooltip_text(page, "Revenue", 0, t, "€")
    y = await box(page, "Revenue").evaluate(
        "el => { const a = echarts.getInstanceByDom(el).getModel().getComponent('yAxis', 0);"
        " return {name: a.option.name, labels: a.axis.getViewLabels().map(l => l.formattedLabel)}; }"
    )
    assert y["name"] == "EUR per minute"
    assert y["labels"][:2] == ["€0", "€10"] and all(t.startswith("€") for t in y["labels"]), y
    assert "total €42.50" in await box(page, "Revenue").get_attribute("aria-label")

    # A ratio in percent, rounded: 1 purchase / 2 page views.
    v = await wait_chart(
        page, "Conversion", "v => v.series.length && v.series[0].data.some(p => p[1] === 0.5)"
    )
    t = next(p[0] for p in v["series"][0]["data"] if p[1] == 0.5)
    assert "conversion: 50%" in await tooltip_text(page, "Conversion", 0, t, "50%")
    # A ratio and a quantile have no value where there are no events: gaps, not zeros.
    data = v["series"][0]["data"]
    assert sum(1 for p in data if p[1] is None) >= len(data) - 2
    assert not any(p[1] == 0 for p in data)
    v = await wait_chart(
        page, "Page p95", "v => v.series.length && v.series[0].data.some(p => p[1] > 0)"
    )
    data = v["series"][0]["data"]
    assert [p[1] for p in data if p[1] is not None] == [42.5]  # one value: every quantile is it
    t = next(p[0] for p in data if p[1] is not None)
    assert "p95: 42.5 ms" in await tooltip_text(page, "Page p95", 0, t, "ms")
    p95_card = page.get_by_role("article", name="Page p95", exact=True)
    assert (
        await p95_card.locator(".chart-status").text_content() == "Last hour · each minute"
    )  # not a rate
    # A count with no unit keeps its digits and says its rate basis.
    header = (
        await page.get_by_role("article", name="Conversion", exact=True)
        .locator(".chart-status")
        .text_content()
    )
    assert header == "Last hour · each minute"  # a ratio is not a rate
    header = (
        await page.get_by_role("article", name="Revenue", exact=True)
        .locator(".chart-status")
        .text_content()
    )
    assert header == "Last hour · per minute"

    v = await wait_chart(
        page, "Hostile", "v => v.series.length && v.series[0].data.some(p => p[1] === 2)"
    )
    t = next(p[0] for p in v["series"][0]["data"] if p[1] == 2)
    tip = await tooltip_text(page, "Hostile", 0, t, "page_views")
    assert f"page_views: 2 {HOSTILE.upper()}" in tip, tip  # the code as text, upper-cased
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator(".chart-box img").count() == 0


async def test_headers_say_range_and_granularity_in_words(server, org, page):
    await post_events(server, org.api_key, [{"event": "pageview", "user_id": "a", "ip": DE}])
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Page views (live)", "metric_inline": PAGEVIEWS, "default_range": "5m"},
            {"chart_type": "bar", "title": "Top countries", "metric_inline": COUNT, "default_range": "24h", "dimension": "country"},
            {"chart_type": "heatmap", "title": "Activity", "metric_inline": COUNT, "default_range": "7d", "options": {"axes": "weekday_hour"}},
            {"chart_type": "line", "title": "Monthly", "metric_inline": PAGEVIEWS, "default_range": "30d"},
        ],
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    await page.evaluate("localStorage.setItem('clickpulse.tz', 'UTC')")
    await page.reload()
    expected = {
        "Page views (live)": "Last 5 minutes · per second",
        "Top countries": "Last 24 hours · by country",
        "Activity": "Last 7 days · by weekday and hour, UTC",
        "Monthly": "Last 30 days · per hour",
    }
    for title, text in expected.items():
        status = page.get_by_role("article", name=title, exact=True).locator(".chart-status")
        await page.wait_for_function(
            "(el) => el.textContent && el.textContent !== 'loading…'",
            arg=await status.element_handle(),
        )
        got = await status.text_content()
        assert got == text, (title, got)
        assert not re.search(r"rollup|events\b|_1[smhd]", got)  # no internal names
        assert (await status.get_attribute("title")).startswith("from ")  # the plan, on hover
    # "(live)" is said only where the chart is drawn second by second.
    await page.get_by_label("Range").select_option("30d")
    await page.get_by_role("article", name="Page views", exact=True).wait_for()
    await page.get_by_label("Range").select_option("5m")
    await page.get_by_role("article", name="Page views (live)", exact=True).wait_for()
    # The title follows a drilldown to the next dimension.
    await (
        page.get_by_role("article", name="Top countries", exact=True)
        .get_by_role("button", name="DE")
        .click()
    )
    card = page.get_by_role("article", name="Top devices (country = DE)", exact=True)
    await card.wait_for()
    assert await card.locator(".chart-status").text_content() in (
        "Last 5 minutes · by device",
        "loading…",
    )
    values = await card.evaluate(CHART_VALUES)
    assert values is not None
    await chart(page, "Top devices (country = DE)")
