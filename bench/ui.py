"""Browser responsiveness with 12 live charts (issue 7): frame times and long tasks.

    .venv/bin/python bench/ui.py                       # 12 charts, 3 runs of 6 s
    .venv/bin/python bench/ui.py --charts 24 --runs 5 --seconds 10

The same measurement as tests/web/test_pages.py::test_twelve_live_charts_stay_responsive,
standalone and repeated:

1. A server process (uvicorn, one process: chDB allows one data path per process) on a fresh
   chDB dir and a throwaway PostgreSQL schema (DATABASE_URL, default the test server), with an
   org, its ingest key and an admin user token.
2. A dashboard of `--charts` charts over the last 5 minutes at 1 s buckets (line and bar
   alternating, two metrics), i.e. the exact push-merge regime: every chart merges a delta a
   second and slides its window.
3. Debian's Chromium (`/usr/bin/chromium`, headless, `--disable-gpu`: software rendering, as in
   the tests) opens it; once every chart is drawn and the badge says live, each run posts
   `--batch` page views every `--every-ms` for `--seconds` while the page records the interval
   between animation frames (`requestAnimationFrame`) and long tasks
   (`PerformanceObserver('longtask')`, main-thread tasks > 50 ms).
4. Prints, per run and over all runs: frames, frame p50/p95/max, long tasks, the longest task,
   deltas received; and `uptime` before and after. Bounded: every wait times out, and the
   whole run stops after `--deadline` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import (  # noqa: E402
    create_org_credentials,
    creds_ready,
    free_port,
    pg_schema,
    server_process,
    work_dir,
)

DATABASE = "bench_ui"
CHROMIUM = os.environ.get("CLICKPULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAGEVIEWS = {"text": "SELECT countIf(event = 'pageview') AS page_views"}
COUNT = {"text": "SELECT count() AS events_n"}

START_PERF = """() => {
  const m = window.__perf = {long: [], frames: [], last: performance.now(), stop: false};
  m.observer = new PerformanceObserver((l) => l.getEntries().forEach((e) => m.long.push(e.duration)));
  m.observer.observe({type: 'longtask'});
  const frame = (t) => { m.frames.push(t - m.last); m.last = t; if (!m.stop) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  return window.clickpulse.push.received.delta || 0;
}"""
STOP_PERF = """() => { const m = window.__perf; m.stop = true; m.observer.disconnect();
  return {frames: m.frames.slice(5), long: m.long,
          deltas: window.clickpulse.push.received.delta || 0}; }"""


def serve(cfg_path: str) -> None:
    """The server process: migrate, create the org, write credentials, serve."""
    import uvicorn

    from app.config import Settings
    from app.runtime import build_services
    from app.server import create_app

    cfg = json.loads(Path(cfg_path).read_text())
    settings = Settings.from_env(
        data_dir=cfg["data_dir"],
        clickhouse_database=DATABASE,
        database_url=cfg["database_url"],
        port=cfg["port"],
        redis_url=None,
        limit_rate_per_s=1000.0,
        limit_burst=1000,
    )
    services = build_services(settings)
    creds = asyncio.run(
        create_org_credentials(
            cfg["database_url"], "bench-ui", email="admin@bench-ui.test", role="admin"
        )
    )
    Path(cfg["creds"]).write_text(json.dumps(creds))
    uvicorn.run(create_app(services), host="127.0.0.1", port=cfg["port"], log_level="warning")


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else 0.0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def figures(frames: list[float], long: list[float]) -> dict:
    return {
        "frames": len(frames),
        "frame_p50_ms": round(_pct(frames, 50), 1),
        "frame_p95_ms": round(_pct(frames, 95), 1),
        "frame_max_ms": round(max(frames, default=0), 1),
        "long_tasks": len(long),
        "longest_ms": round(max(long, default=0), 1),
    }


async def measure(base: str, creds: dict, args: argparse.Namespace) -> dict:
    import httpx
    from playwright.async_api import async_playwright

    auth = {"Authorization": f"Bearer {creds['token']}"}
    ingest = {"Authorization": f"Bearer {creds['api_key']}"}
    charts = [
        {
            "chart_type": "line" if i % 2 else "bar",
            "title": f"Live {i}",
            "metric_inline": PAGEVIEWS if i % 3 else COUNT,
            "default_range": "5m",
        }
        for i in range(args.charts)
    ]
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.post("/dashboards", json={"name": "Bench", "charts": charts}, headers=auth)
        r.raise_for_status()
        dash = r.json()["id"]
        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(30_000)
            await page.goto(f"{base}/login?token={creds['token']}")
            await page.wait_for_url(f"{base}/")
            await page.goto(f"{base}/d/{dash}")
            await page.wait_for_function(
                "() => document.getElementById('freshness').dataset.state === 'live'"
            )
            await page.wait_for_function(
                "(n) => [...document.querySelectorAll('.chart-box')].filter((el) => {"
                " const o = echarts.getInstanceByDom(el)?.getOption();"
                " return o && o.series && o.series.length; }).length === n",
                arg=args.charts,
            )
            runs, all_frames, all_long = [], [], []
            for _ in range(args.runs):
                before = await page.evaluate(START_PERF)
                started = time.monotonic()
                while time.monotonic() - started < args.seconds:
                    r = await http.post(
                        "/v1/events",
                        json=[{"event": "pageview"} for _ in range(args.batch)],
                        headers=ingest,
                    )
                    assert r.status_code in (200, 202), r.text
                    await asyncio.sleep(args.every_ms / 1000)
                got = await page.evaluate(STOP_PERF)
                run = figures(got["frames"], got["long"]) | {"deltas": got["deltas"] - before}
                runs.append(run)
                all_frames += got["frames"]
                all_long += got["long"]
                print(json.dumps(run), flush=True)
                await asyncio.sleep(1)
        finally:
            await browser.close()
            await pw.stop()
    return {"runs": runs, "all": figures(all_frames, all_long)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--charts", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of one run")
    parser.add_argument("--batch", type=int, default=5, help="events per POST")
    parser.add_argument("--every-ms", type=int, default=250, help="pause between POSTs")
    parser.add_argument("--deadline", type=float, default=240.0, help="stop after this (s)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    print(f"before: {_uptime()}", flush=True)
    port = free_port()
    with work_dir("clickpulse-bench-ui-") as work, pg_schema("bench_ui") as (_, db_url):
        cfg = {
            "data_dir": work,
            "database_url": db_url,
            "port": port,
            "creds": os.path.join(work, "creds.json"),
        }
        cfg_path = os.path.join(work, "cfg.json")
        Path(cfg_path).write_text(json.dumps(cfg))
        argv = [sys.executable, __file__, "--serve", cfg_path]
        with server_process(argv, ready=creds_ready(cfg["creds"], port)):
            creds = json.loads(Path(cfg["creds"]).read_text())
            result = asyncio.run(
                asyncio.wait_for(measure(f"http://127.0.0.1:{port}", creds, args), args.deadline)
            )
            print(json.dumps({"charts": args.charts, "seconds": args.seconds, **result}, indent=2))
            print(f"after: {_uptime()}")


if __name__ == "__main__":
    main()
