"""The per-org ingest rate limit shared by every node through the real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.ingest.ratelimit import RedisRateLimiter


@pytest.fixture
async def nodes(redis_url):
    """Two limiters with their own Redis connections: two app nodes."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield [RedisRateLimiter(c, 10) for c in clients]
    for c in clients:
        await c.aclose()


async def test_nodes_share_one_bucket_per_org(nodes):
    a, b = nodes
    assert await a.acquire(1, 10) == 0  # a full bucket: one second of rate
    wait = await b.acquire(1, 1)  # the other node sees the same, now empty, bucket
    assert 0 < wait <= 0.1
    assert await b.acquire(2, 10) == 0  # buckets are per org
    assert (a.redis_errors, b.redis_errors) == (0, 0)


async def test_a_big_batch_is_admitted_once_and_the_debt_delays_the_next(nodes):
    a, b = nodes
    assert await a.acquire(7, 25) == 0  # more than capacity: admitted from a full bucket
    wait = await b.acquire(7, 1)  # 15 tokens in debt + 1 needed, at 10/s
    assert 1.5 < wait <= 1.6
    assert await a.acquire(7, 1, rate_per_s=0) == 0  # 0 = unlimited (an org override)


async def test_redis_down_falls_back_to_this_nodes_bucket():
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    down = aioredis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    # 0.01 events/s: after one event the local bucket stays in debt for ~100 s.
    limiter = RedisRateLimiter(down, 0.01)
    try:
        assert await limiter.acquire(1, 1) == 0
        assert await limiter.acquire(1, 1) > 0  # judged by this node's bucket
        assert limiter.redis_errors == 2
    finally:
        await down.aclose()


async def test_http_429_on_the_second_node(ch, pg_url, redis_url, org, tmp_path):
    from app.db import open_pool
    from app.ingest.writer import EventWriter
    from app.runtime import build_services
    from app.server import create_app
    from app.services import Services

    def node(name: str) -> Services:
        settings = Settings(
            data_dir=str(tmp_path / name),
            clickhouse_database=ch.database,
            database_url=pg_url,
            redis_url=redis_url,
            ingest_rate_per_s=1,
            writer_max_delay_ms=20,
        )
        return build_services(
            settings,
            migrate=False,
            ch=ch,
            pg=open_pool(pg_url, min_size=1, max_size=2),
            writer=EventWriter(ch, settings),
            redis=aioredis.Redis.from_url(redis_url),
        )

    first, second = node("a"), node("b")
    async with (
        AsyncTestClient(app=create_app(first)) as a,
        AsyncTestClient(app=create_app(second)) as b,
    ):
        r = await a.post("/v1/events", json=[{"event": "x"}] * 3, headers=org.ingest_headers)
        assert r.status_code == 200, r.text
        r = await b.post("/v1/events", json=[{"event": "y"}], headers=org.ingest_headers)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
