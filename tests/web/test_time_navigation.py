"""Time navigation in real Chromium: zoom by dragging on a time chart with the real mouse (every
chart follows, the URL and the requests carry the range, Back restores it, a click is not a
zoom), the refresh interval (re-fetches counted per request, paused while the tab is hidden),
the builder's URL round trip, and URLs with bad values falling back to the defaults."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.web.conftest import login, post_events
from tests.web.test_pages import DE, FR, PAGEVIEWS, chart, make_dashboard, wait_chart

CHARTS = [
    {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "1h"},
    {"chart_type": "bar", "title": "Views per minute", "metric_inline": PAGEVIEWS, "default_range": "1h"},
]  # fmt: skip
X_RANGE = """(el) => {
  const o = echarts.getInstanceByDom(el.querySelector('.chart-box')).getOption();
  return [o.xAxis[0].min, o.xAxis[0].max];
}"""
# The pixel (relative to the chart box) of an instant, and a y inside the plot.
PIXEL = """(el, t) => {
  const inst = echarts.getInstanceByDom(el);
  const [x, y] = inst.convertToPixel({gridIndex: 0}, [t, 0]);
  return [x, y - 40];
}"""


async def seed_hour(server, org) -> None:
    now_ms = int(time.time() * 1000)
    await post_events(
        server,
        org.api_key,
        [
            {"event": "pageview", "user_id": f"u{i}", "ip": DE if i % 2 else FR, "ts": now_ms - i * 4 * 60_000}
            for i in range(14)
        ],
    )  # fmt: skip


def query_bodies(requests: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.post_data) for r in requests if urlparse(r.url).path == "/query"]


def url_state(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


async def drag(page, title: str, from_ms: int, to_ms: int, *, release: bool = True) -> None:
    """Press at `from_ms` on the chart's plot, drag to `to_ms` in steps, release (or not)."""
    box = (await chart(page, title)).locator(".chart-box")
    bbox = await box.bounding_box()
    x1, y = await box.evaluate(PIXEL, from_ms)
    x2, _ = await box.evaluate(PIXEL, to_ms)
    await page.mouse.move(bbox["x"] + x1, bbox["y"] + y)
    await page.mouse.down()
    await page.mouse.move(bbox["x"] + (x1 + x2) / 2, bbox["y"] + y, steps=5)
    await page.mouse.move(bbox["x"] + x2, bbox["y"] + y, steps=5)
    if release:
        await page.mouse.up()


async def open_dashboard(server, org, page, query: str = "") -> int:
    await seed_hour(server, org)
    dash = await make_dashboard(server, org.admin_token, CHARTS)
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}{query}")
    for title in ("Views", "Views per minute"):
        await wait_chart(page, title, "v => v.series.length >= 1")
    return dash


async def test_drag_zooms_every_chart_and_back_restores(server, org, page):
    await open_dashboard(server, org, page)
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    before_url = page.url
    start, end = await (await chart(page, "Views")).evaluate(X_RANGE)
    assert end - start == 3600_000
    # Drag over 20 minutes of the bar chart, from 40 to 20 minutes before its end.
    from_ms, to_ms = end - 40 * 60_000, end - 20 * 60_000
    await drag(page, "Views per minute", from_ms, to_ms)
    await page.wait_for_function(
        "() => new URL(location.href).searchParams.get('range') === 'custom'"
    )
    state = url_state(page)
    frm, to = int(state["from"]), int(state["to"])
    assert abs(frm - from_ms / 1000) <= 60 and abs(to - to_ms / 1000) <= 60, (state, from_ms, to_ms)
    assert state["live"] == "0"  # a zoomed range is historical
    # Every chart of the page shows exactly that range, and asked the API for it (1 min buckets).
    for title in ("Views", "Views per minute"):
        card = await chart(page, title)
        handle = await card.element_handle()
        await page.wait_for_function(
            f"([el]) => {{ const r = ({X_RANGE})(el); return r[0] === {frm * 1000} && r[1] === {to * 1000}; }}",
            arg=[handle],
        )
    await page.wait_for_function(
        "() => document.querySelectorAll('.chart-status').length === 2 && [...document.querySelectorAll('.chart-status')].every(s => !s.textContent.includes('loading'))"
    )
    zoomed = [b for b in query_bodies(requests) if b["from"] == str(frm)]
    assert len(zoomed) == 2 and all(
        b["to"] == str(to) and b["granularity"] == "1m" for b in zoomed
    ), zoomed
    bar = page.locator("#zoom-bar")
    assert await bar.is_visible()
    assert "Live is off" in await bar.inner_text()
    assert await page.locator("#live-toggle").is_disabled()
    # Back: the range before the zoom, on every chart.
    await page.go_back()
    await page.wait_for_function(f"() => location.href === {json.dumps(before_url)}")
    for title in ("Views", "Views per minute"):
        card = await chart(page, title)
        handle = await card.element_handle()
        await page.wait_for_function(
            f"([el]) => {{ const r = ({X_RANGE})(el); return r[1] - r[0] === 3600000; }}",
            arg=[handle],
        )
    assert await bar.is_hidden()
    assert await page.locator("#live-toggle").get_attribute("aria-pressed") == "true"
    # Forward again, then "Zoom out" (twice the span) and "Reset zoom" (the range before zooming).
    await page.go_forward()
    await page.wait_for_function(
        "() => new URL(location.href).searchParams.get('range') === 'custom'"
    )
    await page.locator("#zoom-out").click()
    await page.wait_for_function(
        f"() => new URL(location.href).searchParams.get('from') !== '{frm}'"
    )
    state = url_state(page)
    assert int(state["to"]) - int(state["from"]) == 2 * (to - frm)
    await page.locator("#zoom-reset").click()
    await page.wait_for_function("() => !new URL(location.href).searchParams.has('range')")
    assert url_state(page) == {}
    assert await bar.is_hidden()
    assert not [m for m in page.console_log if m.startswith("pageerror")], page.console_log


async def test_click_without_drag_does_not_zoom(server, org, page):
    await open_dashboard(server, org, page)
    url, length = page.url, await page.evaluate("history.length")
    box = (await chart(page, "Views")).locator(".chart-box")
    bbox = await box.bounding_box()
    start, end = await (await chart(page, "Views")).evaluate(X_RANGE)
    x, y = await box.evaluate(PIXEL, (start + end) // 2)
    await page.mouse.click(bbox["x"] + x, bbox["y"] + y)
    await page.mouse.click(bbox["x"] + x + 2, bbox["y"] + y)  # a 2 px wobble is a click too
    # The tooltip answering the same mouse proves the chart handled the clicks.
    await page.mouse.move(bbox["x"] + x + 10, bbox["y"] + y, steps=2)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.chart-box')].some(b => [...b.querySelectorAll('div')].some(d => d.style.display !== 'none' && d.textContent.includes('page_views')))"
    )
    assert page.url == url and await page.evaluate("history.length") == length
    assert await page.locator("#zoom-bar").is_hidden()


async def test_refresh_interval_refetches_and_pauses_while_hidden(server, org, page):
    now = int(time.time())
    frm, to = now - 3600, now
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    await open_dashboard(server, org, page, f"?range=custom&from={frm}&to={to}&refresh=5s")
    assert await page.locator("#refresh").input_value() == "5s"
    nav = "window.clickpulse.dashboard.timeNav.refresher"
    await page.wait_for_function(f"() => {nav}.fired >= 2")
    # Each period re-fetched both charts, over the same fixed range.
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.chart-status')].every(s => !s.textContent.includes('loading'))"
    )
    bodies = [b for b in query_bodies(requests) if b["from"] == str(frm) and b["to"] == str(to)]
    assert len(bodies) >= 2 * 3, len(bodies)  # the first load and two refreshes, 2 charts each
    # A hidden tab fetches nothing for two periods; visible again, it fetches at once.
    await page.evaluate(
        """() => {
          window.__vis = 'hidden';
          Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => window.__vis});
          Object.defineProperty(document, 'hidden', {configurable: true, get: () => window.__vis === 'hidden'});
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    fired = await page.evaluate(f"{nav}.fired")
    skipped = await page.evaluate(f"{nav}.skipped")
    count = len(query_bodies(requests))
    await page.wait_for_function(f"() => {nav}.skipped >= {skipped + 2}")
    assert await page.evaluate(f"{nav}.fired") == fired
    assert len(query_bodies(requests)) == count
    await page.evaluate(
        "() => { window.__vis = 'visible'; document.dispatchEvent(new Event('visibilitychange')); }"
    )
    await page.wait_for_function(f"() => {nav}.fired === {fired + 1}")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.chart-status')].every(s => !s.textContent.includes('loading'))"
    )
    assert len(query_bodies(requests)) >= count + 2
    # The control: Off stops, and the choice is in the URL; a live range disables it.
    await page.locator("#refresh").select_option("30s")
    assert url_state(page)["refresh"] == "30s"
    await page.locator("#refresh").select_option("off")
    assert "refresh" not in url_state(page)
    assert await page.evaluate(f"{nav}.periodS") == 0
    await page.locator("#range").select_option("1h")
    assert await page.locator("#refresh").is_disabled()  # live: the charts update themselves
    await page.locator("#live-toggle").click()  # paused: a period applies
    await page.locator("#refresh").select_option("10s")
    assert url_state(page) == {"range": "1h", "live": "0", "refresh": "10s"}
    assert await page.evaluate(f"{nav}.periodS") == 10
    await page.locator("#live-toggle").click()  # live again: the period waits
    assert await page.locator("#refresh").is_disabled()
    assert await page.evaluate(f"{nav}.periodS") == 0
    await page.locator("#live-toggle").click()
    await page.reload()
    await page.wait_for_selector("body[data-ready='1']")
    assert await page.locator("#refresh").input_value() == "10s"
    assert await page.locator("#range").input_value() == "1h"
    assert await page.locator("#live-toggle").get_attribute("aria-pressed") == "false"


async def test_builder_url_round_trip_and_zoom(server, org, page):
    await seed_hour(server, org)
    await login(page, server, org.admin_token)
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    await page.goto(f"{server.url}/builder?dashboard=7&range=24h&refresh=1m")
    await page.wait_for_selector("body[data-preview='ok']")
    assert await page.locator("#preview-range").input_value() == "24h"
    assert await page.locator("#refresh").input_value() == "1m"
    assert query_bodies(requests)[-1]["from"] == "now-86400s"
    await page.locator("#preview-range").select_option("1h")
    await page.wait_for_function("() => new URL(location.href).searchParams.get('range') === null")
    assert url_state(page) == {"dashboard": "7", "refresh": "1m"}
    # Zoom on the preview by dragging: the URL, the request and the axis follow.
    box = page.locator("#preview")
    await page.wait_for_function(
        "() => { const o = echarts.getInstanceByDom(document.getElementById('preview')).getOption(); return o.xAxis[0].max - o.xAxis[0].min === 3600000; }"
    )
    end = await box.evaluate("el => echarts.getInstanceByDom(el).getOption().xAxis[0].max")
    bbox = await box.bounding_box()
    x1, y = await box.evaluate(PIXEL, end - 30 * 60_000)
    x2, _ = await box.evaluate(PIXEL, end - 25 * 60_000)
    await page.mouse.move(bbox["x"] + x1, bbox["y"] + y)
    await page.mouse.down()
    await page.mouse.move(bbox["x"] + x2, bbox["y"] + y, steps=8)
    await page.mouse.up()
    await page.wait_for_function(
        "() => new URL(location.href).searchParams.get('range') === 'custom'"
    )
    state = url_state(page)
    frm, to = int(state["from"]), int(state["to"])
    assert abs(frm - (end / 1000 - 1800)) <= 60 and abs(to - (end / 1000 - 1500)) <= 60, state
    await page.wait_for_function(
        f"() => {{ const o = echarts.getInstanceByDom(document.getElementById('preview')).getOption(); return o.xAxis[0].min === {frm * 1000} && o.xAxis[0].max === {to * 1000}; }}"
    )
    last = query_bodies(requests)[-1]
    assert (last["from"], last["to"], last["granularity"]) == (
        str(frm),
        str(to),
        "1s" if to - frm <= 600 else "1m",
    )
    assert await page.locator("#preview-range").input_value() == "custom"
    # Reload keeps it; Back returns to the hour.
    await page.reload()
    await page.wait_for_selector("body[data-preview='ok']")
    last = query_bodies(requests)[-1]
    assert (last["from"], last["to"]) == (str(frm), str(to))
    assert await page.locator("#zoom-bar").is_visible()
    await page.go_back()
    await page.wait_for_function("() => new URL(location.href).searchParams.get('range') === null")
    await page.wait_for_function(
        "() => { const o = echarts.getInstanceByDom(document.getElementById('preview')).getOption(); return o.xAxis[0].max - o.xAxis[0].min === 3600000; }"
    )
    assert await page.locator("#preview-range").input_value() == "1h"
    assert query_bodies(requests)[-1]["from"] == "now-3600s"


async def test_bad_url_values_fall_back_to_defaults(server, org, page):
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    bad_filters = json.dumps(
        [
            {"dimension": "country", "op": "=", "value": "DE"},
            {"x": 1},
            "junk",
            {"dimension": "a b", "op": "=", "value": "x"},
        ]
    )
    dash = await open_dashboard(
        server, org, page,
        f"?range=custom&from=abc&to=-5&compare=evil&live=maybe&refresh=7s&f={bad_filters}",
    )  # fmt: skip
    assert await page.locator("#range").input_value() == "default"
    assert await page.locator("#compare").input_value() == ""
    assert await page.locator("#refresh").input_value() == "off"
    assert await page.evaluate("window.clickpulse.dashboard.state.filters") == [
        {"dimension": "country", "op": "=", "value": "DE"}
    ]
    # The first loads (not the live tails, which ask from an instant on) read the last hour.
    loads = [b for b in query_bodies(requests) if not b["from"].isdigit()]
    assert len(loads) == 2 and all(b["from"] == "now-1h" and "to" not in b for b in loads), loads
    for query in (
        "?range=custom&from=2000&to=1000",
        "?range=custom&from=1700000000000&to=1700003600000",  # milliseconds
        "?range=99y&f=%7Bnot-json",
        "?f=%7B%22dimension%22%3A1%7D&compare=segment&refresh=off",
    ):
        await page.goto(f"{server.url}/d/{dash}{query}")
        await wait_chart(page, "Views", "v => v.series.length >= 1")
        assert await page.locator("#range").input_value() == "default", query
        x0, x1 = await (await chart(page, "Views")).evaluate(X_RANGE)
        assert x1 - x0 == 3600_000, query
    await page.goto(f"{server.url}/builder?range=custom&from=x&to=1&refresh=1h")
    await page.wait_for_selector("body[data-preview='ok']")
    assert await page.locator("#preview-range").input_value() == "1h"
    assert await page.locator("#refresh").input_value() == "off"
    assert not [m for m in page.console_log if m.startswith("pageerror")], page.console_log


async def test_slow_drag_on_a_live_one_second_chart(server, org, page):
    """A live 1 s chart redraws every second: a drag that lasts several redraws still zooms."""
    now_ms = int(time.time() * 1000)
    events = [
        {"event": "pageview", "user_id": f"s{i}", "ip": DE, "ts": now_ms - i * 10_000}
        for i in range(20)
    ]
    await post_events(server, org.api_key, events)
    live = {
        "chart_type": "line",
        "title": "Live",
        "metric_inline": PAGEVIEWS,
        "default_range": "5m",
    }
    dash = await make_dashboard(server, org.admin_token, [live, CHARTS[0]])
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    await wait_chart(page, "Live", "v => v.series.length >= 1")
    box = (await chart(page, "Live")).locator(".chart-box")
    bbox = await box.bounding_box()
    _, end = await (await chart(page, "Live")).evaluate(X_RANGE)
    from_ms, to_ms = end - 200_000, end - 80_000
    x1, y = await box.evaluate(PIXEL, from_ms)
    x2, _ = await box.evaluate(PIXEL, to_ms)
    await page.mouse.move(bbox["x"] + x1, bbox["y"] + y)
    await page.mouse.down()
    for i in range(1, 11):  # ~3 s of dragging: the window slides under the mouse meanwhile
        await page.mouse.move(bbox["x"] + x1 + (x2 - x1) * i / 10, bbox["y"] + y)
        await page.wait_for_timeout(300)
    await page.mouse.up()
    await page.wait_for_function(
        "() => new URL(location.href).searchParams.get('range') === 'custom'"
    )
    state = url_state(page)
    span = int(state["to"]) - int(state["from"])
    # The axis slid by the drag's duration: the span is the dragged width, within a few seconds.
    assert abs(span - 120) <= 10, state
    assert "Live is off" in await page.locator("#zoom-bar").inner_text()
    # The other chart follows, at 1 s buckets (a 2 min span).
    handle = await (await chart(page, "Views")).element_handle()
    frm, to = int(state["from"]) * 1000, int(state["to"]) * 1000
    await page.wait_for_function(
        f"([el]) => {{ const r = ({X_RANGE})(el); return r[0] === {frm} && r[1] === {to}; }}",
        arg=[handle],
    )
    assert "per second" in await (await chart(page, "Views")).locator(".chart-status").inner_text()


# A full redraw (a new range, Back, a zoom) while the pointer rests on a chart: the render
# before it left ECharts a timer that re-shows the tooltip, and the redraw disposed the tooltip
# it would draw into. The page must not throw (CI saw "Cannot set properties of null").
REDRAW_UNDER_POINTER = """async ([el, guarded]) => {
  const charts = await import('/static/app/js/charts.js');
  const ec = echarts.getInstanceByDom(el);
  const errors = [];
  const onError = (e) => { errors.push(String(e.message)); e.preventDefault(); };
  window.addEventListener('error', onError);
  try {
    for (let i = 0; i < 5; i++) {
      // What a page passes: a fresh option, no component ids (getOption() would keep them).
      const option = Object.fromEntries(Object.entries(ec.getOption()).map(([k, v]) =>
        [k, Array.isArray(v) && k !== 'series' ? v.map(({ id, ...rest }) => rest) : v]));
      // New values under the pointer (a live update): the tooltip's content changes.
      const bump = (p) => (Array.isArray(p) && typeof p[1] === 'number' ? [p[0], p[1] + i + 1, ...p.slice(2)] : p);
      const bumped = option.series.map((s) => ({ ...s, data: (s.data || []).map((d) => (Array.isArray(d) ? bump(d) : d && d.value ? { ...d, value: bump(d.value) } : d)) }));
      ec.setOption({ series: bumped });  // the tooltip under the pointer arms its re-show timer
      if (guarded) charts.replaceOption(ec, option);
      else ec.setOption(option, { notMerge: true });
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    window.removeEventListener('error', onError);
  }
  return errors;
}"""


async def test_full_redraw_under_the_pointer_raises_nothing(server, org, page):
    await open_dashboard(server, org, page)
    box = (await chart(page, "Views")).locator(".chart-box")
    bbox = await box.bounding_box()
    await page.mouse.move(bbox["x"] + bbox["width"] / 2, bbox["y"] + bbox["height"] / 2)
    await page.mouse.move(
        bbox["x"] + bbox["width"] / 2 + 5, bbox["y"] + bbox["height"] / 2, steps=3
    )
    await page.wait_for_function(
        "([el]) => [...el.querySelectorAll('div')].some(d => d.style.pointerEvents === 'none' && d.style.display !== 'none' && d.textContent.trim())",
        arg=[await box.element_handle()],
    )
    handle = await box.element_handle()
    # The bare ECharts call throws from its timer: the hazard is real, so the guard is tested.
    assert any("innerHTML" in e for e in await page.evaluate(REDRAW_UNDER_POINTER, [handle, False]))
    await page.mouse.move(bbox["x"] + bbox["width"] / 2 + 3, bbox["y"] + bbox["height"] / 2)
    assert await page.evaluate(REDRAW_UNDER_POINTER, [handle, True]) == []


async def test_a_range_chosen_while_the_grid_mounts_is_kept(server, org, page):
    """The controls work as soon as the dashboard's title shows: a range chosen while the grid
    is still mounting (its script held back here) is the one every chart loads with — it used
    to be dropped, the controls being bound only after the mount."""
    import asyncio

    await seed_hour(server, org)
    dash = await make_dashboard(server, org.admin_token, CHARTS)
    await login(page, server, org.admin_token)
    release = asyncio.Event()

    async def hold(route):
        await release.wait()
        await route.continue_()

    await page.route("**/static/vendor/gridstack/gridstack-all.js*", hold)
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    await page.goto(f"{server.url}/d/{dash}", wait_until="domcontentloaded")
    await page.wait_for_function("() => document.getElementById('dash-title').textContent !== ''")
    assert not [b for b in query_bodies(requests)]  # nothing loaded yet: the grid is held
    await page.locator("#range").select_option("24h")
    assert url_state(page).get("range") == "24h"
    release.set()
    for title in ("Views", "Views per minute"):
        await wait_chart(page, title, "v => v.series.length >= 1")
        card = await chart(page, title)
        handle = await card.element_handle()
        await page.wait_for_function(
            f"([el]) => {{ const r = ({X_RANGE})(el); return r[1] - r[0] === 86400000; }}",
            arg=[handle],
        )
    bodies = query_bodies(requests)
    # Each chart's history read is the chosen day (later reads are its live tail); none asked
    # for the charts' own default hour.
    assert sum(b["from"] == "now-1d" for b in bodies) == 2, bodies
    assert not [b for b in bodies if b["from"] == "now-1h"], bodies
    assert await page.locator("#range").input_value() == "24h"
