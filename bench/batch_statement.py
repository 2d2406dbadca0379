"""One batched statement vs one statement per key, sequential, in process (docs/benchmarks.md,
Push (d)): N live keys of one org over a 6 s and a 600 s window; median of 7.

    .venv/bin/python bench/batch_statement.py
"""

import statistics
import tempfile
import time

from app.clickhouse import EmbeddedClickHouse
from app.migrate import migrate_clickhouse, render_clickhouse
from app.push.keys import make_key
from app.querybuilder import run_compiled
from app.querybuilder.batch import compile_live_batch
from bench.push import SCALE_METRICS, _scale_insert, _scale_rows

root = EmbeddedClickHouse(database="default", data_dir=tempfile.mkdtemp())
ch = root.with_database("m")
migrate_clickhouse(ch, render_clickhouse(database="m"))
now = int(time.time())
for s in range(now - 300, now):
    _scale_insert(ch, [r for o in range(1, 11) for r in _scale_rows(o, s, 20)])
for n in (10, 50):
    specs = [
        make_key(
            SCALE_METRICS[i % 4][0],
            org_id=1,
            database="m",
            group_by=SCALE_METRICS[i % 4][1],
            filters=[{"dimension": "os", "op": "!=", "value": f"x{i}"}],
        )
        for i in range(n)
    ]
    for span in (6, 600):
        lo, hi = now - span + 1, now + 1
        per, bat = [], []
        for _ in range(7):
            t = time.perf_counter()
            for s in specs:
                run_compiled(ch, s.bind(lo, hi))
            per.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = compile_live_batch(
                [s.live for s in specs], org_id=1, database="m", time_from=lo, time_to=hi
            )
            r = run_compiled(ch, b.compiled)
            b.split(r.columns, r.types, r.rows)
            bat.append(time.perf_counter() - t)
        print(
            f"keys={n} window={span}s: per-key {1000 * statistics.median(per):.0f} ms ({n} statements), batched {1000 * statistics.median(bat):.0f} ms (1 statement, compile+split included)"
        )
root.close()
