"""The evaluator's fast paths change its cost, not its answers: for random series (levels,
gaps, groups that come and go, anomaly spikes), the live evaluator gives the same state changes
and events — second, state, value, band, run — with the usual-tick path (`_next_second`, its
group-key and band caches) on and off (off: `_evaluate`, which computes every band afresh),
with its steady-state skip on and off (a key whose value stays skips its machines until one of
them can change), with every missing baseline read inline or all of them read in the
background (the key catching up afterwards), and with new keys' first seconds spread over
ticks (one key per tick). docs/alerts.md, "Evaluation" and "Costs".

The parts outside the evaluator are stand-ins: the poller (ticks are built here from the
series), PostgreSQL (transitions are recorded, not stored) and the baseline's rollup reads (a
fixed hour around 30); definitions are compiled by the real querybuilder into real push keys."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.alerts.evaluator as evaluator_module
from app.alerts.anomaly import History
from app.alerts.evaluator import Evaluator
from app.config import Settings
from app.push.keys import make_key
from app.push.poller import KeyTick

ERRORS = {"text": "SELECT countIf(event = 'error') AS errors"}
PRICE = {"text": "SELECT avg(value) AS price WHERE event = 'purchase'"}
START = 1_800_000_000 - 25  # the series crosses a minute (and an hour) boundary
COUNTRIES = ("DE", "FR", "US")


class _Hub:
    node_id = "test"

    def __init__(self) -> None:
        self.poller = SimpleNamespace(
            retention_s=600, watch=lambda spec, listener: SimpleNamespace(close=lambda: None)
        )

    def key_for(self, org_id: int, metric: Any, **kw: Any) -> Any:
        return make_key(metric, org_id=org_id, database="fast", **kw)

    async def send_to_org(self, org_id: int, message: Any) -> None:
        pass


class _Repo:
    def __init__(self) -> None:
        self.changes: list[tuple[Any, ...]] = []

    async def states(self, ids: list[int]) -> list[dict[str, Any]]:
        return []

    async def group_states(self, ids: list[int]) -> dict[int, list[Any]]:
        return {}

    async def apply(self, changes: list[Any]) -> None:
        for c in changes:
            event = c.event and (
                c.event["kind"],
                c.event["threshold"],
                c.event["details"]["band"],
                c.event["details"]["from_state"],
                c.event["details"]["run_seconds"],
            )
            self.changes.append((c.alert_id, c.group_key, c.since, c.state, c.value, event))
            c.applied, c.event_id = True, len(self.changes)


async def _history(services, org_id, watched, filters, first, last, now, additive, *caches):
    """The baseline's rollups: an hour around 30 (every minute, a function of the minute only,
    rising a little, so each minute has its own band); last week's hours 30 and 38 in turn (the
    series crosses an hour: the `week` band moves by 8 at the minute boundary)."""
    minutes = {m: 25.0 + (m // 60) % 240 / 24 for m in range(first - 3660, last, 60)}
    hours = {
        h: 30.0 + h // 3600 % 2 * 8
        for h in range((first - 3660 - 604800) // 3600 * 3600, last, 3600)
    }
    return History(minutes, hours)


def _alert(aid: int, **over: Any) -> dict[str, Any]:
    row = {
        "id": aid,
        "org_id": 7,
        "name": f"a{aid}",
        "metric_id": None,
        "metric_inline": ERRORS,
        "metric_definition": None,
        "filters": [],
        "comparator": ">",
        "threshold": 5,
        "for_seconds": 2,
        "resolve_after_seconds": None,
        "recovery_threshold": None,
        "keep_firing_seconds": 0,
        "kind": "threshold",
        "anomaly": None,
        "group_by": [],
        "max_groups": 20,
        "severity": "warning",
        "enabled": True,
        "webhook_url": None,
        "state": "ok",
        "state_since": None,
        "last_value": None,
        "version": 1,
    }
    return row | over


ALERTS = [
    _alert(1, recovery_threshold=3, keep_firing_seconds=2),
    _alert(2, comparator="<=", threshold=2, for_seconds=1),  # shares alert 1's key
    _alert(3, metric_inline=PRICE, comparator=">=", threshold=6, for_seconds=1),  # gaps
    _alert(4, kind="anomaly", comparator=None, threshold=None, for_seconds=2,
           anomaly={"baseline": "hour", "sensitivity": 2}),
    _alert(5, kind="anomaly", comparator=None, threshold=None, for_seconds=1,
           anomaly={"baseline": "week", "sensitivity": 3, "direction": "above"}),
    _alert(6, group_by=["country"], max_groups=2, for_seconds=1),  # a cap below the groups
    # long runs while a value stays (the skip's timers), with gaps; shares alert 3's key
    _alert(7, metric_inline=PRICE, comparator="<", threshold=4, for_seconds=4,
           recovery_threshold=6, keep_firing_seconds=3),
    _alert(8, group_by=["country"], for_seconds=3, keep_firing_seconds=2),
]  # fmt: skip

levels = st.sampled_from([None, 0, 2, 3, 5, 6, 9, 34, 90])
streaks = st.lists(st.tuples(levels, st.integers(1, 8)), min_size=1, max_size=12)


def _series(draw_streaks: list[tuple[Any, int]], n: int) -> list[Any]:
    out = [v for v, k in draw_streaks for _ in range(k)]
    return (out * (n // max(len(out), 1) + 1))[:n]


@st.composite
def scenarios(draw) -> dict[str, Any]:
    n = draw(st.integers(5, 45))
    return {
        "n": n,
        "plain": _series(draw(streaks), n),
        "price": _series(draw(streaks), n),
        "window": _series(draw(streaks), n),
        "groups": {c: _series(draw(streaks), n) for c in COUNTRIES},
        # seconds each tick advances (2: a tick that was late), and ticks with nothing new
        "steps": draw(st.lists(st.sampled_from([1, 1, 1, 2]), min_size=n, max_size=n)),
        "repeat": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    }


def _rows(group: Any, s: dict[str, Any], upto: int) -> list[dict[str, Any]]:
    """The key's rows from START to `upto` (so a lagging key never needs a query)."""
    w, rows = group.watched, []
    for i in range(min(upto - START + 1, s["n"])):
        t = START + i
        if group.spec.dims:
            for c in COUNTRIES:
                v = s["groups"][c][i]
                if v is not None:  # a group without events has no row
                    rows.append({"t": t, "country": c, w.value_col: v})
            continue
        series = s["window"] if group.baseline is not None else s["plain"]
        v = (s["price"] if w.presence_col else series)[i]
        row = {"t": t, w.value_col: 0 if v is None else v}
        if w.presence_col:
            row[w.presence_col] = 0 if v is None else 1
        elif v is None:
            continue
        rows.append(row)
    return rows


async def _run(
    s: dict[str, Any], *, fast: bool, inline_reads: int, steady: bool = True, first_keys: int = 99
) -> list[tuple[Any, ...]]:
    services = SimpleNamespace(
        settings=Settings(alert_sync_s=0), pg=None, push=_Hub(), ch=None, writer=None
    )
    ev = Evaluator(services)
    ev._poller = services.push.poller
    ev._repo = repo = _Repo()  # type: ignore[assignment]
    ev.reload_gap_s = 1e9  # no stored state to reload
    if not fast:
        ev._next_second = lambda group, tick, t: None  # type: ignore[method-assign]
    if not steady:  # every second stepped for real
        ev._steady_until = lambda group, stepped: stepped + 1  # type: ignore[method-assign]
    for row in ALERTS:
        ev._apply(row)
    settle = ev.settle_ms / 1000 + 1
    now = START
    for step, repeat in zip(s["steps"], s["repeat"], strict=True):
        now += step
        ticks = [
            KeyTick(key, g.spec, rows, rows[-1:], START, now + 1, now + settle, 0)
            for key, g in ev.groups.items()
            if (rows := _rows(g, s, now))
        ]
        evaluator_module.INLINE_READS_PER_TICK = inline_reads
        evaluator_module.FIRST_KEYS_PER_TICK = first_keys
        await ev._on_ticks(ticks)
        await asyncio.sleep(0)
        await asyncio.gather(*ev._read_tasks)
        if repeat:
            await ev._on_ticks(ticks)
    STEADY_SECONDS.append(ev.steady_seconds)
    # each alert's (and group's) changes in order; a key that waited for its baseline commits
    # its changes in a later tick than the others
    return sorted(repo.changes, key=lambda c: (c[0], c[1] or ""))


STEADY_SECONDS: list[int] = []  # alert-seconds each run skipped as steady


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(s=scenarios())
def test_fast_path_and_background_reads_give_the_same_changes(s, monkeypatch):
    monkeypatch.setattr(evaluator_module, "read_history", _history)
    monkeypatch.setattr(evaluator_module, "INLINE_READS_PER_TICK", 4)
    monkeypatch.setattr(evaluator_module, "FIRST_KEYS_PER_TICK", 99)
    slow = asyncio.run(_run(s, fast=False, inline_reads=4))
    assert asyncio.run(_run(s, fast=True, inline_reads=4)) == slow
    assert asyncio.run(_run(s, fast=True, inline_reads=4, steady=False)) == slow
    assert asyncio.run(_run(s, fast=True, inline_reads=4, first_keys=1)) == slow
    assert asyncio.run(_run(s, fast=True, inline_reads=0)) == slow
    assert asyncio.run(_run(s, fast=False, inline_reads=0)) == slow


def test_the_scenarios_reach_every_kind_of_change(monkeypatch):
    """The comparison above is only worth something if the series make things happen."""
    monkeypatch.setattr(evaluator_module, "read_history", _history)
    monkeypatch.setattr(evaluator_module, "INLINE_READS_PER_TICK", 4)  # restored after
    monkeypatch.setattr(evaluator_module, "FIRST_KEYS_PER_TICK", 99)
    s = {
        "n": 40,
        "plain": [0] * 5 + [9] * 10 + [4] * 3 + [1] * 12 + [None] * 10,
        "price": [9] * 4 + [1] * 4 + [None] * 4 + [1] * 28,
        "window": [34] * 8 + [90] * 12 + [34] * 20,
        "groups": {"DE": [9] * 40, "FR": [0] * 10 + [9] * 30, "US": [None] * 20 + [9] * 20},
        "steps": [1] * 38 + [2] * 2,
        "repeat": [False, True] * 20,
    }
    STEADY_SECONDS.clear()
    changes = asyncio.run(_run(s, fast=True, inline_reads=0))
    assert STEADY_SECONDS[0] > len(ALERTS) * 10  # the skip took part (not only stepping)
    kinds = {(aid, state) for aid, _, _, state, _, _ in changes}
    assert {(1, "firing"), (1, "resolved"), (2, "firing"), (3, "firing"), (3, "no_data")} <= kinds
    assert {(4, "firing"), (4, "resolved"), (5, "firing"), (6, "firing")} <= kinds
    groups = {g for aid, g, *_ in changes if aid == 6}
    assert groups == {'{"country":"DE"}', '{"country":"FR"}'}  # max_groups 2: US refused
    bands = [e[2] for *_, e in changes if e and e[2] is not None]
    assert bands and all(b["lower"] < b["upper"] for b in bands)
