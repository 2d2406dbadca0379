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

from app.push.poller import run_guarded
from app.querybuilder import MetricError, compile_metric

from .machine import Machine
from .rules import rule_of, value_of, watched_metric

if TYPE_CHECKING:
    from app.services import Services

RETENTION_1S = 600
MAX_POINTS = 10_000


async def read_series(
    services: Services,
    org_id: int,
    definition: dict[str, Any],
    filters: list[dict[str, Any]],
    time_from: int,
    time_to: int,
    step: int,
    now: int,
) -> tuple[list[tuple[int, float | None]], Any]:
    """[(t, value or None)] per bucket over [time_from, time_to), and the plan."""
    watched = watched_metric(definition)
    compiled = compile_metric(
        watched.metric,
        org_id=org_id,
        database=services.ch.database,
        time_from=time_from,
        time_to=time_to,
        granularity="1s" if step == 1 else "1m",
        filters=filters or (),
        now=now,
    )
    result = await run_guarded(services.ch, compiled)
    points = []
    for row in result.dicts():
        value = value_of(row, watched)
        if step > 1 and watched.pure_count and value is not None:
            value = float(value) / step
        points.append((int(row["t"]), value))
    return points, compiled.plan


def completed_until(services: Services, now: float) -> int:
    """The end (exclusive) of the complete seconds at `now`, as the live evaluator sees it."""
    lag_ms = getattr(services.push, "lag_ms", 0) or 0
    return services.alerts.horizon(now, lag_ms) + 1


async def backtest(
    services: Services,
    org_id: int,
    alert: dict[str, Any],
    definition: dict[str, Any],
    time_from: int,
    time_to: int,
    now: float | None = None,
) -> dict[str, Any]:
    """When `alert` (comparator, threshold, for_seconds, resolve_after_seconds, filters) would
    have fired and resolved over [time_from, time_to), starting from `ok`."""
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
            f"at most {MAX_POINTS} buckets of {step}s (about {MAX_POINTS * step // 86400} days)",
        )
    points, plan = await read_series(
        services, org_id, definition, alert.get("filters") or [], time_from, end, step, int(now)
    )
    rule = rule_of(alert, step)
    machine = Machine(rule)
    transitions = machine.run(points)
    events = [
        {
            "kind": tr.new,
            "t": tr.t,
            "at": _iso(tr.t),
            "value": tr.value,
            "run": tr.run,
            "run_seconds": tr.run * step,
        }
        for tr in transitions
        if tr.loud
    ]
    approximation = None
    if step > 1:
        approximation = (
            "Older than rollup_1s retention (10 minutes): evaluated over 1-minute buckets of "
            f"{plan.table}. for_seconds={alert['for_seconds']} became {rule.for_n} minute(s) and "
            f"the resolve window {rule.resolve_n} minute(s) (rounded up); a minute breaches when "
            "its value does"
            + (", the count taken as its mean per second (count/60)" if _pure(definition) else "")
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
        "starts_in": "ok",
        "events": events,
        "transitions": [
            {"t": tr.t, "from": tr.old, "to": tr.new, "value": tr.value} for tr in transitions
        ],
        "final_state": machine.state,
        "points": len(points),
        "no_data_points": sum(1 for _, v in points if v is None),
        "approximation": approximation,
    }


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
