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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRIC = "SELECT count() AS views WHERE event = 'pageview'"
DATABASE = "bench_api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


# -- seeding chDB (in the server process) ----------------------------------------------------


def seed_clickhouse(ch, org_ids: list[int], days: int, per_hour: int) -> tuple[int, float]:
    """`per_hour` events per org per hour over `days` days, inserted oldest first in chunks
    of 30 days (rollup_1s/1m partition by day; one insert may touch at most 100 partitions)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(42)
    countries = np.array(["US", "DE", "FR", "GB", "IN", "BR", "JP", "ES"])
    devices = np.array(["desktop", "mobile", "tablet"])
    browsers = np.array(["Chrome", "Firefox", "Safari", "Edge"])
    events = np.array(["pageview", "pageview", "pageview", "click", "purchase"])
    now_h = int(time.time()) // 3600 * 3600
    first = now_h - days * 86400
    orgs = np.array(org_ids, dtype=np.uint32)
    total, started = 0, time.perf_counter()
    ts_type = pa.timestamp("ms", tz="UTC")
    for chunk_start in range(first, now_h, 30 * 86400):
        hours = np.arange(chunk_start, min(chunk_start + 30 * 86400, now_h), 3600, dtype=np.int64)
        n = len(hours) * len(orgs) * per_hour
        ts_s = np.repeat(hours, len(orgs) * per_hour) + rng.integers(0, 3600, n)
        org_col = np.tile(np.repeat(orgs, per_hour), len(hours))
        received = np.full(n, int(time.time() * 1000), dtype=np.int64)
        batch = pa.table(
            {
                "org_id": pa.array(org_col, pa.uint32()),
                "ts": pa.array(ts_s * 1000, ts_type),
                "event": pa.array(events[rng.integers(0, len(events), n)]),
                "user_id": pa.array(np.char.add("u", rng.integers(0, 5000, n).astype(str))),
                "session_id": pa.array(np.full(n, "s")),
                "value": pa.array(rng.random(n) * 50, pa.float64()),
                "path": pa.array(np.full(n, "/")),
                "referrer": pa.array(np.full(n, "")),
                "country": pa.array(countries[rng.integers(0, len(countries), n)]),
                "device": pa.array(devices[rng.integers(0, len(devices), n)]),
                "browser": pa.array(browsers[rng.integers(0, len(browsers), n)]),
                "os": pa.array(np.full(n, "Linux")),
                "received_at": pa.array(received, ts_type),
            }
        )
        ch.insert_sync("events_queue", batch)
        total += n
    return total, time.perf_counter() - started


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
    rows, seconds = seed_clickhouse(services.ch, spec["org_ids"], spec["days"], spec["per_hour"])
    counts = services.ch.query_sync(
        f"SELECT (SELECT count() FROM {DATABASE}.rollup_1h), (SELECT count() FROM {DATABASE}.events)"
    ).rows[0]
    print(
        f"server: seeded {rows:,} events in {seconds:.1f} s ({rows / seconds:,.0f}/s); "
        f"rollup_1h rows: {counts[0]:,}; events rows (90-day TTL, not merged yet): {counts[1]:,}",
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


async def _scenario(client, orgs, make_url, clients: int, seconds: float, warmup: float) -> dict:
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

    await asyncio.gather(*(worker(i) for i in range(clients)))
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


async def _run_load(port: int, orgs: list[dict], clients: int, seconds: float) -> dict:
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
            results[name] = await _scenario(client, orgs, make, clients, seconds, 2.0)

        # 30-day hourly queries, one at a time, each a distinct window (never cached)
        rnd = random.Random(7)
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
    args = parser.parse_args()

    import psycopg
    from psycopg.rows import dict_row

    from app.credentials import create_org, create_user_token
    from app.db import migrate

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    db_url = _schema_url(base, schema)
    server = None
    with tempfile.TemporaryDirectory(prefix="clickpulse-bench-api-") as data_dir:
        try:
            migrate(db_url)
            orgs = asyncio.run(_seed_pg(db_url, args.orgs, create_org, create_user_token, dict_row))
            seed_file = Path(data_dir) / "seed.json"
            seed_file.write_text(
                json.dumps(
                    {
                        "org_ids": [o["org_id"] for o in orgs],
                        "days": args.days,
                        "per_hour": args.events_per_hour,
                    }
                )
            )
            port = _free_port()
            print(
                f"seeding {args.orgs} orgs x {args.days} days x 24 h x {args.events_per_hour} "
                "events in the server process ...",
                flush=True,
            )
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", data_dir, db_url, str(port), str(seed_file)]
            )
            import httpx

            deadline = time.time() + 1800
            while time.time() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError("the server exited during startup")
                time.sleep(0.5)
            else:
                raise RuntimeError("the server did not start")
            results = asyncio.run(_run_load(port, orgs, args.clients, args.seconds))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
            with psycopg.connect(base, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
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
