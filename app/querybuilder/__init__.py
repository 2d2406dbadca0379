"""Metric language → sqlglot AST → tenant-safe ClickHouse SQL.

Public API:

* `parse_metric(text)` / `parse_form(form)` → `Metric` (the one internal model), or `MetricError`;
* `compile_metric(metric, org_id=, database=, time_from=, time_to=, granularity=, filters=,
  group_by=, compare=, window_seconds=, now=)` → `CompiledQuery` (sql, params, plan);
* `compile_funnel`, `compile_heatmap`, `compile_top_n` → `CompiledQuery`;
* `run_compiled(ch, compiled)` re-verifies the tenant guard on the final SQL, then runs it;
* `BUILTIN_METRICS` / `compile_builtin(key, …)`: page views, active users, revenue, error rate.
"""

from app.querybuilder.builtin import BUILTIN_METRICS, BuiltinMetric, compile_builtin
from app.querybuilder.charts import FunnelStep, compile_funnel, compile_heatmap, compile_top_n
from app.querybuilder.errors import MetricError, TenantGuardError
from app.querybuilder.execute import check_compiled, run_compiled, run_compiled_async
from app.querybuilder.form import FormMetric, parse_form
from app.querybuilder.guard import apply_tenant_guard, verify_tenant_guard
from app.querybuilder.language import parse_condition, parse_metric
from app.querybuilder.model import CompiledQuery, Filter, Metric, Plan, SegmentComparison
from app.querybuilder.planner import compile_metric

__all__ = [
    "BUILTIN_METRICS",
    "BuiltinMetric",
    "CompiledQuery",
    "Filter",
    "FormMetric",
    "FunnelStep",
    "Metric",
    "MetricError",
    "Plan",
    "SegmentComparison",
    "TenantGuardError",
    "apply_tenant_guard",
    "check_compiled",
    "compile_builtin",
    "compile_funnel",
    "compile_heatmap",
    "compile_metric",
    "compile_top_n",
    "parse_condition",
    "parse_form",
    "parse_metric",
    "run_compiled",
    "run_compiled_async",
    "verify_tenant_guard",
]
