"""How long compiling a typical metric takes (target: < 2 ms). Prints figures only.

    .venv/bin/python bench/compile.py [iterations]

"cold" clears the parse cache before every compile (text → tokens → AST → model → plan → SQL,
guard applied and verified); "warm" reuses the cached model, as a server does for a saved
metric. `run_compiled`'s re-verification (re-parse of the final SQL) is timed separately.
"""

from __future__ import annotations

import statistics
import sys
import time

from app.querybuilder import compile_metric
from app.querybuilder.execute import check_compiled
from app.querybuilder.language import parse_condition, parse_metric

TYPICAL = (
    "SELECT countIf(event = 'purchase') / uniq(user_id) AS conversion "
    "WHERE country IN ('DE', 'FR') AND device = 'mobile' GROUP BY browser"
)
NOW = 1_800_000_000


def _compile():
    return compile_metric(
        TYPICAL,
        org_id=42,
        database="clickpulse",
        time_from=NOW - 86_400,
        time_to=NOW,
        granularity="auto",
        filters=[{"dimension": "os", "value": "linux"}],
        now=NOW,
    )


def _measure(label: str, fn, iterations: int, before=None) -> None:
    samples = []
    for _ in range(iterations):
        if before:
            before()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(
        f"{label:<34} mean {statistics.fmean(samples):6.3f} ms   p50 {samples[len(samples) // 2]:6.3f} ms   p99 {p99:6.3f} ms"
    )


def _clear() -> None:
    parse_metric.cache_clear()
    parse_condition.cache_clear()


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    for _ in range(50):
        _compile()  # warm up imports and sqlglot's caches
    compiled = _compile()
    print(f"metric: {TYPICAL}")
    print(
        f"plan:   {compiled.plan.table}, {compiled.plan.granularity_s}s buckets, raw={compiled.plan.raw}"
    )
    print(f"iterations: {iterations}")
    _measure("compile, cold (parse + plan)", _compile, iterations, before=_clear)
    _measure("compile, warm (cached model)", _compile, iterations)
    _measure(
        "run_compiled re-verification", lambda: check_compiled(compiled, "clickpulse"), iterations
    )


if __name__ == "__main__":
    main()
