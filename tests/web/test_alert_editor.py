"""The alert workflow in real Chromium (docs/ui.md, "Alerts"): the editor's backtest chart —
threshold and recovery lines, the would-have-fired intervals and their count, shown before
Save and equal to the API's answer; an anomaly alert's band; channels made in the UI and
picked by an alert; a silence of a metric's alerts; firings drawn on a dashboard chart."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from tests.web.conftest import api, login, post_events

TIMEOUT_MS = 30_000  # hang guard for waits on live data; nothing asserts on time

# The ECharts option of the editor's chart, reduced to what the tests compare.
EDITOR_OPTION = """() => {
  const inst = echarts.getInstanceByDom(document.getElementById('bt-chart'));
  const o = inst && inst.getOption();
  if (!o || !o.series) return null;
  const byId = Object.fromEntries(o.series.map((s) => [s.id, s]));
  const pt = (d) => Array.isArray(d) ? d : (d && Array.isArray(d.value) ? d.value : d);
  return {
    ids: o.series.map((s) => s.id),
    lines: byId.thresholds ? byId.thresholds.markLine.data.map((d) => [d.name, d.yAxis]) : [],
    areas: byId['would-fire'] ? byId['would-fire'].markArea.data.map((p) => [p[0].xAxis, p[1].xAxis]) : [],
    values: byId.values ? byId.values.data.map(pt) : [],
    bandLower: byId['band-lower'] ? byId['band-lower'].data.map(pt) : [],
    bandWidth: byId.band ? byId.band.data.map(pt) : [],
  };
}"""


async def seed_history(server, org, spike_minutes_ago=range(20, 25), per_minute=180) -> int:
    """50 minutes of one event a minute, and `per_minute` events in each spike minute (3/s on
    average at 180). Answers the first spike minute (epoch s)."""
    now_minute = int(time.time()) // 60 * 60
    events: list[dict[str, Any]] = []
    for ago in range(1, 51):
        start = now_minute - ago * 60
        n = per_minute if ago in spike_minutes_ago else 1
        events += [{"event": "error", "ts": (start + i * 60 // n) * 1000} for i in range(n)]
    for i in range(0, len(events), 500):
        await post_events(server, org.api_key, events[i : i + 500])
    return now_minute - max(spike_minutes_ago) * 60


async def saved_metric(server, org, name="Errors", text="SELECT count() AS errors") -> int:
    r = await api(
        server, org.admin_token, "POST", "/metrics", {"name": name, "definition": {"text": text}}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def editor_when(page, predicate: str) -> dict[str, Any]:
    """The editor's option once the last backtest has landed and `predicate(option)` holds."""
    await page.wait_for_function(
        f"() => document.body.dataset.backtest === 'ok' && (o => !!o && ({predicate})(o))(({EDITOR_OPTION})())",
        timeout=TIMEOUT_MS,
    )
    return await page.evaluate(EDITOR_OPTION)


async def test_backtest_and_threshold_lines_shown_before_save(server, org, page):
    spike = await seed_history(server, org)
    metric_id = await saved_metric(server, org)
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/a")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await page.get_by_label("Name").fill("Error burst")
    await page.get_by_label("Metric", exact=True).select_option(str(metric_id))
    await page.get_by_label("Over the last").select_option("3600")
    await page.get_by_label("Comparator").select_option(">")
    await page.get_by_label("Threshold", exact=True).fill("2")
    await page.get_by_label("Recovery level").fill("1")
    await page.get_by_label("For seconds").fill("60")
    option = await editor_when(
        page, "o => o.lines.length === 2 && o.lines[0][1] === 2 && o.lines[1][1] === 1"
    )
    assert option["lines"] == [["threshold", 2], ["recovery", 1]]

    body = {
        "metric_id": metric_id,
        "kind": "threshold",
        "comparator": ">",
        "threshold": 2,
        "recovery_threshold": 1,
        "for_seconds": 60,
        "keep_firing_seconds": 0,
        "from": "now-3600s",
    }
    r = await api(server, org.admin_token, "POST", "/alerts/backtest", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    firings = [e for e in answer["events"] if e["kind"] == "firing"]
    assert [e["t"] for e in firings] == [spike]  # the 5-minute burst, once
    resolved = [e["t"] for e in answer["events"] if e["kind"] == "resolved"]
    # Shown before Save: the count, the interval (firing → resolved) and the judged values.
    summary = page.locator("#bt-summary")
    assert await summary.inner_text() == "Would have fired 1 time in the last 1 h."
    assert await summary.get_attribute("data-count") == str(len(firings))
    assert option["areas"] == [[spike * 1000, resolved[0] * 1000]]
    values = {t // 1000: v for t, v in option["values"]}
    assert values[spike] == 3.0  # 180 events in the minute: 3 per second, as the alert judges
    assert (await api(server, org.admin_token, "GET", "/alerts")).json() == []

    # A change to the threshold redraws the line and re-runs the backtest.
    await page.get_by_label("Threshold", exact=True).fill("5")
    await page.get_by_label("Recovery level").fill("")
    option = await editor_when(page, "o => o.lines.length === 1 && o.lines[0][1] === 5")
    assert option["areas"] == []
    assert await summary.inner_text() == "Would have fired 0 times in the last 1 h."
    await page.get_by_role("button", name="Create alert").click()
    await page.wait_for_url("**/a/*")
    [saved] = (await api(server, org.admin_token, "GET", "/alerts")).json()
    assert (saved["metric_id"], saved["threshold"], saved["recovery_threshold"]) == (
        metric_id,
        5,
        None,
    )
    # The editor of the saved alert shows its own backtest at once.
    await editor_when(page, "o => o.lines.length === 1 && o.lines[0][1] === 5")


async def test_anomaly_kind_draws_its_band(server, org, page):
    await seed_history(server, org, spike_minutes_ago=range(3, 5), per_minute=600)
    metric_id = await saved_metric(server, org)
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/a")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await page.get_by_label("Metric", exact=True).select_option(str(metric_id))
    await page.get_by_label("Over the last").select_option("3600")
    await page.get_by_label("Kind").select_option("anomaly")
    assert await page.get_by_label("Threshold", exact=True).is_hidden()
    await page.get_by_label("Baseline").select_option("hour")
    await page.get_by_label("Sensitivity", exact=True).fill("3")
    await page.get_by_label("Min band").fill("2")
    await page.get_by_label("For seconds").fill("60")
    option = await editor_when(
        page, "o => o.ids.includes('band') && o.bandWidth.some((p) => p[1] !== null)"
    )
    assert option["lines"] == []  # a band, no threshold line
    body = {
        "metric_id": metric_id,
        "kind": "anomaly",
        "anomaly": {"baseline": "hour", "direction": "both", "sensitivity": 3, "min_band": 2},
        "for_seconds": 60,
        "from": "now-3600s",
    }
    r = await api(server, org.admin_token, "POST", "/alerts/backtest", body)
    assert r.status_code == 200, r.text
    band = r.json()["band"]
    api_lower = {t * 1000: v for t, v in zip(band["t"], band["lower"], strict=True)}
    api_width = {
        t * 1000: (None if lo is None else up - lo)
        for t, lo, up in zip(band["t"], band["lower"], band["upper"], strict=True)
    }
    drawn_lower = {t: v for t, v in option["bandLower"]}
    drawn_width = {t: v for t, v in option["bandWidth"]}
    # The same minutes (the two "now"s can be a minute apart), but for the newest two: the one
    # still filling when the first of the two was asked can differ.
    shared = set(drawn_lower) & set(api_lower)
    shared -= set(sorted(shared)[-2:])
    assert len(shared) > 30
    mismatch = [
        (t, drawn_lower[t], api_lower[t]) for t in sorted(shared) if drawn_lower[t] != api_lower[t]
    ]
    assert not mismatch, mismatch
    assert all(drawn_width[t] == api_width[t] for t in shared)
    assert any(drawn_width[t] is not None for t in shared)
    fired = sum(1 for e in r.json()["events"] if e["kind"] == "firing")
    assert fired >= 1  # the 600/min burst leaves the hour's band
    text = await page.locator("#bt-summary").inner_text()
    assert text.startswith("Would have fired ") and text.endswith(" in the last 1 h.")


async def test_channels_created_in_the_ui_and_picked_by_an_alert(server, org, page):
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/a")
    await page.get_by_role("link", name="Notification channels").click()
    await page.wait_for_url("**/a/channels")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await page.get_by_text("No channels yet.").wait_for()
    await page.get_by_label("Name", exact=True).fill("Ops hook")
    await page.get_by_label("URL").fill("https://hooks.example.com/clickpulse/T0K3N")
    await page.get_by_role("button", name="Add channel").click()
    row = page.locator("#channel-table tr", has_text="Ops hook")
    await row.wait_for()
    # The URL's path (often a token) is never shown, only its host.
    assert await row.locator("td").nth(2).inner_text() == "https://hooks.example.com/…"
    secret = await page.locator("#channel-secret-value").inner_text()
    [stored] = (await api(server, org.admin_token, "GET", "/alerts/channels")).json()
    assert (stored["name"], stored["kind"], stored["secret"]) == ("Ops hook", "webhook", None)
    assert len(secret) >= 32

    # Email: the form's SMTP fields.
    await page.get_by_label("Kind").select_option("email")
    await page.get_by_label("Name", exact=True).fill("On-call mail")
    await page.get_by_label("SMTP host").fill("smtp.example.com")
    await page.get_by_label("From").fill("alerts@example.com")
    await page.get_by_label("To", exact=True).fill("oncall@example.com, ops@example.com")
    await page.get_by_role("button", name="Add channel").click()
    await page.locator("#channel-table tr", has_text="On-call mail").wait_for()
    email = next(
        c
        for c in (await api(server, org.admin_token, "GET", "/alerts/channels")).json()
        if c["kind"] == "email"
    )
    assert email["settings"]["to"] == ["oncall@example.com", "ops@example.com"]
    assert email["settings"]["host"] == "smtp.example.com"

    # Rotating shows a new secret once; the old one no longer signs.
    await page.get_by_role("button", name="Rotate the secret of Ops hook").click()
    await page.wait_for_function(
        "(old) => document.getElementById('channel-secret-value')?.textContent !== old",
        arg=secret,
    )

    # An alert picks the channel; deleting the channel is then refused, naming the alert.
    await page.goto(f"{server.url}/a")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await page.get_by_label("Name").fill("Checkout errors")
    await page.get_by_label("Ops hook (webhook)").check()
    await page.get_by_role("button", name="Create alert").click()
    await page.wait_for_url("**/a/*")
    [alert] = (await api(server, org.admin_token, "GET", "/alerts")).json()
    assert alert["channel_ids"] == [stored["id"]]
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    assert await page.get_by_label("Ops hook (webhook)").is_checked()
    assert not await page.get_by_label("On-call mail (email)").is_checked()
    await page.goto(f"{server.url}/a/channels")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    assert await row.locator("td").nth(3).inner_text() == "Checkout errors"
    page.on("dialog", lambda d: d.accept())
    await page.get_by_role("button", name="Delete channel Ops hook").click()
    await page.locator("#channel-error", has_text="Checkout errors notify it").wait_for()
    await page.get_by_role("button", name="Delete channel On-call mail").click()
    await page.locator("#channel-table tr", has_text="On-call mail").wait_for(state="detached")
    assert [
        c["name"] for c in (await api(server, org.admin_token, "GET", "/alerts/channels")).json()
    ] == ["Ops hook"]


async def test_silence_every_alert_of_a_metric_shows_its_end(server, org, page):
    metric_id = await saved_metric(server, org)
    body = {
        "name": "Errors",
        "metric_id": metric_id,
        "comparator": ">",
        "threshold": 5,
        "for_seconds": 10,
    }
    r = await api(server, org.admin_token, "POST", "/alerts", body)
    assert r.status_code == 201, r.text
    alert_id = r.json()["id"]
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/a/{alert_id}")
    await page.get_by_text("Notifications are sent.").wait_for()
    until = time.localtime(time.time() + 3 * 3600)  # the browser runs in this machine's zone
    await page.get_by_label("Applies to").select_option("metric")
    await page.get_by_label("Silence until…").fill(time.strftime("%Y-%m-%dT%H:%M", until))
    await page.get_by_label("Reason").fill("load test")
    await page.get_by_role("button", name="Silence notifications").click()
    badge = page.locator("#silence-state .badge-silenced")
    await badge.wait_for()
    [silence] = (await api(server, org.admin_token, "GET", "/alerts/silences")).json()
    assert (silence["metric_id"], silence["alert_id"], silence["reason"]) == (
        metric_id,
        None,
        "load test",
    )
    ends = datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00"))
    assert ends.timestamp() == time.mktime(until[:5] + (0, 0, 0, -1))
    # The end time in the UI's zone (time.js: the browser's unless chosen), to the minute.
    shown = await page.evaluate(
        "async (iso) => (await import('/static/app/js/time.js')).dateTime(Date.parse(iso))",
        silence["ends_at"],
    )
    assert await badge.inner_text() == f"silenced until {shown}"
    await page.get_by_text("(a silence of its metric)").wait_for()
    await page.goto(f"{server.url}/a")
    await page.locator(f'tr[data-alert-id="{alert_id}"] .badge-silenced', has_text=shown).wait_for()
    await page.goto(f"{server.url}/a/{alert_id}")
    await page.get_by_role("button", name="End the metric's silence").click()
    await page.get_by_text("Notifications are sent.").wait_for()
    assert (await api(server, org.admin_token, "GET", "/alerts/silences")).json() == []


async def test_firings_drawn_on_the_dashboard_chart_of_the_metric(server, org, page):
    metric_id = await saved_metric(server, org, "Traffic", "SELECT count() AS n")
    other_id = await saved_metric(server, org, "Purchases", "SELECT countIf(event = 'buy') AS n")
    body = {
        "name": "Any traffic",
        "metric_id": metric_id,
        "comparator": ">",
        "threshold": 0,
        "for_seconds": 1,
    }
    r = await api(server, org.admin_token, "POST", "/alerts", body)
    assert r.status_code == 201, r.text
    alert_id = r.json()["id"]
    charts = [
        {"chart_type": "line", "title": "Traffic", "metric_id": metric_id, "default_range": "1h"},
        {"chart_type": "line", "title": "Purchases", "metric_id": other_id, "default_range": "1h"},
    ]
    r = await api(server, org.admin_token, "POST", "/dashboards", {"name": "Ops", "charts": charts})
    assert r.status_code == 201, r.text
    dash = r.json()["id"]
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/d/{dash}")
    await page.wait_for_function(
        "() => document.getElementById('freshness').dataset.state === 'live'"
    )
    now_ms = int(time.time() * 1000)
    await post_events(
        server, org.api_key, [{"event": "pageview", "ts": now_ms - i * 1000} for i in range(3)]
    )
    # The alert fires for real (the evaluator on the push ticks); the page hears it and draws it.
    areas = """(title) => {
      const card = [...document.querySelectorAll('article.chart-card')].find((a) => document.getElementById(a.getAttribute('aria-labelledby'))?.textContent === title);
      const inst = card && echarts.getInstanceByDom(card.querySelector('.chart-box'));
      const s = inst && (inst.getOption()?.series || []).find((x) => x && x.id === 'alert-firings');
      return s ? s.markArea.data.map((p) => [p[0].xAxis, p[1].xAxis, p[0].name]) : [];
    }"""
    await page.wait_for_function(f"() => ({areas})('Traffic').length > 0", timeout=TIMEOUT_MS)
    events = (await api(server, org.admin_token, "GET", f"/alerts/{alert_id}/events")).json()[
        "events"
    ]
    fired = [e for e in events if e["kind"] == "firing"]
    assert fired
    at_ms = datetime.fromisoformat(fired[-1]["at"].replace("Z", "+00:00")).timestamp() * 1000
    drawn = await page.evaluate(areas, "Traffic")
    assert drawn[0][0] == at_ms and drawn[0][2] == "Any traffic"
    assert await page.evaluate(areas, "Purchases") == []  # another metric: no markers


async def test_silence_end_and_token_dates_are_in_the_pages_zone(server, org, browser):
    """The browser runs in New York and the page is set to UTC: the silence's end is typed in
    UTC (the label says so) and stored as that instant; the tokens page's dates are UTC dates,
    YYYY-MM-DD, not the browser locale's format."""
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900}, timezone_id="America/New_York", locale="en-US"
    )
    context.set_default_timeout(60_000)
    await context.add_init_script("localStorage.setItem('clickpulse.tz', 'UTC')")
    page = await context.new_page()
    try:
        r = await api(
            server,
            org.admin_token,
            "POST",
            "/alerts",
            {"name": "Errors", "metric_inline": {"text": "SELECT count() AS errors"},
             "comparator": ">", "threshold": 5, "for_seconds": 10},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        alert_id = r.json()["id"]
        await login(page, server, org.admin_token)
        await page.goto(f"{server.url}/a/{alert_id}")
        await page.get_by_text("Notifications are sent.").wait_for()
        until = page.get_by_label("Silence until… (UTC)")
        # Pre-filled an hour ahead, in UTC.
        default = datetime.strptime(await until.input_value(), "%Y-%m-%dT%H:%M")
        ahead = default.timestamp() - time.mktime(time.gmtime())  # both read as UTC wall times
        assert 3500 <= ahead <= 3660, (default, ahead)
        from datetime import UTC, timedelta

        day = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
        await until.fill(f"{day}T03:04")
        await page.get_by_label("Reason").fill("deploy")
        await page.get_by_role("button", name="Silence notifications").click()
        await page.locator("#silence-state .badge-silenced").wait_for()
        [silence] = (await api(server, org.admin_token, "GET", "/alerts/silences")).json()
        ends = datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00"))
        assert ends.isoformat() == f"{day}T03:04:00+00:00"
        assert f"silenced until {day} 03:04:00" in await page.locator("#silence-state").inner_text()

        await page.goto(f"{server.url}/admin/tokens")
        await page.wait_for_function("() => document.body.dataset.ready === '1'")
        listed = (await api(server, org.admin_token, "GET", "/tokens")).json()
        token = listed[0]
        created = datetime.fromisoformat(token["created_at"].replace("Z", "+00:00"))
        row = page.locator(f"tr[data-token-id='{token['id']}']")
        cells = [await c.inner_text() for c in await row.get_by_role("cell").all()]
        assert created.strftime("%Y-%m-%d") in cells, cells
        assert not [c for c in cells if "/" in c], cells  # no "12/3/2026"
    finally:
        await context.close()
