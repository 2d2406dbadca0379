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
import contextlib
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


def _free_port(low: int | None = None) -> int:
    for _ in range(100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", random.randrange(low, 32000) if low else 0))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise SystemExit("no free port")


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
    parser.add_argument("--serve-fanout", help=argparse.SUPPRESS)
    parser.add_argument("--fanout-client", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="run (b) connections/memory/lag at 1 update/s and (c) fan-out msgs/s instead",
    )
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--burst-hz", type=float, default=10.0, help="(c): updates/s per key")
    parser.add_argument("--ws", default="auto", help="uvicorn's WS implementation")
    parser.add_argument(
        "--transport",
        choices=("asgi", "dedicated"),
        default="asgi",
        help="asgi: the Litestar/uvicorn route; dedicated: CLICKPULSE_PUSH_PORT (websockets)",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="spread each period's key publishes over this many equal slots (4 = 250 ms ticks)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not taskset the cores")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="print where idle connections' memory goes"
    )
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.serve_fanout:
        serve_fanout(args.serve_fanout)
        return
    if args.fanout_client:
        fanout_client(args.fanout_client)
        return
    if args.fanout:
        print(json.dumps(run_fanout(args), indent=2))
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


# -- (b) connections per process and (c) fan-out messages/s ---------------------------------
#
# The server process serves the app exactly as `clickpulse serve` would (uvicorn, one process;
# `--ws` picks uvicorn's WS implementation), pinned to core 0; the poller does not tick.
# Instead a synthetic publisher in the server process calls `hub.deliver(key, "d", text)` for
# every live key `hz` times a second, the delta carrying its send time (`sent_us`), so the
# clients measure the push tier's delivery lag (fan-out + transport) and not chDB (see (a)).
# The load generator: `--procs` client processes pinned to core 1, each a minimal raw-socket
# WebSocket client (handshake, one subscribe, frame parsing; no compression offered, like
# `clickpulse serve` which turns permessage-deflate off), from its own 127.0.0.x source.


def serve_fanout(cfg_path: str) -> None:
    import psycopg
    import uvicorn
    from psycopg.rows import dict_row

    from app.config import Settings
    from app.push import protocol
    from app.runtime import build_services
    from app.server import create_app

    _raise_nofile()
    cfg = json.loads(Path(cfg_path).read_text())
    if cfg.get("tracemalloc"):
        import tracemalloc

        tracemalloc.start(4)
    settings = Settings.from_env(
        data_dir=cfg["data_dir"],
        clickhouse_database=DATABASE,
        database_url=cfg["database_url"],
        port=cfg["port"],
        redis_url=None,
        push_tick_ms=0,
        push_port=cfg.get("push_port"),  # set: the dedicated `websockets` transport
    )
    services = build_services(settings)

    async def make_org() -> dict:
        async with await psycopg.AsyncConnection.connect(
            cfg["database_url"], autocommit=True, row_factory=dict_row
        ) as conn:
            org_id = await create_org(conn, "bench")
            token = await create_user_token(conn, org_id, "viewer@bench.test", "viewer")
        return {"org_id": org_id, "token": token, "pid": os.getpid()}

    from app.credentials import create_org, create_user_token

    creds = asyncio.run(make_org())

    async def publisher() -> None:
        hz_path = Path(cfg["hz_file"])
        seq = 0
        snaps: list = []
        while True:
            try:
                text = hz_path.read_text()
                if text.startswith("snap") and len(snaps) < int(text[4:]):
                    snaps.append(_trace_snapshot(snaps, cfg))
                hz = float(text) if not text.startswith("snap") else 0.0
            except (OSError, ValueError):
                hz = 0.0
            if hz <= 0:
                await asyncio.sleep(0.2)
                continue
            period = 1 / hz
            phases = max(int(cfg.get("phases", 1)), 1)
            now = time.time()
            await asyncio.sleep(period - now % period)  # on the period's boundary
            hub = services.push
            seq += 1
            keys = sorted(hub.by_key)
            # `phases` > 1: key i is published in slot i % phases of the period (as the poller's
            # 250 ms ticks spread real keys' changes over the second), not all at once.
            for phase in range(phases):
                if phase:
                    now = time.time()
                    await asyncio.sleep(max(phase * period / phases - now % period, 0))
                for key in keys[phase::phases]:
                    sent = int(time.time() * 1e6)
                    text = protocol.encode(
                        {
                            "type": "delta",
                            "key": key,
                            "rows": [{"t": seq, "n": seq, "sent_us": sent}],
                        }
                    )
                    hub.deliver(key, "d", text)

    async def main() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(services),
                host="127.0.0.1",
                port=cfg["port"],
                log_level="warning",
                ws=cfg["ws"],
                ws_per_message_deflate=False,
                backlog=4096,
            )
        )
        task = asyncio.create_task(publisher())
        Path(cfg["creds"]).write_text(json.dumps(creds))
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())


def _trace_snapshot(snaps: list, cfg: dict):
    """tracemalloc: the first call takes the baseline, the second writes the growth since, by
    allocation site, to `<data_dir>/tracemalloc.txt`."""
    import gc
    import tracemalloc

    if not tracemalloc.is_tracing():
        return None
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if snaps:
        stats = snap.compare_to(snaps[0], "lineno")
        lines = [str(s) for s in stats[:30]]
        total = sum(s.size_diff for s in stats)
        lines.append(f"total growth: {total / 1024:.0f} KiB")
        Path(cfg["data_dir"], "tracemalloc.txt").write_text("\n".join(lines))
    return snap


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # root may raise
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _WSClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one subscribe, parse server frames."""

    def __init__(self, host: str, port: int, path: str, subscribe: bytes, stats: dict):
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.subscribe = subscribe
        self.stats = stats
        self.buf = bytearray()
        self.upgraded = False
        self.subscribed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def send_subscribe(self) -> None:
        self.transport.write(_frame(0x1, self.subscribe))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.stats["refused"] += 1
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
            self.stats["connected"] += 1
        stats = self.stats
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, head = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, head = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < head + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[head : head + n])
            del buf[: head + n]
            if opcode == 0x1:
                at = payload.find(b'"sent_us":')
                if at >= 0:
                    end = payload.find(b"}", at)
                    if stats["recording"]:
                        lag = time.time() * 1e6 - int(payload[at + 10 : end])
                        stats["lags"].append(lag / 1000)
                        stats["received"] += 1
                elif payload.startswith(b'{"type":"snapshot"'):
                    self.subscribed = True
                    stats["subscribed"] += 1
            elif opcode == 0x9:
                self.transport.write(_frame(0xA, payload))

    def connection_lost(self, exc) -> None:
        self.stats["lost"] += 1


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def fanout_client(arg: str) -> None:
    """One load-generator process: `--fanout-client port,token,count,keys,source_ip,first`.
    Commands on stdin: `subscribe`, `record`, `report <label>`, `quit`."""
    _raise_nofile()
    port_s, token, count_s, keys_s, source, first_s = arg.split(",")
    port, count, keys, first = int(port_s), int(count_s), int(keys_s), int(first_s)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stats = {
            "connected": 0,
            "subscribed": 0,
            "refused": 0,
            "lost": 0,
            "received": 0,
            "lags": [],
            "recording": False,
        }
        path = f"/ws/subscribe?token={token}"
        clients = []
        for i in range(count):
            k = (first + i) % keys
            sub = json.dumps(
                {
                    "type": "subscribe",
                    "id": 1,
                    "metric": f"SELECT count() AS n WHERE event = 'e{k}'",
                    "range_s": 1,
                }
            ).encode()
            for attempt in range(5):
                try:
                    _, proto = await loop.create_connection(
                        lambda sub=sub: _WSClient("127.0.0.1", port, path, sub, stats),
                        "127.0.0.1",
                        port,
                        local_addr=(source, 0),
                    )
                    clients.append(proto)
                    break
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            if i % 200 == 199:
                await asyncio.sleep(0)
        deadline = time.monotonic() + 60
        while stats["connected"] + stats["refused"] < len(clients):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        print(json.dumps({"connected": stats["connected"]}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        started = 0.0
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "subscribe":
                for i, c in enumerate(clients):
                    if c.upgraded:
                        c.send_subscribe()
                    if i % 100 == 99:
                        await asyncio.sleep(0.01)
                deadline = time.monotonic() + 120
                while stats["subscribed"] < stats["connected"] - stats["lost"]:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                print(json.dumps({"subscribed": stats["subscribed"]}), flush=True)
            elif line[0] == "record":
                stats["lags"], stats["received"] = [], 0
                stats["recording"] = True
                started = time.monotonic()
            elif line[0] == "report":
                stats["recording"] = False
                lags = stats["lags"]
                print(
                    json.dumps(
                        {
                            "label": line[1],
                            "seconds": time.monotonic() - started,
                            "received": stats["received"],
                            "lost": stats["lost"],
                            "lags": [round(x, 2) for x in lags],
                        }
                    ),
                    flush=True,
                )
        for c in clients:
            c.transport.close()

    asyncio.run(run())


def run_fanout(args: argparse.Namespace) -> dict:
    import psycopg
    import websockets

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_push_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    work = tempfile.mkdtemp(prefix="clickpulse-bench-fanout-")
    port = _free_port(low=20000)  # below the ephemeral range the clients' sockets use
    cfg = {
        "data_dir": work,
        "database_url": _schema_url(base_url, schema),
        "port": port,
        "creds": os.path.join(work, "creds.json"),
        "hz_file": os.path.join(work, "hz"),
        "ws": args.ws,
        "tracemalloc": args.tracemalloc,
        "phases": args.phases,
        "push_port": _free_port(low=21000) if args.transport == "dedicated" else None,
    }
    ws_port = cfg["push_port"] or port  # where the clients connect
    Path(cfg["hz_file"]).write_text("0")
    cfg_path = os.path.join(work, "cfg.json")
    Path(cfg_path).write_text(json.dumps(cfg))
    _raise_nofile()
    pin = ["taskset", "-c", "0"] if not args.no_pin else []
    server = subprocess.Popen([*pin, sys.executable, __file__, "--serve-fanout", cfg_path])
    procs: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(cfg["creds"]) or not _port_open(ws_port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        creds = json.loads(Path(cfg["creds"]).read_text())
        pid = creds["pid"]

        async def warm() -> None:  # read every key's snapshot once (chDB buffers warm)
            url = f"ws://127.0.0.1:{ws_port}/ws/subscribe?token={creds['token']}"
            async with websockets.connect(url, compression=None) as ws:
                for k in range(args.keys):
                    metric = f"SELECT count() AS n WHERE event = 'e{k}'"
                    await ws.send(json.dumps({"type": "subscribe", "id": k, "metric": metric}))
                    await asyncio.wait_for(ws.recv(), 30)

        asyncio.run(warm())
        if args.tracemalloc:
            Path(cfg["hz_file"]).write_text("snap1")
        time.sleep(1.5)
        rss0 = _rss_kib(pid)
        per = args.connections // args.procs
        cpin = ["taskset", "-c", "1"] if not args.no_pin else []
        started = time.perf_counter()
        for j in range(args.procs):
            spec = f"{ws_port},{creds['token']},{per},{args.keys},127.0.0.{2 + j},{j * per}"
            procs.append(
                subprocess.Popen(
                    [*cpin, sys.executable, __file__, "--fanout-client", spec],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

        def each(command: str | None, reply: bool = True) -> list[dict]:
            if command:
                for p in procs:
                    p.stdin.write(command + "\n")
                    p.stdin.flush()
            return [json.loads(p.stdout.readline()) for p in procs] if reply else []

        connected = sum(r["connected"] for r in each(None))
        connect_s = time.perf_counter() - started
        time.sleep(2)
        rss_conn = _rss_kib(pid)
        started = time.perf_counter()
        subscribed = sum(r["subscribed"] for r in each("subscribe"))
        subscribe_s = time.perf_counter() - started
        time.sleep(3)
        rss_sub = _rss_kib(pid)
        if args.tracemalloc:  # allocation sites of the idle, subscribed connections
            Path(cfg["hz_file"]).write_text("snap2")
            report = Path(work, "tracemalloc.txt")
            deadline = time.monotonic() + 120
            while not report.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            print(report.read_text() if report.exists() else "no tracemalloc report")
        result: dict = {
            "transport": (
                "dedicated websockets.serve + broadcast()"
                if args.transport == "dedicated"
                else f"uvicorn ws={args.ws}"
            ),
            "publish_phases": args.phases,
            "connections": connected,
            "subscribed": subscribed,
            "keys": args.keys,
            "client_procs": args.procs,
            "connect_s": round(connect_s, 1),
            "subscribe_s": round(subscribe_s, 1),
            "server_rss_idle_mib": round(rss0 / 1024, 1),
            "kib_per_connection_open": round((rss_conn - rss0) / max(connected, 1), 1),
            "kib_per_connection_subscribed": round((rss_sub - rss0) / max(connected, 1), 1),
        }
        for label, hz, seconds in (("b", 1, args.seconds), ("c", args.burst_hz, args.seconds)):
            Path(cfg["hz_file"]).write_text(str(hz))
            time.sleep(1.2)
            cpu0 = _cpu_s(pid)
            each("record", reply=False)
            time.sleep(seconds)
            cpu1 = _cpu_s(pid)
            reports = each(f"report {label}")
            Path(cfg["hz_file"]).write_text("0")
            time.sleep(1.5)
            lags = [x for r in reports for x in r["lags"]]
            received = sum(r["received"] for r in reports)
            expected = subscribed * hz * seconds
            result[label] = {
                "publish_hz_per_key": hz,
                "messages_per_s": round(received / seconds),
                "delivered_fraction": round(received / max(expected, 1), 3),
                "lag_p50_ms": round(statistics.median(lags), 1) if lags else None,
                "lag_p99_ms": round(_pct(lags, 99), 1) if lags else None,
                "lag_max_ms": round(max(lags), 1) if lags else None,
                "server_cpu_pct": round(100 * (cpu1 - cpu0) / seconds),
                "lost_connections": sum(r["lost"] for r in reports),
            }
        result["server_rss_end_mib"] = round(_rss_kib(pid) / 1024, 1)
        return result
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.stdin.write("quit\n")
                p.stdin.flush()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
