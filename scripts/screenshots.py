"""Screenshots of every page for the docs: runs `clickpulse demo` on a temporary data dir (30
days of history, live traffic), signs in, and captures each page at 1440×900 and 390×844, light
and dark (the system's colour scheme, emulated), into docs/screenshots/ as small PNGs (256
colours, Pillow).

    .venv/bin/python scripts/screenshots.py [--history-days 30] [--data-dir DIR] [--out DIR]
        [--only NAME,NAME]   (e.g. --only metric-editor: just those pictures)

`--data-dir` keeps the demo's data between runs (the history is written once per data dir).
`--only` writes just the named pictures (the `<page>` part of their file names).
Uses Debian's Chromium at /usr/bin/chromium (never downloads a browser).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CLICKPULSE_CHROMIUM", "/usr/bin/chromium")
VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}
SCHEMES = ("light", "dark")
ALERT = {
    "name": "Checkout errors",
    "metric_inline": {"text": "SELECT countIf(event = 'error') AS errors"},
    "comparator": ">",
    "threshold": 2,
    "for_seconds": 5,
    "severity": "critical",
}
PAGE_VIEWS = {
    "name": "Page views",
    "definition": {"text": "SELECT countIf(event = 'pageview') AS page_views"},
}
CHANNELS = [
    {"kind": "webhook", "name": "Ops webhook", "url": "https://hooks.example.com/clickpulse/ops"},
    {"kind": "slack", "name": "#alerts (Slack)", "url": "https://hooks.slack.com/services/T000/B000/XXXX"},
    {"kind": "email", "name": "On-call email", "host": "smtp.example.com", "from": "alerts@example.com",
     "to": ["oncall@example.com"]},
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(
    data_dir: Path, port: int, history_days: float, log: Path
) -> tuple[subprocess.Popen, str]:
    """The demo in a subprocess; returns it and the login URL it printed (its last line)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CLICKPULSE_DATA_DIR"] = str(data_dir)
    cmd = [sys.executable, "-m", "app.cli", "demo", "--port", str(port)]
    cmd += ["--history-days", str(history_days)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        text = log.read_text()
        found = re.search(r"(http://\S+/login\?token=cpt_\S+)", text)
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"the demo exited:\n{text[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the demo did not start within 15 minutes")


def shrink(png: bytes) -> bytes:
    """256 colours, optimised: UI screenshots are flat colours, so this keeps them sharp."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


async def prepare(base: str, token: str) -> dict[str, int]:
    """The starter dashboard (as the button on / creates it) and an alert to show."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
        dashboards = (await http.get("/dashboards")).json()
        alerts = (await http.get("/alerts")).json()
        alert_id = next((a["id"] for a in alerts if a["name"] == ALERT["name"]), None)
        if alert_id is None:
            r = await http.post("/alerts", json=ALERT)
            r.raise_for_status()
            alert_id = r.json()["id"]
        editor_id = await editor_alert(http, alerts)
    return {"dashboards": len(dashboards), "alert": alert_id, "editor": editor_id}


async def editor_alert(http: httpx.AsyncClient, alerts: list[dict]) -> int:
    """An alert on the demo's page views with the highest threshold (a high percentile of its
    per-second values) that the last 24 h would have fired on 2–6 times, notifying a channel:
    the alert editor's screenshot shows a threshold line, a recovery line and would-have-fired
    intervals."""
    found = next((a["id"] for a in alerts if a["name"] == "Page views surge"), None)
    if found is not None:
        return found
    channels = (await http.get("/alerts/channels")).json()
    for body in CHANNELS[len(channels) :]:
        (await http.post("/alerts/channels", json=body)).raise_for_status()
    channels = (await http.get("/alerts/channels")).json()
    metrics = (await http.get("/metrics")).json()
    metric = next((m for m in metrics if m["name"] == PAGE_VIEWS["name"]), None)
    if metric is None:
        r = await http.post("/metrics", json=PAGE_VIEWS)
        r.raise_for_status()
        metric = r.json()
    rule = {"metric_id": metric["id"], "comparator": ">", "threshold": 1e9, "for_seconds": 120}
    r = await http.post("/alerts/backtest", json=rule | {"from": "now-24h"})
    r.raise_for_status()
    values = sorted(v for v in r.json()["series"]["value"] if v is not None) or [1.0]
    for pct in (0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8):
        rule["threshold"] = round(values[int(len(values) * pct)], 2)
        rule["recovery_threshold"] = round(values[int(len(values) * (pct - 0.15))], 2)
        r = await http.post("/alerts/backtest", json=rule | {"from": "now-24h"})
        r.raise_for_status()
        if 2 <= sum(e["kind"] == "firing" for e in r.json()["events"]) <= 6:
            break
    body = rule | {
        "name": "Page views surge",
        "severity": "warning",
        "channel_ids": [channels[0]["id"]],
    }
    r = await http.post("/alerts", json=body)
    r.raise_for_status()
    return r.json()["id"]


async def share_link(base: str, token: str, dashboard_id: int) -> str:
    """A public read-only link to the dashboard (expires in a day)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
        r = await http.post(f"/dashboards/{dashboard_id}/shares", json={"expires_in_s": 86400})
        r.raise_for_status()
        return r.json()["url"]


# The pixel of an instant on a chart's time axis, and a y in the upper part of its plot.
PLOT_POINT = """(el, f) => {
  const inst = echarts.getInstanceByDom(el);
  const axis = inst.getOption().xAxis[0];
  const [x, y] = inst.convertToPixel({gridIndex: 0}, [axis.min + f * (axis.max - axis.min), 0]);
  return [x, y - 80];
}"""


async def zoom_by_drag(page, shot_mid_drag=None) -> None:
    """Drag over the first line chart, from 55 % to 80 % of its span, as a user zooms; with
    `shot_mid_drag`, a picture is taken before the button is released (the selection shaded)."""
    box = page.locator(".chart-card[data-chart-type='line'] .chart-box").first
    bbox = await box.bounding_box()
    x1, y = await box.evaluate(PLOT_POINT, 0.55)
    x2, _ = await box.evaluate(PLOT_POINT, 0.8)
    await page.mouse.move(bbox["x"] + x1, bbox["y"] + y)
    await page.mouse.down()
    await page.mouse.move(bbox["x"] + x2, bbox["y"] + y, steps=12)
    if shot_mid_drag:
        await shot_mid_drag()
    await page.mouse.up()
    await page.wait_for_function(
        "() => new URL(location.href).searchParams.get('range') === 'custom'"
    )


async def capture(
    base: str, login_url: str, out: Path, only: frozenset[str] = frozenset()
) -> list[Path]:
    from playwright.async_api import async_playwright

    token = login_url.split("token=", 1)[1]

    def want(name: str) -> bool:
        return not only or name in only

    ids = await prepare(base, token)
    written: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            dash_id = None
            share_url = None
            for device, (width, height) in VIEWPORTS.items():
                for scheme in SCHEMES:
                    context = await browser.new_context(
                        viewport={"width": width, "height": height}, color_scheme=scheme
                    )
                    context.set_default_timeout(120_000)
                    page = await context.new_page()

                    def want(*names: str) -> bool:
                        return not only or bool(only & set(names))

                    async def shot(name: str, page=page, device=device, scheme=scheme) -> None:
                        if not want(name):
                            return
                        await page.wait_for_timeout(1500)  # animations settle
                        png = await page.screenshot(full_page=True, animations="disabled")
                        path = out / f"{name}-{device}-{scheme}.png"
                        path.write_bytes(shrink(png))
                        written.append(path)
                        print(f"  {path} ({path.stat().st_size // 1024} KB)")

                    await page.goto(f"{base}/login")
                    await shot("login")
                    await page.goto(login_url)
                    await page.wait_for_url(f"{base}/")
                    if dash_id is None:
                        if ids["dashboards"] == 0:
                            await page.get_by_role(
                                "button", name="Create the starter dashboard"
                            ).click()
                            await page.wait_for_url("**/d/*")
                            await page.goto(f"{base}/")
                        link = page.locator("#dashboard-list a").first
                        await link.wait_for()
                        dash_id = int((await link.get_attribute("href")).rsplit("/", 1)[1])
                    await page.locator("#dashboard-list li").first.wait_for()
                    await shot("dashboards")
                    for name, query in (("dashboard", ""), ("dashboard-30d", "?range=30d")):
                        if not want(name):
                            continue
                        await page.goto(f"{base}/d/{dash_id}{query}")
                        await page.locator("body[data-ready]").wait_for(state="attached")
                        await page.wait_for_function(
                            "() => [...document.querySelectorAll('.chart-status')].every((s) => s.textContent && !s.textContent.includes('loading'))"
                        )
                        await shot(name)
                    if want("dashboard-editor"):
                        # Edit mode: the panels' strips, outlines and resize corners, the bar.
                        await page.goto(f"{base}/d/{dash_id}")
                        await page.locator("body[data-ready]").wait_for(state="attached")
                        await page.get_by_role("button", name="Edit", exact=True).click()
                        await page.locator("#edit-bar:not([hidden])").wait_for()
                        await page.wait_for_function(
                            "() => [...document.querySelectorAll('.chart-status')].every((s) => !s.textContent.includes('loading'))"
                        )
                        await shot("dashboard-editor")
                    if want("dashboard-zoomed", "dashboard-zooming"):
                        await page.goto(f"{base}/d/{dash_id}?range=24h")
                        await page.locator("body[data-ready]").wait_for(state="attached")
                        await page.wait_for_function(
                            "() => [...document.querySelectorAll('.chart-status')].every((s) => s.textContent && !s.textContent.includes('loading'))"
                        )
                        mid_drag = None
                        if device == "desktop" and scheme == "light":
                            mid_drag = lambda: shot("dashboard-zooming")  # noqa: E731
                        await zoom_by_drag(page, mid_drag)
                        await page.wait_for_function(
                            "() => [...document.querySelectorAll('.chart-status')].every((s) => s.textContent && !s.textContent.includes('loading'))"
                        )
                        await shot("dashboard-zoomed")
                    if share_url is None and want("shared-dashboard"):
                        share_url = await share_link(base, token, dash_id)
                    # The public link, as a visitor sees it: its own context, never signed in.
                    if want("shared-dashboard"):
                        visitor = await browser.new_context(
                            viewport={"width": width, "height": height}, color_scheme=scheme
                        )
                        visitor.set_default_timeout(120_000)
                        shared = await visitor.new_page()
                        await shared.goto(share_url)
                        await shared.locator(
                            "body[data-ready='1'] .chart-box canvas"
                        ).first.wait_for()
                        await shared.wait_for_function(
                            "() => document.body.dataset.live === 'live'"
                        )
                        await shot("shared-dashboard", page=shared)
                        await visitor.close()
                    if want("builder"):
                        await page.goto(f"{base}/builder")
                        await page.locator("#preview canvas").wait_for()
                        await shot("builder")
                    if want("metric-editor"):
                        await metric_editor(page, base)
                        await shot("metric-editor")
                    if want("alerts"):
                        await page.goto(f"{base}/a")
                        await page.locator("#alert-table tr[data-alert-id]").first.wait_for()
                        await shot("alerts")
                    if want("alert-form"):
                        await page.goto(f"{base}/a/{ids['alert']}")
                        await page.locator("#history:not([hidden])").wait_for()
                        await shot("alert-form")
                    if want("alert-editor"):
                        await page.goto(f"{base}/a/{ids['editor']}")
                        await page.locator("body[data-backtest='ok']").wait_for()
                        await shot("alert-editor")
                    if device == "desktop" and want("channels"):
                        await page.goto(f"{base}/a/channels")
                        await page.locator("body[data-ready='1']").wait_for(state="attached")
                        await shot("channels")
                    if want("tokens"):
                        await page.goto(f"{base}/admin/tokens")
                        await page.locator("#token-table tbody tr").first.wait_for()
                        await shot("tokens")
                    await context.close()
        finally:
            await browser.close()
    return written


async def metric_editor(page, base: str) -> None:
    """The builder with the Data panel opened on the busiest event's first property, and the
    editor's completion open on the org's event names."""
    await page.goto(f"{base}/builder")
    await page.locator("#preview canvas").wait_for()
    await page.locator("#data-panel[data-ready='1']").wait_for()
    await page.locator("#data-events button").first.click()
    await page.locator("#data-fields button").first.click()
    await page.locator("#data-values button").first.wait_for()
    editor = page.get_by_label("Metric", exact=True)
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.type("SELECT uniq(user_id) AS buyers\nWHERE event = '")
    await page.keyboard.press("Control+Space")
    await page.locator(".cm-tooltip-autocomplete li").first.wait_for()
    # The preview of the typed text (400 ms after the last key) has answered.
    await page.wait_for_timeout(600)
    await page.wait_for_function(
        "() => document.getElementById('preview-meta').textContent !== 'compiling…'"
    )
    await page.evaluate("() => window.scrollTo(0, 0)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-days", type=float, default=30)
    parser.add_argument("--data-dir", help="keep the demo's data here (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--only", default="", help="comma-separated picture names (default: all)")
    args = parser.parse_args()
    only = frozenset(n.strip() for n in args.only.split(",") if n.strip())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clickpulse-shots-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        port = free_port()
        log = Path(tmp) / "demo.log"
        print(
            f"starting the demo on {data_dir} (history: {args.history_days:g} days) …", flush=True
        )
        proc, login_url = start_demo(data_dir, port, args.history_days, log)
        try:
            # A little live traffic on top of the history before the first picture.
            time.sleep(20)
            written = asyncio.run(capture(f"http://127.0.0.1:{port}", login_url, out, only))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"{len(written)} screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
