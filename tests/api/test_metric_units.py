"""A metric's unit (how its values read: count, currency with code, percent, duration, bytes),
stored with the metric; and series whose empty buckets are gaps (NULL), not zeros."""

from __future__ import annotations

import pytest

from tests.api.conftest import seed_events
from tests.api.test_metrics import hour_window

REVENUE = "SELECT sumIf(value, event = 'purchase') AS revenue"


async def test_unit_is_stored_returned_and_replaced(api, org, other_org):
    body = {
        "name": "revenue",
        "definition": {"text": REVENUE},
        "unit": {"kind": "currency", "currency": "EUR"},
    }
    r = await api.post("/metrics", json=body, headers=org.h("editor"))
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["unit"] == {"kind": "currency", "currency": "EUR"}
    assert (await api.get(f"/metrics/{m['id']}", headers=org.h("viewer"))).json()["unit"] == m[
        "unit"
    ]
    listed = (await api.get("/metrics", headers=org.h("viewer"))).json()
    assert [x["unit"] for x in listed] == [{"kind": "currency", "currency": "EUR"}]

    put = {**body, "unit": {"kind": "duration", "base": "ms"}, "version": 1}
    r = await api.put(f"/metrics/{m['id']}", json=put, headers=org.h("editor"))
    assert r.status_code == 200 and r.json()["unit"] == {"kind": "duration", "base": "ms"}
    r = await api.put(
        f"/metrics/{m['id']}", json={**body, "unit": None, "version": 2}, headers=org.h("editor")
    )
    assert r.status_code == 200 and r.json()["unit"] is None  # a plain count again

    # A metric saved without a unit has none; another org sees neither.
    r = await api.post(
        "/metrics",
        json={"name": "n", "definition": {"text": "SELECT count() AS n"}},
        headers=org.h("editor"),
    )
    assert r.json()["unit"] is None
    assert (await api.get(f"/metrics/{m['id']}", headers=other_org.h("viewer"))).status_code == 404
    assert (await api.get("/metrics", headers=other_org.h("viewer"))).json() == []


@pytest.mark.parametrize(
    "unit",
    [
        {"kind": "currency"},  # no code
        {"kind": "currency", "currency": "eur"},  # not ISO 4217 form
        {"kind": "currency", "currency": "EURO"},
        {"kind": "currency", "currency": "E<b>"},
        {"kind": "count", "currency": "EUR"},  # a code on a count
        {"kind": "count", "base": "ms"},  # a base on a count
        {"kind": "duration", "base": "h"},
        {"kind": "furlongs"},
        {"kind": "percent", "scale": 100},  # unknown field
        "EUR",
        ["count"],
    ],
)
async def test_bad_units_are_refused_and_nothing_is_saved(api, org, unit):
    body = {"name": "m", "definition": {"text": REVENUE}, "unit": unit}
    r = await api.post("/metrics", json=body, headers=org.h("editor"))
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) >= {"code", "message"}
    assert (await api.get("/metrics", headers=org.h("viewer"))).json() == []


async def test_empty_buckets_of_quantiles_averages_and_ratios_are_null(api, api_services, org):
    start, end = hour_window()
    t = start + 600
    seed_events(
        api_services.ch.inner,
        [{"org_id": org.id, "ts": t, "event": "purchase", "value": v} for v in (10.0, 30.0)]
        + [{"org_id": org.id, "ts": t, "event": "pageview", "value": 10.0}] * 2
        + [{"org_id": org.id, "ts": t + 120, "event": "pageview"}],
    )
    text = (
        "SELECT count() AS n, quantile(0.5)(value) AS p50, avgIf(value, event = 'purchase') AS avg_value,"
        " countIf(event = 'purchase') / count() AS conversion"
    )
    body = {"definition": {"text": text}, "from": str(start), "to": str(end), "granularity": "1m"}
    r = await api.post("/query", json=body, headers=org.h("viewer"))
    assert r.status_code == 200, r.text
    rows = {row[0]: row[1:] for row in r.json()["rows"]}
    assert len(rows) == 60
    assert rows[t] == [4, 10.0, 20.0, 0.5]  # values 10, 10, 10, 30
    # A minute with page views only: counts and ratios have values; no purchase → no average.
    assert rows[t + 120] == [1, 0.0, None, 0.0]
    # A minute without events: 0 for the count, a gap for the others (never 0 or NaN).
    assert rows[t + 60] == [0, None, None, None]
    assert sum(1 for v in rows.values() if v[1] is None) == 58
