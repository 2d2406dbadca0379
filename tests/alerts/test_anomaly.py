"""Anomaly alerts on a seeded series: 15 days of one `load` event per minute (level 100,
400 during one clock hour every day — the seasonal peak — with ±5 of noise), a 5-minute spike
three days ago and a 1-minute spike three minutes ago.

The live evaluator fires on the recent spike exactly `for_seconds` after it starts and the
1-second backtest agrees second for second (same band); the 7-day backtest fires on both
spikes and on none of the seven seasonal peaks (which a last-hour baseline does fire on); the
baseline is read once per minute, not every second."""

from __future__ import annotations

import random
import time

import pytest

from tests.alerts.conftest import SETTLE_S, events_of, h

LOAD = {"text": "SELECT sum(value) AS total WHERE event = 'load'"}
DAY, WEEK = 86400, 7 * 86400


class Series:
    def __init__(self) -> None:
        now = int(time.time())
        self.minute_now = now // 60 * 60
        self.spike = self.minute_now - 180  # the live spike: one minute, three minutes ago
        self.old_spike = (now - 3 * DAY) // 3600 * 3600 + 1200  # five minutes, 3 days ago
        self.peak_hour = (now // 3600 - 3) % 24  # the same clock hour every day
        if (self.old_spike // 3600) % 24 == self.peak_hour:
            self.old_spike += 3 * 3600
        rng = random.Random(19)
        self.events = []
        for m in range(self.minute_now - 15 * DAY, self.minute_now, 60):
            level = 400.0 if (m // 3600) % 24 == self.peak_hour else 100.0
            if m == self.spike or self.old_spike <= m < self.old_spike + 300:
                level = 1000.0
            self.events.append(
                {"event": "load", "ts": m * 1000, "value": level + rng.uniform(-5, 5)}
            )

    def peak_starts(self, time_from: int, time_to: int) -> list[int]:
        first = time_from // 3600 * 3600
        return [
            h
            for h in range(first, time_to, 3600)
            if (h // 3600) % 24 == self.peak_hour and h >= time_from
        ]


@pytest.fixture
async def seeded(make_env, org):
    series = Series()
    async with make_env(ingest_max_past_skew_s=16 * DAY, ingest_max_events=10_000) as env:
        for i in range(0, len(series.events), 9000):
            await env.post(org.api_key, series.events[i : i + 9000])
        yield env, series


def anomaly_alert(baseline: str = "week") -> dict:
    return {
        "name": "load anomaly",
        "kind": "anomaly",
        "metric_inline": LOAD,
        "anomaly": {"baseline": baseline, "sensitivity": 4},
        "for_seconds": 10,
        "resolve_after_seconds": 10,
    }


async def test_fires_on_the_spike_within_for_seconds_and_backtest_agrees(seeded, org, pg_url):
    env, s = seeded
    r = await env.http.post("/alerts", json=anomaly_alert(), headers=h(org))
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["kind"] == "anomaly" and a["comparator"] is None and a["anomaly"]["baseline"] == "week"
    first = s.spike - 30
    await env.tick(first - 1 + SETTLE_S)  # the alert starts with second `first`
    await env.tick_through(first + SETTLE_S, s.spike + 80 + SETTLE_S)
    live = await events_of(pg_url, a["id"])
    # the windowed value is 1000 from the spike's first second for 60 s: fires on its 10th
    # second, resolves on the 10th second back inside the band
    assert [(e["kind"], int(e["at"].timestamp()) - s.spike) for e in live] == [
        ("firing", 9),
        ("resolved", 69),
    ]
    fired = live[0]
    band = fired["details"]["band"]
    assert 1000 - 5 <= fired["value"] <= 1000 + 5
    assert band["upper"] < 130 and band["lower"] > 70 and fired["threshold"] == band["upper"]
    # 111 seconds over three minutes were evaluated (spike-1, spike, spike+1): a baseline read
    # per minute (read ahead in the background, inline when not there yet), not per second
    group = next(iter(env.evaluator.groups.values()))
    assert 3 <= group.baseline.reads <= 5
    assert env.evaluator.evaluated_seconds == 111

    body = {k: v for k, v in anomaly_alert().items() if k != "name"}
    r = await env.http.post(
        "/alerts/backtest", json=body | {"from": first, "to": s.spike + 81}, headers=h(org)
    )
    assert r.status_code == 200, r.text
    bt = r.json()
    assert bt["resolution_s"] == 1 and bt["baseline"] == "week"
    assert [(e["kind"], e["t"], e["value"]) for e in bt["events"]] == [
        (e["kind"], int(e["at"].timestamp()), e["value"]) for e in live
    ]
    at = bt["band"]["t"].index(int(fired["at"].timestamp()))
    assert bt["band"]["upper"][at] == band["upper"] and bt["band"]["lower"][at] == band["lower"]
    assert len(bt["band"]["value"]) == bt["points"] == s.spike + 81 - first


async def test_week_backtest_fires_on_spikes_and_not_on_seasonal_peaks(seeded, org):
    env, s = seeded
    body = {k: v for k, v in anomaly_alert().items() if k != "name"}
    week = body | {"from": "now-7d", "to": "now"}
    r = await env.http.post("/alerts/backtest", json=week, headers=h(org))
    assert r.status_code == 200, r.text
    bt = r.json()
    assert bt["resolution_s"] == 60 and bt["points"] >= 7 * 1440 - 1
    assert bt["for_steps"] == 1 and "1-minute" in bt["approximation"]
    assert [(e["kind"], e["t"]) for e in bt["events"]] == [
        ("firing", s.old_spike),
        ("resolved", s.old_spike + 300),
        ("firing", s.spike),
        ("resolved", s.spike + 60),
    ]
    peaks = s.peak_starts(bt["from"], bt["to"])
    assert len(peaks) >= 6
    # the band follows last week's peak: at each peak's start it is around 400, not 100
    t = bt["band"]["t"]
    for p in peaks:
        i = t.index(p)
        if bt["band"]["upper"][i] is not None:
            assert bt["band"]["lower"][i] > 350 and bt["band"]["upper"][i] < 450

    # the same alert with a last-hour baseline cannot know the peaks: it fires on them
    hour = week | {"anomaly": {"baseline": "hour", "sensitivity": 4}}
    r = await env.http.post("/alerts/backtest", json=hour, headers=h(org))
    fired = [e["t"] for e in r.json()["events"] if e["kind"] == "firing"]
    assert sum(1 for p in peaks if p in fired) >= len(peaks) - 1
