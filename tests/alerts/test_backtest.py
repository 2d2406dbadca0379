"""Backtest: computed over the rollups; agrees with the live evaluator at 1 s resolution."""

from __future__ import annotations

import random
import time

import pytest

from tests.alerts.conftest import (
    SETTLE_S,
    base_second,
    create_alert,
    events_of,
    h,
    series_events,
)

PRICE = {"text": "SELECT avg(value) AS price WHERE event = 'buy'"}


def live_events(rows, base):
    return [(e["kind"], int(e["at"].timestamp()) - base, e["value"]) for e in rows]


def backtest_events(body, base):
    return [(e["kind"], e["t"] - base, e["value"]) for e in body["events"]]


@pytest.mark.parametrize(
    "for_seconds,resolve,recovery,keep",
    [(3, None, None, 0), (2, 4, None, 0), (1, 1, None, 0), (2, 2, 3, 0), (1, 2, 3, 4)],
)
async def test_backtest_agrees_with_live_evaluator(
    env, org, pg_url, for_seconds, resolve, recovery, keep
):
    rng = random.Random(for_seconds * 100 + (resolve or 0) + keep)
    base = base_second(150)
    counts = [rng.choice([0, 2, 4, 6, 8, 12]) for _ in range(60)]
    over = {"for_seconds": for_seconds, "threshold": 5, "keep_firing_seconds": keep}
    if resolve:
        over["resolve_after_seconds"] = resolve
    if recovery is not None:
        over["recovery_threshold"] = recovery
    a = await create_alert(env, org, **over)
    await env.post(org.api_key, series_events(base, counts))
    await env.tick(base + SETTLE_S - 1)  # starts with second `base`
    await env.tick_through(base + SETTLE_S, base + len(counts) - 1 + SETTLE_S)
    live = live_events(await events_of(pg_url, a["id"]), base)
    assert live, "the random stream should fire at least once"

    keys = ("metric_inline", "comparator", "threshold", "for_seconds", "filters")
    body = {k: a[k] for k in (*keys, "recovery_threshold", "keep_firing_seconds")}
    body |= {"resolve_after_seconds": resolve, "from": base, "to": base + len(counts)}
    r = await env.http.post("/alerts/backtest", json=body, headers=h(org))
    assert r.status_code == 200, r.text
    bt = r.json()
    assert bt["resolution_s"] == 1 and bt["table"] == "rollup_1s"
    assert bt["approximation"] is None
    assert backtest_events(bt, base) == live


async def test_backtest_agrees_on_no_data(env, org, pg_url):
    base = base_second(150)
    a = await create_alert(env, org, metric_inline=PRICE, threshold=50, for_seconds=2)
    prices = [100, None, 100, 100, 40, None, None, 100, 100, 30, 20, None]
    events = [
        {"event": "buy", "ts": (base + i) * 1000, "value": p}
        for i, p in enumerate(prices)
        if p is not None
    ]
    await env.post(org.api_key, events)
    await env.tick(base + SETTLE_S - 1)
    await env.tick_through(base + SETTLE_S, base + len(prices) - 1 + SETTLE_S)
    live = live_events(await events_of(pg_url, a["id"]), base)
    assert live == [("firing", 3, 100.0), ("resolved", 10, 20.0)]
    r = await env.http.post(
        "/alerts/backtest",
        json={
            "metric_inline": PRICE,
            "comparator": ">",
            "threshold": 50,
            "for_seconds": 2,
            "from": base,
            "to": base + len(prices),
        },
        headers=h(org),
    )
    bt = r.json()
    assert backtest_events(bt, base) == live
    assert bt["no_data_points"] == 4


async def test_backtest_beyond_1s_retention_uses_minutes(env, org):
    minute = (int(time.time()) - 3600) // 60 * 60
    # 900 errors spread over one minute: 15/s on average; quiet minutes around it
    events = series_events(minute, [15] * 60)
    await env.post(org.api_key, events)
    r = await env.http.post(
        "/alerts/backtest",
        json={
            "metric_inline": {"text": "SELECT countIf(event = 'err') AS errors"},
            "comparator": ">",
            "threshold": 10,
            "for_seconds": 45,
            "from": minute - 600,
            "to": minute + 600,
        },
        headers=h(org),
    )
    assert r.status_code == 200, r.text
    bt = r.json()
    assert bt["resolution_s"] == 60 and bt["table"] == "rollup_1m"
    assert bt["for_steps"] == 1 and bt["resolve_steps"] == 1
    assert "1-minute" in bt["approximation"] and "count/60" in bt["approximation"]
    assert [(e["kind"], e["t"] - minute, e["value"]) for e in bt["events"]] == [
        ("firing", 0, 15.0),
        ("resolved", 60, 0.0),
    ]
    # The values it judged, per minute (the alert editor draws them under its threshold).
    judged = dict(zip(bt["series"]["t"], bt["series"]["value"], strict=True))
    assert len(judged) == bt["points"] == 20
    assert judged[minute] == 15.0
    assert {v for t, v in judged.items() if t != minute} <= {0, None}


async def test_backtest_validation(env, org):
    ok = {
        "metric_inline": {"text": "SELECT count() AS n"},
        "comparator": ">",
        "threshold": 1,
        "for_seconds": 5,
        "from": "now-5m",
        "to": "now",
    }
    r = await env.http.post("/alerts/backtest", json=ok, headers=h(org))
    assert r.status_code == 200, r.text
    assert r.json()["resolution_s"] == 1
    for bad, field in (
        ({"comparator": "=="}, "comparator"),
        ({"for_seconds": -1}, "for_seconds"),
        ({"for_seconds": 10**9}, "for_seconds"),
        ({"metric_inline": {"text": "SELECT nope(x)"}}, "metric_inline.text"),
        ({"metric_inline": {"text": "SELECT count() GROUP BY country"}}, "metric_inline.text"),
    ):
        r = await env.http.post("/alerts/backtest", json=ok | bad, headers=h(org))
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["where"]["field"] == field, r.text
    r = await env.http.post(
        "/alerts/backtest", json=ok | {"from": "now-30d", "to": "now"}, headers=h(org)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_range"


async def test_backtest_series_is_the_orgs_own(env, org, make_org):
    """The judged `series` the alert editor draws holds only the asking org's rows; another
    org's saved metric is a 422, as for an alert."""
    other = await make_org("globex")
    minute = (int(time.time()) - 3600) // 60 * 60
    await env.post(org.api_key, series_events(minute, [6] * 60))
    await env.post(other.api_key, series_events(minute, [2] * 60))
    body = {
        "metric_inline": {"text": "SELECT countIf(event = 'err') AS errors"},
        "comparator": ">",
        "threshold": 4,
        "for_seconds": 60,
        "from": minute - 120,
        "to": minute + 120,
    }
    judged = {}
    for who in (org, other):
        r = await env.http.post("/alerts/backtest", json=body, headers=h(who))
        assert r.status_code == 200, r.text
        series = r.json()["series"]
        judged[who.id] = dict(zip(series["t"], series["value"], strict=True))[minute]
    assert judged == {org.id: 6.0, other.id: 2.0}
    r = await env.http.post(
        "/metrics",
        json={"name": "Errors", "definition": body["metric_inline"]},
        headers=h(org),
    )
    assert r.status_code == 201, r.text
    theirs = {k: v for k, v in body.items() if k != "metric_inline"} | {"metric_id": r.json()["id"]}
    r = await env.http.post("/alerts/backtest", json=theirs, headers=h(other))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_metric"
    assert "series" not in r.text
