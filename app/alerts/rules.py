"""An alert definition (a row of `alerts`) → what the evaluator runs: the metric to watch, how
to read its value per second, and the machine's rule.

The watched query is the alert's metric compiled as a live push key (`granularity=1s` over
rollup_1s, the alert's filters as drilldown filters), so alerts on the same metric and filters
— and viewers subscribed to the same metric and filters — share one query per tick.

**no_data.** The compiled series fills empty seconds with 0 (`WITH FILL`), so a filled second
and a real 0 look alike. A *pure count* (the value output is `count()` / `countIf(…)`) is
watched exactly as written: a second without events is a real 0. Any other metric (sums,
averages, ratios, uniques, quantiles) gets one extra output, `count()` under the same WHERE and
filters (`alert_rows`): a second where it is 0 is `no_data`, as is a NULL/NaN/inf value (e.g.
`x / nullIf(y, 0)` with no `y`). Those keys are shared between alerts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from app.querybuilder import MetricError
from app.querybuilder.model import Agg, Metric, Output
from app.querybuilder.planner import resolve_metric

from .machine import Rule

PRESENCE = "alert_rows"


@dataclass(frozen=True)
class Watched:
    """How an alert reads its metric."""

    metric: Any  # what make_key compiles: the user's text/form, or an augmented Metric
    value_col: str
    presence_col: str | None  # None: a pure count (absence is 0)
    pure_count: bool


def definition_metric(definition: dict[str, Any]) -> Any:
    """A stored definition (`{"text": …}` or the form JSON) → what the compiler accepts."""
    if isinstance(definition, dict) and "text" in definition:
        return definition["text"]
    return definition


def watched_metric(definition: dict[str, Any]) -> Watched:
    """The query an alert watches; MetricError when the metric cannot be alerted on.
    (A grouped alert's group-by is the alert's `group_by`, applied when compiling.)"""
    metric = definition_metric(definition)
    parsed = resolve_metric(metric)
    if parsed.group_by:
        raise MetricError(
            "alert_group_by",
            "an alert watches one series per group: remove GROUP BY and set the alert's "
            "group_by (or use filters to pick a segment)",
        )
    first = parsed.outputs[0]
    if isinstance(first.expr, Agg) and first.expr.name == "topK":
        raise MetricError(
            "type_mismatch", "an alert needs a numeric value: its first output is topK"
        )
    if isinstance(first.expr, Agg) and first.expr.name == "count":
        return Watched(metric, first.name, None, True)
    name = PRESENCE
    while any(o.name == name for o in parsed.outputs):
        name += "_"
    augmented = Metric(outputs=(first, Output(name, Agg("count"))), where=parsed.where)
    return Watched(augmented, first.name, name, False)


def value_of(row: dict[str, Any], watched: Watched) -> Any:
    """A row's value for the machine (None = no data)."""
    if watched.presence_col is not None and not row.get(watched.presence_col):
        return None
    return row.get(watched.value_col)


def rule_of(row: dict[str, Any], step_s: int = 1) -> Rule:
    """The machine's rule; counts in steps of `step_s` seconds (rounded up)."""
    for_s = int(row["for_seconds"])
    resolve_s = int(row.get("resolve_after_seconds") or for_s)
    keep_s = int(row.get("keep_firing_seconds") or 0)
    common = {
        "for_n": -(-for_s // step_s),
        "resolve_n": -(-resolve_s // step_s),
        "keep_n": -(-keep_s // step_s),
    }
    if row.get("kind") == "anomaly":
        anomaly = row.get("anomaly") or {}
        return Rule("band", 0.0, direction=anomaly.get("direction", "both"), **common)
    recovery = row.get("recovery_threshold")
    return Rule(
        comparator=row["comparator"],
        threshold=float(row["threshold"]),
        recovery=None if recovery is None else float(recovery),
        **common,
    )


def window_of(row: dict[str, Any]) -> int:
    """The sliding window the watched value is computed over: anomaly alerts judge the metric
    over the trailing minute (the scale of their rollup_1m baseline), others each second."""
    return 60 if row.get("kind") == "anomaly" else 0


def group_by_of(row: dict[str, Any]) -> list[str] | None:
    return list(row.get("group_by") or []) or None


def group_key(dims: tuple[str, ...], row: dict[str, Any]) -> str:
    """A grouped alert's group: the canonical JSON of its group-by values."""
    return msgspec.json.encode({d: row.get(d) for d in dims}).decode()


def fingerprint(row: dict[str, Any]) -> bytes:
    """What, when it changes, requires recompiling an alert."""
    return msgspec.json.encode(
        [
            row.get("version"),
            row.get("metric_inline"),
            row.get("metric_definition"),
            row.get("filters"),
            row.get("kind"),
            row.get("anomaly"),
            row.get("group_by"),
            row.get("max_groups"),
        ]
    )
