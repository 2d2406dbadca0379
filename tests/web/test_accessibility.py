"""Accessible basics (issue 7): keyboard-only flows through the dashboard, the query builder and
the alerts pages with a visible focus ring at every stop; an accessible name on every control,
chart and the freshness badge (checked through Playwright's role locators); and the default
palette under simulated colour-vision deficiencies (the maths is here, no dependency)."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

from tests.web.conftest import api, login, post_events
from tests.web.test_pages import (
    COUNT,
    PAGEVIEWS,
    SUM,
    make_dashboard,
    open_seeded_dashboard,
    seed,
    wait_chart,
)

PALETTE_JS = Path(__file__).parents[2] / "app/web/static/js/palette.js"

# -- colour: the palette under protanopia, deuteranopia, tritanopia --------------------------------

# Machado, Oliveira & Fernandes (2009), "A Physiologically-based Model for Simulation of Color
# Vision Deficiency", severity 1.0 (full dichromacy): 3×3 matrices on linear RGB.
MACHADO = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}  # fmt: skip

# ΔE2000 ≥ 10 between every pair. 1–2.3 is a just-noticeable difference side by side on large
# patches; series colours are read off thin lines, small bars and legend swatches that are not
# adjacent, so we ask for a difference several times larger — ~10 is where categorical-palette
# tools (and the brief) put "distinguishable at a glance".
MIN_DELTA_E = 10.0
N_SERIES = 8  # every colour of the palette: ECharts only repeats after these


def palette_constants() -> dict[str, list[str]]:
    """The literals of app/web/static/js/palette.js — the one place the colours are written."""
    text = PALETTE_JS.read_text()
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"export const (\w+) = (\[[^\]]*\]|\"#[0-9A-Fa-f]{6}\");", text):
        out[name] = re.findall(r"#[0-9A-Fa-f]{6}", body)
    return out


def _linear(hex_colour: str) -> tuple[float, float, float]:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    h = hex_colour.lstrip("#")
    return tuple(channel(int(h[i : i + 2], 16)) for i in (0, 2, 4))  # type: ignore[return-value]


def simulate(rgb: tuple[float, float, float], cvd: str | None) -> tuple[float, float, float]:
    if cvd is None:
        return rgb
    m = MACHADO[cvd]
    return tuple(min(1.0, max(0.0, sum(m[i][j] * rgb[j] for j in range(3)))) for i in range(3))  # type: ignore[return-value]


def lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """Linear sRGB → CIELAB (D65)."""
    r, g, b = rgb
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e2000(c1: tuple[float, float, float], c2: tuple[float, float, float]) -> float:
    """CIEDE2000 (Sharma, Wu & Dalal 2005), kL = kC = kH = 1."""
    l1, a1, b1 = c1
    l2, a2, b2 = c2
    cbar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(cbar**7 / (cbar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360
    h2p = math.degrees(math.atan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    if c1p * c2p == 0:
        dhp = 0.0
    elif abs(h2p - h1p) <= 180:
        dhp = h2p - h1p
    else:
        dhp = h2p - h1p - 360 if h2p > h1p else h2p - h1p + 360
    dhhp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))
    lbp, cbp = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hbp = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hbp = (h1p + h2p) / 2
    else:
        hbp = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hbp - 30))
        + 0.24 * math.cos(math.radians(2 * hbp))
        + 0.32 * math.cos(math.radians(3 * hbp + 6))
        - 0.20 * math.cos(math.radians(4 * hbp - 63))
    )
    dtheta = 30 * math.exp(-(((hbp - 275) / 25) ** 2))
    rc = 2 * math.sqrt(cbp**7 / (cbp**7 + 25**7))
    sl = 1 + 0.015 * (lbp - 50) ** 2 / math.sqrt(20 + (lbp - 50) ** 2)
    sc = 1 + 0.045 * cbp
    sh = 1 + 0.015 * cbp * t
    rt = -math.sin(math.radians(2 * dtheta)) * rc
    return math.sqrt(
        (dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhhp / sh) ** 2 + rt * (dcp / sc) * (dhhp / sh)
    )


def test_delta_e2000_matches_sharma_reference_pairs():
    # Rows of the CIEDE2000 test data of Sharma, Wu & Dalal (2005), table 1.
    for c1, c2, expected in [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, -1.0, 2.0), (50.0, 0.0, 0.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ]:
        assert abs(delta_e2000(c1, c2) - expected) < 1e-4


def test_machado_simulation_keeps_greys_and_confuses_the_classic_pairs():
    grey = _linear("#808080")
    for cvd in MACHADO:
        assert all(abs(c - grey[0]) < 0.01 for c in simulate(grey, cvd))  # rows sum to 1
    # Red and green, far apart for normal vision, collapse for the red-green dichromacies.
    red, green = _linear("#d62728"), _linear("#2ca02c")
    normal = delta_e2000(lab(red), lab(green))
    assert normal > 50
    for cvd in ("protanopia", "deuteranopia"):  # only their lightness difference is left
        assert delta_e2000(lab(simulate(red, cvd)), lab(simulate(green, cvd))) < normal / 2
    assert delta_e2000(lab(simulate(red, "tritanopia")), lab(simulate(green, "tritanopia"))) > 40


def test_default_palette_survives_colour_blindness():
    consts = palette_constants()
    palette, other, ramp = consts["PALETTE"], consts["OTHER"][0], consts["SEQUENTIAL"]
    assert len(palette) >= N_SERIES
    lines, failures = [], []
    for cvd in (None, *MACHADO):
        labs = [lab(simulate(_linear(c), cvd)) for c in palette[:N_SERIES]]
        pairs = sorted(
            (delta_e2000(labs[i], labs[j]), palette[i], palette[j])
            for i, j in itertools.combinations(range(len(labs)), 2)
        )
        worst = pairs[0]
        other_de = delta_e2000(labs[0], lab(simulate(_linear(other), cvd)))
        lines.append(
            f"{cvd or 'normal':13} min ΔE2000 {worst[0]:5.1f} ({worst[1]}/{worst[2]}), "
            f"series 1 vs other {other_de:5.1f}"
        )
        failures += [p for p in pairs if p[0] < MIN_DELTA_E]
        if other_de < MIN_DELTA_E:
            failures.append((other_de, palette[0], other))
        # The heatmap ramp stays ordered: lightness strictly increases, adjacent stops apart.
        ramp_labs = [lab(simulate(_linear(c), cvd)) for c in ramp]
        assert all(a[0] < b[0] for a, b in itertools.pairwise(ramp_labs)), (cvd, ramp)
        steps = [delta_e2000(a, b) for a, b in itertools.pairwise(ramp_labs)]
        assert min(steps) >= MIN_DELTA_E, (cvd, steps)
    print("\n" + "\n".join(lines))
    assert not failures, f"indistinguishable pairs (ΔE2000 < {MIN_DELTA_E}): {failures}"


ECHARTS_COLOURS = """(box) => {
  const inst = echarts.getInstanceByDom(box);
  const o = inst.getOption();
  const data = inst.getModel().getSeriesByIndex(0).getData();
  const fills = [];
  for (let i = 0; i < Math.min(data.count(), 8); i++) {
    const s = data.getItemVisual(i, 'style');
    fills.push(s && s.fill);
  }
  return {color: o.color, ramp: o.visualMap && o.visualMap[0] ? o.visualMap[0].inRange.color : null,
          type: o.series[0].type, fills};
}"""


# -- names: every control, chart and live region ----------------------------------------------------

# Roles of everything a user can operate or that carries information in an image.
ROLES = ("button", "link", "textbox", "combobox", "listbox", "checkbox", "radio", "spinbutton",
         "slider", "switch", "tab", "searchbox", "img")  # fmt: skip
MARK_FOCUSABLES = """() => {
  const els = [...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex], [role=img]')]
    .filter((e) => e.checkVisibility() && !e.closest('[hidden], [aria-hidden=true]') && !e.disabled
                   && (e.getAttribute('tabindex') !== '-1' || e.getAttribute('role') === 'img'));
  els.forEach((e, i) => (e.dataset.a11yI = String(i)));
  return els.map((e) => e.outerHTML.slice(0, 160));
}"""


async def assert_all_named(page: Any, where: str) -> int:
    """Every visible control (and chart image) is exposed under a role with a non-empty
    accessible name: what `get_by_role(role, name=/\\S/)` finds covers all of them."""
    focusables = await page.evaluate(MARK_FOCUSABLES)
    named: set[str] = set()
    unnamed: list[str] = []
    for role in ROLES:
        every = page.get_by_role(role)
        with_name = page.get_by_role(role, name=re.compile(r"\S"))
        ids = await with_name.evaluate_all("els => els.map(e => e.dataset.a11yI || '?')")
        named.update(ids)
        if await every.count() != len(ids):
            html = await every.evaluate_all("els => els.map(e => e.outerHTML.slice(0, 160))")
            named_html = await with_name.evaluate_all(
                "els => els.map(e => e.outerHTML.slice(0, 160))"
            )
            unnamed += [f"{role}: {h}" for h in html if h not in named_html]
    missing = [h for i, h in enumerate(focusables) if str(i) not in named]
    assert not unnamed and not missing, f"{where}: without an accessible name: {unnamed + missing}"
    return len(focusables)


# -- keyboard ---------------------------------------------------------------------------------------

FOCUS_INFO = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const cs = getComputedStyle(el);
  let bg = 'rgb(255, 255, 255)';
  for (let n = el.parentElement; n; n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    if (c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c)) { bg = c; break; }
  }
  return {desc: `${el.tagName.toLowerCase()}#${el.id} "${(el.getAttribute('aria-label') || el.textContent || '').trim().slice(0, 30)}"`,
          style: cs.outlineStyle, width: parseFloat(cs.outlineWidth), colour: cs.outlineColor, bg,
          visible: el.matches(':focus-visible')};
}"""


def _luminance(css: str) -> float:
    r, g, b = (int(float(v)) for v in re.findall(r"[\d.]+", css)[:3])
    return sum(
        k * (c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4)
        for k, c in zip((0.2126, 0.7152, 0.0722), (r, g, b), strict=True)
    )


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


async def assert_focus_visible(page: Any) -> str:
    info = await page.evaluate(FOCUS_INFO)
    assert info is not None, "focus fell back to the document"
    assert info["visible"] and info["style"] != "none" and info["width"] >= 2, info
    # WCAG 2.2 non-text contrast: the ring against what surrounds it, at least 3:1.
    assert contrast(info["colour"], info["bg"]) >= 3, info
    return info["desc"]


async def tab_to(page: Any, target: Any, *, back: bool = False, max_steps: int = 60) -> list[str]:
    """Press Tab (Shift+Tab) until `target` has focus, checking the focus ring at every stop."""
    stops = []
    for _ in range(max_steps):
        await page.keyboard.press("Shift+Tab" if back else "Tab")
        stops.append(await assert_focus_visible(page))
        if await target.evaluate("el => el === document.activeElement"):
            return stops
    raise AssertionError(f"never reached {target} by keyboard; stops: {stops}")


async def is_focused(locator: Any) -> bool:
    return await locator.evaluate("el => el === document.activeElement")


async def test_dashboard_by_keyboard_only(server, org, page):
    """Change the range, drill down, go back, pause/resume and compare segments — keys only."""
    await open_seeded_dashboard(server, org, page)
    await page.wait_for_function(
        "() => document.getElementById('freshness').dataset.state === 'live'"
    )
    views = page.get_by_role("article", name="Views", exact=True)

    # Range picker: Tab to it, arrow to "Last 1 hour"; the granularity follows.
    range_box = page.get_by_role("combobox", name="Range")
    stops = await tab_to(page, range_box)
    assert stops[0].startswith("a#") and "Skip to content" in stops[0]  # the skip link is first
    await page.keyboard.press("ArrowDown")  # Last 5 min
    await page.keyboard.press("ArrowDown")  # Last 1 hour
    assert await range_box.input_value() == "1h"
    await views.get_by_text("Last hour · per minute").wait_for()
    await wait_chart(page, "Views", f"v => {SUM} === 3")

    # Drilldown: Tab to the DE value of the bar chart, Enter; focus lands on the new crumb.
    de = page.get_by_role("group", name="Drill into country").get_by_role(
        "button", name="DE", exact=True
    )
    await tab_to(page, de)
    await page.keyboard.press("Enter")
    crumbs = page.get_by_role("navigation", name="Drilldown filters")
    current = crumbs.get_by_text("country = DE")
    await current.wait_for()
    await page.wait_for_function(
        "() => document.activeElement.getAttribute('aria-current') === 'location'"
    )
    await assert_focus_visible(page)
    await wait_chart(page, "Views", f"v => {SUM} === 2")

    # Back to "All" with Shift+Tab and Space; focus goes to the dashboard's title.
    await tab_to(page, crumbs.get_by_role("button", name="All"), back=True, max_steps=3)
    await page.keyboard.press("Space")
    await wait_chart(page, "Views", f"v => {SUM} === 3")
    assert await crumbs.is_hidden()
    assert await is_focused(page.get_by_role("heading", name="Shop"))

    # Live / paused toggle: Space pauses, Enter resumes; the badge follows.
    toggle = page.get_by_role("button", name="Live")
    await tab_to(page, toggle)
    await page.keyboard.press("Space")
    await page.get_by_role("button", name="Paused").wait_for()
    assert await page.locator("#live-toggle").get_attribute("aria-pressed") == "false"
    await page.get_by_role("status").filter(has_text="paused").first.wait_for()
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Live").wait_for()
    assert await page.locator("#live-toggle").get_attribute("aria-pressed") == "true"

    # Comparison: back to the Compare select, arrow to "Segment…", Tab into the field, type, Enter.
    compare = page.get_by_role("combobox", name="Compare")
    await tab_to(page, compare, back=True, max_steps=3)
    await page.keyboard.press("ArrowDown")  # Previous period
    await page.keyboard.press("ArrowDown")  # Segment…
    assert await compare.input_value() == "segment"
    assert await is_focused(compare)  # a select's change never moves focus
    segment = page.get_by_role("textbox", name="Segment B")
    await tab_to(page, segment, max_steps=1)
    await page.keyboard.type("country=FR")
    await page.keyboard.press("Enter")
    drawn = await wait_chart(page, "Views", "v => v.series.some(s => s.name === 'country=FR')")
    by_name = {s["name"]: s for s in drawn["series"]}
    assert sum(p[1] or 0 for p in by_name["country=FR"]["data"]) == 1
    assert by_name["country=FR"]["lineStyle"]["type"] == "dashed"
    assert "compare=segment" in page.url and "range=1h" in page.url


async def test_builder_and_alerts_by_keyboard_only(server, org, page):
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/builder")
    await page.wait_for_function("() => document.body.dataset.preview === 'ok'")

    # Mode switch: Tab to the "Form" tab, Enter.
    form_tab = page.get_by_role("tab", name="Form")
    await tab_to(page, form_tab)
    await page.keyboard.press("Enter")
    assert await form_tab.get_attribute("aria-selected") == "true"
    await page.get_by_role("tabpanel", name="Form").wait_for()
    # Arrow keys move between the tabs too.
    await page.keyboard.press("ArrowLeft")
    assert (
        await page.get_by_role("tab", name="Metric language").get_attribute("aria-selected")
        == "true"
    )
    await page.keyboard.press("ArrowRight")
    assert await form_tab.get_attribute("aria-selected") == "true"

    # Form mode: pick the aggregate with the keyboard, add a filter, go to text.
    await tab_to(page, page.get_by_role("combobox", name="Aggregate"))
    await page.keyboard.press("ArrowDown")  # sum
    await tab_to(page, page.get_by_role("combobox", name="of column"))
    await page.keyboard.press("ArrowDown")  # value
    await tab_to(page, page.get_by_role("button", name="Add filter"))
    await page.keyboard.press("Space")
    await page.get_by_role("combobox", name="Filter dimension").wait_for()
    await tab_to(page, page.get_by_role("button", name="Edit as text"))
    await page.keyboard.press("Enter")
    text = page.get_by_role("textbox", name="Metric", exact=True)
    await text.wait_for()
    assert "sum(value)" in await text.inner_text()  # the CodeMirror editor (editor.js)

    # Save with the keyboard, then add it to a new dashboard.
    await tab_to(page, page.get_by_role("textbox", name="Save as metric"))
    await page.keyboard.type("Revenue (kbd)")
    await page.keyboard.press("Enter")
    await page.get_by_role("status").filter(has_text="Saved as metric").wait_for()
    await tab_to(page, page.get_by_role("button", name="Add chart"))
    await page.keyboard.press("Enter")
    await page.get_by_role("link", name="Open the dashboard").wait_for()

    # Alerts: fill the form and create, keys only.
    await page.goto(f"{server.url}/a")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await tab_to(page, page.get_by_role("textbox", name="Name"))
    await page.keyboard.type("Errors (kbd)")
    await tab_to(page, page.get_by_role("spinbutton", name="Threshold"))
    await page.keyboard.press("Control+A")
    await page.keyboard.type("3")
    await tab_to(page, page.get_by_role("combobox", name="Severity"))
    await page.keyboard.press("ArrowDown")  # critical
    await tab_to(page, page.get_by_role("button", name="Create alert"))
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/a/*")
    alert_id = int(page.url.rsplit("/", 1)[1])
    await page.get_by_role("heading", name="Edit alert").wait_for()
    # Edit: Space unticks "Enabled", Enter on "Save changes".
    await tab_to(page, page.get_by_role("checkbox", name="Enabled"))
    await page.keyboard.press("Space")
    await tab_to(page, page.get_by_role("button", name="Save changes"))
    await page.keyboard.press("Enter")
    await page.get_by_role("status").filter(has_text="Saved.").wait_for()
    saved = (await api(server, org.admin_token, "GET", f"/alerts/{alert_id}")).json()
    assert (saved["name"], saved["threshold"], saved["severity"], saved["enabled"]) == (
        "Errors (kbd)",
        3,
        "critical",
        False,
    )


async def test_every_control_chart_and_badge_has_a_name_and_the_palette(server, org, page):
    await seed(server, org)
    dash = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Views", "metric_inline": PAGEVIEWS, "default_range": "5m"},
            {"chart_type": "bar", "title": "Countries", "metric_inline": COUNT, "default_range": "1h", "dimension": "country"},
            {"chart_type": "heatmap", "title": "Heat", "metric_inline": COUNT, "default_range": "7d", "options": {"axes": "weekday_hour"}},
            {"chart_type": "funnel", "title": "Funnel", "metric_inline": COUNT, "default_range": "1h",
             "options": {"steps": ["pageview", "purchase"], "window_seconds": 3600}},
        ],
    )  # fmt: skip
    await page.goto(f"{server.url}/login")
    await assert_all_named(page, "login")
    await login(page, server, org.admin_token)
    await assert_all_named(page, "dashboards")

    await page.goto(f"{server.url}/d/{dash}")
    await wait_chart(page, "Funnel", "v => v.series.length && v.series[0].data.length === 2")
    await wait_chart(page, "Heat", "v => v.series.length && v.series[0].data.length === 168")
    await wait_chart(page, "Countries", "v => v.xAxis && v.xAxis.length === 2")
    await wait_chart(page, "Views", f"v => {SUM} === 3")

    # The freshness badge is a polite live region with its state as text.
    badge = page.get_by_role("status").filter(has_text=re.compile(r"^● ?live$|^live$"))
    await page.wait_for_function(
        "() => document.getElementById('freshness').dataset.state === 'live'"
    )
    assert await badge.count() == 1
    assert await page.locator("#freshness").get_attribute("aria-live") == "polite"

    # Each chart is an image whose name summarises what it shows, with its numbers.
    for name in (
        r"^Views \(.*\): lines over time, 1 series: page_views total 3, latest",
        r"^Countries \(.*\): bar chart of events_n by country: DE 3, FR 2",
        r"^Heat \(.*\): heatmap of events_n by 7 rows × 24 columns: total 5, highest",
        r"^Funnel \(.*\): funnel: 1\. pageview 3 users; 2\. purchase 2 users \(66\.7% of the previous step\)",
    ):
        labels = await page.locator(".chart-box").evaluate_all(
            "els => els.map(e => e.getAttribute('aria-label'))"
        )
        assert await page.get_by_role("img", name=re.compile(name)).count() == 1, labels
    n = await assert_all_named(page, "dashboard")
    assert n >= 15  # skip link, brand, nav, logout, 3 controls, DE/FR, 4 charts

    # ECharts draws every chart type with the palette of palette.js (heatmap: its ramp).
    consts = palette_constants()
    palette = [c.lower() for c in consts["PALETTE"]]
    for box in await page.locator(".chart-box").all():
        got = await box.evaluate(ECHARTS_COLOURS)
        assert [c.lower() for c in got["color"]] == palette, got
        if got["type"] == "heatmap":
            assert [c.lower() for c in got["ramp"]] == [c.lower() for c in consts["SEQUENTIAL"]]
        elif got["type"] == "funnel":  # one colour per step, in palette order
            assert [f.lower() for f in got["fills"]] == palette[: len(got["fills"])]
        else:
            assert got["fills"][0].lower() == palette[0], got

    # Drilled, custom range, segment comparison: the controls that appear are named too.
    await page.goto(
        f'{server.url}/d/{dash}?f=[{{"dimension":"country","op":"=","value":"DE"}}]&compare=segment&segment=country%3DFR'
    )
    await (
        page.get_by_role("navigation", name="Drilldown filters")
        .get_by_text("country = DE")
        .wait_for()
    )
    await page.get_by_label("Range").select_option("custom")
    await page.get_by_label("From").wait_for()
    await wait_chart(page, "Views", "v => v.series.length === 2")
    await assert_all_named(page, "dashboard, drilled, custom range, segment")

    # Query builder: both modes, a filter row, the add-to-dashboard form.
    await page.goto(f"{server.url}/builder")
    await page.wait_for_function("() => document.body.dataset.preview === 'ok'")
    await page.get_by_role("img", name=re.compile(r"^Preview chart.*: lines over time")).wait_for()
    await assert_all_named(page, "builder, text")
    await page.get_by_role("tab", name="Form").click()
    await page.get_by_role("button", name="Add filter").click()
    await assert_all_named(page, "builder, form")
    await page.get_by_role("tab", name="Metric language").click()
    await page.get_by_label("Save as metric").fill("Named metric")
    await page.get_by_role("button", name="Save metric").click()
    await page.get_by_role("button", name="Add chart").wait_for()
    await assert_all_named(page, "builder, saved")

    # Alerts: the list (with a row) and one alert's page; a toast's dismiss button.
    r = await api(
        server,
        org.admin_token,
        "POST",
        "/alerts",
        {"name": "Named", "metric_inline": {"text": "SELECT count() AS n"}, "comparator": ">",
         "threshold": 0, "for_seconds": 1, "severity": "critical"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    await page.goto(f"{server.url}/a")
    await page.get_by_role("link", name="Named").wait_for()
    await assert_all_named(page, "alerts")
    await page.goto(f"{server.url}/a/{r.json()['id']}")
    await page.get_by_role("heading", name="Edit alert").wait_for()
    await page.wait_for_function(
        "() => document.getElementById('freshness').dataset.state === 'live'"
    )
    await post_events(server, org.api_key, [{"event": "pageview"}])
    await page.locator(".toast", has_text="Named is firing").wait_for()
    await assert_all_named(page, "alert, with a toast")
