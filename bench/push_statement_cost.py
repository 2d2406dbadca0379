"""Where one live-poll statement's CPU goes (issue 14), sequential, in process: one org's 9
batchable seed-scale keys (bench/push.py `_seed_specs`) as one batched statement vs one key
alone — bind, tenant-guard re-verification (`check_compiled`), chDB's run, split — over a
minute of 50 events/s for 10 orgs, reading 6 seconds of rollup_1s as a normal round does.

    PYTHONPATH=. .venv/bin/python bench/push_statement_cost.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clickhouse import EmbeddedClickHouse  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402
from app.querybuilder.batch import compile_live_batch  # noqa: E402
from app.querybuilder.execute import check_compiled  # noqa: E402
from bench.push import _scale_insert, _scale_rows, _seed_specs  # noqa: E402


def _cpu_ms(run, n: int = 50) -> float:
    """Median CPU ms of this thread per call (chDB runs the query in the calling thread)."""
    samples = []
    for _ in range(n):
        started = time.process_time()
        run()
        samples.append(time.process_time() - started)
    return round(1000 * statistics.median(samples), 2)


def _process_ms(run, n: int = 50) -> tuple[float, float]:
    """(process CPU ms, wall ms) per call, all threads."""
    wall, cpu = time.time(), sum(os.times()[:2])
    for _ in range(n):
        run()
    return (
        round(1000 * (sum(os.times()[:2]) - cpu) / n, 2),
        round(1000 * (time.time() - wall) / n, 2),
    )


def main() -> None:
    root = EmbeddedClickHouse(database="default", data_dir=tempfile.mkdtemp(prefix="cp-stmt-"))
    try:
        ch = root.with_database("scale")
        migrate_clickhouse(ch, render_clickhouse(database="scale"))
        now = int(time.time())
        for second in range(now - 60, now):
            _scale_insert(ch, [r for o in range(1, 11) for r in _scale_rows(o, second, 50)])
        specs, _ = _seed_specs(100, 10, "scale")
        batchable = [s for s in specs if s.org_id == 1 and s.batchable]
        batch = compile_live_batch(
            [s.live for s in batchable],
            org_id=1,
            database="scale",
            time_from=now - 5,
            time_to=now + 1,
        )
        batched = batch.bind(now - 5, now + 1).compiled
        single = batchable[0].bind(now - 5, now + 1)

        def run(compiled):
            return lambda: ch.query_sync(
                compiled.sql, params=dict(compiled.params), settings=dict(compiled.settings)
            )

        result = run(batched)()
        print(f"batched statement ({len(batchable)} keys):")
        print("  bind ms", _cpu_ms(lambda: batch.bind(now - 5, now + 1)))
        print("  guard re-verification ms", _cpu_ms(lambda: check_compiled(batched, "scale")))
        print("  chDB run ms (process CPU, wall)", _process_ms(run(batched)))
        print("  split ms", _cpu_ms(lambda: batch.split(result.columns, result.types, result.rows)))
        print("one key alone:")
        print("  guard re-verification ms", _cpu_ms(lambda: check_compiled(single, "scale")))
        print("  chDB run ms (process CPU, wall)", _process_ms(run(single)))
    finally:
        root.close()


if __name__ == "__main__":
    main()
