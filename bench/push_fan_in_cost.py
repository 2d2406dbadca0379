"""What one poll round of the seed's live keys costs, fan-in vs per org (issue 14), sequential
and in process, measured as process CPU (chDB runs in the process): `--orgs` orgs with 10 live
keys each (bench/push.py `_seed_specs`: 9 batchable + the windowed `active_users`), `--history`
seconds of `--rows` rollup rows per org and second in rollup_1s, every round reading the last 6
seconds.

* fan-in: one statement for the 9 batchable shapes of every org + one for the windowed shape
  (app/querybuilder/fanin.py), bound, verified, run and split — what a round does.
* per org: one batched statement per org + one windowed statement per key, over `--sample`
  orgs, scaled to all of them.

    PYTHONPATH=. .venv/bin/python bench/push_fan_in_cost.py --orgs 1000 --rows 10 --sample 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clickhouse import EmbeddedClickHouse  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402
from app.querybuilder.batch import compile_live_batch  # noqa: E402
from app.querybuilder.execute import check_compiled, check_fan_in  # noqa: E402
from app.querybuilder.fanin import compile_fan_in_batch, compile_fan_in_window  # noqa: E402
from bench.push import _scale_insert, _scale_rows, _seed_specs  # noqa: E402


def _cpu() -> float:
    return sum(os.times()[:2])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10, help="rollup rows per org and second")
    parser.add_argument("--sample", type=int, default=100, help="orgs read one by one (per org)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history", type=int, default=30, help="seconds of rows inserted")
    args = parser.parse_args()
    root = EmbeddedClickHouse(database="default", data_dir=tempfile.mkdtemp(prefix="cp-fanin-"))
    ch = root.with_database("scale")
    migrate_clickhouse(ch, render_clickhouse(database="scale"))
    now = int(time.time())
    for second in range(now - args.history, now):
        rows = [r for o in range(1, args.orgs + 1) for r in _scale_rows(o, second, args.rows)]
        _scale_insert(ch, rows)
    specs, _ = _seed_specs(args.orgs * 10, args.orgs, "scale")
    shapes: dict[str, object] = {}
    for spec in specs:
        if spec.shape:
            shapes.setdefault(spec.shape, spec)
    batch_specs = [s for s in shapes.values() if s.shape_kind == "batch"]
    window_spec = next(s for s in shapes.values() if s.shape_kind == "window")
    orgs = list(range(1, args.orgs + 1))
    lo, hi = now - 5, now + 1
    batch = compile_fan_in_batch(
        [s.live for s in batch_specs], org_ids=orgs, database="scale", time_from=lo, time_to=hi
    )
    window = compile_fan_in_window(
        window_spec.live,
        window_spec.window_s,
        org_ids=orgs,
        database="scale",
        time_from=lo,
        time_to=hi,
    )
    wanted = [(o, k) for o in orgs for k in range(len(batch_specs))]

    def fan_in_round() -> int:
        rows = 0
        for compiled, pairs in ((batch, wanted), (window, [(o, 0) for o in orgs])):
            bound = compiled.bind(lo, hi, orgs)
            check_fan_in(bound.compiled, "scale")
            result = ch.query_sync(bound.compiled.sql, params=dict(bound.compiled.params))
            bound.split(result.columns, result.types, result.rows, pairs)
            rows += len(result.rows)
        return rows

    fan_in_round()  # warm: parse caches, marks
    cpu, wall = _cpu(), time.time()
    for _ in range(args.rounds):
        out_rows = fan_in_round()
    fan_in_cpu = (_cpu() - cpu) / args.rounds
    fan_in_wall = (time.time() - wall) / args.rounds

    sample = orgs[: args.sample]
    per_org = {}
    for org in sample:
        own = [s for s in specs if s.org_id == org]
        per_org[org] = (
            compile_live_batch(
                [s.live for s in own if s.batchable],
                org_id=org,
                database="scale",
                time_from=lo,
                time_to=hi,
            ),
            next(s for s in own if s.shape_kind == "window"),
        )

    def per_org_round() -> None:
        for org_batch, window_key in per_org.values():
            compiled = org_batch.bind(lo, hi).compiled
            check_compiled(compiled, "scale")
            result = ch.query_sync(compiled.sql, params=dict(compiled.params))
            org_batch.split(result.columns, result.types, result.rows)
            compiled = window_key.bind(lo, hi)
            check_compiled(compiled, "scale")
            ch.query_sync(compiled.sql, params=dict(compiled.params))

    per_org_round()
    cpu, wall = _cpu(), time.time()
    per_org_round()
    scale = args.orgs / len(sample)
    per_org_cpu = (_cpu() - cpu) * scale
    per_org_wall = (time.time() - wall) * scale
    print(
        json.dumps(
            {
                "orgs": args.orgs,
                "live_keys": len(specs),
                "rollup_rows_per_org_s": args.rows,
                "fan_in": {
                    "statements_per_round": 2,
                    "process_cpu_s_per_round": round(fan_in_cpu, 3),
                    "wall_s_per_round": round(fan_in_wall, 3),
                    "result_rows_per_round": out_rows,
                },
                "per_org": {
                    "statements_per_round": 2 * args.orgs,
                    "process_cpu_s_per_round": round(per_org_cpu, 2),
                    "wall_s_per_round": round(per_org_wall, 2),
                    "measured_on_orgs": len(sample),
                },
                "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
