"""Screenshots of every page for the docs: runs `clickpulse demo` on a temporary data dir (30
days of history, live traffic), signs in, and captures each page at 1440×900 and 390×844, light
and dark (the system's colour scheme, emulated), into docs/screenshots/ as small PNGs (256
colours, Pillow).

    .venv/bin/python scripts/screenshots.py [--history-days 30] [--data-dir DIR] [--out DIR]
        [--only NAME ...]

`--data-dir` keeps the demo's data between runs (the history is written once per data dir).
`--only dashboard-editor` writes just those pictures (every viewport and scheme of each NAME).
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
    return {"dashboards": len(dashboards), "alert": alert_id}


async def share_link(base: str, token: str, dashboard_id: int) -> str:
    """A public read-only link to the dashboard (expires in a day)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
        r = await http.post(f"/dashboards/{dashboard_id}/shares", json={"expires_in_s": 86400})
        r.raise_for_status()
        return r.json()["url"]


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
                    if want("shared-dashboard"):
                        if share_url is None:
                            share_url = await share_link(base, token, dash_id)
                        # The public link, as a visitor sees it: its own context, never signed in.
                        visitor = await browser.new_context(
                            viewport={"width": width, "height": height}, color_scheme=scheme
                        )
                        shared = await visitor.new_page()
                        await shared.goto(share_url)
                        await shared.locator(
                            "body[data-ready='1'] .chart-box canvas"
                        ).first.wait_for()
                        await shot("shared-dashboard", page=shared)
                        await visitor.close()
                    for name, url, ready in (
                        ("builder", "/builder", "#preview canvas"),
                        ("alerts", "/a", "#alert-table tr[data-alert-id]"),
                        ("alert-form", f"/a/{ids['alert']}", "#history:not([hidden])"),
                        ("tokens", "/admin/tokens", "#token-table tbody tr"),
                    ):
                        if want(name):
                            await page.goto(f"{base}{url}")
                            await page.locator(ready).first.wait_for()
                            await shot(name)
                    await context.close()
        finally:
            await browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-days", type=float, default=30)
    parser.add_argument("--data-dir", help="keep the demo's data here (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--only", nargs="*", default=[], help="write only these pictures")
    args = parser.parse_args()
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
            written = asyncio.run(
                capture(f"http://127.0.0.1:{port}", login_url, out, frozenset(args.only))
            )
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
