"""The real tracking SDKs from PyPI, unmodified, pointed at a running ClickPulse (uvicorn on
127.0.0.1, real chDB and PostgreSQL): posthog, segment-analytics-python, rudder-sdk-python, and
a Plausible-format POST. Exact counts per org in chDB; a wrong key refused; an SDK's retry of a
batch whose answer was lost is stored once."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from app.credentials import add_site
from tests.ingest.helpers import rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _counts(ch, org_id: int) -> list[list[Any]]:
    """[event, count, distinct users] of one org in `events`, by event name."""
    return rows(
        ch,
        "SELECT event, count(), uniqExact(user_id) FROM {db}.events WHERE org_id = {o:UInt32} "
        "GROUP BY event ORDER BY event",
        {"o": org_id},
    )


def _rollup_total(ch, org_id: int) -> int:
    return rows(
        ch, "SELECT sum(events) FROM {db}.rollup_1m WHERE org_id = {o:UInt32}", {"o": org_id}
    )[0][0]


async def _inserted(server) -> None:
    await server.services.writer.wait_inserted()


class DropFirstAnswers:
    """An HTTP proxy on 127.0.0.1 that forwards every request to `upstream` and, for the first
    `drop` requests, closes the connection instead of passing the answer back: the SDK sees a
    dropped response to a request the server did store, and retries it."""

    def __init__(self, upstream: str, drop: int = 1):
        self.upstream = upstream
        self.drop = drop
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = httpx.post(
                    proxy.upstream + self.path, content=body, headers=headers, timeout=30
                )
                proxy.forwarded += 1
                if proxy.forwarded <= proxy.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> DropFirstAnswers:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def posthog_client() -> Iterator[Any]:
    """`make(key, host, **options)`: PostHog clients, shut down after the test."""
    from posthog import Posthog

    made: list[Any] = []

    def make(key: str, host: str, **options: Any) -> Any:
        options.setdefault("enable_exception_autocapture", False)
        client = Posthog(key, host=host, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()


async def test_posthog_capture_batch_and_gzip_land_per_org(server, ch, make_org, posthog_client):
    org_a, org_b = await make_org("a"), await make_org("b")
    plain = posthog_client(org_a.api_key, server.url, flush_at=50)
    gzipped = posthog_client(org_b.api_key, server.url, gzip=True, flush_at=50)

    def send() -> None:
        for i in range(30):
            plain.capture("$pageview", distinct_id=f"a{i % 4}", properties={"$pathname": "/p"})
        plain.capture("purchase", distinct_id="a0", properties={"value": 12.5, "plan": "pro"})
        for i in range(7):
            gzipped.capture("signup", distinct_id=f"b{i}")
        plain.flush()
        gzipped.flush()

    await asyncio.to_thread(send)
    await _inserted(server)
    assert _counts(ch, org_a.id) == [["pageview", 30, 4], ["purchase", 1, 1]]
    assert _counts(ch, org_b.id) == [["signup", 7, 7]]
    assert _rollup_total(ch, org_a.id) == 31
    assert rows(
        ch,
        "SELECT path, value, props['plan'], props['$lib'], length(event_id) FROM {db}.events "
        "WHERE org_id = {o:UInt32} AND event = 'purchase'",
        {"o": org_a.id},
    ) == [["", 12.5, "pro", "", 36]]  # PostHog's uuid is the event id; `$` props dropped
    assert (
        rows(
            ch,
            "SELECT countIf(path = '/p') FROM {db}.events WHERE org_id = {o:UInt32}",
            {"o": org_a.id},
        )[0][0]
        == 30
    )

    # sync_mode: each capture is its own request (PostHog's `/batch/` with one event).
    single = posthog_client(org_b.api_key, server.url, sync_mode=True)
    await asyncio.to_thread(single.capture, "signup", distinct_id="b-sync")
    await _inserted(server)
    assert _counts(ch, org_b.id) == [["signup", 8, 8]]


async def test_posthog_wrong_key_is_refused_and_stores_nothing(server, ch, org):
    from posthog.request import APIError, batch_post

    event = {"event": "x", "distinct_id": "u", "properties": {}}
    with pytest.raises(APIError) as refused:
        await asyncio.to_thread(
            batch_post, "cpk_" + "A" * 43, server.url, batch=[event], timeout=10
        )
    assert refused.value.status == 401
    assert '"invalid_api_key"' in refused.value.message
    # The SDK's token placeholder (not a key of ours at all) too.
    with pytest.raises(APIError) as refused:
        await asyncio.to_thread(batch_post, "phc_project", server.url, batch=[event])
    assert refused.value.status == 401
    await _inserted(server)
    assert rows(ch, "SELECT count() FROM {db}.events") == [[0]]


async def test_posthog_retry_after_a_dropped_answer_is_stored_once(server, ch, org, posthog_client):
    with DropFirstAnswers(server.url) as proxy:
        client = posthog_client(org.api_key, proxy.url, flush_at=100, max_retries=3)

        def send() -> None:
            for i in range(20):
                client.capture("click", distinct_id=f"u{i}")
            client.flush()

        await asyncio.to_thread(send)
    assert proxy.forwarded == 2  # the batch reached the server twice
    await _inserted(server)
    assert _counts(ch, org.id) == [["click", 20, 20]]
    assert _rollup_total(ch, org.id) == 20


def _segment_like(module: str, key: str, host: str, **options: Any) -> Any:
    if module == "segment":
        from segment.analytics.client import Client
    else:
        from rudderstack.analytics.client import Client
    return Client(key, host=host, **options)


def _send_segment_calls(client: Any, prefix: str) -> None:
    """Ten tracks, three pages, one screen, one identify, then flush (one /v1/batch or more)."""
    for i in range(10):
        client.track(
            user_id=f"{prefix}{i % 5}",
            event="Order Completed",
            properties={"revenue": 2.5, "sku": f"s{i}"},
            context={
                "ip": "81.2.69.142",
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS "
                "17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            },
        )
    for i in range(3):
        client.page(user_id=f"{prefix}0", name="Home", properties={"path": f"/home{i}"})
    client.screen(user_id=f"{prefix}1", name="Settings")
    client.identify(user_id=f"{prefix}2", traits={"plan": "team"})
    client.flush()


@pytest.mark.parametrize("module", ["segment", "rudderstack"])
async def test_segment_and_rudderstack_sdks_land_per_org(server, ch, make_org, module):
    org_a, org_b = await make_org("a"), await make_org("b")
    clients = [
        _segment_like(module, org_a.api_key, server.url, upload_size=100),
        _segment_like(module, org_b.api_key, server.url, gzip=True, upload_size=100),
    ]
    try:
        await asyncio.to_thread(_send_segment_calls, clients[0], "a")
        await asyncio.to_thread(_send_segment_calls, clients[1], "b")
    finally:
        for client in clients:
            await asyncio.to_thread(client.join)
    await _inserted(server)
    expected = [
        ["Order Completed", 10, 5],
        ["identify", 1, 1],
        ["pageview", 3, 1],
        ["screen", 1, 1],
    ]
    assert _counts(ch, org_a.id) == expected
    assert _counts(ch, org_b.id) == expected
    assert rows(
        ch,
        "SELECT sum(value), any(country), any(device), countIf(length(event_id) > 0) "
        "FROM {db}.events WHERE org_id = {o:UInt32} AND event = 'Order Completed'",
        {"o": org_a.id},
    ) == [[25.0, "GB", "mobile", 10]]
    assert rows(
        ch,
        "SELECT groupArray(path) FROM (SELECT path FROM {db}.events "
        "WHERE org_id = {o:UInt32} AND event = 'pageview' ORDER BY path)",
        {"o": org_b.id},
    ) == [[["/home0", "/home1", "/home2"]]]
    assert rows(
        ch,
        "SELECT props['plan'] FROM {db}.events WHERE org_id = {o:UInt32} AND event = 'identify'",
        {"o": org_a.id},
    ) == [["team"]]


@pytest.mark.parametrize("module", ["segment", "rudderstack"])
async def test_segment_and_rudderstack_wrong_key_is_refused(server, ch, org, module):
    if module == "segment":
        from segment.analytics.request import APIError, post
    else:
        from rudderstack.analytics.request import APIError, post
    message = {"type": "track", "event": "x", "userId": "u", "messageId": "m1"}
    with pytest.raises(APIError) as refused:
        await asyncio.to_thread(
            post, "cpk_" + "B" * 43, server.url, gzip=False, batch=[message], timeout=10
        )
    assert refused.value.status == 401
    assert refused.value.code == "invalid_api_key"
    await _inserted(server)
    assert rows(ch, "SELECT count() FROM {db}.events") == [[0]]


@pytest.mark.parametrize("module", ["segment", "rudderstack"])
async def test_segment_and_rudderstack_retry_after_a_dropped_answer_is_stored_once(
    server, ch, org, module
):
    with DropFirstAnswers(server.url) as proxy:
        client = _segment_like(module, org.api_key, proxy.url, upload_size=100, max_retries=3)
        try:

            def send() -> None:
                for i in range(12):
                    client.track(user_id=f"u{i}", event="click")
                client.flush()

            await asyncio.to_thread(send)
        finally:
            await asyncio.to_thread(client.join)
    assert proxy.forwarded == 2
    await _inserted(server)
    assert _counts(ch, org.id) == [["click", 12, 12]]
    assert _rollup_total(ch, org.id) == 12


async def test_plausible_events_land_in_the_sites_org(server, ch, make_org, pg_url):
    org_a, org_b = await make_org("a"), await make_org("b")
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await add_site(conn, org_a.id, "shop.example")
        await add_site(conn, org_b.id, "blog.example")
    browser_ua = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0"}
    async with httpx.AsyncClient(base_url=server.url, headers=browser_ua) as http:
        for i in range(5):
            r = await http.post(
                "/api/event",
                content=(
                    f'{{"name":"pageview","url":"https://shop.example/p/{i}?x=1",'
                    '"domain":"shop.example","referrer":"https://search.test/"}'
                ),
                headers={"Content-Type": "text/plain"},
            )
            assert r.status_code == 202, r.text
        r = await http.post(
            "/api/event",
            json={
                "n": "Purchase",
                "u": "https://shop.example/checkout",
                "d": "shop.example",
                "p": {"plan": "pro"},
                "$": {"amount": "19.90", "currency": "EUR"},
            },
        )
        assert r.status_code == 202, r.text
        r = await http.post(
            "/api/event",
            json={"name": "pageview", "url": "https://blog.example/", "domain": "Blog.Example"},
        )
        assert r.status_code == 202, r.text
        # A domain no org took: refused, nothing stored anywhere.
        r = await http.post(
            "/api/event", json={"name": "pageview", "url": "https://x.test/", "domain": "x.test"}
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "unknown_site"
    await _inserted(server)
    assert _counts(ch, org_a.id) == [["Purchase", 1, 1], ["pageview", 5, 1]]
    assert _counts(ch, org_b.id) == [["pageview", 1, 1]]
    assert rows(ch, "SELECT count() FROM {db}.events") == [[7]]
    assert rows(
        ch,
        "SELECT path, referrer, value, props['currency'], props['plan'], browser FROM {db}.events "
        "WHERE org_id = {o:UInt32} ORDER BY event, path LIMIT 2",
        {"o": org_a.id},
    ) == [
        ["/checkout", "", 19.9, "EUR", "pro", "Chrome"],
        ["/p/0", "https://search.test/", 0.0, "", "", "Chrome"],
    ]
