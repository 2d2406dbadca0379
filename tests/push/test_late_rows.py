"""Rows for seconds older than the re-read window (late events, the WAL draining after an
outage) still reach live viewers: a viewer's series converges to history for every second it
shows. Ticks are driven by the tests (`push_tick_ms=0`); nothing depends on wall time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.api.conftest import seed_events
from tests.push.conftest import by_t, drain, events, now_ms, subscribe

METRIC = "SELECT count() AS n"
GUARD_S = 30  # hang guard only


class Viewer:
    """A client's view of one subscription: the snapshot, then each delta's rows applied."""

    def __init__(self, ws: Any, snapshot: dict[str, Any]):
        self.ws, self.key = ws, snapshot["key"]
        self.series: dict[int, int] = by_t(snapshot["rows"], "n")
        self.deltas = 0

    async def catch_up(self) -> None:
        for msg in await drain(self.ws):
            if msg["type"] == "delta" and msg["key"] == self.key:
                self.deltas += 1
                self.series.update(by_t(msg["rows"], "n"))


async def _history(node, org, t_from: int, t_to: int) -> dict[int, int]:
    """The same metric per second from the history API (what a dashboard shows)."""
    r = await node.http.post(
        "/query",
        headers={"Authorization": f"Bearer {org.admin_token}"},
        json={
            "definition": {"text": METRIC},
            "from": str(t_from),
            "to": str(t_to),
            "granularity": "1s",
        },
    )
    assert r.status_code == 200, r.text
    return {t: n for t, n in r.json()["rows"]}


async def _assert_converged(viewer: Viewer, node, org) -> None:
    shown = sorted(viewer.series)
    history = await _history(node, org, shown[0], int(time.time()))
    wrong = {
        t: (viewer.series[t], history.get(t, 0))
        for t in shown
        if t in history and viewer.series[t] != history[t]
    }
    assert wrong == {}, f"(viewer, history) per second: {wrong}"


async def test_rows_for_an_outage_inserted_late_reach_the_viewer(node, org):
    writer = node.services.writer
    async with await node.connect(org.admin_token) as ws:
        viewer = Viewer(ws, await subscribe(ws, id="a", metric=METRIC, range_s=120))
        start = now_ms() // 1000 * 1000 - 40_000  # the outage began 40 s ago
        await node.post(org.api_key, events("x", 1, start - 1000))
        await node.tick()

        # ClickHouse refuses inserts: events for the outage's seconds wait in the WAL.
        writer.table = "no_such_table"
        response = await node.http.post(
            "/v1/events",
            json=events("x", 2, start) + events("x", 4, start + 3000),
            headers={"Authorization": f"Bearer {org.api_key}"},
        )
        assert response.status_code == 200

        async def failed():
            while writer.failed_flushes == 0:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(failed(), GUARD_S)
        await node.tick()
        # Resume: the WAL drains into ClickHouse.
        writer.table = "events_queue"
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)
        await node.tick()
        await node.tick()  # the lag is back to 0: the regular window is the last 5 s again
        # Late events for the outage's seconds, well after the resume window.
        await node.post(org.api_key, events("x", 3, start + 3000) + events("x", 5, start + 7000))
        await node.tick()
        await viewer.catch_up()

        assert viewer.series[start // 1000 - 1] == 1
        assert viewer.series[start // 1000] == 2  # before the fix: 0
        assert viewer.series[start // 1000 + 3] == 7  # before the fix: 0
        assert viewer.series[start // 1000 + 7] == 5
        await _assert_converged(viewer, node, org)
        assert node.hub.poller.late.late_rereads >= 2

        # Nothing new: further rounds send nothing for those seconds again.
        await node.tick()
        for msg in await drain(ws):
            assert all(row["t"] > start // 1000 + 7 for row in msg.get("rows", [])), msg


async def test_rows_nobody_reported_arrive_with_the_periodic_full_reread(
    make_node, org, ch, redis_url
):
    # Nodes reporting over Redis: a pub/sub message can be lost, so the whole range is
    # re-read now and then (`push_full_reread_reported_s`, 30 s in these tests).
    async with make_node(redis_url) as node, await node.connect(org.admin_token) as ws:
        viewer = Viewer(ws, await subscribe(ws, id="a", metric=METRIC, range_s=120))
        old = int(time.time()) - 50
        # Inserted behind the writer's back (a report lost on the way, say): not reported.
        seed_events(ch, [{"org_id": org.id, "ts": old}] * 4)
        await node.tick()
        await viewer.catch_up()
        assert viewer.series.get(old, 0) == 0  # outside the regular re-read window
        # A round one re-read period later re-reads the key's whole range.
        period = node.hub.poller.late.full_reread_s
        assert period == node.services.settings.push_full_reread_reported_s == 30
        await node.hub.poller.tick(now=time.time() + period)
        await viewer.catch_up()
        assert viewer.series[old] == 4
        assert node.hub.poller.late.full_rereads == 1


async def test_in_process_reports_need_no_full_reread_and_a_failed_read_keeps_its_seconds(
    node, org, monkeypatch
):
    """Embedded ClickHouse: this process's writer is its only inserter and reports every
    insert to its poller, so nothing re-reads whole ranges. What the net also covered — a
    report used by a round whose read failed — is kept by the key: its next read starts at
    the failed read's first second."""
    from app.push import poller as poller_module

    poller = node.hub.poller
    assert poller.late.full_reread_s == 0
    async with await node.connect(org.admin_token) as ws:
        viewer = Viewer(ws, await subscribe(ws, id="a", metric=METRIC, range_s=120))
        await node.tick()
        await viewer.catch_up()
        old = now_ms() // 1000 * 1000 - 40_000
        reported = poller.late.reported
        await node.post(org.api_key, events("x", 5, old))  # late events, reported

        async def told():
            while poller.late.reported == reported:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(told(), GUARD_S)

        async def failing(*args, **kwargs):
            raise RuntimeError("ClickHouse went away")

        with monkeypatch.context() as patched:
            for runner in ("run_guarded", "run_fan_in"):
                patched.setattr(poller_module, runner, failing)
            await node.tick()  # the round the report was for: its read fails
        await viewer.catch_up()
        assert viewer.series.get(old // 1000, 0) == 0
        await node.tick()  # no new report: the key re-reads from the failed read's start
        await viewer.catch_up()
        assert viewer.series[old // 1000] == 5


async def test_late_rows_inserted_through_another_node_reach_the_leaders_viewers(
    make_node, org, redis_url
):
    async with make_node(redis_url) as a, make_node(redis_url) as b:
        ws_a, ws_b = await a.connect(org.admin_token), await b.connect(org.admin_token)
        viewer_a = Viewer(ws_a, await subscribe(ws_a, id="x", metric=METRIC, range_s=120))
        viewer_b = Viewer(ws_b, await subscribe(ws_b, id="x", metric=METRIC, range_s=120))
        for _ in range(2):
            await a.tick()
            await b.tick()
        leader, follower = (a, b) if viewer_a.key in a.hub.poller.owned else (b, a)
        assert viewer_a.key in leader.hub.poller.owned

        old = now_ms() // 1000 * 1000 - 45_000
        reported = leader.hub.poller.late.reported
        await follower.post(org.api_key, events("x", 6, old))  # inserted by the follower

        async def told():
            while leader.hub.poller.late.reported == reported:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(told(), GUARD_S)  # through Redis pub/sub
        await leader.tick()
        for viewer in (viewer_a, viewer_b):
            await viewer.catch_up()
            assert viewer.series[old // 1000] == 6  # before the fix: 0
        await ws_a.close()
        await ws_b.close()
