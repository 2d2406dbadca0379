"""The page shell in real Chromium: no horizontal scroll on a phone, light/dark colours from
the system and the per-user toggle, the alerts page keeping up live, the form's errors by its
Save button. The frozen-server watchdog is in test_watchdog.py (it needs a server process)."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.web.conftest import api, login, post_events

TIMEOUT_MS = 30_000  # hang guard only; nothing asserts on time
COUNT = {"text": "SELECT count() AS events_n"}
PAGEVIEWS = {"text": "SELECT countIf(event = 'pageview') AS page_views"}
EVERY_CHART = [
    {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "5m"},
    {"chart_type": "bar", "title": "Countries", "metric_inline": COUNT, "default_range": "1h", "dimension": "country"},
    {"chart_type": "line", "title": "Per device", "metric_inline": COUNT, "default_range": "1h", "dimension": "device"},
    {"chart_type": "heatmap", "title": "Heat", "metric_inline": COUNT, "default_range": "7d", "options": {"axes": "weekday_hour"}},
    {"chart_type": "funnel", "title": "Funnel", "metric_inline": COUNT, "default_range": "1h",
     "options": {"steps": ["pageview", "purchase"], "window_seconds": 3600}},
]  # fmt: skip
OVERFLOW = """() => {
  const width = window.innerWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter((el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.right > width + 0.5; })
    .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`);
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, wide: wide.slice(0, 8)};
}"""


async def _seed(server, org) -> None:
    now_ms = int(time.time() * 1000)
    await post_events(
        server,
        org.api_key,
        [
            {"event": "pageview", "user_id": f"u{i}", "ip": "5.9.0.1", "ts": now_ms - 1000 * i,
             "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1"}
            for i in range(6)
        ] + [{"event": "purchase", "user_id": "u1", "value": 20, "ts": now_ms - 500}],
    )  # fmt: skip


async def _alert(server, org, **over: Any) -> int:
    body = {
        "name": "Checkout errors",
        "metric_inline": {"text": "SELECT countIf(event = 'error') AS errors"},
        "comparator": ">",
        "threshold": 3,
        "for_seconds": 10,
        "webhook_url": "https://hooks.example.com/clickpulse/a/rather/long/path/that/wraps",
        **over,
    }
    r = await api(server, org.admin_token, "POST", "/alerts", body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _assert_fits(page, what: str) -> None:
    measured = await page.evaluate(OVERFLOW)
    assert measured["scrollWidth"] <= measured["innerWidth"], (what, measured)


async def test_no_page_scrolls_sideways_at_360_and_390_px(server, org, browser):
    await _seed(server, org)
    r = await api(
        server, org.admin_token, "POST", "/dashboards", {"name": "Shop", "charts": EVERY_CHART}
    )
    assert r.status_code == 201, r.text
    dash = r.json()["id"]
    alert_id = await _alert(server, org)
    r = await api(
        server,
        org.admin_token,
        "POST",
        "/tokens",
        {"email": "someone.with.a.long.address@example.com", "role": "viewer"},
    )
    assert r.status_code == 201, r.text
    # A page's own wait: what makes it its widest (charts drawn, tables filled, forms shown).
    pages = [
        ("/login", "#login-form"),
        ("/", "#dashboard-list li"),
        (f"/d/{dash}", "article[data-chart-type=funnel] canvas"),
        (f"/d/{dash}?range=custom&from={int(time.time()) - 86400}&to={int(time.time())}&compare=segment&segment=country%3DDE", "article canvas"),
        ("/builder", "#preview canvas"),
        ("/a", "#alert-table tr[data-alert-id]"),
        (f"/a/{alert_id}", "#history:not([hidden])"),
        ("/admin/tokens", "#token-table tbody tr"),
    ]  # fmt: skip
    for width in (360, 390):
        context = await browser.new_context(viewport={"width": width, "height": 844})
        context.set_default_timeout(60_000)
        page = await context.new_page()
        try:
            await page.goto(f"{server.url}/login")
            await page.locator("#login-form").wait_for()
            await _assert_fits(page, f"{width} login")
            await login(page, server, org.admin_token)
            for path, ready in pages[1:]:
                await page.goto(f"{server.url}{path}")
                await page.locator(ready).first.wait_for(state="attached")
                await _assert_fits(page, f"{width} {path}")
            # The builder's form mode with a filter row, and the alert form showing an error.
            await page.goto(f"{server.url}/builder")
            await page.get_by_role("tab", name="Form").click()
            await page.get_by_role("button", name="Add filter").click()
            await _assert_fits(page, f"{width} builder form")
            await page.goto(f"{server.url}/a")
            await page.get_by_label("Name").fill("x" * 200)
            await page.get_by_label("Webhook URL").fill("ftp://example.com/" + "long/" * 30)
            await page.get_by_role("button", name="Create alert").click()
            await page.locator("#alert-error").get_by_text("webhook_url").wait_for()
            await _assert_fits(page, f"{width} alert form with an error")
        finally:
            await context.close()


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i : i + 2], 16) for i in (0, 2, 4)))


COLOURS = """() => {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim().toLowerCase();
  return {theme: document.documentElement.dataset.theme, bg: v('--bg'), fg: v('--fg'), muted: v('--muted'),
          grid: v('--grid'), accent: v('--accent'), cardBg: v('--card-bg'),
          body: getComputedStyle(document.documentElement).backgroundColor, text: getComputedStyle(document.body).color,
          card: getComputedStyle(document.querySelector('.card') || document.body).backgroundColor};
}"""
LIGHT = {
    "bg": "#f6f8fa",
    "fg": "#1b1f24",
    "muted": "#57606a",
    "grid": "#d0d7de",
    "accent": "#0072b2",
    "cardBg": "#fff",
}
DARK = {
    "bg": "#0d1117",
    "fg": "#e6edf3",
    "muted": "#9da7b3",
    "grid": "#30363d",
    "accent": "#56b4e9",
    "cardBg": "#161b22",
}


async def _colours(page) -> dict[str, str]:
    return await page.evaluate(COLOURS)


async def test_dark_mode_follows_the_system_and_the_toggle_is_remembered_per_user(
    server, org, make_org, browser
):
    other = await make_org("globex")
    context = await browser.new_context(
        viewport={"width": 1200, "height": 900}, color_scheme="dark"
    )
    context.set_default_timeout(60_000)
    page = await context.new_page()
    try:
        # The system says dark: dark before anyone chose (login page included).
        await page.goto(f"{server.url}/login")
        got = await _colours(page)
        assert got["theme"] == "dark"
        assert {k: got[k] for k in DARK} == DARK
        assert got["body"] == _rgb(DARK["bg"]) and got["text"] == _rgb(DARK["fg"])
        assert got["card"] == _rgb(DARK["cardBg"])
        await login(page, server, org.admin_token)
        await page.wait_for_function("() => localStorage.getItem('clickpulse.me') !== null")
        assert (await _colours(page))["theme"] == "dark"
        toggle = page.get_by_role("combobox", name="Colour theme")
        assert await toggle.input_value() == "system"

        # The toggle: light, announced by a `theme` event (what charts listen to).
        await page.evaluate(
            "() => { window.themeEvents = []; window.addEventListener('theme', (e) => window.themeEvents.push(e.detail)); }"
        )
        await toggle.select_option("light")
        got = await _colours(page)
        assert got["theme"] == "light" and {k: got[k] for k in LIGHT} == LIGHT
        assert got["body"] == _rgb(LIGHT["bg"])
        assert await page.evaluate("window.themeEvents") == [{"theme": "light", "choice": "light"}]

        # Remembered across pages and reloads, applied before the first paint (no module
        # script needed: the theme is on <html> when DOMContentLoaded fires).
        await page.goto(f"{server.url}/builder")
        assert await page.evaluate("document.documentElement.dataset.theme") == "light"
        assert await page.get_by_role("combobox", name="Colour theme").input_value() == "light"

        # Per user: another user in the same browser follows the system until they choose.
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url("**/login")
        await login(page, server, other.admin_token)
        await page.wait_for_function(
            f"() => (localStorage.getItem('clickpulse.me') || '').startsWith('{other.id}:')"
        )
        await page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url("**/login")
        await login(page, server, org.admin_token)
        await page.wait_for_function("() => document.documentElement.dataset.theme === 'light'")

        # Back to "system": the system's dark again, and a change of the system is followed.
        await page.get_by_role("combobox", name="Colour theme").select_option("system")
        assert (await _colours(page))["theme"] == "dark"
        await page.emulate_media(color_scheme="light")
        await page.wait_for_function("() => document.documentElement.dataset.theme === 'light'")
        assert (await _colours(page))["bg"] == LIGHT["bg"]
    finally:
        await context.close()


async def test_alerts_page_keeps_up_live_and_errors_sit_by_save(server, org, page, browser):
    # It stays firing for the rest of the test (resolve_after_seconds).
    alert_id = await _alert(
        server, org, name="Any traffic", metric_inline={"text": "SELECT count() AS n"},
        threshold=0, for_seconds=1, resolve_after_seconds=600, webhook_url=None, severity="critical",
    )  # fmt: skip
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/a")
    row_state = page.locator(f'#alert-table tr[data-alert-id="{alert_id}"] .state')
    await row_state.wait_for()
    assert await row_state.text_content() == "ok"
    detail = await page.context.new_page()
    await detail.goto(f"{server.url}/a/{alert_id}")
    await detail.get_by_role("heading", name="History").wait_for()
    assert (await detail.locator("#alert-status").text_content()).startswith("State: ok")
    for p in (page, detail):
        await p.evaluate("() => { window.sameDocument = true; }")
        await p.wait_for_function(
            "() => document.getElementById('freshness').dataset.state === 'live'"
        )

    # Seconds a little ahead: the evaluator judges each second once, ~1.5 s after it ends, so
    # seconds already judged (as 0) while the pages were opening could never fire.
    now_ms = int(time.time() * 1000)
    await post_events(
        server,
        org.api_key,
        [{"event": "pageview", "ts": now_ms + 2000 + i * 1000} for i in range(4)],
    )
    await page.wait_for_function(
        f"""() => document.querySelector('#alert-table tr[data-alert-id="{alert_id}"] .state')?.textContent === 'firing'""",
        timeout=TIMEOUT_MS,
    )
    await detail.wait_for_function(
        "() => document.getElementById('alert-status').textContent.startsWith('State: firing')",
        timeout=TIMEOUT_MS,
    )
    await detail.locator("#history-table tbody tr", has_text="firing").first.wait_for()
    for p in (page, detail):
        assert await p.evaluate("window.sameDocument") is True  # no reload happened
    stored = (await api(server, org.admin_token, "GET", f"/alerts/{alert_id}")).json()
    assert stored["state"] == "firing"
    await detail.close()

    # The Enabled checkbox lines up with the other fields; an error shows next to Save and
    # marks its field — on a desktop and on a phone.
    for width in (1400, 390):
        context = await browser.new_context(viewport={"width": width, "height": 900})
        context.set_default_timeout(60_000)
        p = await context.new_page()
        try:
            await login(p, server, org.admin_token)
            await p.goto(f"{server.url}/a/{alert_id}")
            await p.get_by_role("heading", name="Edit alert").wait_for()
            name_box = await p.get_by_label("Name").bounding_box()
            box = await p.get_by_label("Enabled").bounding_box()
            assert abs(box["x"] - name_box["x"]) <= 1, (width, box, name_box)
            await p.get_by_label("Webhook URL").fill("ftp://example.com/hook")
            save = p.get_by_role("button", name="Save changes")
            await save.click()
            error = p.locator("#alert-error")
            await error.get_by_text("webhook_url").wait_for()
            assert await p.get_by_label("Webhook URL").get_attribute("aria-invalid") == "true"
            save_box = await save.bounding_box()
            error_box = await error.bounding_box()
            if width == 1400:  # on the same line, right of the button
                assert error_box["x"] >= save_box["x"] + save_box["width"]
                assert (
                    abs(
                        (error_box["y"] + error_box["height"] / 2)
                        - (save_box["y"] + save_box["height"] / 2)
                    )
                    < save_box["height"]
                )
            else:  # wrapped right under it
                assert 0 <= error_box["y"] - (save_box["y"] + save_box["height"]) <= 24
            assert re.search(r"webhook", await error.text_content())
        finally:
            await context.close()
