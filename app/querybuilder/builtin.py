"""The four metrics every org has, written in the metric language (not hand-written SQL)."""

from __future__ import annotations

from typing import Any

import msgspec

from app.querybuilder.language import parse_metric
from app.querybuilder.model import CompiledQuery, Metric
from app.querybuilder.planner import compile_metric


class BuiltinMetric(msgspec.Struct, frozen=True):
    """A saved metric: its text plus compile options that are part of its definition."""

    key: str
    title: str
    text: str
    window_seconds: int = 0  # sliding window per point (0 = the bucket itself)

    @property
    def metric(self) -> Metric:
        return parse_metric(self.text)


BUILTIN_METRICS: dict[str, BuiltinMetric] = {
    m.key: m
    for m in (
        BuiltinMetric(
            "page_views", "Page views", "SELECT countIf(event = 'pageview') AS page_views"
        ),
        BuiltinMetric(
            "active_users",
            "Active users (last 5 minutes)",
            "SELECT uniq(user_id) AS active_users",
            window_seconds=300,
        ),
        BuiltinMetric("revenue", "Revenue", "SELECT sumIf(value, event = 'purchase') AS revenue"),
        BuiltinMetric(
            "error_rate",
            "Error rate",
            "SELECT countIf(event = 'error') / nullIf(countIf(event = 'pageview'), 0) AS error_rate",
        ),
    )
}


def compile_builtin(key: str, **compile_args: Any) -> CompiledQuery:
    """Compile a built-in metric; `compile_args` are those of `compile_metric`."""
    builtin = BUILTIN_METRICS[key]
    compile_args.setdefault("window_seconds", builtin.window_seconds)
    return compile_metric(builtin.text, **compile_args)
