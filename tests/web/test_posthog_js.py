"""posthog-js (npm, unmodified, from web/node_modules) on a static page of another origin sends
pageviews to ClickPulse from real Chromium; they appear in the org's dashboard data.

The page is served by this test on its own port, so every post is cross-origin: the JSON
fetches preflight (OPTIONS), the unload flush goes out by sendBeacon as a base64 form — the
CORS policy of the ingest routes (docs/ingest.md) is what lets both through."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import api

POSTHOG_JS = Path(__file__).parents[2] / "web/node_modules/posthog-js/dist/array.js"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="/posthog.js"></script>
<script>
  posthog.init({key}, {{
    api_host: {api_host},
    autocapture: false,
    disable_session_recording: true,
    advanced_disable_flags: true,
    disable_surveys: true,
    request_batching: true,
    disable_compression: {disable_compression},
    opt_out_useragent_filter: true,  // headless Chromium's user agent reads as a bot
  }});
</script></head>
<body><h1>{title}</h1><a id="next" href="/two.html">next</a></body></html>
"""


class StaticSite:
    """The customer's site: two pages loading posthog-js, on a port of its own."""

    def __init__(self, key: str, api_host: str, *, disable_compression: bool):
        pages = {
            f"/{title}.html": PAGE.format(
                title=title,
                key=json.dumps(key),
                api_host=json.dumps(api_host),
                disable_compression=json.dumps(disable_compression),
            )
            for title in ("one", "two")
        }
        script = POSTHOG_JS.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/posthog.js":
                    body, kind = script, "text/javascript"
                elif self.path in pages:
                    body, kind = pages[self.path].encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def _pageviews_by_path(server, token: str) -> list[list[Any]]:
    r = await api(
        server,
        token,
        "POST",
        "/ui/data/top",
        {
            "definition": {"text": "SELECT countIf(event = 'pageview') AS views"},
            "dimension": "path",
            "n": 10,
            "from": "now-1h",
        },
    )
    assert r.status_code == 200, r.text
    return sorted(row for row in r.json()["rows"] if row[2])


# posthog-js's default sends gzip as text/plain (a CORS-simple request); without compression
# it sends JSON, which the browser preflights (OPTIONS) before each post.
@pytest.mark.parametrize(
    ("disable_compression", "content_type"),
    [(False, "text/plain"), (True, "application/json")],
)
async def test_posthog_js_pageviews_reach_the_dashboard_data(
    server, page, make_org, disable_compression, content_type
):
    if not POSTHOG_JS.exists():
        pytest.fail(f"{POSTHOG_JS} missing: run `npm ci --prefix web`", pytrace=False)
    org, other = await make_org("site"), await make_org("other")
    site = StaticSite(org.api_key, server.url, disable_compression=disable_compression)
    posts: list[str] = []
    page.on(
        "request",
        lambda request: (
            posts.append(
                f"{request.method} {request.url.split('?')[0]} "
                f"{request.headers.get('content-type', '').split(';')[0]}"
            )
            if request.url.startswith(server.url)
            else None
        ),
    )
    try:
        await page.goto(f"{site.url}/one.html")
        await page.wait_for_function("() => window.posthog && window.posthog.__loaded")
        # Leaving the page flushes its queue (sendBeacon); the next page sends its own pageview.
        await page.click("#next")
        await page.wait_for_url(f"{site.url}/two.html")
        await page.wait_for_function("() => window.posthog && window.posthog.__loaded")
        await page.goto("about:blank")  # flush page two as well

        deadline = time.monotonic() + 60  # a hang guard on a loaded machine, not a timing check
        seen: list[list[Any]] = []
        while time.monotonic() < deadline:
            await server.services.writer.wait_inserted()
            seen = await _pageviews_by_path(server, org.admin_token)
            if sum(row[2] for row in seen) >= 2:
                break
            await asyncio.sleep(0.5)
        assert seen == [["/one.html", False, 1], ["/two.html", False, 1]], (seen, posts)
        assert f"POST {server.url}/e/ {content_type}" in posts, posts
        # Delivered by the posts themselves, not by posthog-js's retry over sendBeacon after
        # the browser refused them (which it does without the CORS answers).
        refused = [line for line in page.console_log if "CORS policy" in line]
        assert refused == [], refused
        # Another org's dashboard data holds none of them.
        assert await _pageviews_by_path(server, other.admin_token) == []
    finally:
        site.close()
