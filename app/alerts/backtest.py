"""Backtest and "test now": the live machine over a series read from ClickHouse.

The per-bucket series is computed in ClickHouse from the rollups — the alert's watched metric
(`rules.watched_metric`, the very query the live evaluator runs) compiled by the querybuilder
and run with the tenant guard re-verified. The run-length state machine over that series
(at most 10,000 points) is `machine.Machine`, the same Python code the live evaluator steps
per second, so a backtest and the live evaluator agree by construction on the same data.

* Within rollup_1s retention (the range starts ≤ 10 minutes ago): 1-second buckets, exact.
* Older: 1-minute buckets from rollup_1m, approximate: a minute breaches when its value does
  (a pure count is divided by 60, i.e. compared as its mean per second); `for_seconds` and
  `resolve_after_seconds` are rounded up to whole minutes. The response says so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from app.push.poller import run_guarded
from app.querybuilder import MetricError, compile_metric
from app.querybuilder.planner import MAX_POINTS as COMPILE_MAX_POINTS
from app.querybuilder.planner import resolve_metric

from .anomaly import additive, band_of, read_history, spec_of, stats
from .grouped import GroupedMachines
from .machine import Machine, Transition
from .rules import group_key, rule_of, value_of, watched_metric

if TYPE_CHECKING:
    from app.services import Services

RETENTION_1S = 600
#: A week of minutes and the hour before it: the longest backtest (read in compiler-sized pieces).
MAX_POINTS = 7 * 1440 + 60


async def read_rows(
    services: Services,
    org_id: int,
    metric: Any,
    filters: list[dict[str, Any]],
    time_from: int,
    time_to: int,
    step: int,
    now: int,
    *,
    group_by: list[str] | None = None,
    window_s: int = 0,
) -> tuple[list[dict[str, Any]], Any]:
    """The compiled series' rows over [time_from, time_to) in pieces the compiler accepts
    (tenant guard re-verified on each), and the last piece's plan."""
    rows: list[dict[str, Any]] = []
    plan = None
    lo = time_from
    while lo < time_to or plan is None:
        hi = min(time_to, lo + COMPILE_MAX_POINTS * step)
        compiled = compile_metric(
            metric,
            org_id=org_id,
            database=services.ch.database,
            time_from=lo,
            time_to=hi,
            granularity="1s" if step == 1 else "1m",
            filters=filters or (),
            group_by=group_by,
            window_seconds=window_s,
            now=now,
        )
        plan = compiled.plan
        rows.extend((await run_guarded(services.ch, compiled)).dicts())
        lo = hi
    return rows, plan


async def read_series(
    services: Services,
    org_id: int,
    definition: dict[str, Any],
    filters: list[dict[str, Any]],
    time_from: int,
    time_to: int,
    step: int,
    now: int,
    window_s: int = 0,
    per_second: bool = True,
) -> tuple[list[tuple[int, float | None]], Any]:
    """[(t, value or None)] per bucket over [time_from, time_to), and the plan. A pure count
    over minutes is its mean per second unless `per_second` is off."""
    watched = watched_metric(definition)
    rows, plan = await read_rows(
        services, org_id, watched.metric, filters, time_from, time_to, step, now, window_s=window_s
    )
    points = []
    for row in rows:
        value = value_of(row, watched)
        if per_second and step > 1 and watched.pure_count and value is not None:
            value = float(value) / step
        points.append((int(row["t"]), value))
    return points, plan


def completed_until(services: Services, now: float) -> int:
    """The end (exclusive) of the complete seconds at `now`, as the live evaluator sees it."""
    lag_ms = getattr(services.push, "lag_ms", 0) or 0
    return services.alerts.horizon(now, lag_ms) + 1


def _event(tr: Transition, step: int, group: str | None = None) -> dict[str, Any]:
    out = {
        "kind": tr.new,
        "t": tr.t,
        "at": _iso(tr.t),
        "value": tr.value,
        "run": tr.run,
        "run_seconds": tr.run * step,
    }
    if group is not None:
        out["group"] = msgspec.json.decode(group)
    return out


async def backtest(
    services: Services,
    org_id: int,
    alert: dict[str, Any],
    definition: dict[str, Any],
    time_from: int,
    time_to: int,
    now: float | None = None,
) -> dict[str, Any]:
    """When `alert` (its rule fields, filters, kind, anomaly band, group-by) would have fired
    and resolved over [time_from, time_to), starting from `ok`."""
    now = time.time() if now is None else now
    end = min(time_to, completed_until(services, now))
    step = 1 if time_from > int(now) - RETENTION_1S else 60
    if step == 60:
        time_from = time_from // 60 * 60
        end = end // 60 * 60
    if end <= time_from:
        raise MetricError(
            "invalid_range", "the range has no complete seconds yet: from must be before to"
        )
    if (end - time_from) // step > MAX_POINTS:
        raise MetricError(
            "invalid_range",
            f"at most {MAX_POINTS} buckets of {step}s (a week and an hour of minutes)",
        )
    filters = alert.get("filters") or []
    rule = rule_of(alert, step)
    out: dict[str, Any] = {}
    if alert.get("group_by"):
        transitions, points, plan, extra = await _grouped(
            services, org_id, alert, definition, time_from, end, step, int(now)
        )
        final_state = extra.pop("final_state")
        out.update(extra)
        events = [_event(tr, step, g) for g, tr in transitions if tr.loud]
        transitions = [tr for _, tr in transitions]
    elif alert.get("kind") == "anomaly":
        watched = watched_metric(definition)
        spec = spec_of(alert["anomaly"] or {})
        points, plan = await read_series(
            services, org_id, definition, filters, time_from, end, step, int(now), 60, False
        )
        minutes = sorted({t // 60 * 60 for t, _ in points})
        history = await read_history(
            services,
            org_id,
            watched,
            filters,
            minutes[0] if minutes else time_from,
            minutes[-1] if minutes else time_from,
            int(now),
            additive(watched.metric),
        )
        centers = {m: stats(history, m, spec.baseline) for m in minutes}
        machine = Machine(rule)
        bands = [band_of(centers[t // 60 * 60], spec) for t, _ in points]
        transitions = []
        for (t, value), band in zip(points, bands, strict=True):
            tr = machine.step(t, value, band)
            if tr is not None:
                transitions.append(tr)
        final_state = machine.state
        events = [_event(tr, step) for tr in transitions if tr.loud]
        out["band"] = {
            "t": [t for t, _ in points],
            "value": [v for _, v in points],
            **{name: [b and b[i] for b in bands] for i, name in enumerate(_BAND)},
        }
        out["baseline"] = spec.baseline
    else:
        points, plan = await read_series(
            services, org_id, definition, filters, time_from, end, step, int(now)
        )
        machine = Machine(rule)
        transitions = machine.run(points)
        final_state = machine.state
        events = [_event(tr, step) for tr in transitions if tr.loud]
        # The values judged (per second for a count over minutes): what the alert editor draws
        # under its threshold lines, as `band` is for anomaly alerts.
        out["series"] = {"t": [t for t, _ in points], "value": [v for _, v in points]}
    approximation = None
    if step > 1:
        approximation = (
            "Older than rollup_1s retention (10 minutes): evaluated over 1-minute buckets of "
            f"{plan.table}. for_seconds={alert['for_seconds']} became {rule.for_n} minute(s), "
            f"the resolve window {rule.resolve_n} and keep-firing {rule.keep_n} minute(s) "
            "(rounded up); a minute breaches when its value does"
            + (
                ", the count taken as its mean per second (count/60)"
                if _pure(definition) and alert.get("kind") != "anomaly"
                else ""
            )
            + ". Fire/resolve times are minute starts; breaches shorter than a minute, or "
            "spikes averaged out within a minute, can be missed or shifted."
        )
    return {
        "resolution_s": step,
        "table": plan.table,
        "from": time_from,
        "to": end,
        "for_steps": rule.for_n,
        "resolve_steps": rule.resolve_n,
        "keep_steps": rule.keep_n,
        "starts_in": "ok",
        "events": events,
        "transitions": [
            {"t": tr.t, "from": tr.old, "to": tr.new, "value": tr.value} for tr in transitions
        ],
        "final_state": final_state,
        "points": len(points),
        "no_data_points": sum(1 for _, v in points if v is None),
        "approximation": approximation,
        **out,
    }


_BAND = ("lower", "upper", "recovery_lower", "recovery_upper")


async def _grouped(
    services: Services,
    org_id: int,
    alert: dict[str, Any],
    definition: dict[str, Any],
    time_from: int,
    end: int,
    step: int,
    now: int,
) -> tuple[list[tuple[str, Transition]], list[tuple[int, Any]], Any, dict[str, Any]]:
    """A grouped alert over the range: the live evaluator's GroupedMachines, one second (or
    minute) at a time."""
    watched = watched_metric(definition)
    rows, plan = await read_rows(
        services,
        org_id,
        watched.metric,
        alert.get("filters") or [],
        time_from,
        end,
        step,
        now,
        group_by=list(alert["group_by"]),
    )
    dims = tuple(plan.columns[1 : len(plan.columns) - len(resolve_metric(watched.metric).outputs)])
    series: dict[int, dict[str, Any]] = {}
    for row in rows:
        value = value_of(row, watched)
        if step > 1 and watched.pure_count and value is not None:
            value = float(value) / step
        series.setdefault(int(row["t"]), {})[group_key(dims, row)] = value
    machines = GroupedMachines(rule_of(alert, step), int(alert["max_groups"]), watched.pure_count)
    transitions = []
    points = []
    for t in range(time_from, end, step):
        values = series.get(t, {})
        points.extend((t, v) for v in values.values())
        transitions.extend(machines.step(t, values))
    extra = {
        "final_state": machines.state,
        "groups": {g: m.state for g, m in sorted(machines.machines.items())},
        "refused_groups": len(machines.refused),
    }
    return transitions, points, plan, extra


def _pure(definition: dict[str, Any]) -> bool:
    try:
        return watched_metric(definition).pure_count
    except MetricError:
        return False


async def evaluate_now(
    services: Services,
    org_id: int,
    row: dict[str, Any],
    definition: dict[str, Any],
    now: float | None = None,
) -> dict[str, Any]:
    """Evaluate a stored alert now over its last for/resolve window (at least 30 s, at most
    rollup_1s retention) from `ok`: value, breach run and state per second. No side effects."""
    if row.get("group_by") or row.get("kind") == "anomaly":
        raise MetricError(
            "unsupported",
            "/test shows threshold alerts over one series; use POST /alerts/backtest for "
            "grouped and anomaly alerts (it returns their groups and band)",
        )
    now = time.time() if now is None else now
    end = completed_until(services, now)
    rule = rule_of(row)
    lookback = min(max(rule.for_n, rule.resolve_n) + 30, RETENTION_1S - 10)
    start = end - lookback
    points, plan = await read_series(
        services, org_id, definition, row.get("filters") or [], start, end, 1, int(now)
    )
    machine = Machine(rule, history=[])
    transitions = machine.run(points)
    seconds = [
        {
            "t": s.t,
            "value": s.value,
            "no_data": s.value is None,
            "breaching": s.breaching,
            "breach_run": s.breach_run,
            "clear_run": s.clear_run,
            "state": s.state,
        }
        for s in machine.history or []
    ]
    note = None
    if max(rule.for_n, rule.resolve_n) > lookback:
        note = (
            f"for_seconds exceeds the {lookback}s readable at 1-second resolution: "
            "the runs shown are within that window only"
        )
    return {
        "now": round(now, 3),
        "complete_until": end,
        "from": start,
        "table": plan.table,
        "stored_state": row["state"],
        "resulting_state": machine.state,
        "current": {
            "value": machine.value,
            "breach_run": machine.breach_run,
            "clear_run": machine.clear_run,
            "no_data_run": machine.nodata_run,
        },
        "would_fire": any(tr.new == "firing" for tr in transitions),
        "would_resolve": any(tr.new == "resolved" for tr in transitions),
        "transitions": [
            {"t": tr.t, "from": tr.old, "to": tr.new, "value": tr.value} for tr in transitions
        ],
        "seconds": seconds,
        "note": note,
        "side_effects": "none",
    }


def _iso(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


__all__ = ["backtest", "evaluate_now", "read_series"]
