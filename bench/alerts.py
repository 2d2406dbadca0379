"""The alert evaluator's own cost per tick: 10,000 alerts — threshold, anomaly and grouped —
across 1,000 orgs (target < 100 ms per tick), and what an anomaly key's baseline read costs.

    PYTHONPATH=. .venv/bin/python bench/alerts.py [orgs] [alerts_per_org] [ticks] [a|b|ab]

(a) `Evaluator._on_ticks` — the work the evaluator adds to one poller tick — fed synthetic
`KeyTick`s (the rows the poller would have read for every key), one new complete second per key
per tick (the worst case: at 250 ms only one tick in four has one), across a minute boundary;
a second's row is the same in every tick that reads it. Reported: process CPU and wall p50/p99
per tick with a new second (and of those the first after start and the first of a minute),
per tick without one, and between ticks, where the background baseline reads are let finish
(also after the tick that finds the alerts new, which starts their keys' reads).
Each org has 10 alerts over 3 metrics: 5 threshold (half with a recovery threshold and
keep-firing), 3 anomaly (baseline `week` or `hour`), 2 grouped by country (4 values each).
Definitions go through the real querybuilder into real push keys (compiled once per shape and
re-bound per org, see `_Hub.key_for`). Stubbed: the poller's
queries (the push tier's cost), PostgreSQL (one transaction per tick with changes, counted) and
the anomaly keys' baseline reads (synthetic, counted; their band statistics are real).
(b) The real baseline read of one anomaly key (compiler, tenant guard, embedded chDB): 70
minutes and a week-ago hour of 5 events/s for one org.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.alerts.evaluator as evaluator_module  # noqa: E402
from app.alerts.anomaly import History, read_history  # noqa: E402
from app.alerts.evaluator import Evaluator  # noqa: E402
from app.alerts.rules import watched_metric  # noqa: E402
from app.config import Settings  # noqa: E402
from app.push.keys import key_hash, make_key  # noqa: E402
from app.push.poller import KeyTick  # noqa: E402
from app.server import _freeze_startup_heap  # noqa: E402

METRICS = [
    {"text": "SELECT countIf(event = 'error') AS errors"},
    {"text": "SELECT count() AS views WHERE event = 'pageview'"},
    {"text": "SELECT avg(value) AS price WHERE event = 'purchase'"},
]
COUNTRIES = ("DE", "FR", "US", "BR")
FAST_SETUP = True


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
        self.templates: dict[bytes, Any] = {}

    def key_for(self, org_id: int, metric: Any, **kw: Any) -> Any:
        """The real compile for the first org of each shape; other orgs get the same SQL text
        with their own org_id parameter and key (setup speed: compiling 10,000 alerts takes
        minutes on a loaded 2-core machine, and the per-tick work does not depend on it)."""
        shape = msgspec.json.encode([metric, sorted(kw.items())])
        template = self.templates.get(shape)
        if template is None or not FAST_SETUP:
            spec = make_key(metric, org_id=org_id, database="bench", **kw)
            self.templates[shape] = spec
            return spec
        params = dict(template.compiled.params) | {"org_id": org_id}
        compiled = msgspec.structs.replace(template.compiled, params=params, org_id=org_id)
        key = key_hash("bench", org_id, compiled.sql, params)
        return dataclasses.replace(template, key=key, org_id=org_id, compiled=compiled)

    async def send_to_org(self, org_id: int, message: Any) -> None:
        self.sent += 1


class _Repo:
    pool = None

    def __init__(self) -> None:
        self.transactions = 0
        self.changes = 0

    async def states(self, ids: list[int]) -> list[dict[str, Any]]:
        return []

    async def group_states(self, ids: list[int]) -> dict[int, list[Any]]:
        return {}

    async def apply(self, changes: list[Any]) -> None:
        self.transactions += 1
        self.changes += len(changes)
        for i, c in enumerate(changes):
            c.applied = True
            c.event_id = i + 1


BASELINE_READS = 0


async def _fake_history(services, org_id, watched, filters, first, last, now, additive, *caches):
    """A synthetic hour (level 30 ± 3) and week: what read_history would return."""
    global BASELINE_READS
    BASELINE_READS += 1
    rng = random.Random(first + org_id)
    minutes = {m: 30 + rng.uniform(-3, 3) for m in range(first - 3660, last, 60)}
    hours = {h: 30.0 for h in range((first - 3660 - 604800) // 3600 * 3600, last - 604800, 3600)}
    return History(minutes, hours)


def _row(aid: int, org: int, i: int, rng: random.Random) -> dict[str, Any]:
    row = {
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
    if i < 5 and i % 2:
        above = row["comparator"] in (">", ">=")
        row["recovery_threshold"] = row["threshold"] * (0.5 if above else 2)
        row["keep_firing_seconds"] = 30
    elif 5 <= i < 8:
        row |= {"kind": "anomaly", "comparator": None, "threshold": None, "for_seconds": 10}
        row["anomaly"] = {"baseline": ("week", "hour")[i % 2], "sensitivity": 4}
    elif i >= 8:
        row["group_by"] = ["country"]
    return row


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
            ev._apply(_row(aid, org, i, rng))
    return ev, repo, time.perf_counter() - started


LEVELS = [0, 3, 8, 15, 30, 60]
_level: dict[str, dict[int, int]] = {}  # key → second → level (a second keeps its value)


def ticks_at(ev: Evaluator, now: int, rng: random.Random) -> list[KeyTick]:
    """Each key's value holds a level and moves to another with probability 5% per second
    (a busy mix); anomaly keys sit near their baseline and spike now and then. Rows cover the
    last 5 seconds (the evaluator reads the newly complete one); a second's row is the same in
    every tick that reads it, as the poller's would be."""
    out = []
    for key, group in ev.groups.items():
        w = group.watched
        levels = _level.setdefault(key, {})
        # from the first second a key's first tick reads (a second keeps its level)
        for t in range(now - 4 if not levels else now, now + 1):
            if t in levels:
                continue
            if t - 1 not in levels or rng.random() < 0.05:
                choices = LEVELS if group.baseline is None else [30, 30, 30, 90]
                levels[t] = rng.choice(choices)
            else:
                levels[t] = levels[t - 1]
            levels.pop(t - 6, None)
        rows = []
        for t in range(now - 4, now + 1):
            level = levels[t]
            if group.spec.dims:
                for country in COUNTRIES:
                    row = {"t": t, "country": country, w.value_col: level + (country == "US") * 10}
                    if w.presence_col:
                        row[w.presence_col] = 1
                    rows.append(row)
            else:
                row = {"t": t, w.value_col: level}
                if w.presence_col:
                    row[w.presence_col] = 1
                rows.append(row)
        out.append(KeyTick(key, group.spec, rows, rows[-1:], now - 4, now + 1, now, 0))
    return out


async def evaluator_ticks(orgs: int, per_org: int, n_ticks: int) -> None:
    evaluator_module.read_history = _fake_history  # (a) stubs the baseline's queries
    ev, repo, load_s = build(orgs, per_org)
    # What the server does once its services (the evaluator's definitions included) started:
    # move the start-up heap out of the collector's generations (app/server.py).
    _freeze_startup_heap()
    rng = random.Random(2)
    now = 1_800_000_000 // 60 * 60 + 50  # the run crosses a minute boundary after 12 ticks
    # tick kind → (wall, CPU) samples; "new" = a tick with a new complete second
    samples: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("new", "same", "boundary", "first", "between", "start", "start-reads")
    }

    # the garbage collector's full passes (ms) inside each kind of timed work: they land
    # wherever the process's allocations (here mostly building the ticks' rows) cross the
    # threshold, and one costs more than a tick's own work
    full_passes: dict[str, list[float]] = {k: [] for k in samples}
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                gc_started[:] = [time.perf_counter()]
            elif gc_started:
                gc_passes.append((time.perf_counter() - gc_started[0]) * 1000)

    gc_passes: list[float] = []
    gc.callbacks.append(on_gc)

    async def timed(kind: str, work: Any) -> None:
        gc_passes.clear()
        started, cpu = time.perf_counter(), time.process_time()
        await work
        samples[kind][0].append(time.perf_counter() - started)
        samples[kind][1].append(time.process_time() - cpu)
        full_passes[kind] += gc_passes

    # the tick that finds the 10,000 alerts new: they start with the next second, and the
    # anomaly keys' baselines for it are read in the background until the next tick
    await timed("start", ev._on_ticks(ticks_at(ev, now, rng)))
    await timed("start-reads", _drain(ev))

    seconds_before = ev.evaluated_seconds
    for i in range(n_ticks):
        now += 1
        ticks = ticks_at(ev, now, rng)
        # second 2 of a minute (settle 1.5 s): the first tick evaluating the new minute;
        # the first after start: every alert's first second (its machines all start "ok")
        await timed("new", ev._on_ticks(ticks))
        if now % 60 == 2 or i == 0:
            for kind in ("boundary",) if i else ("first",):
                samples[kind][0].append(samples["new"][0][-1])
                samples[kind][1].append(samples["new"][1][-1])
        # the event loop between ticks: background baseline reads (read-ahead, and at start
        # the keys whose baseline was missing), done before the next second as in a real
        # second (stubbed reads take well under one)
        await timed("between", _drain(ev))
        # a tick 250 ms later (same rows): nothing newly complete
        await timed("same", ev._on_ticks(ticks))
    await asyncio.gather(*ev._read_tasks)
    gc.callbacks.remove(on_gc)

    def ms(xs: list[float]) -> str:
        if not xs:
            return "-"
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        return f"p50 {statistics.median(xs) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {xs[-1] * 1000:.1f} ms"

    def both(kind: str) -> str:
        wall, cpu = samples[kind]
        return f"CPU {ms(cpu)}\n{' ' * 37}wall {ms(wall)}"

    kinds: dict[str, int] = {}
    for live in ev.alerts.values():
        kind = "grouped" if live.row["group_by"] else live.row["kind"]
        kinds[kind] = kinds.get(kind, 0) + 1
    anomaly_keys = sum(1 for g in ev.groups.values() if g.baseline is not None)
    machines = sum(len(getattr(a.machine, "machines", {None: 1})) for a in ev.alerts.values())
    print(
        f"(a) alerts: {len(ev.alerts)} in {orgs} orgs {kinds}; keys: {len(ev.groups)} "
        f"({anomaly_keys} anomaly); state machines: {machines}"
    )
    print(f"    load + compile all alerts: {load_s:.2f} s (compiled once per shape)")
    print(f"    load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"    tick that finds the alerts new:    {both('start')}")
    print(f"    then the start-up baseline reads:  {both('start-reads')}")
    print(f"    tick with a new complete second: {both('new')}  (target < 100 ms)")
    print(f"      of which the first after start:  {both('first')}")
    print(f"      of which the first of a minute:  {both('boundary')}")
    print(f"    tick without one:                  {both('same')}")
    print(f"    between ticks (background reads):  {both('between')}")
    print(
        f"    evaluated alert-seconds: {ev.evaluated_seconds - seconds_before} "
        f"({len(ev.alerts)} alerts × {n_ticks} s = {len(ev.alerts) * n_ticks}), of which "
        f"skipped as steady (machines advanced lazily): {ev.steady_seconds}"
    )
    inside = {k: v for k, v in full_passes.items() if v and k not in ("first", "boundary")}
    print(
        "    full GC passes inside timed work: "
        + (
            ", ".join(
                f"{k} {len(v)} ({', '.join(f'{x:.0f}' for x in v)} ms)" for k, v in inside.items()
            )
            or "none"
        )
    )
    print(
        f"    baseline reads: {BASELINE_READS} over {n_ticks} s for {anomaly_keys} anomaly keys "
        f"(one per key per minute, read ahead)"
    )
    print(
        f"    state changes: {repo.changes}, transactions: {repo.transactions}, "
        f"alert messages: {ev.hub.sent}"
    )


async def _drain(ev: Evaluator) -> None:
    await asyncio.sleep(0)
    await asyncio.gather(*ev._read_tasks)


async def baseline_read_cost(reads: int = 10) -> None:
    from app.clickhouse import EmbeddedClickHouse
    from app.migrate import migrate_clickhouse, render_clickhouse
    from bench.push import _scale_insert, _scale_rows

    root = EmbeddedClickHouse(database="default", data_dir=tempfile.mkdtemp(prefix="cp-alerts-"))
    try:
        ch = root.with_database("alerts")
        started = time.perf_counter()
        migrate_clickhouse(ch, render_clickhouse(database="alerts"))
        print(f"(b) migrated in {time.perf_counter() - started:.1f} s", flush=True)
        now = int(time.time()) // 60 * 60
        for start in (now - 70 * 60, now - 604800 - 7200):
            rows = []
            for second in range(start, start + 70 * 60, 10):
                rows += _scale_rows(1, second, 50)  # 5 events/s on average
                if len(rows) >= 40_000:
                    _scale_insert(ch, rows)
                    rows = []
            _scale_insert(ch, rows)
        print(f"    inserted in {time.perf_counter() - started:.1f} s", flush=True)
        services = SimpleNamespace(ch=ch)
        for metric in METRICS[:2] + METRICS[2:]:
            watched = watched_metric(metric)
            # what the live evaluator keeps per key: compiled statements, last week's hours
            samples, cpu, compiled, hours = [], [], {}, {}
            for i in range(reads):
                started, cpu_started = time.perf_counter(), time.process_time()
                history = await read_history(
                    services,
                    1,
                    watched,
                    [],
                    now - 60 * (i % 5),
                    now - 60 * (i % 5),
                    now,
                    True,
                    compiled,
                    hours,
                )
                samples.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            print(
                f"(b) baseline read (an hour of rollup_1m; last week's hours cached) of {metric['text']!r}: "
                f"median {statistics.median(samples) * 1000:.1f} ms "
                f"(CPU {statistics.median(cpu) * 1000:.1f} ms), "
                f"max {max(samples) * 1000:.1f} ms; {len(history.minutes)} minutes, "
                f"{len(history.hours)} hours"
            )
        print(f"    load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        root.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    orgs = args[0] if args else 1000
    per_org = args[1] if len(args) > 1 else 10
    n_ticks = args[2] if len(args) > 2 else 70
    parts = sys.argv[4] if len(sys.argv) > 4 else "ab"
    if "a" in parts:
        asyncio.run(evaluator_ticks(orgs, per_org, n_ticks))
    if "b" in parts:
        asyncio.run(baseline_read_cost())
