"""Degradation: ClickHouse down → last cached answer with stale: true (else 503);
PostgreSQL down → dashboards already read come from cache; readyz says what is degraded."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.api.conftest import FakeClock, seed_events, set_pg_down
from tests.api.test_metrics import VIEWS, create_metric, hour_window


@pytest.fixture(params=["memory", "redis"])
def api_services(request, ch, pg_url, app_settings, api_settings):
    from tests.api.conftest import build_services

    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return build_services(ch, pg_url, redis_url, base=app_settings, **api_settings)


async def test_history_answers_stale_from_cache_when_clickhouse_fails(api, api_services, org):
    clock = FakeClock(time.time())
    api_services.cache.clock = clock
    start, end = hour_window()
    seed_events(api_services.ch.inner, [{"org_id": org.id, "ts": start + 60}] * 4)
    m = await create_metric(api, org)
    url = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    fresh = await api.get(url, headers=org.h("viewer"))
    assert fresh.status_code == 200 and fresh.json()["meta"]["stale"] is False

    api_services.ch.down = True
    clock.advance(3600 - 1)  # long past the freshness TTL, still kept
    r = await api.get(url, headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["stale"] is True
    assert r.json()["meta"]["age_s"] >= 3599
    assert r.json()["rows"] == fresh.json()["rows"]
    assert r.json()["meta"]["table"] == "rollup_1m"

    # a query never answered before has nothing to fall back on: 503 in the error shape
    r = await api.get(url.replace("granularity=1m", "granularity=1h"), headers=org.h("viewer"))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "clickhouse_unavailable"
    assert r.headers["retry-after"]

    ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert "clickhouse" in ready.json()["degraded"]
    assert ready.json()["recent_failures"]["clickhouse"]["stale_served"] >= 1

    api_services.ch.down = False
    r = await api.get(url, headers=org.h("viewer"))
    assert r.json()["meta"]["stale"] is False and r.json()["meta"]["age_s"] == 0


async def test_relative_range_falls_back_to_the_last_answer(api, api_services, org):
    m = await create_metric(api, org)
    url = f"/metrics/{m['id']}/history?from=now-1h&granularity=1m"
    assert (await api.get(url, headers=org.h("viewer"))).json()["meta"]["stale"] is False
    api_services.ch.down = True
    # the compiled SQL of `now-1h` moves with time; the fallback is the same moving window
    api_services.cache.clock = FakeClock(time.time() + 120)
    r = await api.get(url, headers=org.h("viewer"))
    assert r.status_code == 200 and r.json()["meta"]["stale"] is True


async def test_dashboard_data_degrades_per_chart(api, api_services, org):
    m = await create_metric(api, org)
    d = await api.post(
        "/dashboards",
        json={
            "name": "d",
            "charts": [
                {
                    "chart_type": "line",
                    "metric_id": m["id"],
                    "granularity": "1m",
                    "default_range": "1h",
                },
                {
                    "chart_type": "bar",
                    "metric_inline": {"text": VIEWS},
                    "granularity": "1h",
                    "default_range": "1d",
                },
            ],
        },
        headers=org.h("editor"),
    )
    did = d.json()["id"]
    start, end = hour_window()
    url = f"/dashboards/{did}/data?from={start}&to={end}"
    r = await api.get(url, headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    assert [c["meta"] and c["meta"]["table"] for c in r.json()["charts"]] == [
        "rollup_1m",
        "rollup_1h",
    ], r.text
    assert r.json()["stale"] is False
    api_services.ch.down = True
    r = await api.get(url, headers=org.h("viewer"))  # still fresh in the cache: not stale
    assert r.json()["stale"] is False and all(c["meta"]["cached"] for c in r.json()["charts"])
    api_services.cache.clock = FakeClock(time.time() + 600)
    r = await api.get(url, headers=org.h("viewer"))
    assert r.status_code == 200
    assert r.json()["stale"] is True
    assert all(c["meta"]["stale"] for c in r.json()["charts"])


async def test_postgres_down_serves_dashboards_already_read(api, api_services, org):
    start, end = hour_window()
    m = await create_metric(api, org)
    d = await api.post(
        "/dashboards",
        json={"name": "ops", "charts": [{"chart_type": "line", "metric_id": m["id"]}]},
        headers=org.h("editor"),
    )
    did = d.json()["id"]
    assert (await api.get(f"/dashboards/{did}", headers=org.h("viewer"))).json()["stale"] is False
    hist = f"/metrics/{m['id']}/history?from={start}&to={end}&granularity=1m"
    assert (await api.get(hist, headers=org.h("viewer"))).status_code == 200

    set_pg_down(api_services, True)  # PostgreSQL unreachable from now on

    r = await api.get(f"/dashboards/{did}", headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    assert r.json()["stale"] is True and r.json()["name"] == "ops"
    assert r.headers["etag"] == '"1"'
    # history still works: the saved definition was cached, ClickHouse is up
    r = await api.get(hist, headers=org.h("viewer"))
    assert r.status_code == 200 and r.json()["meta"]["stale"] is False
    # something never read: 503 in the error shape
    r = await api.get("/dashboards", headers=org.h("viewer"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert "postgres" in ready.json()["degraded"]
    # Known down: the store's circuit breaker answers at once, without trying PostgreSQL.
    refused = api_services.store.breaker.refused
    r = await api.get("/dashboards", headers=org.h("viewer"))
    assert r.status_code == 503 and api_services.store.breaker.refused == refused + 1
    set_pg_down(api_services, False)
    # Back: the first call after CLICKPULSE_PG_BREAKER_S probes, succeeds and closes it.
    api_services.store.breaker.opened_at -= api_services.settings.pg_breaker_s
    assert (await api.get("/dashboards", headers=org.h("viewer"))).status_code == 200
    assert not api_services.store.breaker.is_open


class _MovingTime:
    """Stands in for the `time` module of app.api.series: its wall clock moves when the test
    says (a relative range compiles to new SQL each bucket); monotonic time is the real one."""

    def __init__(self, now: float):
        self.now = now
        self.monotonic = time.monotonic

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("failure", ["down", "timeout"])
async def test_chart_falls_back_on_the_answer_history_stored_for_the_same_sql(
    api, api_services, org, monkeypatch, failure
):
    import app.api.series

    clock = _MovingTime(time.time())
    monkeypatch.setattr(app.api.series, "time", clock)
    now = int(clock.now)
    seed_events(api_services.ch.inner, [{"org_id": org.id, "ts": now - 600}] * 3)
    m = await create_metric(api, org)
    d = await api.post(
        "/dashboards",
        json={
            "name": "d",
            "charts": [
                {"chart_type": "line", "metric_id": m["id"], "granularity": "1m"},
            ],
        },
        headers=org.h("editor"),
    )
    assert d.status_code == 201, d.text
    # The metric's history page (its default hour at 1 m) runs the query and stores the answer.
    history_url = f"/metrics/{m['id']}/history?granularity=1m"
    history = await api.get(history_url, headers=org.h("viewer"))
    assert history.status_code == 200 and history.json()["meta"]["cached"] is False
    assert sum(row[1] for row in history.json()["rows"]) == 3
    # The chart compiles to the same SQL: answered from that entry, it never ran the query.
    data_url = f"/dashboards/{d.json()['id']}/data"
    chart = (await api.get(data_url, headers=org.h("viewer"))).json()["charts"][0]
    assert chart["meta"]["cached"] is True and chart["rows"] == history.json()["rows"]

    if failure == "down":
        api_services.ch.down = True
    else:  # ClickHouse hangs: the query times out
        api_services.settings.query_timeout_s = 0.2

        async def hang(*args, **kwargs):
            await asyncio.Event().wait()  # never answers

        monkeypatch.setattr(api_services.ch, "query", hang)
    clock.now += 180  # a few buckets later: "the last hour" compiles to new SQL
    r = await api.get(history_url, headers=org.h("viewer"))
    assert r.status_code == 200 and r.json()["meta"]["stale"] is True
    r = await api.get(data_url, headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    chart = r.json()["charts"][0]
    assert chart.get("error") is None, chart  # before: clickhouse_unavailable for the chart
    assert chart["meta"]["stale"] is True and r.json()["stale"] is True
    assert chart["rows"] == history.json()["rows"]


def test_last_known_key_is_shared_by_requests_meaning_the_same_query():
    from app.api.params import window_of
    from app.cache import last_known_key

    sql = "SELECT 1 WHERE org_id = {org_id: UInt32} AND t >= {time_from: UInt32}"
    hour_ago = {"org_id": 7, "time_from": 1_000, "time_to": 4_600}
    later = {"org_id": 7, "time_from": 1_060, "time_to": 4_660}
    # the default hour, `from=now-1h` and `from=now-1h&to=now` are one moving window
    assert window_of(None, None, 3600) == window_of("now-1h", None, 60) == ("now", 0, 3600)
    assert window_of("now-1h", "now", 60) == ("now", 0, 3600)
    assert window_of("now-2h", "now-1h", 60) == ("now", 3600, 3600)
    assert window_of("1000", None, 60) == ("now", 0, "from", 1000)
    assert window_of(None, "4600", 3600) is None and window_of("1000", "4600", 60) is None
    moving = window_of(None, None, 3600)
    key = last_known_key(7, sql, hour_ago, moving)
    assert last_known_key(7, sql, later, moving) == key  # time moved on: same last answer
    assert last_known_key(8, sql, {**hour_ago, "org_id": 8}, moving) != key  # never across orgs
    assert last_known_key(7, sql, hour_ago, ("now", 0, 1800)) != key
    assert last_known_key(7, sql + " LIMIT 1", hour_ago, moving) != key
    # an absolute window keys on its exact parameters
    assert last_known_key(7, sql, hour_ago, None) != last_known_key(7, sql, later, None)


def test_degradation_logs_each_change_of_state_once():
    import logging

    from app.cache import Degradation

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("clickpulse.degradation")
    logger.addHandler(handler)
    try:
        clock = FakeClock()
        degradation = Degradation(clock=clock)
        for _ in range(5):  # five requests see ClickHouse fail: one line
            clock.advance(1)
            degradation.failed("clickhouse", "Connection refused")
        clock.advance(1)
        degradation.ok("clickhouse")
        degradation.ok("clickhouse")  # still fine: nothing more
        clock.advance(1)
        degradation.failed("clickhouse", "timed out")  # a new failing period
    finally:
        logger.removeHandler(handler)
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", "clickhouse is failing (seen by requests): Connection refused"),
        ("WARNING", "clickhouse answers requests again"),
        ("ERROR", "clickhouse is failing (seen by requests): timed out"),
    ]
