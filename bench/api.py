"""Load generator for the history API on loopback (issue 4).

    .venv/bin/python bench/api.py                       # 100 orgs, a year of hourly data, 50 clients
    .venv/bin/python bench/api.py --seconds 20 --clients 50 --orgs 100 --days 365

1. PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test): a throwaway
   schema with 100 orgs, a viewer token and one saved metric each
   (`SELECT count() AS views WHERE event = 'pageview'`).
2. The server process (uvicorn + uvloop + httptools, one process: chDB allows one data path per
   process) first seeds chDB: `--events-per-hour` events per org per hour for `--days` days,
   with past timestamps, inserted as Arrow batches into `events_queue`, so every materialized
   view (events, rollup_1s → 1m → 1h → 1d, detail rollups) does the work it does in
   production. Nothing is written to the rollup tables directly.
3. 50 concurrent clients (50 keep-alive connections, a minimal asyncio HTTP/1.1 client) for a
   bounded time per scenario:
   * `cached`: GET /metrics/{id}/history?from=now-7d&granularity=1h on a random org — what a
     dashboard does; most answers come from the hot cache (open ranges stay fresh 10 s);
   * `uncached`: the same with a random closed 7-day window in the past year, so nearly every
     request compiles, runs on ClickHouse (rollup_1h) and is cached once;
   then 40 sequential 30-day hourly queries (each a distinct window: always ClickHouse).
Prints p50/p99 latency and requests/s per scenario. Client and server share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import (  # noqa: E402
    app_healthy,
    free_port,
    loadavg,
    pg_schema,
    server_process,
    work_dir,
)

METRIC = "SELECT count() AS views WHERE event = 'pageview'"
DATABASE = "bench_api"


# -- seeding chDB (in the server process) ----------------------------------------------------


def seed_clickhouse(
    ch, org_ids: list[int], days: int, per_hour: int, details: bool = False
) -> tuple[int, float]:
    """`per_hour` events per org per hour over `days` days up to now, generated inside ClickHouse
    (`numbers()`; deterministic hashes pick the second in the hour, event, user among 5,000,
    value and country/device/browser) and aggregated with the -State functions the
    materialized views use, into the tier that holds each age — where the MV cascade would have
    left them:

    * older than 7 days (hour-aligned) → rollup_1h (its MV fills rollup_1d);
    * the last 7 days up to 10 minutes ago → rollup_1m (cascading to 1h and 1d);
    * the last 10 minutes → rollup_1s (cascading to 1m, 1h and 1d);
    * the raw `events` table gets the last 90 days (its TTL), for raw plans;
    * with `details`, rollup_detail_1h/1m too (quantile and top-path states: ~1 min more for
      100 orgs x a year; the history bench's metric never reads them).

    Each bucket gets the same rows as inserting the events through events_queue (which took
    384 s for a year of 100 orgs: almost every event is its own rollup_1s group), in seconds.
    Returns (events, seconds).
    """
    now = int(time.time())
    now_h = now // 3600 * 3600
    first = now_h - days * 86400
    cut_1m = now_h - 7 * 86400  # rollup_1m keeps 7 days
    cut_1s = (now - 600) // 60 * 60  # rollup_1s keeps 10 minutes
    cut_raw = now - 90 * 86400  # events keep 90 days
    orgs = "[" + ", ".join(str(int(o)) for o in org_ids) + "]"
    n_orgs, per_org_hour = len(org_ids), len(org_ids) * per_hour
    db = ch.database
    gen = (
        "SELECT "
        f"toUInt32(arrayElement({orgs}, toUInt32(intDiv(number, {per_hour}) % {n_orgs}) + 1)) AS org_id, "
        f"toDateTime({first} + intDiv(number, {per_org_hour}) * 3600 + cityHash64(number, 1) % 3600,"
        " 'UTC') AS ts, "
        "arrayElement(['pageview', 'pageview', 'pageview', 'click', 'purchase'],"
        " cityHash64(number, 2) % 5 + 1) AS event, "
        "concat('u', toString(cityHash64(number, 3) % 5000)) AS user_id, "
        "(cityHash64(number, 4) % 1000000) / 20000.0 AS value, "
        "arrayElement(['US', 'DE', 'FR', 'GB', 'IN', 'BR', 'JP', 'ES'],"
        " cityHash64(number, 5) % 8 + 1) AS country, "
        "arrayElement(['desktop', 'mobile', 'tablet'], cityHash64(number, 6) % 3 + 1) AS device, "
        "arrayElement(['Chrome', 'Firefox', 'Safari', 'Edge'], cityHash64(number, 7) % 4 + 1)"
        " AS browser, "
        "'Linux' AS os, '/' AS path "
        "FROM numbers({lo}, {count})"
    )
    rollup = (
        "INSERT INTO {db}.{table} (org_id, event, bucket, country, device, browser, os, events,"
        " value_sum, users) "
        "SELECT org_id, event, {bucket}(ts) AS bucket, country, device, browser, os, count(),"
        " sum(value), uniqCombinedState(user_id) FROM ({gen}) WHERE ts >= toDateTime({t0}, 'UTC') AND ts < toDateTime({t1}, 'UTC') "
        "GROUP BY org_id, event, bucket, country, device, browser, os"
    )
    detail = (
        "INSERT INTO {db}.{table} (org_id, event, bucket, value_quantiles, top_paths) "
        "SELECT org_id, event, {bucket}(ts) AS bucket, quantileTDigestState(value),"
        " topKState(50)(path) FROM ({gen}) WHERE ts >= toDateTime({t0}, 'UTC') AND ts < toDateTime({t1}, 'UTC') "
        "GROUP BY org_id, event, bucket"
    )
    raw = (
        "INSERT INTO {db}.events (org_id, ts, event, user_id, session_id, value, path, referrer,"
        " country, device, browser, os, received_at) "
        "SELECT org_id, ts, event, user_id, 's', value, path, '', country, device, browser, os,"
        " now64(3) FROM ({gen}) WHERE ts >= toDateTime({t0}, 'UTC') AND ts < toDateTime({t1}, 'UTC')"
    )
    targets = [  # (first ts, end ts, statement, table, bucket function)
        (first, cut_1m, rollup, "rollup_1h", "toStartOfHour"),
        (cut_1m, cut_1s, rollup, "rollup_1m", "toStartOfMinute"),
        (cut_1s, now, rollup, "rollup_1s", "toDateTime"),
        (max(first, cut_raw), now, raw, "events", ""),
    ]
    if details:
        targets += [
            (first, cut_1m, detail, "rollup_detail_1h", "toStartOfHour"),
            (cut_1m, now, detail, "rollup_detail_1m", "toStartOfMinute"),
        ]
    started = time.perf_counter()
    chunk_s = 30 * 86400  # one insert touches a bounded number of partitions and states
    for t0, t1, statement, table, bucket in targets:
        t0 = max(t0, first)  # fewer than 7 days: the rollup_1m tier starts at the first hour
        for c0 in range(t0 // 3600 * 3600, t1, chunk_s):
            c1 = min(c0 + chunk_s, t1)
            lo = (c0 // 3600 * 3600 - first) // 3600 * per_org_hour
            count = (-(-c1 // 3600) * 3600 - c0 // 3600 * 3600) // 3600 * per_org_hour
            sql = statement.format(
                db=db,
                table=table,
                bucket=bucket,
                gen=gen.format(lo=lo, count=count),
                t0=max(c0, t0),
                t1=c1,
            )
            ch.command_sync(sql)
    seconds = time.perf_counter() - started
    total = ch.query_sync(f"SELECT sum(events) FROM {db}.rollup_1d").rows[0][0]
    return int(total), seconds


def serve(data_dir: str, database_url: str, port: int, seed_file: str) -> None:
    import uvicorn

    from app.config import Settings
    from app.runtime import build_services
    from app.server import create_app

    spec = json.loads(Path(seed_file).read_text())
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        clickhouse_database=DATABASE,
        port=port,
        limit_rate_per_s=1e6,
        limit_burst=1_000_000,
        limit_concurrent_queries=16,
    )
    services = build_services(settings)
    rows, seconds = seed_clickhouse(
        services.ch, spec["org_ids"], spec["days"], spec["per_hour"], spec.get("details", False)
    )
    counts = services.ch.query_sync(
        f"SELECT (SELECT count() FROM {DATABASE}.rollup_1h), (SELECT count() FROM {DATABASE}.events)"
    ).rows[0]
    print(
        f"server (pid {os.getpid()}): seeded {rows:,} events in {seconds:.1f} s "
        f"({rows / seconds:,.0f}/s); rollup_1h rows: {counts[0]:,}; events rows (last 90 days): "
        f"{counts[1]:,}",
        flush=True,
    )
    uvicorn.run(
        create_app(services),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


# -- the load ------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: httpx costs more CPU per request
    than the server does for a cached answer, and client and server share the two cores here."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}\r\n".encode())
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _Resp:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self.body = body

    def json(self):
        return json.loads(self.body)


async def _scenario(
    client, orgs, make_url, clients: int, seconds: float, warmup: float, seed: int = 0
) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    meta = {"cached": 0, "stale": 0, "tables": {}}
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    end = measure_from + seconds

    bodies: list[bytes] = []

    async def worker(seed: int) -> None:
        rnd = random.Random(seed)
        conn = RawClient(*client)
        try:
            while True:
                t0 = loop.time()
                if t0 >= end:
                    return
                org = rnd.choice(orgs)
                status, body = await conn.get(make_url(org, rnd), org["headers"])
                t1 = loop.time()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        bodies.append(body)
        finally:
            conn.close()

    await asyncio.gather(*(worker(seed * 1000 + i) for i in range(clients)))
    for body in bodies:  # decoded after the clock stopped
        m = json.loads(body)["meta"]
        meta["cached"] += bool(m["cached"])
        meta["stale"] += bool(m["stale"])
        meta["tables"][m["table"]] = meta["tables"].get(m["table"], 0) + 1
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p99_ms": _pct(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "statuses": statuses,
        **meta,
    }


async def _run_load(
    port: int, orgs: list[dict], clients: int, seconds: float, round_no: int = 0
) -> dict:
    now_h = int(time.time()) // 3600 * 3600
    results = {}
    client = ("127.0.0.1", port)
    if True:

        def cached(org, rnd):
            return f"/metrics/{org['metric_id']}/history?from=now-7d&granularity=1h"

        def uncached(org, rnd):
            to = now_h - rnd.randrange(1, 350 * 24) * 3600
            return (
                f"/metrics/{org['metric_id']}/history?from={to - 7 * 86400}&to={to}&granularity=1h"
            )

        for name, make in (("cached", cached), ("uncached", uncached)):
            print(
                f"load: {name}: {clients} clients, {seconds:.0f} s (+2 s warm-up) ...", flush=True
            )
            results[name] = await _scenario(client, orgs, make, clients, seconds, 2.0, round_no)

        # 30-day hourly queries, one at a time, each a distinct window (never cached)
        rnd = random.Random(7 + round_no)
        lat, tables, rows = [], set(), 0
        for _ in range(40):
            org = rnd.choice(orgs)
            to = now_h - rnd.randrange(1, 300 * 24) * 3600
            conn = RawClient(*client)
            t0 = time.perf_counter()
            r = _Resp(
                *await conn.get(
                    f"/metrics/{org['metric_id']}/history?from={to - 30 * 86400}&to={to}"
                    "&granularity=1h",
                    org["headers"],
                )
            )
            lat.append(time.perf_counter() - t0)
            conn.close()
            body = r.json()
            tables.add(body["meta"]["table"])
            rows = len(body["rows"])
            assert r.status_code == 200 and not body["meta"]["cached"], r.text
        results["30d_hourly"] = {
            "queries": len(lat),
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": _pct(lat, 99) * 1000,
            "max_ms": max(lat) * 1000,
            "tables": sorted(tables),
            "points": rows,
        }
    return results


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--events-per-hour", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the scenarios on the same seeded server"
    )
    parser.add_argument(
        "--details", action="store_true", help="also seed rollup_detail_* (quantiles, top paths)"
    )
    args = parser.parse_args()

    from psycopg.rows import dict_row

    from app.credentials import create_org, create_user_token
    from app.db import migrate

    rounds = []
    with (
        pg_schema("bench") as (_, db_url),
        work_dir("clickpulse-bench-api-") as data_dir,
    ):
        migrate(db_url)
        orgs = asyncio.run(_seed_pg(db_url, args.orgs, create_org, create_user_token, dict_row))
        seed_file = Path(data_dir) / "seed.json"
        seed_file.write_text(
            json.dumps(
                {
                    "org_ids": [o["org_id"] for o in orgs],
                    "days": args.days,
                    "per_hour": args.events_per_hour,
                    "details": args.details,
                }
            )
        )
        port = free_port()
        print(
            f"seeding {args.orgs} orgs x {args.days} days x 24 h x {args.events_per_hour} "
            "events in the server process ...",
            flush=True,
        )
        argv = [sys.executable, __file__, "--serve", data_dir, db_url, str(port), str(seed_file)]
        # Seeding a year of data happens before the server listens: allow it 30 minutes.
        with server_process(argv, ready=lambda: app_healthy(port), timeout_s=1800):
            for i in range(args.rounds):
                load_before = loadavg()
                results = asyncio.run(_run_load(port, orgs, args.clients, args.seconds, i))
                rounds.append((load_before, loadavg(), results))
                _report(i + 1, *rounds[-1])
    if args.rounds > 1:
        print("\nsummary over rounds (min - max):", flush=True)
        for name in rounds[0][2]:
            for stat in ("rps", "p50_ms", "p99_ms", "max_ms"):
                values = [r[name][stat] for _, _, r in rounds if stat in r[name]]
                if values:
                    print(f"  {name} {stat}: {min(values):,.1f} - {max(values):,.1f}")


def _report(round_no: int, load_before: str, load_after: str, results: dict) -> None:
    print(f"round {round_no} (load average before: {load_before}; after: {load_after})", flush=True)
    for name, r in results.items():
        if name == "30d_hourly":
            print(
                f"30-day hourly query ({r['queries']} sequential, distinct windows, {r['points']} "
                f"points, table {','.join(r['tables'])}): p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
            )
        else:
            print(
                f"history {name}: {r['requests']:,} requests, {r['rps']:,.0f} req/s, "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; "
                f"statuses {r['statuses']}, cache hits {r['cached']:,}, stale {r['stale']}, "
                f"tables {r['tables']}"
            )


async def _seed_pg(db_url, n, create_org, create_user_token, dict_row) -> list[dict]:
    import psycopg
    from psycopg.types.json import Jsonb

    out = []
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as conn:
        for i in range(n):
            org_id = await create_org(conn, f"bench-{i}")
            token = await create_user_token(conn, org_id, f"viewer{i}@bench.example", "viewer")
            row = await (
                await conn.execute(
                    "INSERT INTO metrics (org_id, name, definition) VALUES (%s, 'views', %s) "
                    "RETURNING id",
                    (org_id, Jsonb({"text": METRIC})),
                )
            ).fetchone()
            out.append(
                {
                    "org_id": org_id,
                    "metric_id": row["id"],
                    "headers": {"Authorization": f"Bearer {token}"},
                }
            )
    return out


if __name__ == "__main__":
    main()
