"""Single flight, jittered TTLs and refresh-ahead of the history path (docs/api.md, "Hot cache").

* N concurrent identical requests → one ClickHouse query; the others wait for it.
* TTLs are jittered down, never up.
* A refresh ahead of expiry runs in the background; no answer is older than its freshness.
* Saved definitions and token lookups: one PostgreSQL read per key at a time, renewed in the
  background while in use, and a change on this node is never overwritten by an older read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.api.series import forget_definition, saved_definition
from app.auth import Authenticator, Principal
from app.cache import TTL_JITTER, Entry, SingleFlight, jittered, ttl_for
from tests.api.conftest import FakeClock
from tests.api.test_metrics import create_metric, hour_window


class Gate:
    """Holds every ClickHouse query of the app until opened."""

    def __init__(self, services: Any):
        self.open = asyncio.Event()
        self.waiting = 0
        inner_query = services.ch.query

        async def query(*args: Any, **kwargs: Any) -> Any:
            self.waiting += 1
            await self.open.wait()
            return await inner_query(*args, **kwargs)

        services.ch.query = query


async def until(predicate, steps: int = 500) -> None:
    """Let the app's tasks run until `predicate()` holds (bounded by loop turns, not time)."""
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never reached")


def in_app(api: Any, fn: Any) -> Any:
    """Run `fn()` on the app's own event loop (the test client serves one request at a time
    from a portal thread, so concurrency has to be created there) and answer its result."""
    return api.blocking_portal.call(fn)


def concurrent_gets(api: Any, url: str, headers: dict[str, str], n: int, started: Any) -> Any:
    """n concurrent GETs through the whole ASGI app; `started(gate)` runs once they are all in
    flight (the gate holds ClickHouse until then). Answers (responses, gate)."""
    import httpx

    async def scenario() -> Any:
        gate = Gate(api.app.state.services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app), base_url="http://app"
        ) as client:
            requests = [asyncio.ensure_future(client.get(url, headers=headers)) for _ in range(n)]
            await started(gate)
            gate.open.set()
            return await asyncio.gather(*requests), gate

    return in_app(api, scenario)


def query_entries(services: Any) -> dict[str, Entry]:
    return {k: v[0] for k, v in services.cache._data.items() if k.startswith("cp:q:")}


async def test_concurrent_identical_requests_run_one_clickhouse_query(api, api_services, org):
    m = await create_metric(api, org)
    start, end = hour_window()
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    flights = api_services.cache.flights
    before = api_services.ch.query_count
    n = 8

    async def all_waiting(gate: Gate) -> None:
        # All but the first joined its run, and the run reached ClickHouse (it may still be
        # taking its query slot when the last request joins).
        await until(lambda: flights.joined >= n - 1 and gate.waiting >= 1)
        assert gate.waiting == 1

    responses, _ = concurrent_gets(api, url, org.h("viewer"), n, all_waiting)
    answers = [r.json() for r in responses]
    assert api_services.ch.query_count - before == 1
    assert sorted(a["meta"]["cached"] for a in answers) == [False] + [True] * (n - 1)
    assert all(a["rows"] == answers[0]["rows"] for a in answers)
    assert all(a["meta"]["table"] == "rollup_1m" and not a["meta"]["stale"] for a in answers)
    assert len(flights) == 0  # nothing left running


async def test_a_shared_failure_degrades_every_waiter(api, api_services, org):
    m = await create_metric(api, org)
    start, end = hour_window()
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1h"
    api_services.ch.down = True

    async def all_waiting(gate: Gate) -> None:
        await until(lambda: api_services.cache.flights.joined >= 3)

    answers, gate = concurrent_gets(api, url, org.h("viewer"), 4, all_waiting)
    assert [r.status_code for r in answers] == [503] * 4  # nothing cached to answer with
    assert gate.waiting == 1  # one attempt on ClickHouse for the four
    assert {r.json()["error"]["code"] for r in answers} == {"clickhouse_unavailable"}


def test_jitter_only_shortens_freshness():
    assert jittered(300.0, rand=lambda: 0.0) == 300.0
    assert jittered(300.0, rand=lambda: 0.999999) == pytest.approx(300.0 * (1 - TTL_JITTER))
    values = [jittered(10.0) for _ in range(2000)]
    assert all(10.0 * (1 - TTL_JITTER) <= v <= 10.0 for v in values)
    assert max(values) - min(values) > 10.0 * TTL_JITTER / 2  # actually spread


async def test_stored_entries_are_jittered_within_the_policy(api, api_services, org):
    m = await create_metric(api, org)
    now = int(time.time()) // 3600 * 3600
    for i in range(6):  # six distinct closed day-long windows
        end = now - (i + 2) * 86400
        url = f"/metrics/{m['id']}/history?from={end - 86400}&to={end}&granularity=1h"
        assert (await api.get(url, headers=org.h("viewer"))).status_code == 200
    ttls = [e.fresh_until - e.stored_at for e in query_entries(api_services).values()]
    assert len(ttls) == 6
    policy = ttl_for("1h", now - 86400, now)
    assert all(policy * (1 - TTL_JITTER) <= t <= policy for t in ttls)
    assert len(set(ttls)) > 1


async def test_refresh_ahead_keeps_answers_within_their_freshness(api, api_services, org):
    clock = FakeClock(time.time())
    api_services.cache.clock = clock
    m = await create_metric(api, org)
    start, end = hour_window()
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    first = (await api.get(url, headers=org.h("viewer"))).json()
    assert first["meta"]["cached"] is False
    (entry,) = query_entries(api_services).values()
    ttl = entry.fresh_until - entry.stored_at
    count = api_services.ch.query_count

    # inside the refresh-ahead window: answered from the entry, one refresh in the background
    clock.now = entry.fresh_until - 0.05 * ttl
    r = (await api.get(url, headers=org.h("viewer"))).json()
    assert r["meta"]["cached"] is True and r["meta"]["age_s"] <= ttl
    assert api_services.cache.flights.started == 2

    async def refreshed_now() -> None:
        await until(lambda: len(api_services.cache.flights) == 0)

    in_app(api, refreshed_now)
    assert api_services.ch.query_count == count + 1
    (refreshed,) = query_entries(api_services).values()
    assert refreshed.stored_at == clock.now and refreshed.fresh_until > entry.fresh_until
    r = (await api.get(url, headers=org.h("viewer"))).json()
    assert r["meta"]["cached"] is True and r["meta"]["age_s"] == 0

    # nobody asked during the window: past its freshness, the entry is never answered as fresh
    clock.now = refreshed.fresh_until
    r = (await api.get(url, headers=org.h("viewer"))).json()
    assert r["meta"]["cached"] is False and r["meta"]["age_s"] == 0
    assert api_services.ch.query_count == count + 2


def test_refresh_window_is_the_end_of_freshness():
    entry = Entry(value=None, stored_at=100.0, fresh_until=110.0)
    assert not entry.refresh_due(107.9)
    assert entry.refresh_due(108.0) and entry.refresh_due(109.99)
    assert not entry.refresh_due(110.0)  # expired: a normal miss, not a refresh
    long = Entry(value=None, stored_at=0.0, fresh_until=300.0)
    assert not long.refresh_due(297.9) and long.refresh_due(298.0)  # at most 2 s ahead


async def test_single_flight_forget_starts_a_new_run():
    flights = SingleFlight()
    release = asyncio.Event()
    seen: list[bool] = []

    async def work(tag: str) -> str:
        await release.wait()
        seen.append(flights.is_current("k"))
        return tag

    first, started = flights.run("k", lambda: work("old"))
    same, again = flights.run("k", lambda: work("unused"))
    assert started and not again and same is first
    flights.forget("k")
    second, started = flights.run("k", lambda: work("new"))
    assert started and second is not first
    release.set()
    assert await first == "old" and await second == "new"
    assert sorted(seen) == [False, True]  # the forgotten run knows it is not current
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    assert len(flights) == 0


async def test_definition_reads_are_shared_and_a_change_wins(api, api_services, org):
    m = await create_metric(api, org)
    forget_definition(api_services, org.id, m["id"])
    repo = api_services.store.metrics
    real_get, release, calls = repo.get, asyncio.Event(), []

    async def gated_get(org_id: int, metric_id: int) -> dict[str, Any]:
        calls.append(metric_id)
        row = await real_get(org_id, metric_id)
        await release.wait()
        return row

    repo.get = gated_get
    principal = Principal(org.id, 0, "viewer")

    async def scenario() -> list[Any]:
        readers = [
            asyncio.ensure_future(saved_definition(api_services, principal, m["id"]))
            for _ in range(5)
        ]
        await until(lambda: len(calls) == 1)
        await asyncio.sleep(0.05)  # the other four are waiting on that one read
        # a PUT through this node lands while the read is still running
        forget_definition(api_services, org.id, m["id"])
        release.set()
        return await asyncio.gather(*readers)

    results = in_app(api, scenario)
    assert calls == [m["id"]] and all(r == m["definition"] for r in results)
    assert (org.id, m["id"]) not in api_services.definition_memo  # the old read is not kept
    repo.get = real_get

    async def read_again() -> Any:
        return await saved_definition(api_services, principal, m["id"])

    assert in_app(api, read_again) == m["definition"]
    assert (org.id, m["id"]) in api_services.definition_memo


class FakeTokens:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any] | None] = {}
        self.lookups = 0

    async def principal(self, token_hash: str) -> dict[str, Any] | None:
        self.lookups += 1
        return self.rows.get(token_hash)


class FakeStore:
    def __init__(self) -> None:
        self.tokens = FakeTokens()


async def test_token_lookups_are_renewed_ahead_and_revocation_still_bounded():
    from app.credentials import USER_TOKEN_PREFIX, hash_secret, new_secret

    store, clock = FakeStore(), FakeClock(0.0)
    auth = Authenticator(store, fresh_s=4.0, clock=clock)
    token = new_secret(USER_TOKEN_PREFIX)  # a malformed one would be refused without lookup
    store.tokens.rows[hash_secret(token)] = {"org_id": 7, "user_id": 1, "role": "viewer"}
    assert (await auth.principal(token)).org_id == 7
    assert store.tokens.lookups == 1
    clock.advance(2.0)  # younger than 3/4 of fresh_s: no lookup
    await auth.principal(token)
    assert store.tokens.lookups == 1
    clock.advance(1.5)  # in the last quarter: answered at once, renewed in the background
    assert (await auth.principal(token)).org_id == 7
    await until(lambda: not auth._refreshing)
    assert store.tokens.lookups == 2
    assert auth._cache[hash_secret(token)][1] == 3.5  # renewed as of the lookup

    store.tokens.rows[hash_secret(token)] = None  # revoked
    clock.advance(3.0)  # renewal due again: the background lookup sees the revocation
    await auth.principal(token)
    await until(lambda: not auth._refreshing)
    with pytest.raises(Exception) as exc:
        await auth.principal(token)
    assert exc.value.status == 401
    # and without traffic in the window, the entry simply expires after fresh_s (as before)
