"""Subscribe → snapshot → deltas whose values match the events posted through /v1/events."""

from __future__ import annotations

import pytest
import websockets

from tests.push.conftest import by_t, drain, events, now_ms, recv, recv_type, send, subscribe

COUNT = "SELECT count() AS n, sum(value) AS revenue"


async def test_snapshot_then_deltas_match_posted_events(node, org):
    async with await node.connect(org.admin_token) as ws:
        base = now_ms() // 1000 * 1000 - 2000  # two seconds ago, whole second
        await node.post(org.api_key, events("pageview", 3, base - 1000, value=2.5))
        snap = await subscribe(ws, id="a", metric=COUNT, range_s=60)
        assert snap["id"] == "a" and snap["columns"] == ["t", "n", "revenue"]
        assert snap["t_to"] - snap["t_from"] == 60
        assert by_t(snap["rows"], "n").get(base // 1000 - 1) == 3
        assert by_t(snap["rows"], "revenue").get(base // 1000 - 1) == 7.5

        await node.post(org.api_key, events("pageview", 4, base, value=1))
        await node.tick()
        delta = await recv_type(ws, "delta")
        assert delta["key"] == snap["key"]
        assert by_t(delta["rows"], "n")[base // 1000] == 4
        assert by_t(delta["rows"], "revenue")[base // 1000] == 4.0

        # Nothing changed: the next tick sends nothing — except, if the wall clock crossed a
        # second meanwhile, the new (empty) second entering the window.
        await node.tick()
        for message in await drain(ws):
            assert message["type"] == "delta"
            assert all(row["n"] == 0 and row["t"] > base // 1000 for row in message["rows"])

        # A late event for a recent second: only that second is re-sent, with its new value.
        await node.post(org.api_key, events("click", 2, base - 1000))
        await node.tick()
        delta = await recv_type(ws, "delta")
        changed = {t: n for t, n in by_t(delta["rows"], "n").items() if n or t <= base // 1000}
        assert changed == {base // 1000 - 1: 5}


async def test_group_by_and_filters(node, org):
    async with await node.connect(org.admin_token) as ws:
        snap = await subscribe(
            ws,
            id=1,
            metric="SELECT count() AS n",
            group_by=["event"],
            filters=[{"dimension": "event", "op": "in", "value": ["buy", "view"]}],
            range_s=30,
        )
        assert snap["dims"] == ["event"]
        t = now_ms() // 1000 * 1000
        await node.post(
            org.api_key, events("buy", 2, t) + events("view", 5, t) + events("other", 7, t)
        )
        await node.tick()
        delta = await recv_type(ws, "delta")
        got = {(r["event"], r["t"]): r["n"] for r in delta["rows"] if r["n"]}
        assert got == {("buy", t // 1000): 2, ("view", t // 1000): 5}


async def test_builtin_and_authorization_header(node, org):
    headers = {"Authorization": f"Bearer {org.admin_token}"}
    async with await node.connect(additional_headers=headers) as ws:
        snap = await subscribe(ws, id="pv", builtin="page_views", range_s=10)
        assert snap["columns"] == ["t", "page_views"]
        t = now_ms()
        await node.post(org.api_key, events("pageview", 2, t))
        await node.tick()
        delta = await recv_type(ws, "delta")
        assert by_t(delta["rows"], "page_views")[t // 1000] == 2


async def test_resume_with_since_gets_only_missed_seconds(node, org):
    t0 = now_ms() // 1000 * 1000 - 5000
    await node.post(org.api_key, events("x", 1, t0 - 10_000) + events("x", 2, t0 + 2000))
    async with await node.connect(org.admin_token) as ws:
        msg = await subscribe(ws, id="r", metric="SELECT count() AS n", since=t0)
        assert msg["type"] == "resume"
        assert msg["t_from"] == t0 // 1000
        rows = by_t(msg["rows"], "n")
        assert min(rows) == t0 // 1000  # nothing before the last seen second
        assert rows[t0 // 1000 + 2] == 2
        # A `since` older than the window is a full snapshot.
        msg = await subscribe(ws, id="s", metric="SELECT count() AS n", range_s=30, since=1000)
        assert msg["type"] == "snapshot"


async def test_unsubscribe_stops_deltas(node, org):
    async with await node.connect(org.admin_token) as ws:
        await subscribe(ws, id="a", metric="SELECT count() AS n", range_s=10)
        await send(ws, {"type": "unsubscribe", "id": "a"})
        await node.post(org.api_key, events("x", 1, now_ms()))
        await node.tick()
        assert await drain(ws) == []
        assert node.hub.poller.keys == {}
        await send(ws, {"type": "unsubscribe", "id": "a"})
        assert (await recv(ws))["code"] == "unknown_id"


async def test_http_get_is_refused(node):
    response = await node.http.get("/ws/subscribe")
    assert response.status_code == 426


async def test_bad_tokens_are_closed_4401(node, org):
    for url in (node.ws_url("cpt_nope"), node.ws_url(), node.ws_url(org.api_key)):
        async with websockets.connect(url) as ws:
            try:
                await recv(ws)
                raise AssertionError("expected a close")
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 4401


async def test_a_subscribe_of_a_metric_compiled_before_reuses_it_never_across_orgs(
    node, org, make_org, monkeypatch
):
    from app.push import hub as hub_module
    from app.querybuilder import MetricError

    compiled: list[int] = []
    real = hub_module.make_key

    def counting(metric, **kwargs):
        compiled.append(kwargs["org_id"])
        return real(metric, **kwargs)

    monkeypatch.setattr(hub_module, "make_key", counting)
    other = await make_org()
    hub = node.hub
    text = "SELECT count() AS n"
    first = hub.key_for(org.id, text, filters=[{"dimension": "country", "op": "=", "value": "DE"}])
    again = hub.key_for(org.id, text, filters=[{"dimension": "country", "op": "=", "value": "DE"}])
    assert again is first and compiled == [org.id]
    # Another org, the same inputs: its own key, compiled for it.
    theirs = hub.key_for(
        other.id, text, filters=[{"dimension": "country", "op": "=", "value": "DE"}]
    )
    assert compiled == [org.id, other.id]
    assert theirs.org_id == other.id and theirs.key != first.key
    assert theirs.compiled.params["org_id"] == other.id
    # Any input that differs is another key.
    assert hub.key_for(org.id, text, group_by=["country"]).key != first.key
    assert hub.key_for(org.id, text, window_s=60).key != first.key
    assert len(compiled) == 4
    # A refused metric is refused every time (nothing kept).
    for _ in range(2):
        with pytest.raises(MetricError):
            hub.key_for(org.id, "SELECT sleep(3) AS n")
    # Through a socket: a second subscriber of the same metric compiles nothing.
    async with await node.connect(org.admin_token) as ws:
        before = len(compiled)
        await subscribe(ws, id="a", metric=text, range_s=10)
        await subscribe(ws, id="b", metric=text, range_s=10)
        assert len(compiled) == before + 1


async def test_a_grouped_key_without_data_has_an_empty_snapshot_not_an_empty_group(node, org):
    async with await node.connect(org.admin_token) as ws:
        snap = await subscribe(ws, id="g", metric="SELECT count() AS n", group_by=["event"])
        assert snap["rows"] == []  # before: one {"event": "", "n": 0} row a second
        ungrouped = await subscribe(ws, id="u", metric="SELECT count() AS n", range_s=5)
        assert len(ungrouped["rows"]) == 5 and {r["n"] for r in ungrouped["rows"]} == {0}
        t = now_ms()
        await node.post(org.api_key, events("buy", 2, t))
        await node.tick()
        await drain(ws)  # the ticks' deltas
        # (another range: subscribes of one key within a tick share its snapshot)
        again = await subscribe(
            ws, id="g2", metric="SELECT count() AS n", group_by=["event"], range_s=30
        )
        assert {r["event"] for r in again["rows"]} == {"buy"}
        assert by_t(again["rows"], "n")[t // 1000] == 2
