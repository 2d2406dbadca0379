"""Grouped alerts: one machine per group-by value, capped; group values only from the org's
own data; the backtest runs the same machines and agrees with the live evaluator."""

from __future__ import annotations

import msgspec

from tests.alerts.conftest import (
    SETTLE_S,
    base_second,
    create_alert,
    h,
    pg_rows,
    series_events,
    ws_connect,
    ws_drain,
)

IPS = {"DE": "5.9.0.1", "GB": "81.2.69.160", "US": "8.8.8.8", "JP": "133.11.0.1", "AU": "1.1.1.1"}


def per_country(base: int, counts: dict[str, list[int]]) -> list[dict]:
    out = []
    for country, series in counts.items():
        out += series_events(base, series, ip=IPS[country])
    return out


async def group_rows(pg_url: str, alert_id: int) -> dict[str, tuple[str, int]]:
    rows = await pg_rows(
        pg_url,
        "SELECT group_key, state, state_since FROM alert_groups WHERE alert_id = %s",
        (alert_id,),
    )
    return {
        msgspec.json.decode(r["group_key"])["country"]: (
            r["state"],
            int(r["state_since"].timestamp()),
        )
        for r in rows
    }


async def loud_events(pg_url: str, alert_id: int, base: int) -> list[tuple[str, str, int, float]]:
    rows = await pg_rows(
        pg_url,
        "SELECT kind, group_key, at, value FROM alert_events WHERE alert_id = %s ORDER BY at, group_key",
        (alert_id,),
    )
    return [
        (
            r["kind"],
            msgspec.json.decode(r["group_key"])["country"],
            int(r["at"].timestamp()) - base,
            r["value"],
        )
        for r in rows
    ]


async def test_one_machine_per_group_capped_and_only_the_orgs_own_values(env, make_org, pg_url):
    acme, globex = await make_org("acme"), await make_org("globex")
    base = base_second()
    grouped = {"group_by": ["country"], "max_groups": 2, "threshold": 5, "for_seconds": 2}
    a = await create_alert(env, acme, **grouped)
    g = await create_alert(env, globex, **grouped)
    assert a["group_by"] == ["country"] and a["max_groups"] == 2
    # acme: DE and GB breach, US breaches too but is the third value (over the cap);
    # globex breaches in JP and AU at the same seconds, with the very same alert.
    burst = [10, 10, 10, 10, 0, 0, 0]
    await env.post(acme.api_key, per_country(base, {"DE": burst, "GB": burst, "US": burst}))
    await env.post(globex.api_key, per_country(base, {"JP": burst, "AU": [0, 10, 10, 0, 0, 0, 0]}))
    ws = await ws_connect(env, acme.admin_token)
    try:
        await env.tick(base + SETTLE_S - 1)
        await env.tick_through(base + SETTLE_S, base + len(burst) - 1 + SETTLE_S)
        msgs = [m for m in await ws_drain(ws) if m["type"] == "alert"]
    finally:
        await ws.close()
    assert await loud_events(pg_url, a["id"], base) == [
        ("firing", "DE", 1, 10.0),
        ("firing", "GB", 1, 10.0),
        ("resolved", "DE", 5, 0.0),
        ("resolved", "GB", 5, 0.0),
    ]
    assert await group_rows(pg_url, a["id"]) == {
        "DE": ("ok", base + 6),
        "GB": ("ok", base + 6),
    }
    assert await loud_events(pg_url, g["id"], base) == [
        ("firing", "JP", 1, 10.0),
        ("firing", "AU", 2, 10.0),
        ("resolved", "AU", 4, 0.0),
        ("resolved", "JP", 5, 0.0),
    ]
    assert set(await group_rows(pg_url, g["id"])) == {"JP", "AU"}
    live = env.evaluator.alerts[a["id"]].machine
    assert sorted(live.machines) == ['{"country":"DE"}', '{"country":"GB"}']
    assert live.refused == {'{"country":"US"}'}
    # the org's sockets get the group with each event; never another org's values
    assert sorted((m["state"], m["group"]["country"]) for m in msgs) == [
        ("firing", "DE"),
        ("firing", "GB"),
        ("resolved", "DE"),
        ("resolved", "GB"),
    ]
    r = await env.http.get(f"/alerts/{a['id']}/events", headers=h(acme))
    assert {e["group_key"] for e in r.json()["events"]} == {'{"country":"DE"}', '{"country":"GB"}'}


async def test_summary_state_and_backtest_agree_with_live(env, org, pg_url):
    base = base_second(150)
    a = await create_alert(
        env,
        org,
        group_by=["country"],
        threshold=5,
        for_seconds=2,
        resolve_after_seconds=3,
        recovery_threshold=2,
        keep_firing_seconds=2,
    )
    counts = {
        "DE": [9, 9, 9, 4, 4, 1, 1, 1, 1, 1, 1, 9, 9, 0, 0, 0, 0, 0, 0, 0],
        "GB": [0, 6, 6, 6, 1, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    }
    await env.post(org.api_key, per_country(base, counts))
    await env.tick(base + SETTLE_S - 1)
    await env.tick_through(base + SETTLE_S, base + 5 + SETTLE_S)
    rows = await pg_rows(pg_url, "SELECT state FROM alerts WHERE id = %s", (a["id"],))
    assert rows[0]["state"] == "firing"  # any group firing
    await env.tick_through(base + 6 + SETTLE_S, base + 19 + SETTLE_S)
    live = await loud_events(pg_url, a["id"], base)
    assert live == [
        ("firing", "DE", 1, 9.0),
        ("firing", "GB", 2, 6.0),
        # DE: 4, 4 are between the thresholds; 1,1,1 recovered (s7), kept s8, s9
        ("resolved", "DE", 9, 1.0),
        # GB: 7 at s5 breaches inside keep-firing: it restarts; clear s6-s8, kept s9, s10
        ("resolved", "GB", 10, 1.0),
        ("firing", "DE", 12, 9.0),
        ("resolved", "DE", 17, 0.0),
    ]
    rows = await pg_rows(pg_url, "SELECT state FROM alerts WHERE id = %s", (a["id"],))
    assert rows[0]["state"] == "ok"
    body = {
        k: a[k]
        for k in (
            "metric_inline",
            "comparator",
            "threshold",
            "for_seconds",
            "resolve_after_seconds",
            "recovery_threshold",
            "keep_firing_seconds",
            "group_by",
            "max_groups",
        )
    } | {"from": base, "to": base + 20}
    r = await env.http.post("/alerts/backtest", json=body, headers=h(org))
    assert r.status_code == 200, r.text
    bt = r.json()
    assert bt["resolution_s"] == 1 and bt["keep_steps"] == 2
    got = sorted(
        (e["kind"], e["group"]["country"], e["t"] - base, e["value"]) for e in bt["events"]
    )
    assert got == sorted(live)
    assert bt["groups"] == {'{"country":"DE"}': "ok", '{"country":"GB"}': "ok"}
    assert bt["refused_groups"] == 0
