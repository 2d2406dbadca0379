"""Fairness of the shared ClickHouse pool through the real app (issue 12 item 4): an org that
keeps the pool's threads busy makes its own queries wait, never another org's."""

from __future__ import annotations

import asyncio
import threading

import pytest
from litestar.testing import AsyncTestClient

from app.clickhouse import EmbeddedClickHouse
from tests.api.conftest import build_services, make_app
from tests.api.test_metrics import create_metric, hour_window


class HeldQueries:
    """Makes every ClickHouse query of one org block on its worker thread until released —
    a stand-in for an org's long, heavy queries that the test controls exactly."""

    def __init__(self, ch: EmbeddedClickHouse, org_id: int):
        self.org_id = org_id
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.blocked = 0
        real = ch.query_sync

        def query_sync(sql, params=None, settings=None):
            if (params or {}).get("org_id") == org_id:
                self.blocked += 1
                self.started.release()
                self.release.wait(30)
            return real(sql, params, settings)

        ch.query_sync = query_sync  # the facade's worker threads call this instance attribute

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 10), "no query started"


@pytest.fixture
async def two_worker_app(ch, pg_url, app_settings, make_org):
    small = EmbeddedClickHouse(database=ch.database, data_dir=ch.data_dir, max_workers=2)
    services = build_services(small, pg_url, base=app_settings)
    noisy, quiet = await make_org(), await make_org()
    async with AsyncTestClient(app=make_app(services)) as api:
        yield api, services, small, noisy, quiet
    small.close()


async def history_urls(api, org) -> list[str]:
    m = await create_metric(api, org)
    start, end = hour_window()
    base = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    # distinct filters: distinct cache keys, so single flight does not merge the requests
    return [f"{base}&filter=country={c}" for c in ("DE", "FR", "IT", "ES")]


def in_app(api, scenario):
    """Run `scenario(client)` on the app's own event loop with a client that can have
    requests in flight concurrently (the test client serves one request at a time from its
    portal thread), and answer its result."""
    import httpx

    async def run():
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await scenario(client)

    return api.blocking_portal.call(run)


async def until(predicate) -> None:
    for _ in range(500):  # bounded by loop turns
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never reached")


async def test_a_saturating_org_does_not_starve_another(two_worker_app):
    """Org A has two long queries in flight on a pool of two threads; org B's query still runs
    at once (one thread is always left to other orgs). Before fair queueing, A's two queries
    held both threads and B waited until one of them finished."""
    api, services, small, noisy, quiet = two_worker_app
    a_urls, b_urls = await history_urls(api, noisy), await history_urls(api, quiet)
    held = HeldQueries(small, noisy.id)

    # each history request sends two queries: the rows it covers (charged), then the answer
    def sent() -> int:
        return services.ch.queries + services.ch.row_counts

    entered = sent()

    async def scenario(client):
        a_requests = [
            asyncio.ensure_future(client.get(u, headers=noisy.h("viewer"))) for u in a_urls[:2]
        ]
        try:
            await held.wait_started()
            # both of A's queries reached the facade (one runs, one waits for A's share)
            await until(lambda: sent() >= entered + 2)
            # "did not hang": B's answer does not depend on A's queries finishing.
            b = await asyncio.wait_for(client.get(b_urls[0], headers=quiet.h("viewer")), 20)
            # (Before fair queueing: 503 after the 10 s query timeout, B's query never ran.)
            assert b.status_code == 200, b.text
            pool_then = small.pool.snapshot()
            blocked_then = held.blocked
        finally:
            held.release.set()
        return b, pool_then, blocked_then, await asyncio.gather(*a_requests)

    b, pool_then, blocked_then, a_answers = in_app(api, scenario)
    assert b.status_code == 200, b.text
    assert b.json()["meta"]["cached"] is False
    assert blocked_then == 1  # A's second query was still waiting for A's share
    assert pool_then["running"] == {noisy.id: 1} and pool_then["waiting"] == {noisy.id: 1}
    assert [r.status_code for r in a_answers] == [200, 200]
    assert held.blocked == 4  # then each of A's requests ran its count and its query


async def test_an_org_over_its_pool_share_gets_429_not_the_others(two_worker_app):
    """Waiting for a worker is bounded: the saturating org's extra query gets 429
    `query_pool` with Retry-After, while the other org's /sql and history answer."""
    api, services, small, noisy, quiet = two_worker_app
    small.pool.max_wait_s = 0.2
    a_urls, b_urls = await history_urls(api, noisy), await history_urls(api, quiet)
    held = HeldQueries(small, noisy.id)
    sql = {"sql": "SELECT count() AS n FROM events"}

    async def scenario(client):
        first = asyncio.ensure_future(client.get(a_urls[0], headers=noisy.h("viewer")))
        try:
            await held.wait_started()
            answers = [
                await client.get(a_urls[1], headers=noisy.h("viewer")),
                # A's analyst SQL waits in A's lane too (run_analyst passes the org).
                await client.post("/sql", json=sql, headers=noisy.h("admin")),
                # The other org is served meanwhile, over history and /sql.
                await client.get(b_urls[0], headers=quiet.h("viewer")),
                await client.post("/sql", json=sql, headers=quiet.h("admin")),
            ]
        finally:
            held.release.set()
        return answers, await first

    (a_history, a_sql, b_history, b_sql), a_first = in_app(api, scenario)
    assert a_history.status_code == 429, a_history.text
    assert a_history.headers["retry-after"] == "1"
    assert a_history.json()["error"]["code"] == "rate_limited"
    assert a_history.json()["error"]["where"] == {"limit": "query_pool", "retry_after_s": 1}
    assert a_sql.status_code == 429, a_sql.text
    assert a_sql.json()["error"]["where"]["limit"] == "query_pool"
    assert services.limiter.rejected["query_pool"] == 2
    assert b_history.status_code == 200, b_history.text
    assert b_sql.status_code == 200, b_sql.text
    assert b_sql.json()["data"] == [{"n": 0}]
    assert a_first.status_code == 200


async def test_query_pool_429_retry_after_is_the_time_waited():
    from app.clickhouse import PoolBusy
    from app.errors import ApiError
    from app.limits import Limiter, OrgLimits

    limiter = Limiter(OrgLimits(rate_per_s=1, burst=1, concurrent_queries=1, rows_per_minute=10))
    for waited, expected in ((0.2, 1), (2.3, 3), (5.0, 5)):
        with pytest.raises(ApiError) as exc:
            async with limiter.query_slot(7):
                raise PoolBusy(7, waited)
        assert exc.value.status == 429
        assert exc.value.headers == {"Retry-After": str(expected)}
        assert exc.value.where == {"limit": "query_pool", "retry_after_s": expected}
    assert limiter.rejected["query_pool"] == 3
    async with limiter.query_slot(7):  # the org's concurrency slot was given back each time
        pass
