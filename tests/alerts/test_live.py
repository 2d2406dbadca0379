"""The live evaluator on the push poller's ticks: exact firing, hysteresis, restart, isolation."""

from __future__ import annotations

from tests.alerts.conftest import (
    SETTLE_S,
    base_second,
    create_alert,
    events_of,
    h,
    series_events,
    state_of,
    ws_connect,
    ws_drain,
)


async def start(env, base: int) -> None:
    """First tick: new alerts start with the next complete second, base - 1."""
    await env.tick(base - 2 + SETTLE_S - 1)


async def test_fires_exactly_after_n_seconds_and_resolves(env, org, pg_url):
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=3)
    #                         s0 s1  s2  s3  s4 s5 s6 s7 s8
    await env.post(org.api_key, series_events(base, [0, 10, 10, 10, 10, 0, 0, 0, 0]))
    await start(env, base)
    states = {}
    for s in range(base - 1, base + 9):
        await env.tick(s + SETTLE_S)
        states[s - base] = (await state_of(pg_url, a["id"]))[0]
        kinds = [e["kind"] for e in await events_of(pg_url, a["id"])]
        if s - base < 3:
            assert kinds == [], (s - base, kinds)  # not before the third breaching second
    assert [states[i] for i in range(0, 9)] == [
        "ok",
        "pending",
        "pending",
        "firing",  # s3: third consecutive second above 5
        "firing",
        "firing",
        "firing",
        "resolved",  # s7: third consecutive second not above (resolve_after defaults to N)
        "ok",
    ]
    events = await events_of(pg_url, a["id"])
    assert [(e["kind"], int(e["at"].timestamp()), e["value"]) for e in events] == [
        ("firing", base + 3, 10.0),
        ("resolved", base + 7, 0.0),
    ]
    fired = events[0]
    assert fired["threshold"] == 5
    assert fired["details"]["who"]["alert_name"] == "errors high"
    assert fired["details"]["what"]["comparator"] == ">"
    assert fired["details"]["run_seconds"] == 3
    assert fired["delivery"] == "none"  # no webhook configured
    # the API shows the same history, newest first
    r = await env.http.get(f"/alerts/{a['id']}/events", headers=h(org))
    assert [e["kind"] for e in r.json()["events"]] == ["resolved", "firing"]


async def test_n_minus_one_seconds_never_fire(env, org, pg_url):
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=3)
    # runs of 2 breaching seconds, broken by a value at the threshold (not > 5)
    await env.post(org.api_key, series_events(base, [10, 10, 5, 10, 10, 0, 9, 9, 0, 0]))
    await start(env, base)
    seen = set()
    for s in range(base - 1, base + 11):
        await env.tick(s + SETTLE_S)
        seen.add((await state_of(pg_url, a["id"]))[0])
    assert seen == {"ok", "pending"}
    assert await events_of(pg_url, a["id"]) == []


async def test_hovering_value_does_not_flap(env, org, pg_url):
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=2, resolve_after_seconds=3)
    # fires at s1, then hovers around the threshold: never 3 clear seconds in a row
    counts = [9, 9, 4, 6, 5, 9, 3, 4, 8, 0, 0, 0]
    await env.post(org.api_key, series_events(base, counts))
    await start(env, base)
    await env.tick_through(base + SETTLE_S, base + len(counts) - 1 + SETTLE_S)
    events = await events_of(pg_url, a["id"])
    assert [(e["kind"], int(e["at"].timestamp()) - base) for e in events] == [
        ("firing", 1),
        ("resolved", 11),
    ]


async def test_restart_resumes_without_duplicate(make_env, org, pg_url):
    base = base_second()
    # breaching s0..s9, then clear
    counts = [10] * 10 + [0] * 6
    async with make_env() as env:
        a = await create_alert(env, org, threshold=5, for_seconds=3)
        await env.post(org.api_key, series_events(base, counts))
        await start(env, base)
        await env.tick_through(base + SETTLE_S, base + 4 + SETTLE_S)  # evaluates s0..s4
        assert await state_of(pg_url, a["id"]) == ("firing", base + 2)
    # A new process over the same databases, resuming 10 seconds later: it replays rollup_1s
    # from the stored state (s3..), stays firing through s9 and resolves at s12 — once.
    async with make_env() as env:
        assert env.evaluator.alerts[a["id"]].machine.state == "firing"
        await env.tick(base + 14 + SETTLE_S)
        kinds = [
            (e["kind"], int(e["at"].timestamp()) - base) for e in await events_of(pg_url, a["id"])
        ]
        assert kinds == [("firing", 2), ("resolved", 12)]
    # and once more: a restart while resolved does not resolve again
    async with make_env() as env:
        await env.tick(base + 15 + SETTLE_S)
        assert len(await events_of(pg_url, a["id"])) == 2
        assert (await state_of(pg_url, a["id"]))[0] == "ok"


async def test_alert_reaches_only_its_orgs_sockets(env, make_org, pg_url):
    acme, globex = await make_org("acme"), await make_org("globex")
    base = base_second()
    a = await create_alert(env, acme, threshold=5, for_seconds=2)
    # globex has the very same alert and the same traffic shape, but below its threshold
    await create_alert(env, globex, threshold=50, for_seconds=2)
    await env.post(acme.api_key, series_events(base, [10, 10, 10]))
    await env.post(globex.api_key, series_events(base, [10, 10, 10]))
    acme_ws = await ws_connect(env, acme.admin_token)
    acme_ws2 = await ws_connect(env, acme.admin_token)
    globex_ws = await ws_connect(env, globex.admin_token)
    try:
        await start(env, base)
        await env.tick_through(base + SETTLE_S, base + 2 + SETTLE_S)
        for ws in (acme_ws, acme_ws2):
            msgs = [m for m in await ws_drain(ws) if m["type"] == "alert"]
            assert len(msgs) == 1, msgs
            msg = msgs[0]
            assert msg["alert_id"] == a["id"] and msg["state"] == "firing"
            assert msg["value"] == 10 and msg["threshold"] == 5 and msg["t"] == base + 1
            assert msg["name"] == "errors high" and msg["severity"] == "warning"
        assert [m for m in await ws_drain(globex_ws) if m["type"] == "alert"] == []
        assert (await state_of(pg_url, a["id"]))[0] == "firing"
    finally:
        for ws in (acme_ws, acme_ws2, globex_ws):
            await ws.close()


async def test_alerts_and_viewers_share_one_query_per_key(env, org, pg_url):
    base = base_second()
    a1 = await create_alert(env, org, threshold=5, for_seconds=2)
    a2 = await create_alert(env, org, threshold=50, for_seconds=2, comparator=">=")
    assert len(env.evaluator.groups) == 1  # same metric and filters: one key
    ws = await ws_connect(env, org.admin_token)
    try:
        await ws.send(
            '{"type": "subscribe", "id": "v", "metric": "SELECT countIf(event = \'err\') AS errors"'
            ', "range_s": 30}'
        )
        await ws_drain(ws)
        assert len(env.poller.keys) == 1  # the viewer joined the alerts' key
        await env.post(org.api_key, series_events(base, [60, 60, 60]))
        await start(env, base)
        before = env.poller.queries
        await env.tick_through(base + SETTLE_S, base + 2 + SETTLE_S)
        assert env.poller.queries - before == 3  # one query per tick for 2 alerts + 1 viewer
        assert (await state_of(pg_url, a1["id"]))[0] == "firing"
        assert (await state_of(pg_url, a2["id"]))[0] == "firing"
    finally:
        await ws.close()


async def test_no_data_breaks_the_run_for_non_count_metrics(env, org, pg_url):
    base = base_second()
    metric = {"text": "SELECT avg(value) AS price WHERE event = 'buy'"}
    a = await create_alert(env, org, metric_inline=metric, threshold=50, for_seconds=2)
    events = []
    for i, present in enumerate([1, 0, 1, 1, 0, 0, 0]):
        if present:
            events.append({"event": "buy", "ts": (base + i) * 1000, "value": 100})
    await env.post(org.api_key, events)
    await start(env, base)
    await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
    assert (await state_of(pg_url, a["id"]))[0] == "ok"  # s1 has no data: not 0, a gap
    await env.tick_through(base + 2 + SETTLE_S, base + 3 + SETTLE_S)
    assert await state_of(pg_url, a["id"]) == ("firing", base + 3)
    # no data does not resolve a firing alert (it needs seconds with data below)
    await env.tick_through(base + 4 + SETTLE_S, base + 6 + SETTLE_S)
    assert (await state_of(pg_url, a["id"]))[0] == "firing"


async def test_pure_count_treats_missing_seconds_as_zero(env, org, pg_url):
    base = base_second()
    a = await create_alert(env, org, comparator="<", threshold=1, for_seconds=3)
    await env.post(org.api_key, series_events(base, [2, 0, 0, 0, 2]))
    await start(env, base)
    await env.tick_through(base + SETTLE_S, base + 4 + SETTLE_S)
    events = await events_of(pg_url, a["id"])
    assert [e["kind"] for e in events] == ["firing"]
    assert int(events[0]["at"].timestamp()) == base + 3 and events[0]["value"] == 0


async def test_disable_and_delete_stop_evaluation(env, org, pg_url):
    a = await create_alert(env, org)
    assert a["id"] in env.evaluator.alerts
    r = await env.http.put(
        f"/alerts/{a['id']}", json={**_body(a), "enabled": False, "version": 1}, headers=h(org)
    )
    assert r.status_code == 200, r.text
    assert a["id"] not in env.evaluator.alerts and env.poller.keys == {}
    r = await env.http.put(
        f"/alerts/{a['id']}", json={**_body(a), "enabled": True, "version": 2}, headers=h(org)
    )
    assert a["id"] in env.evaluator.alerts
    r = await env.http.delete(f"/alerts/{a['id']}?version=3", headers=h(org))
    assert r.status_code == 204
    assert env.evaluator.alerts == {} and env.poller.keys == {}


def _body(a):
    keys = ("name", "metric_inline", "comparator", "threshold", "for_seconds", "filters")
    return {k: a[k] for k in keys}
