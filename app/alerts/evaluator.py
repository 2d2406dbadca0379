"""The live alert evaluator: alerts are evaluated on the push poller's ticks, with no polling
loop of its own. Each enabled alert becomes a push key watched through the poller, so alerts
and viewers of the same metric and filters share the key's read each tick; after each tick, every
alert's state machine advances over the seconds that became complete. Transitions are stored
first, then pushed to the org's sockets and sent to the alert's channels (unless silenced).
See docs/alerts.md, sections "Evaluation", "Firing and resolving: in this order" and
"Restarts". Long because the whole live path — definitions, the grouped and anomaly variants,
replay, the order of side effects — reads best in one place."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from app.push.keys import KeySpec
from app.push.poller import KeyTick, Watch, run_guarded
from app.querybuilder import MetricError

from .anomaly import AnomalySpec, BaselineCache, additive, band_of, read_history, spec_of
from .delivery import Dispatcher
from .grouped import GroupedMachines
from .machine import FOREVER, Band, Machine, Transition
from .rules import (
    Watched,
    fingerprint,
    group_by_of,
    group_key,
    rule_of,
    value_of,
    watched_metric,
    window_of,
)
from .state import AlertStateRepo, Change, to_second

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("clickpulse.alerts")

#: Anomaly keys read the next minute's baseline from this second of the minute on (the previous
#: minute is complete by then), each at its own offset within READ_AHEAD_SPREAD_S seconds.
READ_AHEAD_AFTER_S = 5
READ_AHEAD_SPREAD_S = 45
#: Background baseline reads (read-ahead, and missing minutes) run at most this many at a time.
READ_AHEAD_CONCURRENCY = 2
#: A tick reads at most this many missing baselines inline; other keys missing theirs are read in
#: the background and evaluated (catching up) once it is there — a restart with thousands of
#: anomaly keys must not hold one tick for all their reads.
INLINE_READS_PER_TICK = 4
#: At most this many keys evaluate their new alerts' first second in one tick; the others wait for
#: the next tick (the same second at a later tick: the same changes). A first second costs
#: several usual ones — every machine steps, most change state, grouped alerts create theirs —
#: so a start with 10,000 new alerts spreads over a few ticks (docs/benchmarks.md).
FIRST_KEYS_PER_TICK = 3000
#: Grouped keys remember this many group values' canonical JSON (str values; see _next_second),
#: one memo per group-by column shared by every key grouped by it (a pure function of the value).
GROUP_KEY_CACHE = 65536


@dataclass
class Live:
    """One enabled alert in memory."""

    row: dict[str, Any]
    key: str
    machine: Machine | GroupedMachines  # grouped alerts: one machine per group value
    fp: bytes
    anomaly: AnomalySpec | None = None
    # the band last computed and the baseline statistics it came from (the same all minute)
    band_stats: tuple[float, float] | None = None
    band: Band | None = None
    # an event's `who` and `what` (from the definition: built once, shared by its events)
    who_what: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def shape(self) -> tuple[Any, ...]:
        """What, when it changes, needs a new machine rather than a new rule."""
        return (self.row.get("kind"), bool(self.row.get("group_by")))

    @property
    def id(self) -> int:
        return self.row["id"]

    @property
    def org_id(self) -> int:
        return self.row["org_id"]


#: A key's `last_value` before its first step (equal to no value).
_UNSET: Any = object()


@dataclass
class Group:
    """Alerts sharing one compiled query (one push key)."""

    spec: KeySpec
    watched: Watched
    watch: Watch
    alerts: dict[int, Live] = field(default_factory=dict)
    last_tick: float | None = None
    reload: bool = False
    loaded_at: float = field(default_factory=time.monotonic)  # when its states were read
    baseline: BaselineCache | None = None  # anomaly alerts' keys: the cached baseline
    done_through: int | None = None  # every alert evaluated through this second
    additive: bool = False
    group_keys: dict[str, str] = field(default_factory=dict)  # a dim's value → group_key()
    banded_minute: int | None = None  # every anomaly alert's band for this minute is cached
    first: bool = False  # every alert is new: its next second is their first (FIRST_KEYS_PER_TICK)
    # The steady-state skip (docs/alerts.md, "Costs"): the value (grouped: values) of the last
    # second stepped for real; the first second that must be stepped for real again while the
    # value stays (None: not computed since that step); the last second skipped, whose machines
    # have not been advanced yet (`Evaluator._catch_up`).
    last_value: Any = field(default=_UNSET, repr=False)
    steady_until: int | None = None
    coasted_through: int | None = None


async def _ignore(_: KeyTick) -> None:
    """Per-key listener: the work happens once per tick in `Evaluator._on_ticks`."""


def definition_of(row: dict[str, Any]) -> dict[str, Any]:
    definition = row.get("metric_inline")
    if definition is None:
        definition = row.get("metric_definition")
    if definition is None:
        raise MetricError("unknown_metric", "the alert's saved metric no longer exists")
    return definition


class Evaluator:
    def __init__(self, services: Services):
        self.services = services
        s = services.settings
        self.settle_ms = s.alert_settle_ms
        self.sync_s = s.alert_sync_s
        self.reload_gap_s = 3.0
        self._repo = AlertStateRepo(services.pg, s.pg_timeout_s)
        self.sender = Dispatcher(
            self.repo,
            timeout_s=s.alert_webhook_timeout_s,
            retries=s.alert_webhook_retries,
            backoff_s=s.alert_webhook_backoff_s,
            allow_private=s.alert_webhook_allow_private,
        )
        self.alerts: dict[int, Live] = {}
        self.groups: dict[str, Group] = {}
        self._anomaly_groups: dict[str, Group] = {}  # the groups with a baseline (read ahead)
        self._group_keys: dict[tuple[str, ...], dict[str, str]] = {}  # group-by → Group.group_keys
        self._lock = asyncio.Lock()
        self._remove_listener: Any = None
        self._poller: Any = None
        self._last_sync = 0.0
        self._sync_task: asyncio.Task[None] | None = None
        # Background baseline reads: a queue and at most READ_AHEAD_CONCURRENCY workers (not a
        # task per key: a restart queues thousands of keys at once).
        self._read_queue: collections.deque[tuple[Group, list[Live], range, float]] = (
            collections.deque()
        )
        self._read_tasks: set[asyncio.Task[None]] = set()
        self._readers = 0  # workers reading the queue
        self._inline_reads = 0  # baseline reads awaited by the current tick
        # Counters for tests and benchmarks.
        self.evaluated_seconds = 0
        self.steady_seconds = 0  # of those, skipped as steady (machines advanced lazily)
        self.transitions = 0
        self.last_eval_s = 0.0

    @property
    def repo(self) -> AlertStateRepo:
        self._repo.pool = self.services.pg  # follows a swapped pool (tests simulate outages)
        return self._repo

    @property
    def hub(self) -> Any:
        return self.services.push

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._poller = self.hub.poller
        self._remove_listener = self._poller.add_tick_listener(self._on_ticks)
        try:
            await self.sync()
        except Exception as exc:  # the store may be down: the periodic sync retries
            log.warning("alerts: initial load failed: %s", exc)
        try:
            await self.resend_undelivered()
        except Exception as exc:
            log.warning("alerts: resending undelivered webhooks failed: %s", exc)

    async def stop(self) -> None:
        if self._remove_listener is not None:
            with contextlib.suppress(ValueError):
                self._remove_listener()
            self._remove_listener = None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        self._read_queue.clear()
        for task in list(self._read_tasks):
            task.cancel()
        await asyncio.gather(*self._read_tasks, return_exceptions=True)
        for group in self.groups.values():
            group.watch.close()
        self.groups.clear()
        self._anomaly_groups.clear()
        self.alerts.clear()
        await self.sender.close()

    async def resend_undelivered(self, max_age_s: int = 3600) -> int:
        rows = await self.repo.undelivered(max_age_s)
        for row in rows:
            payload = _payload(row, row["details"], to_second(row["at"]), row["kind"])
            self.sender.submit(row["id"], row["org_id"], payload, row["targets"])
        return len(rows)

    # -- definitions ----------------------------------------------------------------------
    async def sync(self, *, org_id: int | None = None, alert_id: int | None = None) -> None:
        """Load definitions (all, one org's, or one alert) and apply them: new alerts are
        watched, edited ones recompiled (their state kept), disabled/deleted ones dropped.
        A no-op until `start` (a process without the push role never starts it: its alerts
        are evaluated by the push nodes, which re-read definitions every `alert_sync_s`)."""
        if self._poller is None:
            return
        rows = await self.repo.load(org_id=org_id, alert_id=alert_id)
        grouped = [r["id"] for r in rows if r.get("group_by") and r["id"] not in self.alerts]
        stored = await self.repo.group_states(grouped) if grouped else {}
        async with self._lock:
            seen = set()
            for row in rows:
                seen.add(row["id"])
                self._apply(row, stored.get(row["id"], []))
            for aid in [
                a.id
                for a in self.alerts.values()
                if a.id not in seen
                and (org_id is None or a.org_id == org_id)
                and (alert_id is None or a.id == alert_id)
            ]:
                self._drop(aid)
        self._last_sync = time.monotonic()

    def _apply(self, row: dict[str, Any], stored: list[Any] | None = None) -> None:
        aid = row["id"]
        live = self.alerts.get(aid)
        if not row["enabled"]:
            self._drop(aid)
            return
        fp = fingerprint(row)
        if live is not None and live.fp == fp:
            return
        try:
            watched = watched_metric(definition_of(row))
            spec = self.hub.key_for(
                row["org_id"],
                watched.metric,
                filters=row["filters"] or [],
                group_by=group_by_of(row),
                window_s=window_of(row),
            )
            is_additive = additive(watched.metric)
        except MetricError as exc:
            log.warning("alert %s cannot be evaluated: %s", aid, exc)
            self._drop(aid)
            return
        rule = rule_of(row)
        anomaly = spec_of(row["anomaly"]) if row.get("kind") == "anomaly" else None
        fresh = Live(row, spec.key, Machine(rule), fp, anomaly)
        machine: Machine | GroupedMachines
        if live is None or live.shape != fresh.shape:
            if live is not None:
                self._detach(live)
            if row.get("group_by"):
                machine = GroupedMachines(rule, row["max_groups"], watched.pure_count)
                machine.resume(stored or [])
            else:
                machine = Machine.resume(rule, row["state"], to_second(row["state_since"]), None)
        else:  # edited: keep its state and position, apply the new rule
            machine = live.machine
            if isinstance(machine, GroupedMachines):
                machine.set_rule(rule)
                machine.max_groups = row["max_groups"]
            else:
                machine.rule = rule
            self._detach(live)
        fresh.machine = machine
        live = self.alerts[aid] = fresh
        group = self.groups.get(spec.key)
        if group is None:
            watch = self._poller.watch(spec, _ignore)
            group = self.groups[spec.key] = Group(spec, watched, watch, additive=is_additive)
            if spec.dims:  # shared: 2,000 keys grouped by country know 4 values, not 8,000
                group.group_keys = self._group_keys.setdefault(spec.dims, {})
        group.done_through = None
        self._unsteady(group)  # before the new alert joins: it has not skipped anything
        if anomaly is not None and group.baseline is None:
            group.baseline = BaselineCache(phase=int(spec.key[:6], 16) % READ_AHEAD_SPREAD_S)
            self._anomaly_groups[spec.key] = group
        if group.baseline is not None:  # the new alert may need another baseline kind
            group.banded_minute = group.baseline.ahead = None
        group.alerts[aid] = live

    def _detach(self, live: Live) -> None:
        group = self.groups.get(live.key)
        if group is None:
            return
        self._unsteady(group)  # the machine may move to another key: at its real position
        group.alerts.pop(live.id, None)
        if not group.alerts:
            group.watch.close()
            del self.groups[live.key]
            self._anomaly_groups.pop(live.key, None)

    def _drop(self, alert_id: int) -> None:
        live = self.alerts.pop(alert_id, None)
        if live is not None:
            self._detach(live)

    # -- evaluation -----------------------------------------------------------------------
    def horizon(self, tick_time: float, lag_ms: int = 0) -> int:
        """The last complete second at `tick_time`."""
        return math.floor(tick_time - (self.settle_ms + max(lag_ms, 0)) / 1000) - 1

    async def _on_ticks(self, ticks: list[KeyTick]) -> None:
        started = time.perf_counter()
        changes: list[tuple[Live, Change]] = []
        async with self._lock:
            self._inline_reads = 0
            # Two passes over `ticks` rather than a list of (tick, group) pairs: a tick of
            # 8,000 keys would otherwise allocate 8,000 tuples, enough to start the garbage
            # collector's costly full passes in the middle of evaluation (bench/alerts.py).
            stale = []
            groups, gap = self.groups, self.reload_gap_s
            newest = ticks[0].tick_time if ticks else time.time()  # read-ahead's clock
            for tick in ticks:
                if tick.tick_time > newest:
                    newest = tick.tick_time
                group = groups.get(tick.key)
                if group is None or not group.alerts:
                    continue
                last = group.last_tick  # _needs_reload's usual answer (False) without a call
                if (
                    group.reload or last is None or tick.tick_time - last > gap
                ) and self._needs_reload(group, tick):
                    stale.append(group)
            skipped: set[str] = set()
            if stale:
                try:
                    await self._reload_states(stale)
                except Exception as exc:
                    log.warning("alerts: reloading state failed: %s", exc)
                    skipped = {g.spec.key for g in stale}
            tick_time, lag_ms, horizon = None, None, 0
            first_keys = FIRST_KEYS_PER_TICK
            for tick in ticks:
                group = groups.get(tick.key)
                if group is None or not group.alerts or (skipped and tick.key in skipped):
                    continue
                done = group.done_through
                if tick.tick_time != tick_time or tick.lag_ms != lag_ms:  # a round shares it
                    tick_time, lag_ms = tick.tick_time, tick.lag_ms
                    horizon = self.horizon(tick_time, lag_ms)
                if done is not None and done >= horizon:
                    group.last_tick = tick.tick_time  # nothing newly complete for this key
                    continue
                if group.first:
                    if first_keys <= 0:
                        group.last_tick = tick.tick_time  # waits for the next tick
                        continue
                    first_keys -= 1
                    group.first = False
                try:
                    if done == horizon - 1:
                        quick = self._next_second(group, tick, horizon)
                        if quick is not None:
                            changes.extend(quick)
                            continue
                    changes.extend(await self._evaluate(group, tick))
                except Exception:
                    log.exception("alerts: evaluating key %s failed", tick.key)
                    group.reload = True
        if changes:
            await self._commit(changes)
        self._read_ahead(newest)
        self.last_eval_s = time.perf_counter() - started
        if (
            self.sync_s > 0
            and time.monotonic() - self._last_sync >= self.sync_s
            and (self._sync_task is None or self._sync_task.done())
        ):
            self._last_sync = time.monotonic()
            self._sync_task = asyncio.create_task(self._background_sync(), name="alerts-sync")

    async def _background_sync(self) -> None:
        try:
            await self.sync()
        except Exception as exc:
            log.warning("alerts: periodic sync failed: %s", exc)

    async def _evaluate(self, group: Group, tick: KeyTick) -> list[tuple[Live, Change]]:
        now = tick.tick_time
        horizon = self.horizon(now, tick.lag_ms)
        earliest = int(now) - self._poller.retention_s + 1
        group.last_tick = now
        if group.done_through is not None and group.done_through >= horizon:
            return []  # every alert of the key is at the horizon (3 ticks in 4 at 250 ms)
        self._unsteady(group)
        series: dict[int, Any] = {}
        alerts = list(group.alerts.values())
        starts = []
        for live in alerts:
            m = live.machine
            if m.cursor is None:
                continue
            if m.cursor + 1 < earliest:
                # Older than rollup_1s keeps: resume at the oldest readable second.
                if isinstance(m, GroupedMachines):
                    m.skip_to(earliest)
                else:
                    live.machine = m = Machine.resume(m.rule, m.state, m.since, earliest)
            starts.append(m.cursor + 1)
        if len(starts) == len(alerts) and min(starts) > horizon:
            return []  # nothing newly complete for this key (3 ticks in 4 at 250 ms)
        if group.baseline is not None and starts:
            seconds = range(min(starts), horizon + 1)
            if self._inline_reads < INLINE_READS_PER_TICK or self._has_baseline(group, seconds):
                self._inline_reads += await self._baseline(group, alerts, seconds, int(now))
            else:  # read it in the background; the alerts catch up from `starts` after that
                self._read_later(group, alerts, seconds, now)
                for live in alerts:
                    if live.machine.cursor is None:
                        live.machine.cursor = horizon
                return []
        if starts and min(starts) < tick.time_from:
            lo = max(min(starts), earliest)
            if lo < tick.time_from:
                result = await run_guarded(self.services.ch, group.spec.bind(lo, tick.time_from))
                spec = group.spec
                rows = spec.rows_of(spec.read_records(result, lo, tick.time_from))
                self._collect(group, rows, lo, horizon, series)
        lowest = min(starts, default=horizon + 1)
        self._collect(group, tick.rows, lowest, horizon, series)
        out = []
        fresh = False
        for live in alerts:
            m = live.machine
            if m.cursor is None:  # new: evaluation starts with the next complete second
                m.cursor = horizon
                fresh = True
                continue
            for t in range(m.cursor + 1, horizon + 1):
                self.evaluated_seconds += 1
                if isinstance(m, GroupedMachines):
                    for g, tr in m.step(t, series.get(t, {})):
                        out.append((live, self._change(live, group, tr, now, g)))
                    continue
                band = None
                if live.anomaly is not None and group.baseline is not None:
                    band = group.baseline.band(t, live.anomaly)
                tr = m.step(t, series.get(t), band)
                if tr is not None:
                    out.append((live, self._change(live, group, tr, now)))
        group.done_through = horizon
        group.first = fresh and not starts
        if fresh and group.baseline is not None:
            # New anomaly alerts start with the next second: its minute's baseline is read in
            # the background from now, not by the tick that evaluates that second.
            upcoming = range(horizon + 1, horizon + 2)
            if not self._has_baseline(group, upcoming):
                self._read_later(group, alerts, upcoming, now)
        return out

    def _next_second(self, group: Group, tick: KeyTick, t: int) -> list[tuple[Live, Change]] | None:
        """The usual tick: every alert of the key is at t - 1 and t is newly complete. None
        when it needs the general path (no row for t, or the minute's band not cached).
        The same steps as `_evaluate` for one second, without building a series: it runs for
        every key every second (docs/benchmarks.md, "Alerts evaluator"). A key whose value is
        the one of the last second stepped, and whose machines that value cannot change before
        `steady_until`, skips its machines: they are advanced when something changes
        (`_catch_up`), so a steady key costs the same whatever its number of alerts."""
        if tick.time_from > t:
            return None
        watched = group.watched
        presence, value_col = watched.presence_col, watched.value_col
        dims = group.spec.dims
        if dims:
            values: dict[str, Any] = {}
            # A group's canonical JSON once per value, not per row and second. Only str values
            # are remembered (the usual group-by columns): equal keys then mean equal JSON.
            names = group.group_keys
            single = dims[0] if len(dims) == 1 else None
            for row in tick.rows:
                if row["t"] != t:
                    continue
                name = None
                if single is not None:
                    dim = row.get(single)
                    if dim.__class__ is str:
                        name = names.get(dim)
                        if name is None:
                            if len(names) >= GROUP_KEY_CACHE:
                                names.clear()
                            name = names[dim] = group_key(dims, row)
                if name is None:
                    name = group_key(dims, row)
                # value_of(row, watched), inlined
                if presence is not None and not row.get(presence):
                    values[name] = None
                else:
                    values[name] = row.get(value_col)
        else:
            for row in reversed(tick.rows):
                if row["t"] == t:  # value_of(row, watched), inlined
                    if presence is not None and not row.get(presence):
                        value = None
                    else:
                        value = row.get(value_col)
                    break
            else:
                return None
        baseline = group.baseline
        if baseline is not None:
            minute = t // 60 * 60
            if group.banded_minute != minute:
                if not self._has_baseline(group, range(minute, minute + 1)):
                    return None
                group.banded_minute = minute
        group.last_tick = now = tick.tick_time
        alerts = group.alerts.values()
        self.evaluated_seconds += len(alerts)
        last = group.last_value
        # Equal values judge equally: a key's value column has one type, so `==` (where
        # 1 == 1.0) cannot pair a bool with a number; the class is compared where it is cheap.
        if (values == last) if dims else (value == last and value.__class__ is last.__class__):
            until = group.steady_until
            if until is None:
                until = group.steady_until = self._steady_until(group, t - 1)
            if t < until:
                group.coasted_through = group.done_through = t
                self.steady_seconds += len(alerts)
                return []
        if group.coasted_through is not None:
            self._catch_up(group)
        group.last_value = values if dims else value
        group.steady_until = None
        out = []
        for live in alerts:
            m = live.machine
            if m.__class__ is GroupedMachines:
                for g, tr in m.step(t, values):  # type: ignore[union-attr]
                    out.append((live, self._change(live, group, tr, now, g)))
                continue
            if live.anomaly is not None and baseline is not None:
                tr = m.step(t, value, self._band(live, baseline, t))  # type: ignore[arg-type]
            else:
                tr = m.step(t, value)  # type: ignore[arg-type]
            if tr is not None:
                out.append((live, self._change(live, group, tr, now)))
        group.done_through = t
        return out

    @staticmethod
    def _steady_until(group: Group, stepped: int) -> int:
        """The first second after `stepped` (the key's last second stepped for real) that must
        be stepped for real if the key's value stays: the earliest of its machines', and for
        an anomaly key the next minute (a new band)."""
        until = FOREVER if group.baseline is None else stepped // 60 * 60 + 60
        values = group.last_value
        for live in group.alerts.values():
            m = live.machine
            if m.__class__ is GroupedMachines:
                due = m.steady_until(values)  # type: ignore[union-attr]
            elif m.cursor != stepped:
                return stepped + 1
            else:
                due = m.steady_until()  # type: ignore[call-arg]
            if due < until:
                until = due
        return until

    @staticmethod
    def _catch_up(group: Group) -> None:
        """Advance the key's machines over the seconds it skipped as steady."""
        through = group.coasted_through
        if through is None:
            return
        group.coasted_through = None
        values = group.last_value
        for live in group.alerts.values():
            m = live.machine
            if m.__class__ is GroupedMachines:
                m.coast(through, values)  # type: ignore[call-arg]
            else:
                m.coast(through)  # type: ignore[call-arg]

    def _unsteady(self, group: Group) -> None:
        """Before anything but `_next_second` reads or changes the key's machines: advance
        them, and step the next second for real."""
        self._catch_up(group)
        group.last_value = _UNSET
        group.steady_until = None

    def evaluated_through(self, alert_id: int) -> int | None:
        """The last second evaluated for an alert: its machine's position, or the last second
        its key skipped as steady (the machine is advanced to it lazily)."""
        live = self.alerts[alert_id]
        cursor = live.machine.cursor
        group = self.groups.get(live.key)
        if cursor is None or group is None or group.coasted_through is None:
            return cursor
        return max(cursor, group.coasted_through)

    def _band(self, live: Live, baseline: BaselineCache, t: int) -> Band | None:
        """`baseline.band(t, live.anomaly)`, computed once per minute per alert (the
        statistics are the same tuple all minute)."""
        assert live.anomaly is not None
        center_scale = baseline.stats.get((t // 60 * 60, live.anomaly.baseline))
        if center_scale is None or center_scale is not live.band_stats:
            live.band_stats = center_scale
            live.band = band_of(center_scale, live.anomaly)
        return live.band

    @staticmethod
    def _has_baseline(group: Group, seconds: range) -> bool:
        """Whether every anomaly alert of the key has its band for every minute of `seconds`."""
        assert group.baseline is not None
        stats = group.baseline.stats
        minutes = range(seconds[0] // 60 * 60, seconds[-1] // 60 * 60 + 1, 60)
        return all(
            (m, live.anomaly.baseline) in stats
            for live in group.alerts.values()
            if live.anomaly is not None
            for m in minutes
        )

    def _collect(
        self, group: Group, rows: Any, lowest: int, horizon: int, series: dict[int, Any]
    ) -> None:
        """Rows of the key → the value per second (per second and group when grouped)."""
        dims = group.spec.dims
        for row in rows:
            t = row["t"]
            if not lowest <= t <= horizon:
                continue
            if dims:
                series.setdefault(t, {})[group_key(dims, row)] = value_of(row, group.watched)
            else:
                series[t] = value_of(row, group.watched)

    def _read_ahead(self, now: float) -> None:
        """Read the next minute's baseline of anomaly keys in the background, each key at its
        own second of the minute, so minute boundaries do not wait for thousands of reads."""
        minute = int(now) // 60 * 60
        second = int(now) - minute
        if second < READ_AHEAD_AFTER_S:
            return
        ahead = minute + 60
        for group in self._anomaly_groups.values():
            cache = group.baseline
            if cache is None or cache.ahead == ahead or cache.reading or not group.alerts:
                continue  # (ahead: already read, or found cached, this minute)
            if second < READ_AHEAD_AFTER_S + cache.phase:
                continue
            if self._has_baseline(group, range(ahead, ahead + 1)):
                cache.ahead = ahead
                continue
            # with this minute when it is missing too (new alerts): one read, not two in turn
            alerts = list(group.alerts.values())
            self._read_later(group, alerts, range(minute, ahead + 1), now)

    def _read_later(self, group: Group, alerts: list[Live], seconds: range, now: float) -> None:
        """Queue the baseline of `seconds` for the background workers (unless the key's read is
        already queued or under way)."""
        assert group.baseline is not None
        if group.baseline.reading:
            return
        group.baseline.reading = True
        self._read_queue.append((group, alerts, seconds, now))
        if self._readers < READ_AHEAD_CONCURRENCY:
            self._readers += 1
            task = asyncio.create_task(self._read_queued(), name="alerts-baseline")
            self._read_tasks.add(task)
            task.add_done_callback(self._read_tasks.discard)

    async def _read_queued(self) -> None:
        """A worker: read queued baselines until the queue is empty."""
        try:
            while self._read_queue:
                await self._read_in_background(*self._read_queue.popleft())
        finally:
            self._readers -= 1

    async def _read_in_background(
        self, group: Group, alerts: list[Live], seconds: range, now: float
    ) -> None:
        assert group.baseline is not None
        try:
            await self._baseline(group, alerts, seconds, int(now))
        except Exception as exc:  # evaluation reads it inline if still missing
            log.warning("alerts: reading the baseline of %s failed: %s", group.spec.key, exc)
        finally:
            group.baseline.reading = False

    async def _baseline(self, group: Group, alerts: list[Live], seconds: range, now: int) -> int:
        """Make sure the key's baseline has the minutes of `seconds` (read from the rollups
        once per minute, not per second); the number of reads it took (0 or 1)."""
        assert group.baseline is not None
        stats = group.baseline.stats
        first, last = seconds[0] // 60 * 60, seconds[-1] // 60 * 60
        if last - first <= 60 and all(
            (m, a.anomaly.baseline) in stats
            for a in alerts
            if a.anomaly is not None
            for m in (first, last)
        ):
            return 0  # the usual tick: this minute's band is cached
        baselines = {a.anomaly.baseline for a in alerts if a.anomaly is not None}
        minutes = {t // 60 * 60 for t in seconds}
        missing = group.baseline.missing(minutes, baselines)
        if not missing:
            return 0
        first = alerts[0].row
        history = await read_history(
            self.services,
            first["org_id"],
            group.watched,
            first["filters"] or [],
            missing[0],
            missing[-1],
            now,
            group.additive,
            group.baseline.compiled,
            group.baseline.hours,
        )
        group.baseline.fill(history, missing, baselines)
        return 1

    def _needs_reload(self, group: Group, tick: KeyTick) -> bool:
        """Re-read the stored state before evaluating: after a failed write, and when this
        node starts (or resumes) polling a key another node may have evaluated meanwhile
        (Redis leader takeover)."""
        if group.reload:
            return True
        if group.last_tick is None:
            return time.monotonic() - group.loaded_at > self.reload_gap_s
        return tick.tick_time - group.last_tick > self.reload_gap_s

    async def _reload_states(self, groups: list[Group]) -> None:
        """One query for all `groups`; each alert resumes from its stored state (and replays
        from there). An alert that never changed state keeps its position."""
        for g in groups:
            self._unsteady(g)
        by_id = {aid: live for g in groups for aid, live in g.alerts.items()}
        rows = await self.repo.states(list(by_id))
        grouped = [a for a, live in by_id.items() if isinstance(live.machine, GroupedMachines)]
        stored = await self.repo.group_states(grouped) if grouped else {}
        for row in rows:
            live = by_id.get(row["id"])
            since = to_second(row["state_since"])
            if live is None or since is None:
                continue
            m = live.machine
            if isinstance(m, GroupedMachines):
                m.resume(stored.get(live.id, []))
            else:
                live.machine = Machine.resume(m.rule, row["state"], since, None)
        now = time.monotonic()
        for g in groups:
            g.done_through = None
            g.reload = False
            g.loaded_at = now

    def _change(
        self, live: Live, group: Group, tr: Transition, now: float, group_value: str | None = None
    ) -> Change:
        self.transitions += 1
        row = live.row
        change = Change(live.id, live.org_id, tr.new, tr.t, tr.value, group_key=group_value)
        if tr.loud:
            threshold, band = row["threshold"], None
            if live.anomaly is not None and group.baseline is not None:
                band = group.baseline.band(tr.t, live.anomaly)
                threshold = _band_edge(band, tr.value)
            if live.who_what is None:
                live.who_what = self._who_what(live)
            details = {
                "who": live.who_what[0],
                "what": live.who_what[1],
                "group": None if group_value is None else msgspec.json.decode(group_value),
                "band": None if band is None else dict(zip(_BAND, band, strict=True)),
                "from_state": tr.old,
                "run_seconds": tr.run,
                "second": tr.t,
                "evaluated_at": round(now, 3),
                "key": group.spec.key,
            }
            change.event = {
                "kind": tr.new,
                "value": tr.value,
                "threshold": threshold,
                "at": tr.t,
                "details": details,
                "webhook_url": row["webhook_url"],
            }
        return change

    def _who_what(self, live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
        """An event's `who` and `what`: the same for every event of one definition (a new
        definition is a new `Live`), so built once; nothing mutates them (stored as JSON)."""
        row = live.row
        who = {
            "alert_id": live.id,
            "alert_name": row["name"],
            "evaluator": "live",
            "node": getattr(self.hub, "node_id", None),
        }
        what = {
            "metric_id": row["metric_id"],
            "metric": definition_of(row),
            "filters": row["filters"] or [],
            "comparator": row["comparator"],
            "threshold": row["threshold"],
            "for_seconds": row["for_seconds"],
            "resolve_after_seconds": row["resolve_after_seconds"],
            "recovery_threshold": row.get("recovery_threshold"),
            "keep_firing_seconds": row.get("keep_firing_seconds") or 0,
            "kind": row.get("kind") or "threshold",
            "anomaly": row.get("anomaly"),
            "group_by": row.get("group_by") or [],
            "severity": row["severity"],
        }
        return who, what

    async def _commit(self, changes: list[tuple[Live, Change]]) -> None:
        try:
            await self.repo.apply([c for _, c in changes])
        except Exception as exc:
            # Nothing was written: reload and replay these alerts from the stored state on
            # the next tick, so the transitions are recomputed once the store is back.
            log.warning("alerts: persisting %d transitions failed: %s", len(changes), exc)
            for live, _ in changes:
                group = self.groups.get(live.key)
                if group is not None:
                    group.reload = True
            return
        for live, change in changes:
            if change.event is None or not change.applied or change.event_id is None:
                continue
            ev = change.event
            message = _message(live.row, change.event_id, ev)
            # A silenced event still updates the org's pages (state), flagged so no toast pops.
            message["silenced"] = change.silenced_by is not None
            try:
                await self.hub.send_to_org(live.org_id, message)
            except Exception as exc:
                log.warning("alerts: push of event %s failed: %s", change.event_id, exc)
            if change.targets:  # empty when silenced (docs/alerts.md "Silences")
                payload = _payload(
                    {"id": change.event_id, "org_id": live.org_id, "alert_id": live.id, **ev},
                    ev["details"],
                    ev["at"],
                    ev["kind"],
                )
                self.sender.submit(change.event_id, live.org_id, payload, change.targets)


_BAND = ("lower", "upper", "recovery_lower", "recovery_upper")


def _band_edge(band: Any, value: float | None) -> float:
    """An anomaly event's threshold: the band edge on the value's side."""
    if band is None:
        return 0.0
    if value is not None and value < (band[0] + band[1]) / 2:
        return band[0]
    return band[1]


def _iso(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _message(row: dict[str, Any], event_id: int, ev: dict[str, Any]) -> dict[str, Any]:
    """The push `alert` message (docs/alerts.md)."""
    return {
        "type": "alert",
        "alert_id": row["id"],
        "name": row["name"],
        "state": ev["kind"],
        "severity": row["severity"],
        "value": ev["value"],
        "threshold": ev["threshold"],
        "comparator": row["comparator"],
        "for_seconds": row["for_seconds"],
        "at": _iso(ev["at"]),
        "t": ev["at"],
        "event_id": event_id,
    } | _group(ev["details"])


def _payload(ev: dict[str, Any], details: dict[str, Any], second: int, kind: str) -> dict[str, Any]:
    """The webhook body (docs/alerts.md)."""
    who = details.get("who", {})
    what = details.get("what", {})
    return {
        "event_id": ev["id"],
        "org_id": ev["org_id"],
        "alert_id": ev["alert_id"],
        "alert_name": who.get("alert_name"),
        "state": kind,
        "value": ev["value"],
        "threshold": ev["threshold"],
        "comparator": what.get("comparator"),
        "for_seconds": what.get("for_seconds"),
        "severity": what.get("severity"),
        "at": _iso(second),
        "t": second,
    } | _group(details)


def _group(details: dict[str, Any]) -> dict[str, Any]:
    """A grouped alert's event names its group (`{"group": {...}}`); others add nothing."""
    group = details.get("group")
    return {} if group is None else {"group": group}
