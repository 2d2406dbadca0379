"""The demo's history, timed: `backfill()` of `clickpulse demo` over a fresh chDB through the
real EventWriter (WAL on, every MV attached), as `make demo` runs it on a new data dir.

    .venv/bin/python bench/demo_backfill.py [--days 30] [--rate 0.5]

Prints events, wall and CPU seconds (`time.process_time()`, this process: generation, writer,
chDB's inserts and MVs), the load average before and after, and the totals in `events` and
`rollup_1h` (which must equal the events written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.clickhouse import EmbeddedClickHouse  # noqa: E402
from app.config import Settings  # noqa: E402
from app.demo.backfill import backfill  # noqa: E402
from app.ingest.writer import EventWriter  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402


async def run(ch, data_dir: str, days: float, rate: float) -> dict:
    writer = EventWriter(ch, Settings.from_env(wal_dir=os.path.join(data_dir, "wal")))
    await writer.start()
    try:
        cpu = time.process_time()
        done = await backfill(writer, 1, days=days, base_per_s=rate)
        done["cpu_s"] = time.process_time() - cpu
    finally:
        await writer.stop()
    for table, column in (("events", "count()"), ("rollup_1h", "sum(events)")):
        done[table] = (await ch.query(f"SELECT {column} FROM {ch.database}.{table}")).rows[0][0]
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--rate", type=float, default=0.5, help="mean events/s (the demo's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clickpulse-backfill-") as data_dir:
        root = EmbeddedClickHouse(database="default", data_dir=os.path.join(data_dir, "ch"))
        ch = root.with_database("bench_demo")
        migrate_clickhouse(ch, render_clickhouse(database="bench_demo"))
        before = os.getloadavg()
        done = asyncio.run(run(ch, data_dir, args.days, args.rate))
        after = os.getloadavg()
    print(
        f"{done['events']:,} events in {done['seconds']:.1f} s wall, {done['cpu_s']:.1f} s CPU; "
        f"events {done['events']:,} / rollup_1h {done['rollup_1h']:,}; "
        f"load average {before[0]:.1f} before, {after[0]:.1f} after"
    )
    return 0 if done["events"] == done["rollup_1h"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
