"""The live alert evaluator: alerts are evaluated on the push poller's ticks, with no polling
loop of its own. Each enabled alert becomes a push key watched through the poller, so alerts
and viewers of the same metric and filters share the key's read each tick; after each tick, every
alert's state machine advances over the seconds that became complete. Transitions are stored
first, then pushed to the org's sockets and sent to the alert's channels (unless silenced).
See docs/alerts.md, sections "Evaluation", "Firing and resolving: in this order" and
"Restarts"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.push.keys import KeySpec
from app.push.poller import KeyTick, Watch, run_guarded
from app.querybuilder import MetricError

from .delivery import Dispatcher
from .machine import Machine, Transition
from .rules import Watched, fingerprint, rule_of, value_of, watched_metric
from .state import AlertStateRepo, Change, to_second

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("clickpulse.alerts")


@dataclass
class Live:
    """One enabled alert in memory."""

    row: dict[str, Any]
    key: str
    machine: Machine
    fp: bytes

    @property
    def id(self) -> int:
        return self.row["id"]

    @property
    def org_id(self) -> int:
        return self.row["org_id"]


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
        self._lock = asyncio.Lock()
        self._remove_listener: Any = None
        self._poller: Any = None
        self._last_sync = 0.0
        self._sync_task: asyncio.Task[None] | None = None
        # Counters for tests and benchmarks.
        self.evaluated_seconds = 0
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
        for group in self.groups.values():
            group.watch.close()
        self.groups.clear()
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
        async with self._lock:
            seen = set()
            for row in rows:
                seen.add(row["id"])
                self._apply(row)
            for aid in [
                a.id
                for a in self.alerts.values()
                if a.id not in seen
                and (org_id is None or a.org_id == org_id)
                and (alert_id is None or a.id == alert_id)
            ]:
                self._drop(aid)
        self._last_sync = time.monotonic()

    def _apply(self, row: dict[str, Any]) -> None:
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
            spec = self.hub.key_for(row["org_id"], watched.metric, filters=row["filters"] or [])
        except MetricError as exc:
            log.warning("alert %s cannot be evaluated: %s", aid, exc)
            self._drop(aid)
            return
        rule = rule_of(row)
        if live is None:
            machine = Machine.resume(rule, row["state"], to_second(row["state_since"]), None)
        else:  # edited: keep its state and position, apply the new rule
            machine = live.machine
            machine.rule = rule
            self._detach(live)
        live = Live(row, spec.key, machine, fp)
        self.alerts[aid] = live
        group = self.groups.get(spec.key)
        if group is None:
            watch = self._poller.watch(spec, _ignore)
            group = self.groups[spec.key] = Group(spec, watched, watch)
        group.alerts[aid] = live

    def _detach(self, live: Live) -> None:
        group = self.groups.get(live.key)
        if group is None:
            return
        group.alerts.pop(live.id, None)
        if not group.alerts:
            group.watch.close()
            del self.groups[live.key]

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
            stale = [
                group
                for tick in ticks
                if (group := self.groups.get(tick.key)) is not None
                and group.alerts
                and self._needs_reload(group, tick)
            ]
            if stale:
                try:
                    await self._reload_states(stale)
                except Exception as exc:
                    log.warning("alerts: reloading state failed: %s", exc)
                    stale_keys = {g.spec.key for g in stale}
                    ticks = [t for t in ticks if t.key not in stale_keys]
            for tick in ticks:
                group = self.groups.get(tick.key)
                if group is not None and group.alerts:
                    try:
                        changes.extend(await self._evaluate(group, tick))
                    except Exception:
                        log.exception("alerts: evaluating key %s failed", tick.key)
                        group.reload = True
        if changes:
            await self._commit(changes)
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
        series: dict[int, Any] = {}
        alerts = list(group.alerts.values())
        starts = []
        for live in alerts:
            m = live.machine
            if m.cursor is None:
                continue
            if m.cursor + 1 < earliest:
                # Older than rollup_1s keeps: resume at the oldest readable second.
                live.machine = m = Machine.resume(m.rule, m.state, m.since, earliest)
            starts.append(m.cursor + 1)
        if len(starts) == len(alerts) and min(starts) > horizon:
            return []  # nothing newly complete for this key (3 ticks in 4 at 250 ms)
        if starts and min(starts) < tick.time_from:
            lo = max(min(starts), earliest)
            if lo < tick.time_from:
                result = await run_guarded(self.services.ch, group.spec.bind(lo, tick.time_from))
                for row in result.dicts():
                    series[row["t"]] = value_of(row, group.watched)
        lowest = min(starts, default=horizon + 1)
        for row in tick.rows:
            if lowest <= row["t"] <= horizon:
                series[row["t"]] = value_of(row, group.watched)
        out = []
        for live in alerts:
            m = live.machine
            if m.cursor is None:  # new: evaluation starts with the next complete second
                m.cursor = horizon
                continue
            for t in range(m.cursor + 1, horizon + 1):
                self.evaluated_seconds += 1
                tr = m.step(t, series.get(t))
                if tr is not None:
                    out.append((live, self._change(live, group, tr, now)))
        return out

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
        by_id = {aid: live for g in groups for aid, live in g.alerts.items()}
        rows = await self.repo.states(list(by_id))
        for row in rows:
            live = by_id.get(row["id"])
            since = to_second(row["state_since"])
            if live is not None and since is not None:
                live.machine = Machine.resume(live.machine.rule, row["state"], since, None)
        now = time.monotonic()
        for g in groups:
            g.reload = False
            g.loaded_at = now

    def _change(self, live: Live, group: Group, tr: Transition, now: float) -> Change:
        self.transitions += 1
        row = live.row
        change = Change(live.id, live.org_id, tr.new, tr.t, tr.value)
        if tr.loud:
            details = {
                "who": {
                    "alert_id": live.id,
                    "alert_name": row["name"],
                    "evaluator": "live",
                    "node": getattr(self.hub, "node_id", None),
                },
                "what": {
                    "metric_id": row["metric_id"],
                    "metric": definition_of(row),
                    "filters": row["filters"] or [],
                    "comparator": row["comparator"],
                    "threshold": row["threshold"],
                    "for_seconds": row["for_seconds"],
                    "resolve_after_seconds": row["resolve_after_seconds"],
                    "severity": row["severity"],
                },
                "from_state": tr.old,
                "run_seconds": tr.run,
                "second": tr.t,
                "evaluated_at": round(now, 3),
                "key": group.spec.key,
            }
            change.event = {
                "kind": tr.new,
                "value": tr.value,
                "threshold": row["threshold"],
                "at": tr.t,
                "details": details,
                "webhook_url": row["webhook_url"],
            }
        return change

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
        "threshold": row["threshold"],
        "comparator": row["comparator"],
        "for_seconds": row["for_seconds"],
        "at": _iso(ev["at"]),
        "t": ev["at"],
        "event_id": event_id,
    }


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
    }
