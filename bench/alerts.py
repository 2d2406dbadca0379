"""The alert evaluator's own cost per tick: 10,000 alerts across 1,000 orgs (target < 100 ms).

    .venv/bin/python bench/alerts.py [orgs] [alerts_per_org] [ticks]

What is timed: `Evaluator._on_ticks` — the work the evaluator adds to one poller tick — fed
with synthetic `KeyTick`s (the rows the poller would have read for every key), one new
complete second per key per tick (the worst case: at 250 ms ticks only one tick in four has a
new complete second). Alerts are real definitions compiled through the real querybuilder into
real push keys (each org: 10 alerts over 3 metrics, so alerts share keys as in production).
Not timed here: the poller's queries (one per key, the push tier's cost, see the push bench)
and PostgreSQL writes (stubbed; a tick's transitions are one transaction, counted below).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

from app.alerts.evaluator import Evaluator
from app.config import Settings
from app.push.keys import make_key
from app.push.poller import KeyTick

METRICS = [
    {"text": "SELECT countIf(event = 'error') AS errors"},
    {"text": "SELECT count() AS views WHERE event = 'pageview'"},
    {"text": "SELECT avg(value) AS price WHERE event = 'purchase'"},
]


class _Watch:
    def close(self) -> None:
        pass


class _Poller:
    retention_s = 600

    def watch(self, spec: Any, listener: Any) -> _Watch:
        return _Watch()

    def add_tick_listener(self, fn: Any) -> Any:
        return lambda: None


class _Hub:
    node_id = "bench"

    def __init__(self) -> None:
        self.poller = _Poller()
        self.sent = 0

    def key_for(self, org_id: int, metric: Any, *, filters: Any = None, **_: Any) -> Any:
        return make_key(metric, org_id=org_id, database="bench", filters=filters)

    async def send_to_org(self, org_id: int, message: Any) -> None:
        self.sent += 1


class _Repo:
    pool = None

    def __init__(self) -> None:
        self.transactions = 0
        self.changes = 0

    async def states(self, ids: list[int]) -> list[dict[str, Any]]:
        return []  # every alert is still `ok` since never: machines keep their position

    async def apply(self, changes: list[Any]) -> None:
        self.transactions += 1
        self.changes += len(changes)
        for i, c in enumerate(changes):
            c.applied = True
            c.event_id = i + 1


def build(orgs: int, per_org: int) -> tuple[Evaluator, _Repo, float]:
    services = SimpleNamespace(
        settings=Settings(alert_sync_s=0), pg=None, push=_Hub(), ch=None, writer=None
    )
    ev = Evaluator(services)
    ev._poller = services.push.poller
    repo = _Repo()
    ev._repo = repo  # type: ignore[assignment]
    rng = random.Random(1)
    started = time.perf_counter()
    aid = 0
    for org in range(1, orgs + 1):
        for i in range(per_org):
            aid += 1
            ev._apply(
                {
                    "id": aid,
                    "org_id": org,
                    "name": f"a{aid}",
                    "metric_id": None,
                    "metric_inline": METRICS[i % len(METRICS)],
                    "metric_definition": None,
                    "filters": [],
                    "comparator": rng.choice([">", ">=", "<", "<="]),
                    "threshold": rng.choice([5, 10, 20, 50]),
                    "for_seconds": rng.choice([1, 5, 30, 60]),
                    "resolve_after_seconds": None,
                    "severity": "warning",
                    "enabled": True,
                    "webhook_url": None,
                    "state": "ok",
                    "state_since": None,
                    "last_value": None,
                    "version": 1,
                }
            )
    return ev, repo, time.perf_counter() - started


LEVELS = [0, 3, 8, 15, 30, 60]
_level: dict[str, int] = {}


def ticks_at(ev: Evaluator, now: int, rng: random.Random) -> list[KeyTick]:
    """Each key's value holds a level and moves to another with probability 5% per second
    (a busy mix: about a quarter of the alerts change state within a minute)."""
    out = []
    for key, group in ev.groups.items():
        w = group.watched
        if key not in _level or rng.random() < 0.05:
            _level[key] = rng.choice(LEVELS)
        rows = []
        for t in range(now - 5, now + 1):
            row = {"t": t, w.value_col: _level[key]}
            if w.presence_col:
                row[w.presence_col] = 1
            rows.append(row)
        out.append(KeyTick(key, group.spec, rows, rows[-2:], now - 5, now + 1, now, 0))
    return out


async def main(orgs: int, per_org: int, n_ticks: int) -> None:
    ev, repo, load_s = build(orgs, per_org)
    rng = random.Random(2)
    now = 1_800_000_000
    await ev._on_ticks(ticks_at(ev, now, rng))  # first tick: cursors start
    new_second, same_second = [], []
    for i in range(n_ticks):
        now += 1
        ticks = ticks_at(ev, now, rng)
        started = time.perf_counter()
        await ev._on_ticks(ticks)
        new_second.append(time.perf_counter() - started)
        # a tick 250 ms later: nothing newly complete
        ticks = ticks_at(ev, now, rng)
        started = time.perf_counter()
        await ev._on_ticks(ticks)
        same_second.append(time.perf_counter() - started)
        if i == 0:
            first_changes = repo.changes

    def ms(xs: list[float]) -> str:
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        return f"p50 {statistics.median(xs) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"

    print(f"alerts: {len(ev.alerts)} in {orgs} orgs, keys (shared queries): {len(ev.groups)}")
    print(f"load + compile all alerts: {load_s:.2f} s")
    print(f"tick with a new complete second: {ms(new_second)}  (target < 100 ms)")
    print(f"tick without one:                {ms(same_second)}")
    print(
        f"state changes: {repo.changes} over {n_ticks} ticks ({first_changes} on the first), "
        f"one PostgreSQL transaction per tick with changes; alert messages: {ev.hub.sent}"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    orgs = args[0] if args else 1000
    per_org = args[1] if len(args) > 1 else 10
    n_ticks = args[2] if len(args) > 2 else 30
    asyncio.run(main(orgs, per_org, n_ticks))
