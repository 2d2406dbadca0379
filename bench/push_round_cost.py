"""What the poller's rounds cost in the push process's own Python, in isolation (issue 14): no
writer, no sockets. `--orgs` orgs with `--keys` live keys between them (bench/push.py
`_seed_specs`: the built-ins and the custom shapes every org shares, so they fan in), a minute
of `--rows` events per org and second, then `--rounds` rounds: before each, every org gets new
events in the current second and reports them (as the writer would), so every key is due and
changes. Per round: its wall time and the cyclic collector's time by generation (gc.callbacks),
and the statements' summed latency. `--no-freeze` skips the hub's collection policy (keys stay in
full scans); `--profile` prints cProfile's top functions of the rounds.

    PYTHONPATH=. .venv/bin/python bench/push_round_cost.py --keys 10000 --orgs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clickhouse import EmbeddedClickHouse  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402
from app.push.poller import Poller  # noqa: E402
from bench._server import loadavg  # noqa: E402
from bench.push import _scale_insert, _scale_rows, _seed_specs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=1_000)
    parser.add_argument("--rows", type=int, default=5, help="events per org and second")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-freeze", dest="freeze", action="store_false")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    root = EmbeddedClickHouse(database="default", data_dir=tempfile.mkdtemp(prefix="cp-round-"))
    ch = root.with_database("scale")
    migrate_clickhouse(ch, render_clickhouse(database="scale"))
    now = int(time.time())
    orgs = range(1, args.orgs + 1)
    for second in range(now - 60, now):
        _scale_insert(ch, [r for o in orgs for r in _scale_rows(o, second, args.rows)])
    specs, _ = _seed_specs(args.keys, args.orgs, "scale")
    collections: list[tuple[int, float]] = []
    started_at = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started_at[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - started_at[0]))

    async def run() -> dict:
        # (no `heap` argument at all without the policy: the script also runs on older code)
        policy = {}
        if args.freeze:
            from app.push.gcpolicy import LongLivedHeap

            policy["heap"] = LongLivedHeap()
        poller = Poller(ch, tick_ms=0, full_reread_s=0, poll_all_s=1, **policy)
        for spec in specs:
            poller.acquire(spec)
        await poller.tick()  # every key's first read
        profile = cProfile.Profile()
        durations, gc_per_round = [], []
        q0, rows0 = poller.query_s, poller.rows
        gc.callbacks.append(on_gc)
        try:
            for _ in range(args.rounds):
                second = int(time.time())
                _scale_insert(ch, [r for o in orgs for r in _scale_rows(o, second, 2)])
                poller.late.note({o: (second, second) for o in orgs})
                await asyncio.sleep(0.3)
                collections.clear()
                began = time.perf_counter()
                if args.profile:
                    profile.enable()
                await poller.tick()
                if args.profile:
                    profile.disable()
                durations.append(time.perf_counter() - began)
                gc_per_round.append(
                    {g: sum(d for gen, d in collections if gen == g) for g in (0, 1, 2)}
                )
        finally:
            gc.callbacks.remove(on_gc)
        if args.profile:
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return {
            "keys": len(specs),
            "orgs": args.orgs,
            "gc_freeze": args.freeze,
            "rounds": args.rounds,
            "round_ms": {
                "p50": round(1000 * statistics.median(durations), 1),
                "max": round(1000 * max(durations), 1),
            },
            "gc_ms_per_round_by_generation": {
                g: round(1000 * statistics.mean(r[g] for r in gc_per_round), 1) for g in (0, 1, 2)
            },
            "statement_latency_ms_per_round": round(1000 * (poller.query_s - q0) / args.rounds),
            "rows_diffed_per_round": round((poller.rows - rows0) / args.rounds),
            "load_average": loadavg(),
            "command": " ".join(sys.argv[1:]),
        }

    try:
        print(json.dumps(asyncio.run(run()), indent=2))
    finally:
        root.close()


if __name__ == "__main__":
    main()
