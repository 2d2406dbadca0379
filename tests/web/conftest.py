"""Browser tests: real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the
real app served by uvicorn on 127.0.0.1, over this test's chDB database and PostgreSQL schema.

No browser is ever downloaded, and a missing Chromium FAILS these tests (never skips them).
A failing test leaves `failure.png` (and the page's console) in its tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

from app.clickhouse import ClickHouseError
from app.config import Settings
from app.db import open_pool
from app.runtime import build_services
from app.services import Services

CHROMIUM = os.environ.get("CLICKPULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class SwitchableClickHouse:
    """The real facade, which a test can make fail like a dead server (`down`: queries raise)
    or stall like a stopped pipeline (`hold_inserts()`: the ingest writer's inserts wait)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.down = False
        self._inserts = threading.Event()
        self._inserts.set()

    def hold_inserts(self) -> None:
        self._inserts.clear()

    def release_inserts(self) -> None:
        self._inserts.set()

    def insert_sync(self, *args: Any, **kwargs: Any) -> Any:
        self._inserts.wait(60)
        return self.inner.insert_sync(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def query(self, sql: str, params: Any = None, settings: Any = None, **kwargs: Any) -> Any:
        if self.down:
            raise ClickHouseError("Code: 210. Connection refused (simulated outage)", code=210)
        return await self.inner.query(sql, params, settings, **kwargs)


@dataclass
class LiveServer:
    url: str
    services: Services
    ch: SwitchableClickHouse
    loop: asyncio.AbstractEventLoop  # the server thread's event loop

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the server's loop (e.g. `services.push.send_to_org`)."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server(ch, pg_url, app_settings) -> AsyncIterator[LiveServer]:
    """The app on a free loopback port, in a thread of this process (chDB allows one data path
    per process, and the test's database lives on it)."""
    import uvicorn

    from app.ingest.writer import EventWriter
    from app.server import create_app

    port = _free_port()
    overrides: dict[str, Any] = {"port": port, "limit_rate_per_s": 1000.0, "limit_burst": 1000}
    if "push_stale_ms" in Settings.__struct_fields__:
        overrides["push_stale_ms"] = 1500  # a stopped pipeline shows as stale sooner
    settings = msgspec.structs.replace(app_settings, **overrides)
    switch = SwitchableClickHouse(ch)
    services = build_services(
        settings,
        migrate=False,
        ch=switch,
        pg=open_pool(pg_url, min_size=1, max_size=4),
        writer=EventWriter(switch, settings),
    )
    app = create_app(services)
    loops: list[asyncio.AbstractEventLoop] = []
    app.on_startup.append(lambda: loops.append(asyncio.get_running_loop()))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        await asyncio.sleep(0.05)
    try:
        yield LiveServer(
            url=f"http://127.0.0.1:{port}", services=services, ch=switch, loop=loops[0]
        )
    finally:
        switch.release_inserts()
        switch.down = False
        uv.should_exit = True
        await asyncio.to_thread(thread.join, 20)


@pytest.fixture(scope="session")
async def browser():
    """One Chromium for the session. Missing Chromium is a failure, not a skip."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package "
            "(.ci/run does). The browser tests never download a browser.",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover
        pytest.fail("playwright is not installed: pip install -e '.[test]'", pytrace=False)
    pw = await async_playwright().start()
    b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        await b.close()
        await pw.stop()


@pytest.fixture
async def page(browser, request, tmp_path):
    """A fresh browser context and page; on failure a screenshot and the console go to tmp_path."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    # Hang guard, not a timing check: on a loaded 2-core machine a chart can take a while.
    context.set_default_timeout(60_000)
    p = await context.new_page()
    console: list[str] = []
    p.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    p.on("pageerror", lambda e: console.append(f"pageerror: {e}\n{e.stack}"))
    p.console_log = console
    try:
        yield p
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            try:
                await p.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            except Exception as exc:  # noqa: BLE001 - best effort
                console.append(f"screenshot failed: {exc}")
            (tmp_path / "console.txt").write_text("\n".join(console))
            print(f"\nscreenshot: {tmp_path / 'failure.png'}\nconsole:\n" + "\n".join(console))
        await context.close()


async def post_events(
    server: LiveServer, api_key: str, events: list[dict[str, Any]], *, wait: bool = True
) -> None:
    """POST events; with `wait`, return once they are inserted (a 200 only means the WAL has
    them), so what a test reads next includes them."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.post(
            "/v1/events", json=events, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert r.status_code in (200, 202), r.text
    if wait:
        await server.services.writer.wait_inserted()


async def api(
    server: LiveServer, token: str, method: str, path: str, body: Any = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        return await http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )


async def login(page: Any, server: LiveServer, token: str) -> None:
    await page.goto(f"{server.url}/login?token={token}")
    await page.wait_for_url(f"{server.url}/")
