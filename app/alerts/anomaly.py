"""Anomaly alerts: the expected band of a metric, from a rolling baseline over the rollups.

The value judged each second is the metric over the trailing 60 seconds (a sliding window over
rollup_1s), the scale of rollup_1m's buckets, from which the band of every second of minute M
is computed from the hour ending a minute before M (so it can be read ahead during M − 1):
`hour` — median and MAD (× 1.4826) of those 60 minutes (a robust z-score); `week` — the same minute a week earlier at rollup_1h's resolution
(an additive metric's hour divided by 60), shifted by the median of the last hour's residuals
against their own week-ago values, with the MAD of those residuals as the scale.
band = center ± max(sensitivity × scale, min_band); the recovery band uses
`recovery_sensitivity`. Under 30 minutes of baseline there is no band (the second is no data).
`stats`/`band_of` serve the live evaluator (`BaselineCache`: read once per minute per key),
the backtest and its band. Details: docs/alerts.md, "Anomaly alerts".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from app.push.poller import run_guarded
from app.querybuilder import compile_metric
from app.querybuilder.model import Agg
from app.querybuilder.planner import MAX_POINTS, resolve_metric

from .machine import Band
from .rules import Watched, value_of

if TYPE_CHECKING:
    from app.services import Services

WINDOW_S = 60
WEEK_S = 7 * 86400
HOUR_S = 3600
MIN_POINTS = 30
MAD_SIGMA = 1.4826
CACHED_MINUTES = 20


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    baseline: str = "week"
    sensitivity: float = 4.0
    recovery_sensitivity: float = 4.0
    direction: str = "both"
    min_band: float = 0.0


def spec_of(anomaly: dict[str, Any]) -> AnomalySpec:
    """A stored `anomaly` object → its spec (defaults as the API's)."""
    sensitivity = float(anomaly.get("sensitivity", 4.0))
    recovery = anomaly.get("recovery_sensitivity")
    return AnomalySpec(
        baseline=anomaly.get("baseline", "week"),
        sensitivity=sensitivity,
        recovery_sensitivity=sensitivity if recovery is None else float(recovery),
        direction=anomaly.get("direction", "both"),
        min_band=float(anomaly.get("min_band", 0.0)),
    )


def additive(definition_metric: Any) -> bool:
    """Whether the value adds up over time (count, sum): an hour is then 60 minutes' worth."""
    first = resolve_metric(definition_metric).outputs[0].expr
    return isinstance(first, Agg) and first.name in ("count", "sum")


@dataclass
class History:
    """The baseline's inputs: the metric per minute (bucket start → value; no data left out)
    and, for `week`, per hour, as the value of one minute of that hour."""

    minutes: dict[int, float] = field(default_factory=dict)
    hours: dict[int, float] = field(default_factory=dict)


def _median_mad(xs: list[float]) -> tuple[float, float]:
    center = statistics.median(xs)
    return center, MAD_SIGMA * statistics.median(abs(x - center) for x in xs)


def stats(history: History, minute: int, baseline: str) -> tuple[float, float] | None:
    """(center, scale) of the band for every second of the minute starting at `minute`."""
    recent = [(m, history.minutes.get(m)) for m in range(minute - HOUR_S - 60, minute - 60, 60)]
    if baseline == "hour":
        xs = [x for _, x in recent if x is not None]
        return _median_mad(xs) if len(xs) >= MIN_POINTS else None
    expected = history.hours.get((minute - WEEK_S) // HOUR_S * HOUR_S)
    if expected is None:
        return None
    residuals = []
    for m, x in recent:
        before = history.hours.get((m - WEEK_S) // HOUR_S * HOUR_S)
        if x is not None and before is not None:
            residuals.append(x - before)
    if len(residuals) < MIN_POINTS:
        return None
    shift, scale = _median_mad(residuals)
    return expected + shift, scale


def band_of(center_scale: tuple[float, float] | None, spec: AnomalySpec) -> Band | None:
    if center_scale is None:
        return None
    center, scale = center_scale
    half = max(spec.sensitivity * scale, spec.min_band)
    recovery = max(spec.recovery_sensitivity * scale, spec.min_band)
    return (center - half, center + half, center - recovery, center + recovery)


async def _read(
    services: Services,
    org_id: int,
    watched: Watched,
    filters: list[dict[str, Any]],
    time_from: int,
    time_to: int,
    step: int,
    now: int,
    compiled_cache: dict[tuple[int, int], Any] | None = None,
) -> dict[int, float]:
    """The watched metric per `step` bucket over [time_from, time_to) through the compiler
    (tenant guard re-verified on every run), in pieces of at most the compiler's point limit.
    With `compiled_cache` (the live evaluator's), one compiled statement per step is re-bound
    to each range — its text does not depend on the range, like a push key's."""
    out: dict[int, float] = {}
    granularity = {60: "1m", HOUR_S: "1h"}[step]
    lo = time_from // step * step
    while lo < time_to:
        hi = min(time_to, lo + MAX_POINTS * step)
        cached = None if compiled_cache is None else compiled_cache.get((step, hi - lo))
        if cached is not None:
            compiled = rebind(cached, lo, hi)
        else:
            compiled = compile_metric(
                watched.metric,
                org_id=org_id,
                database=services.ch.database,
                time_from=lo,
                time_to=hi,
                granularity=granularity,
                filters=filters or (),
                now=now,
            )
            if compiled_cache is not None:
                compiled_cache[(step, hi - lo)] = compiled
        result = await run_guarded(services.ch, compiled)
        for row in result.dicts():
            value = value_of(row, watched)
            if value is not None:
                out[int(row["t"])] = float(value)
        lo = hi
    return out


def rebind(compiled: Any, time_from: int, time_to: int) -> Any:
    """The same statement over another range of the same length (bound parameters only)."""
    params = dict(compiled.params) | {"time_from": time_from, "time_to": time_to}
    plan = msgspec.structs.replace(compiled.plan, time_from=time_from, time_to=time_to)
    return msgspec.structs.replace(compiled, params=params, plan=plan)


async def read_history(
    services: Services,
    org_id: int,
    watched: Watched,
    filters: list[dict[str, Any]],
    first_minute: int,
    last_minute: int,
    now: int,
    is_additive: bool,
    compiled_cache: dict[tuple[int, int], Any] | None = None,
    hour_cache: dict[int, float | None] | None = None,
) -> History:
    """What `stats` needs for the minutes first_minute…last_minute: two queries over the
    rollups (the hour before, and the same span one week earlier by the hour; with
    `hour_cache` the second only when an hour is not in it yet)."""
    minutes = await _read(
        services,
        org_id,
        watched,
        filters,
        first_minute - HOUR_S - 60,
        last_minute - 60,
        60,
        now,
        compiled_cache,
    )
    week_from = (first_minute - HOUR_S - 60 - WEEK_S) // HOUR_S * HOUR_S
    week_to = (last_minute - WEEK_S) // HOUR_S * HOUR_S + HOUR_S
    needed = range(week_from, week_to, HOUR_S)
    if hour_cache is not None and all(h in hour_cache for h in needed):
        # last week's hours do not change: the live evaluator reads them once an hour
        hours = {h: v for h in needed if (v := hour_cache[h]) is not None}
        return History(minutes, hours)
    hours = await _read(
        services, org_id, watched, filters, week_from, week_to, HOUR_S, now, compiled_cache
    )
    if is_additive:
        hours = {h: v / 60 for h, v in hours.items()}
    if hour_cache is not None:
        if len(hour_cache) > 48:
            hour_cache.clear()
        hour_cache.update({h: hours.get(h) for h in needed})
    return History(minutes, hours)


class BaselineCache:
    """The live evaluator's baseline of one key: (center, scale) per minute and baseline
    kind, read from the rollups once per minute (not once per second)."""

    def __init__(self, phase: int = 0) -> None:
        self.stats: dict[tuple[int, str], tuple[float, float] | None] = {}
        self.reads = 0  # read_history calls (2 queries each), for tests and the bench
        self.phase = phase  # the second of the minute this key reads ahead at (spread)
        self.reading = False
        self.ahead: int | None = None  # the next minute found cached (read ahead) already
        # (step, span) → the compiled statement, re-bound to each read's range
        self.compiled: dict[tuple[int, int], Any] = {}
        self.hours: dict[int, float | None] = {}  # last week's hours read so far

    def missing(self, minutes: set[int], baselines: set[str]) -> list[int]:
        return sorted(m for m in minutes if any((m, b) not in self.stats for b in baselines))

    def fill(self, history: History, minutes: list[int], baselines: set[str]) -> None:
        self.reads += 1
        for m in minutes:
            for b in baselines:
                self.stats[(m, b)] = stats(history, m, b)
        if len(self.stats) > CACHED_MINUTES * 2:
            newest = max(m for m, _ in self.stats)
            for k in [k for k in self.stats if k[0] < newest - CACHED_MINUTES * 60]:
                del self.stats[k]

    def band(self, t: int, spec: AnomalySpec) -> Band | None:
        return band_of(self.stats.get((t // 60 * 60, spec.baseline)), spec)
