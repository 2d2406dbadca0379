"""Live push benchmark on loopback (issue 5): fan-out per tick, event→client latency, memory.

    .venv/bin/python bench/push.py                                  # 2,000 clients, 4 keys
    .venv/bin/python bench/push.py --clients 5000 --keys 4 --samples 30

1. A server process (uvicorn, one process: chDB allows one data path per process) on a fresh
   chDB dir and a throwaway PostgreSQL schema (DATABASE_URL, default the test server), with an
   org, its ingest key and a viewer token; push ticks every 250 ms (the default).
2. This process opens `--clients` WebSocket connections (the `websockets` client), each
   subscribed to one of `--keys` keys (`SELECT count() AS n WHERE event = 'e<k>'`), and
   records the server's RSS before and after (memory per connection, server side).
3. `--samples` times: POST one event of a random key's event type with ts = now through
   /v1/events, and time until (a) the first and (b) the last subscriber of that key got the
   delta that contains it: (a) is event→browser latency, (b)−(a) the fan-out spread of one
   tick to all its viewers. Bounded: every wait times out after 5 s.
Client and server share the machine's cores (pin them with taskset to separate them).
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

DATABASE = "bench_push"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def serve(cfg_path: str) -> None:
    """The server process: migrate, create the org, write credentials, serve."""
    import psycopg
    import uvicorn
    from psycopg.rows import dict_row

    from app.config import Settings
    from app.credentials import create_api_key, create_org, create_user_token
    from app.runtime import build_services
    from app.server import create_app

    cfg = json.loads(Path(cfg_path).read_text())
    settings = Settings.from_env(
        data_dir=cfg["data_dir"],
        clickhouse_database=DATABASE,
        database_url=cfg["database_url"],
        port=cfg["port"],
        redis_url=None,
    )
    services = build_services(settings)

    async def make_org() -> dict:
        async with await psycopg.AsyncConnection.connect(
            cfg["database_url"], autocommit=True, row_factory=dict_row
        ) as conn:
            org_id = await create_org(conn, "bench")
            key = await create_api_key(conn, org_id, "bench")
            token = await create_user_token(conn, org_id, "viewer@bench.test", "viewer")
        return {"org_id": org_id, "api_key": key, "token": token, "pid": os.getpid()}

    creds = asyncio.run(make_org())
    Path(cfg["creds"]).write_text(json.dumps(creds))
    uvicorn.run(
        create_app(services),
        host="127.0.0.1",
        port=cfg["port"],
        log_level="warning",
        ws_ping_interval=None,
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run_clients(port: int, creds: dict, *, clients: int, keys: int, samples: int) -> dict:
    import httpx
    import msgspec
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/subscribe?token={creds['token']}"
    rss0 = _rss_kib(creds["pid"])
    sockets = []
    arrivals: dict[int, dict[int, float]] = {}  # sample -> socket index -> time
    expect: dict[int, tuple[str, int, int]] = {}  # sample -> (key, t, n)
    key_of: dict[int, str] = {}
    viewers: dict[str, list[int]] = {}
    started = time.perf_counter()
    for _ in range(clients):
        ws = await websockets.connect(url, max_queue=None, ping_interval=None)
        sockets.append(ws)
    connect_s = time.perf_counter() - started
    started = time.perf_counter()
    for i, ws in enumerate(sockets):
        k = i % keys
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "id": 1,
                    "metric": f"SELECT count() AS n WHERE event = 'e{k}'",
                    "range_s": 60,
                }
            )
        )
    for i, ws in enumerate(sockets):
        snap = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 30))
        key_of[i] = snap["key"]
        viewers.setdefault(snap["key"], []).append(i)
    subscribe_s = time.perf_counter() - started
    await asyncio.sleep(1.0)
    rss1 = _rss_kib(creds["pid"])

    decoder = msgspec.json.Decoder()

    async def reader(i: int, ws) -> None:
        async for text in ws:
            now = time.perf_counter()
            msg = decoder.decode(text)
            if msg.get("type") != "delta":
                continue
            for sample, (key, t, n) in list(expect.items()):
                if key != msg["key"] or i in arrivals[sample]:
                    continue
                if any(r["t"] == t and r["n"] >= n for r in msg["rows"]):
                    arrivals[sample][i] = now

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
    latencies, spreads, delivered = [], [], []
    counts: dict[tuple[str, int], int] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for sample in range(samples):
            k = random.randrange(keys)
            key = key_of[k]
            ts = int(time.time() * 1000)
            t = ts // 1000
            counts[(key, t)] = counts.get((key, t), 0) + 1
            arrivals[sample] = {}
            expect[sample] = (key, t, counts[(key, t)])
            sent = time.perf_counter()
            r = await http.post(
                "/v1/events",
                json=[{"event": f"e{k}", "ts": ts, "user_id": "u"}],
                headers={"Authorization": f"Bearer {creds['api_key']}"},
            )
            assert r.status_code in (200, 202), r.text
            want = len(viewers[key])
            deadline = sent + 5
            while len(arrivals[sample]) < want and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            got = arrivals[sample]
            expect.pop(sample)
            delivered.append(len(got) / want)
            if got:
                first, last = min(got.values()), max(got.values())
                latencies.append(first - sent)
                spreads.append(last - first)
            await asyncio.sleep(random.uniform(0.1, 0.4))
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "clients": clients,
        "keys": keys,
        "samples": samples,
        "connect_s": round(connect_s, 2),
        "subscribe_s": round(subscribe_s, 2),
        "server_rss_before_mib": round(rss0 / 1024, 1),
        "server_rss_after_mib": round(rss1 / 1024, 1),
        "kib_per_connection": round((rss1 - rss0) / clients, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(_pct(latencies, 99) * 1000, 1),
        "fanout_spread_p50_ms": round(statistics.median(spreads) * 1000, 1),
        "fanout_spread_p99_ms": round(_pct(spreads, 99) * 1000, 1),
        "viewers_per_key": clients // keys,
        "delivered_fraction_min": round(min(delivered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    import psycopg

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_push_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    work = tempfile.mkdtemp(prefix="clickpulse-bench-push-")
    port = _free_port()
    cfg = {
        "data_dir": work,
        "database_url": _schema_url(base_url, schema),
        "port": port,
        "creds": os.path.join(work, "creds.json"),
    }
    cfg_path = os.path.join(work, "cfg.json")
    Path(cfg_path).write_text(json.dumps(cfg))
    server = subprocess.Popen([sys.executable, __file__, "--serve", cfg_path])
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(cfg["creds"]) or not _port_open(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        creds = json.loads(Path(cfg["creds"]).read_text())
        result = asyncio.run(
            run_clients(port, creds, clients=args.clients, keys=args.keys, samples=args.samples)
        )
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
