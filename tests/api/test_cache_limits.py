"""Hot cache (Redis and in-process) and per-org quotas (429 + Retry-After)."""

from __future__ import annotations

import time

import pytest

from app.cache import MemoryCache, RedisCache, config_key, query_key, ttl_for
from app.limits import Limiter, OrgLimits
from tests.api.conftest import FakeClock, build_services
from tests.api.test_metrics import create_metric, hour_window


@pytest.fixture(params=["memory", "redis"])
def mode(request):
    return request.param


@pytest.fixture
async def redis_client(redis_url):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(mode, redis_client):
    clock = FakeClock()
    if mode == "memory":
        return MemoryCache(max_entries=3, keep_s=100, clock=clock)
    return RedisCache(redis_client, keep_s=100, clock=clock)


async def test_cache_hit_miss_and_freshness_expiry(cache):
    key = query_key(1, "SELECT 1", {"org_id": 1})
    assert await cache.get(key) is None
    await cache.set(key, {"rows": [[1, 2.5]]}, ttl_s=2)
    entry = await cache.get(key)
    assert entry.value == {"rows": [[1, 2.5]]} and entry.fresh(cache.clock())
    cache.clock.advance(2.5)
    entry = await cache.get(key)  # no longer fresh, still kept for degraded answers
    assert (
        entry is not None and not entry.fresh(cache.clock()) and entry.age_s(cache.clock()) == 2.5
    )
    assert cache.stats["hit"] == 1 and cache.stats["stale"] == 1 and cache.stats["miss"] == 1
    await cache.delete(key)
    assert await cache.get(key) is None


async def test_cache_keys_separate_orgs_and_params():
    assert query_key(1, "SELECT 1", {"a": 1}) != query_key(2, "SELECT 1", {"a": 1})
    assert query_key(1, "SELECT 1", {"a": 1}) != query_key(1, "SELECT 1", {"a": 2})
    assert query_key(1, "SELECT 1", {"a": 1, "b": 2}) == query_key(1, "SELECT 1", {"b": 2, "a": 1})
    assert config_key(1, "dashboard", 5) != config_key(2, "dashboard", 5)


async def test_memory_cache_is_bounded_and_forgets_after_keep():
    clock = FakeClock()
    cache = MemoryCache(max_entries=3, keep_s=100, clock=clock)
    for i in range(5):
        await cache.set(f"k{i}", i, ttl_s=1)
    assert len(cache) == 3 and await cache.get("k0") is None and (await cache.get("k4")).value == 4
    clock.advance(101)
    assert await cache.get("k4") is None


async def test_redis_cache_sets_an_expiry(redis_client):
    cache = RedisCache(redis_client, keep_s=100)
    await cache.set("cp:test", [1], ttl_s=1)
    assert 0 < await redis_client.ttl("cp:test") <= 100


def test_ttl_policy():
    now = 1_800_000_000
    assert ttl_for("1s", now, now) == 1.0  # last 10 minutes at 1 s
    assert ttl_for("1m", now - 60, now) == 2.0
    assert ttl_for("1h", now, now) == 10.0
    assert ttl_for("1h", now - 86400, now) == 300.0  # closed historical range


async def test_history_cache_hit_then_expiry_in_both_modes(mode, ch, pg_url, request, make_org):
    from litestar.testing import AsyncTestClient

    from tests.api.conftest import make_app

    redis_url = request.getfixturevalue("redis_url") if mode == "redis" else None
    services = build_services(ch, pg_url, redis_url)
    clock = FakeClock(time.time())
    services.cache.clock = clock
    assert services.cache.kind == mode
    org = await make_org()
    async with AsyncTestClient(app=make_app(services)) as api:
        m = await create_metric(api, org)
        start, end = hour_window()
        url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
        first = await api.get(url, headers=org.h("viewer"))
        queries = services.ch.queries
        second = await api.get(url, headers=org.h("viewer"))
        assert first.json()["meta"]["cached"] is False
        assert second.json()["meta"]["cached"] is True
        assert second.json()["rows"] == first.json()["rows"]
        assert services.ch.queries == queries  # answered without ClickHouse
        clock.advance(301)  # a closed range stays fresh 300 s
        third = await api.get(url, headers=org.h("viewer"))
        assert third.json()["meta"]["cached"] is False
        assert services.ch.queries == queries + 1
        # the other org never sees this entry, even for the same metric text
        other = await make_org()
        m2 = await create_metric(api, other)
        r = await api.get(url.replace(str(m["id"]), str(m2["id"]), 1), headers=other.h("viewer"))
        assert r.json()["meta"]["cached"] is False


async def test_request_rate_limit_429_with_retry_after(mode, ch, pg_url, request, make_org):
    from litestar.testing import AsyncTestClient

    from tests.api.conftest import make_app

    redis_url = request.getfixturevalue("redis_url") if mode == "redis" else None
    services = build_services(ch, pg_url, redis_url, limit_rate_per_s=0.5, limit_burst=3)
    clock = FakeClock()
    services.limiter.clock = clock
    noisy, quiet = await make_org(), await make_org()
    async with AsyncTestClient(app=make_app(services)) as api:
        for _ in range(3):
            assert (await api.get("/dashboards", headers=noisy.h("viewer"))).status_code == 200
        r = await api.get("/dashboards", headers=noisy.h("viewer"))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"  # one token at 0.5/s
        assert r.json()["error"]["code"] == "rate_limited"
        assert r.json()["error"]["where"]["limit"] == "rate_per_s"
        # another org is not affected by the noisy one
        assert (await api.get("/dashboards", headers=quiet.h("viewer"))).status_code == 200
        clock.advance(2)
        assert (await api.get("/dashboards", headers=noisy.h("viewer"))).status_code == 200
        assert (await api.get("/dashboards", headers=noisy.h("viewer"))).status_code == 429


async def test_concurrent_queries_and_rows_per_minute(api, api_services, org, other_org):
    clock = FakeClock()
    api_services.limiter.clock = clock
    api_services.limiter.queue_wait_s = 0.01
    m = await create_metric(api, org)
    start, end = hour_window()
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    r = await api.put("/org/limits", json={"concurrent_queries": 1}, headers=org.h("admin"))
    assert r.status_code == 200
    # hold the org's only slot (as a long query would), from the app's own limiter
    slot = api_services.limiter.query_slot(org.id)
    await slot.__aenter__()
    try:
        r = await api.get(url, headers=org.h("viewer"))
    finally:
        await slot.__aexit__(None, None, None)
    assert r.status_code == 429
    assert r.json()["error"]["where"]["limit"] == "concurrent_queries"
    assert r.headers["retry-after"] == "1"
    assert (await api.get(url, headers=org.h("viewer"))).status_code == 200

    # rows read per minute: once the minute's budget is spent, 429 until the next minute
    await api.put("/org/limits", json={"rows_per_minute": 1}, headers=org.h("admin"))
    clock.advance(60 - clock.now % 60 + 1)  # a new minute, one second in
    await api_services.limiter.record_rows(org.id, 5)
    r = await api.get(url + "&filter=country=DE", headers=org.h("viewer"))
    assert r.status_code == 429
    assert r.json()["error"]["where"]["limit"] == "rows_per_minute"
    assert r.headers["retry-after"] == "59"
    clock.advance(60)
    assert (await api.get(url + "&filter=country=DE", headers=org.h("viewer"))).status_code == 200


async def test_limiter_token_bucket_in_redis_is_shared(redis_client):
    clock = FakeClock()
    limits = OrgLimits(rate_per_s=1, burst=2, concurrent_queries=1, rows_per_minute=10)
    node_a = Limiter(limits, redis=redis_client, clock=clock)
    node_b = Limiter(limits, redis=redis_client, clock=clock)
    await node_a.check_rate(7)
    await node_b.check_rate(7)
    with pytest.raises(Exception) as exc:
        await node_a.check_rate(7)
    assert exc.value.status == 429
    await node_b.record_rows(7, 10)
    assert await node_a.rows_used(7) == 10
