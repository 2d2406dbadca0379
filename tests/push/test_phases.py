"""Phased rounds: the poller polls its keys in groups of about equal fan-out, one group after
the other, so one round's deliveries never go out as one burst. Asserted on behaviour (which
key is polled in which phase, what each subscriber receives, what pauses the poller asks
for), never on wall time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.push import poller as poller_module
from app.push.keys import TIME_PARAMS, make_key
from app.push.poller import ALIGN_S, Poller, next_round
from tests.push.conftest import by_t, drain, events, now_ms, subscribe


def metric(i: int) -> str:
    return f"SELECT count() AS n WHERE event = 'e{i}'"


def specs(n: int) -> list[Any]:
    return [make_key(metric(i), org_id=1, database="db") for i in range(n)]


def placed(poller: Poller, groups: list[list[Any]]) -> list[set[str]]:
    return [{s.spec.key for s in g} for g in groups]


def test_phases_balance_fanout_and_stay_put():
    weights: dict[str, int] = {}
    poller = Poller(None, tick_ms=0, max_phases=2, weight=lambda k: weights[k], batch=False)
    a, b, c, d = specs(4)
    for spec, viewers in ((a, 89), (b, 29), (c, 29), (d, 29)):  # weight = viewers + 1
        weights[spec.key] = viewers
        poller.acquire(spec)
    states = list(poller.keys.values())
    groups = placed(poller, poller.plan_phases(states))
    # Heaviest first into the lightest phase: 90 alone, 30+30+30 together.
    assert sorted(groups, key=len) == [{a.key}, {b.key, c.key, d.key}]
    # Placement is stable from round to round while weights stay (polls one tick apart).
    assert placed(poller, poller.plan_phases(states, rebalance=True)) == groups

    # A new key joins the lightest phase (a's: 90 < 90 + 1).
    (e,) = [s for s in specs(5) if s.key not in weights]
    weights[e.key] = 0
    poller.acquire(e)
    states = list(poller.keys.values())
    groups = placed(poller, poller.plan_phases(states))
    assert {a.key, e.key} in groups

    # Viewers moved: a emptied, b grew. Without a rebalance round nothing moves; with one,
    # the heaviest phase shrinks (b alone, the rest together).
    weights.update({a.key: 0, b.key: 200})
    assert placed(poller, poller.plan_phases(states)) == groups
    groups = placed(poller, poller.plan_phases(states, rebalance=True))
    assert sorted(groups, key=len) == [{b.key}, {a.key, c.key, d.key, e.key}]


def test_phases_never_exceed_keys_or_max_phases():
    poller = Poller(None, tick_ms=0, max_phases=8, batch=False)
    for spec in specs(3):
        poller.acquire(spec)
    groups = poller.plan_phases(list(poller.keys.values()))
    assert [len(g) for g in groups] == [1, 1, 1]
    poller.max_phases = 1
    groups = poller.plan_phases(list(poller.keys.values()))
    assert [len(g) for g in groups] == [3]
    assert poller.plan_phases([]) == []


def test_next_round_is_on_the_wall_clock_grid():
    period = 0.25
    # At start: the next multiple of the tick, plus the guard.
    slot, delay = next_round(None, 1000.1, period)
    assert slot == 4001 and delay == pytest.approx(1000.25 + ALIGN_S - 1000.1)
    # On time: wait for the planned grid point.
    assert next_round(4002, 1000.26, period) == (4002, pytest.approx(0.242))
    # Slightly late (the next grid point is far): run at once.
    slot, delay = next_round(4002, 1000.51, period)
    assert slot == 4002 and delay < 0
    # Late by most of a period: skip to the next grid point instead of bunching two rounds.
    assert next_round(4002, 1001.0, period) == (4004, pytest.approx(ALIGN_S))
    # The wall clock was set back: re-align from now rather than wait for the old grid.
    assert next_round(4004, 900.05, period) == (3601, pytest.approx(0.202))


def ident(compiled: Any) -> tuple[Any, ...]:
    params = {k: v for k, v in compiled.params.items() if k not in TIME_PARAMS}
    return (compiled.sql, *sorted(params.items()))


class Recorder:
    """Records the order of queries, deliveries and pauses of one poller."""

    def __init__(self, poller: Poller, monkeypatch: pytest.MonkeyPatch, specs: dict[str, Any]):
        self.log: list[tuple[str, Any]] = []
        # Keys of one shape share their SQL text and differ in parameters.
        by_query = {ident(s.compiled): k for k, s in specs.items()}
        original_run, original_emit = poller_module.run_guarded, poller.emit

        async def run(ch, compiled):
            self.log.append(("query", by_query[ident(compiled)]))
            return await original_run(ch, compiled)

        async def emit(key, kind, text):
            self.log.append(("emit", key))
            await original_emit(key, kind, text)

        async def pause(delay):
            self.log.append(("pause", delay))
            await asyncio.sleep(0)  # the yield the real pause gives, no wall time

        monkeypatch.setattr(poller_module, "run_guarded", run)
        poller.emit = emit
        poller._sleep = pause

    def phases(self) -> list[list[tuple[str, Any]]]:
        out: list[list[tuple[str, Any]]] = [[]]
        for entry in self.log:
            if entry[0] == "pause":
                out.append([])
            else:
                out[-1].append(entry)
        return out

    def pauses(self) -> list[float]:
        return [d for kind, d in self.log if kind == "pause"]


async def test_round_delivers_phase_by_phase_to_every_subscriber(node, org, monkeypatch):
    hub, poller = node.hub, node.hub.poller
    # Phases of independent keys, one statement each (this test records reads per key);
    # how batched keys are placed: test_batched_polling.py.
    poller.batch = False
    poller.max_phases = 3
    # Five keys; key 0 has four viewers, key 1 two, keys 2-4 one (weights 5, 3, 2, 2, 2).
    sockets = [await node.connect(org.admin_token) for _ in range(4)]
    try:
        keys: dict[int, str] = {}
        for i in range(5):
            keys[i] = (await subscribe(sockets[0], id=i, metric=metric(i), range_s=30))["key"]
        for ws in sockets[1:]:
            await subscribe(ws, id=0, metric=metric(0), range_s=30)
        await subscribe(sockets[1], id=1, metric=metric(1), range_s=30)
        rec = Recorder(poller, monkeypatch, {k: hub.specs[k] for k in keys.values()})
        viewers = {0: sockets, 1: sockets[:2], 2: sockets[:1], 3: sockets[:1], 4: sockets[:1]}

        counts: dict[tuple[int, int], int] = {}
        for round_no in range(1, 5):
            t = now_ms()
            for i in range(5):
                counts[i, t // 1000] = counts.get((i, t // 1000), 0) + i + round_no
            await node.post(
                org.api_key, [e for i in range(5) for e in events(f"e{i}", i + round_no, t)]
            )
            rec.log.clear()
            await node.tick()
            phases = rec.phases()
            assert len(phases) == 3 and rec.pauses() == [0.0, 0.0]  # self-paced: no sleep
            # Each key is queried once and its delta emitted in its own phase, before any
            # query of the next phase (so its fan-out went out before the next group's); in a
            # phase, every read comes before the first delivery (reads and fan-out alternate).
            seen: list[str] = []
            for phase in phases:
                queried = [k for kind, k in phase if kind == "query"]
                emitted = [k for kind, k in phase if kind == "emit"]
                assert sorted(queried) == sorted(emitted) and queried
                kinds = [kind for kind, _ in phase]
                assert kinds == ["query"] * len(queried) + ["emit"] * len(emitted)
                seen += queried
            assert sorted(seen) == sorted(keys.values())  # every key, once: none starved
            # The heaviest key (5) is alone in its phase; no phase is heavier than it.
            heavy = next(p for p in phases if ("query", keys[0]) in p)
            assert [k for kind, k in heavy if kind == "query"] == [keys[0]]
            # Every subscriber of every key got the round's value, once; nobody else did.
            got = {id(ws): [m for m in await drain(ws) if m["type"] == "delta"] for ws in sockets}
            for i, key in keys.items():
                for ws in sockets:
                    mine = [m for m in got[id(ws)] if m["key"] == key]
                    assert len(mine) == (1 if ws in viewers[i] else 0), (round_no, i)
                    for m in mine:
                        assert by_t(m["rows"], "n")[t // 1000] == counts[i, t // 1000]
    finally:
        for ws in sockets:
            await ws.close()


async def test_spread_ms_paces_phases_over_part_of_the_round(node, org, monkeypatch):
    hub, poller = node.hub, node.hub.poller
    # Phases of independent keys, one statement each (this test records reads per key);
    # how batched keys are placed: test_batched_polling.py.
    poller.batch = False
    poller.max_phases = 3
    # A spread far longer than any round takes, so the requested pauses are determined by the
    # spacing (20 s per phase) and not by how fast this machine runs the phases.
    poller.spread_ms = 60_000
    async with await node.connect(org.admin_token) as ws:
        keys = [(await subscribe(ws, id=i, metric=metric(i), range_s=30))["key"] for i in range(3)]
        rec = Recorder(poller, monkeypatch, {k: hub.specs[k] for k in keys})
        t = now_ms()
        await node.post(org.api_key, [e for i in range(3) for e in events(f"e{i}", 2, t)])
        await node.tick()
        first, second = rec.pauses()
        # Phase j starts j * 20 s into the round: the pause is that minus the time spent.
        assert 0 < first <= 20 and 20 < second <= 40
        # One key per phase (equal weights), each queried and delivered in its own phase.
        assert [[kind for kind, _ in p] for p in rec.phases()] == [["query", "emit"]] * 3
        deltas = [m for m in await drain(ws) if m["type"] == "delta"]
        assert sorted(m["key"] for m in deltas) == sorted(keys)
        assert all(by_t(m["rows"], "n")[t // 1000] == 2 for m in deltas)


async def test_key_released_by_an_earlier_phase_is_not_polled(node, org, monkeypatch):
    hub, poller = node.hub, node.hub.poller
    # Phases of independent keys, one statement each (this test records reads per key);
    # how batched keys are placed: test_batched_polling.py.
    poller.batch = False
    poller.max_phases = 2
    first, second = (hub.key_for(org.id, metric(i)) for i in range(2))
    ticks: list[Any] = []

    async def listener(tick):
        ticks.append(tick.key)

    watches = {s.key: poller.watch(s, listener) for s in (first, second)}
    rec = Recorder(poller, monkeypatch, {s.key: s for s in (first, second)})
    original = poller.emit

    async def emit_and_close_the_other(key, kind, text):
        # The first phase's delivery ends the other key's only watch before its phase.
        other = second.key if key == first.key else first.key
        watches[other].close()
        await original(key, kind, text)

    poller.emit = emit_and_close_the_other
    await node.post(org.api_key, events("e0", 1, now_ms()) + events("e1", 1, now_ms()))
    await node.tick()
    queried = [k for kind, k in rec.log if kind == "query"]
    assert len(queried) == 1 and ticks == queried  # the closed key was skipped
    assert set(poller.keys) == {queried[0]}
    watches[queried[0]].close()
    assert poller.keys == {}


async def test_a_round_reuses_the_last_plan_until_a_key_comes_or_goes(monkeypatch):
    poller = Poller(None, tick_ms=0, max_phases=2, batch=False)
    a, b, c = specs(3)
    poller.acquire(a)
    poller.acquire(b)
    planned: list[int] = []
    real = poller.plan_phases

    def counting(states, *, rebalance=False):
        planned.append(len(states))
        return real(states, rebalance=rebalance)

    monkeypatch.setattr(poller, "plan_phases", counting)
    polled: list[set[str]] = []

    async def phase(group, *args, **kwargs):
        polled.append({s.spec.key for s in group})
        return []

    monkeypatch.setattr(poller, "_poll_phase", phase)
    monkeypatch.setattr(poller, "_read_early", lambda *a, **k: asyncio.sleep(0))
    await poller.tick(now=1000.0)  # round 0 rebalances: planned
    await poller.tick(now=1000.25)  # nothing changed: the same plan
    assert planned == [2]
    poller.acquire(c)  # a new key: planned again, and polled in this round
    polled.clear()
    await poller.tick(now=1000.5)
    assert planned == [2, 3] and set().union(*polled) == {a.key, b.key, c.key}
    poller.release(a.key)  # a key gone: planned again, not polled
    polled.clear()
    await poller.tick(now=1000.75)
    assert planned == [2, 3, 2] and set().union(*polled) == {b.key, c.key}
    await poller.tick(now=1001.0)  # round 4 rebalances: planned
    assert planned == [2, 3, 2, 2]
